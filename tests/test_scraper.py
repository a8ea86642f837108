"""scraper.py against a local fake Open-i server (tests/openi_server.py) and fake official archives."""

import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time

import pytest

from helpers import cli, read_tree
from scraper import archive, openi, store
from tests.openi_server import FakeOpenI, make_items, make_png

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--delay", "0", "--backoff", "0", "--retries", "3", "--timeout", "2", "--quiet"]


def _load_cli():
    # scraper.py shares its name with the scraper package, so load it from its path
    spec = importlib.util.spec_from_file_location("scraper_cli", os.path.join(ROOT, "scraper.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI = _load_cli()


def snapshot(folder):
    """Every file under ``folder`` (relative path -> bytes), the JSON files parsed."""
    return {path: json.loads(data) if path.endswith(".json") else data for path, data in read_tree(folder).items()}


def image_ids(pngs):
    return {os.path.basename(path)[:-4] for path in pngs}


def test_downloads_every_page_and_image_through_faults(tmp_path, capsys):
    items, pngs = make_items(12)  # 24 images over 3 pages of 10
    paths = sorted(pngs)
    with FakeOpenI(items, pngs, page_cap=10, stall=1.0) as server:
        server.fail("page:11", "500", "badjson")
        server.fail(paths[0], "429")
        server.fail(paths[1], "truncate", "truncate")
        server.fail(paths[2], "notpng")
        server.fail(paths[3], "timeout")
        server.fail(paths[4], "500", "500")
        status, out, err = cli(CLI.main, [tmp_path / "out", "--base-url", server.base_url, "--workers", "3",
                                        "--timeout", "0.5", *FAST[:-3], "--quiet"], capsys)
    assert status == 0, err
    assert "saved 24 results and 24 images" in out
    datas = json.loads((tmp_path / "out" / "datas.json").read_text())
    assert set(datas) == image_ids(pngs)
    for path, body in pngs.items():
        assert (tmp_path / "out" / "images" / os.path.basename(path)).read_bytes() == body
        assert server.hits[path] == 1 + {0: 1, 1: 2, 2: 1, 3: 1, 4: 2}.get(paths.index(path), 0)
    assert server.hits["page:11"] == 3
    assert server.times[paths[0]][1] - server.times[paths[0]][0] >= 0.9  # waited for Retry-After: 1
    entry = datas["CXR1_1_IM-0001-3001"]
    assert entry["uid"] == "CXR1" and entry["file"] == "CXR1_1_IM-0001-3001.png"
    assert entry["major"] == entry["items"] == ["Nodule/lung/upper lobe/right/small"] and entry["type"] == "Major"
    assert entry["minor"] == ["lung"] and entry["license"] == "byncnd"
    assert entry["findings"] == "Report 1 lungs & heart are clear." and entry["impression"] == "Impression 1."
    assert entry["img"] == server.base_url + "/imgs/512/1/1/CXR1_1_IM-0001-3001.png"
    leftovers = [n for n in os.listdir(tmp_path / "out" / "images") if not n.endswith(".png") or n.startswith(".")]
    assert leftovers == []


def test_unsafe_results_are_skipped_and_nothing_is_written_outside_out(tmp_path, capsys):
    items, pngs = make_items(2)
    evil = dict(items[0], imgLarge="http://evil.example/imgs/512/1/1/CXR99_IM-0099-1001.png")
    dotted = dict(items[0], imgLarge="/imgs/512/1/1/..png")
    traversal = dict(items[0], imgLarge="/imgs/512/../../../../tmp/x%2F..%2Fy.png")
    weird = dict(items[0], imgLarge="/imgs/512/1/1/bad name;rm.png")
    with FakeOpenI([evil, dotted, traversal, weird] + items, pngs) as server:
        status, out, err = cli(CLI.main, [tmp_path / "out", "--base-url", server.base_url, *FAST], capsys)
        assert not any("evil" in key for key in server.hits)
    assert status == 0, err
    assert out.count("warning: skipped a search result") == 4
    assert set(json.loads((tmp_path / "out" / "datas.json").read_text())) == image_ids(pngs)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert sorted(os.listdir(tmp_path / "out" / "images")) == sorted(os.path.basename(p) for p in pngs)


def test_limit_and_off_host_redirects(tmp_path, capsys):
    items, pngs = make_items(6)
    with FakeOpenI(items, pngs, page_cap=3) as server:
        first = "/" + items[0]["imgLarge"].lstrip("/")
        server.fail(first, "redirect")
        status, out, err = cli(CLI.main, [tmp_path / "out", "--base-url", server.base_url, "--limit", "5", *FAST],
                                       capsys)
        assert server.hits["page:1"] == 1 and server.hits["page:4"] == 1 and "page:6" not in server.hits
    assert status == 2 and "1 image could not be saved" in err and "refused redirect" in err
    assert list(json.loads((tmp_path / "out" / "datas.json").read_text())) == [
        os.path.basename(i["imgLarge"])[:-4] for i in items[:5]]
    assert len(os.listdir(tmp_path / "out" / "images")) == 4


def test_size_cap_and_lasting_failures_are_reported_and_retried_on_rerun(tmp_path, capsys):
    items, pngs = make_items(3)
    paths = sorted(pngs)
    big_path = paths[0]
    pngs[big_path] = make_png("big", size=300)  # ~90 KB of noise, over a 0.05 MiB cap
    with FakeOpenI(items, pngs) as server:
        server.fail(paths[1], *["notpng"] * 4)
        argv = [tmp_path / "out", "--base-url", server.base_url, "--max-image-mb", "0.05", *FAST]
        status, out, err = cli(CLI.main, argv, capsys)
        assert status == 2
        assert err.count("\n") == 1 and err.startswith("error: 2 images could not be saved")
        assert "cap" in err and "not a PNG" in err and "run the same command again" in err
        assert not (tmp_path / "out" / "images" / os.path.basename(paths[1])).exists()
        status, out, err = cli(CLI.main, argv, capsys)  # the server is fine now: the rerun fetches the rest
        assert status == 2 and err.startswith("error: 1 image could not be saved")
        assert server.hits[paths[1]] == 5 and server.hits[paths[2]] == 1
    assert (tmp_path / "out" / "images" / os.path.basename(paths[1])).read_bytes() == pngs[paths[1]]


def test_network_down_says_what_was_saved_and_how_to_resume(tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    status, out, err = cli(CLI.main, [tmp_path / "out", "--base-url", dead, *FAST], capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"error: cannot reach {dead}")
    assert "0 catalogued results and 0 images are saved" in err and "run the same command again" in err

    items, pngs = make_items(4)
    paths = sorted(pngs)
    with FakeOpenI(items, pngs) as server:  # the host stops answering in the middle of the image downloads
        server.fail(paths[3], *["close"] * 10)
        status, out, err = cli(CLI.main, [tmp_path / "out", "--base-url", server.base_url, "--workers", "1",
                                        *FAST], capsys)
        assert status == 2 and err.count("\n") == 1
        assert f"cannot reach {server.base_url}" in err and "8 catalogued results and 3 images are saved" in err
        server.faults.clear()
        status, out, err = cli(CLI.main, [tmp_path / "out", "--base-url", server.base_url, *FAST], capsys)
        assert status == 0, err
        assert all(server.hits[p] == 1 for p in paths[:3])
    assert len(os.listdir(tmp_path / "out" / "images")) == 8


def _start(out, base_url):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "scraper.py"), str(out), "--base-url", base_url,
                             "--workers", "2", *FAST], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_when(process, ready, timeout=20):
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the scraper never reached the kill point"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_twice_and_resumed_equals_an_uninterrupted_run(tmp_path):
    items, pngs = make_items(20)  # 40 images, 4 pages
    out = tmp_path / "resumed"
    images = out / "images"
    with FakeOpenI(items, pngs, page_cap=10, api_delay=0.15, image_delay=0.03) as server:
        whole = _start(tmp_path / "whole", server.base_url)
        assert whole.wait(60) == 0, whole.communicate()
        # 1: killed while paging through the API (after the first page was saved)
        _kill_when(_start(out, server.base_url), lambda: (out / "datas.json").exists())
        assert 0 < len(json.loads((out / "datas.json").read_text())) < len(pngs)
        # 2: killed in the middle of the image downloads
        _kill_when(_start(out, server.base_url), lambda: images.exists() and len(os.listdir(images)) >= 12)
        finished = {n for n in os.listdir(images) if n.endswith(".png") and not n.startswith(".")}
        assert 0 < len(finished) < len(pngs)
        hits_before = dict(server.hits)
        # 3: runs to the end
        last = _start(out, server.base_url)
        assert last.wait(60) == 0, last.communicate()
        for path in pngs:
            if os.path.basename(path) in finished:
                assert server.hits[path] == hits_before[path], f"{path} was downloaded again"
    assert snapshot(out) == snapshot(tmp_path / "whole")


def _run_guarded(out, base_url, *args, timeout):
    """scraper.py in a subprocess, killed (and the test failed) if it runs past ``timeout`` s: (status, out, err, s)."""
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, os.path.join(ROOT, "scraper.py"), str(out), "--base-url", base_url,
                               *FAST, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scraper.py still ran after {timeout} s")
    return done.returncode, done.stdout, done.stderr, time.monotonic() - start


def _streams(server, key, count, timeout=10):
    """The ``count`` hostile streams of ``key`` once the server has seen each one end."""
    deadline = time.monotonic() + timeout
    while len(server.streams[key]) < count:
        assert time.monotonic() < deadline, f"{key}: {server.streams[key]} of {count} streams ended"
        time.sleep(0.05)
    return server.streams[key]


def test_endless_api_bodies_are_cut_at_the_cap(tmp_path):
    items, pngs = make_items(2)  # 5 images, one page
    with FakeOpenI(items, pngs, endless_limit=64 * 2**20) as server:
        # a (retried) HTTP 500, a redirect to the same page and then the answer: every body goes on and on
        server.fail("page:1", "endless-500", "endless-redirect", "endless")
        status, out, err, _ = _run_guarded(tmp_path / "out", server.base_url, "--max-api-mb", "1", timeout=60)
        assert status == 2 and err.count("\n") == 1, err
        assert err.startswith("error: the API answer for results 1-100 is larger than the 1 MiB cap (--max-api-mb)")
        assert "run the same command again" in err
        assert server.hits["page:1"] == 3  # an answer over the cap is not asked for again
        sent = [stream["sent"] for stream in _streams(server, "page:1", 3)]
        assert max(sent) < 16 * 2**20, sent  # cut near the 1 MiB cap, not read on to the server's 64 MiB
        status, out, err, _ = _run_guarded(tmp_path / "out", server.base_url, "--max-api-mb", "1", timeout=60)
    assert status == 0 and "saved 5 results and 5 images" in out, err


def test_trickling_answers_are_abandoned_at_the_deadline(tmp_path):
    items, pngs = make_items(2)  # 5 images, one page
    paths = sorted(pngs)
    with FakeOpenI(items, pngs, trickle=0.2, stream_seconds=30) as server:  # 1 byte every 0.2 s, for up to 30 s
        server.fail("page:1", "trickle")
        server.fail(paths[0], "trickle", "trickle")  # every try: a lasting failure
        server.fail(paths[1], "trickle-head")  # the headers too trickle in
        server.fail(paths[2], "trickle")
        status, out, err, seconds = _run_guarded(tmp_path / "out", server.base_url, "--deadline", "1",
                                                 "--retries", "1", timeout=20)
        assert status == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: 1 image could not be saved ({server.base_url}{paths[0]}: no complete "
                              "answer within the 1 s deadline (--deadline) (after 2 tries))"), err
        assert seconds < 12
        for key, count in (("page:1", 1), (paths[0], 2), (paths[1], 1), (paths[2], 1)):
            for stream in _streams(server, key, count):  # the scraper hung up at its deadline
                assert stream["seconds"] < 2.5, (key, stream)
            assert server.hits[key] == count + (key != paths[0])
    images = tmp_path / "out" / "images"
    assert sorted(os.listdir(images)) == sorted(os.path.basename(p) for p in paths[1:])
    for path in paths[1:]:
        assert (images / os.path.basename(path)).read_bytes() == pngs[path]


def _report_xml(uid, major, images, findings="Clear lungs.", impression="Normal chest."):
    mesh = "".join(f"\n      <major>{term}</major>" for term in major) + "\n      <automatic>auto term</automatic>"
    parents = "".join(f'\n   <parentImage id="{i}">\n      <figureId>F1</figureId>\n      <panel type="single">'
                      f"<url>/hadoop/storage/radiology/extract/{i}.jpg</url></panel>\n   </parentImage>"
                      for i in images)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="{uid}"/>
   <pmcId id="{uid[3:]}"/>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>{mesh}
   </MeSH>{parents}
</eCitation>""".encode()


def _tgz(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_from_archive_builds_the_same_layout_and_resumes(tmp_path, capsys):
    reports = {
        "ecgen-radiology/1.xml": _report_xml("CXR1", ["normal"], ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
        "ecgen-radiology/2.xml": _report_xml("CXR2", ["Nodule/lung/base/left", "Opacity/lung"], ["CXR2_IM-0652-1001"]),
        "ecgen-radiology/3.xml": _report_xml("CXR3", ["normal"], []),
        "ecgen-radiology/4.xml": _report_xml("CXR4", ["normal"], ["CXR4_IM-2050-1001", "CXR4_IM-2050-1002"]),
        "ecgen-radiology/5.xml": b"<eCitation><broken>",
    }
    images = ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001", "CXR4_IM-2050-1001"]
    pngs = {f"NLMCXR_png/{i}.png": make_png(i) for i in images}
    pngs["NLMCXR_png/CXR9_IM-0001-1001.png"] = make_png("no report")
    pngs["NLMCXR_png/CXR4_IM-2050-1002.png"] = b"\x89PNG\r\n\x1a\n not really"
    pngs["NLMCXR_png/readme.txt"] = b"hello"
    _tgz(tmp_path / "reports.tgz", reports)
    _tgz(tmp_path / "png.tgz", pngs)
    argv = [tmp_path / "out", "--from-archive", tmp_path / "png.tgz", "--reports", tmp_path / "reports.tgz", "--quiet"]
    status, out, err = cli(CLI.main, argv, capsys)
    assert status == 2 and "1 image could not be saved" in err and "CXR4_IM-2050-1002" in err
    assert "saved 4 images" in out and "1 archive images without a report" in out
    assert "warning: unreadable report ecgen-radiology/5.xml" in out
    datas = json.loads((tmp_path / "out" / "datas.json").read_text())
    assert sorted(datas) == sorted(images)
    assert datas["CXR2_IM-0652-1001"] == {
        "id": "CXR2_IM-0652-1001", "uid": "CXR2", "major": ["Nodule/lung/base/left", "Opacity/lung"], "minor": [],
        "automatic": ["auto term"], "findings": "Clear lungs.", "impression": "Normal chest.", "img": None,
        "file": "CXR2_IM-0652-1001.png", "license": "byncnd",
        "license_url": "http://creativecommons.org/licenses/by-nc-nd/4.0/",
        "type": "Major", "items": ["Nodule/lung/base/left", "Opacity/lung"]}
    for i in images:
        assert (tmp_path / "out" / "images" / f"{i}.png").read_bytes() == pngs[f"NLMCXR_png/{i}.png"]
    first = {n: os.stat(tmp_path / "out" / "images" / n).st_mtime_ns for n in os.listdir(tmp_path / "out" / "images")}
    cli(CLI.main, argv, capsys)
    assert {n: os.stat(tmp_path / "out" / "images" / n).st_mtime_ns for n in first} == first  # kept, not rewritten
    assert sorted(os.listdir(tmp_path / "out" / "images")) == sorted(f"{i}.png" for i in images)

    _tgz(tmp_path / "other.tgz", {"x/readme.txt": b"hello"})
    status, _, err = cli(CLI.main, [tmp_path / "o2", "--from-archive", tmp_path / "png.tgz", "--reports",
                                  tmp_path / "other.tgz"], capsys)
    assert status == 2 and err.startswith("error: no report XMLs")


def test_image_urls_stay_on_the_base_host():
    base = "https://openi.nlm.nih.gov"
    assert openi.image_url(base, "/imgs/512/1/1/a.png") == base + "/imgs/512/1/1/a.png"
    assert openi.image_url(base, "//imgs/512/1/1/a.png") == base + "/imgs/512/1/1/a.png"
    assert openi.image_url(base, base + "//imgs/a.png") == base + "//imgs/a.png"
    for bad in ("http://openi.nlm.nih.gov/imgs/a.png", "https://evil.example/a.png", "javascript:alert(1)",
                "file:///etc/passwd", None, ""):
        assert openi.image_url(base, bad) is None


def test_abstract_sections_and_safe_ids():
    html = "<p><b>Findings: </b>Heart <i>normal</i>.<br>No effusion.</p><p><b>IMPRESSION:</b> Normal &amp; clear.</p>"
    assert openi.abstract_sections(html) == {"findings": "Heart normal. No effusion.", "impression": "Normal & clear."}
    assert openi.abstract_sections(None) == {}
    assert store.safe_id("CXR1_1_IM-0001-3001") and store.safe_id("a.b-c_d")
    for bad in ("..", "a..b", ".hidden", "a/b", "a b", "", "x" * 129, None):
        assert store.safe_id(bad) is None
    assert store.report_id_of("CXR1_1_IM-0001-3001") == "CXR1"
    assert store.report_id_of("CXR1022_IM-0017-1001-0001") == "CXR1022"
    assert archive.parse_report(_report_xml("CXR7", ["normal"], ["CXR7_IM-1-1", "../x"])).keys() == {"CXR7_IM-1-1"}
