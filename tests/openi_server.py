"""A fake Open-i server for the scraper tests: paged ``/api/search`` JSON (the current API shape) and PNGs.

Faults are queued per request key (``"page:<m>"`` for an API page, the URL path for an image) and used up one per
request: ``500``, ``429`` (with Retry-After), ``timeout`` (answers only after ``stall`` seconds), ``truncate``
(half the promised body, then the connection closes), ``close`` (no answer at all), ``badjson``, ``notpng``,
``redirect`` (to another host) and ``404``. ``hits`` counts requests per key and ``times`` records when they came.

Hostile faults stream their answer, and ``streams`` records per key what each one managed to send (``sent`` bytes, in
``seconds``): ``endless`` (HTTP 200 whose body never ends), ``endless-500`` (the same as HTTP 500, which the client
retries), ``endless-redirect`` (a redirect to the same URL with a never-ending body), ``trickle`` (the real answer,
its body one byte every ``trickle`` seconds) and ``trickle-head`` (the real answer, headers included, one byte every
``trickle`` seconds). A stream stops by itself when the client hangs up, after ``endless_limit`` bytes, after
``stream_seconds`` seconds or when the server closes.
"""

import io
import itertools
import json
import random
import socket
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image


def make_png(seed, size=8):
    """A small grayscale PNG whose pixels depend on ``seed`` (so every image's bytes differ)."""
    rng = random.Random(seed)
    image = Image.new("L", (size, size))
    image.putdata([rng.randrange(256) for _ in range(size * size)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


MESH_CYCLE = (["normal"], ["Nodule/lung/upper lobe/right/small"], ["Calcified Granuloma/lung/upper lobe/right"],
              ["Nodule/lung/base/left", "Opacity/lung/base/left"], ["normal"])


def report_images(report):
    """Image ids of fake report ``report`` (1, 2 or 3 views; report 1 uses the CXR1_1_IM style)."""
    views = 1 + report % 3
    if report == 1:
        return [f"CXR1_1_IM-0001-{3001 + 1000 * v}" for v in range(views)]
    return [f"CXR{report}_IM-{report:04d}-{1001 + v}" for v in range(views)]


def make_items(reports):
    """API results for reports 1..``reports`` (one per image) and the PNG bytes by image path."""
    items, pngs = [], {}
    for report in range(1, reports + 1):
        major = MESH_CYCLE[report % len(MESH_CYCLE)]
        for view, image_id in enumerate(report_images(report)):
            path = f"/imgs/512/{report}/{report}/{image_id}.png"
            pngs[path] = make_png(image_id)
            items.append({
                "uid": f"CXR{report}", "pmcid": str(report), "docSource": "CXR", "articleType": "rr",
                "title": "Indiana University Chest X-ray Collection", "authors": "Kohli MD, Rosenman M",
                "abstract": (f"<p><b>Comparison: </b>None.</p><p><b>Indication: </b>Cough</p>"
                             f"<p><b>Findings: </b>Report {report} lungs &amp; heart<br/>are clear.</p>"
                             f"<p><b>Impression: </b>Impression {report}.</p>"),
                "impression": f"Impression {report}.", "MeSH": {"minor": ["lung"], "major": major},
                "Problems": ";".join(major), "ccLicense": "byncnd",
                "licenseURL": "http://creativecommons.org/licenses/by-nc-nd/4.0/",
                "image": {"id": f"F{view + 1}", "caption": "Xray Chest PA and Lateral", "modalityMajor": "x"},
                "imgThumb": path.replace("/512/", "/100/"), "imgLarge": path,
                "detailedQueryURL": f"retrieve.php?img={image_id}&query=&coll=cxr&req=4",
            })
    return items, pngs


def _trickled(data, interval):
    for i in range(len(data)):
        yield data[i:i + 1]
        time.sleep(interval)


def _endless(limit):
    yield b'{"list": ['  # then JSON whitespace that never ends (cheap for a client that does read it all)
    block = b" " * (64 * 1024)
    for _ in range(limit // len(block)):
        yield block


class FakeOpenI:
    def __init__(self, items, pngs, page_cap=10, api_delay=0.0, image_delay=0.0, stall=1.0, retry_after="1",
                 trickle=0.2, endless_limit=64 * 2**20, stream_seconds=30.0):
        self.items, self.pngs = items, pngs
        self.page_cap, self.api_delay, self.image_delay = page_cap, api_delay, image_delay
        self.stall, self.retry_after = stall, retry_after
        self.trickle, self.endless_limit, self.stream_seconds = trickle, endless_limit, stream_seconds
        self.faults = defaultdict(list)
        self.hits = Counter()
        self.times = defaultdict(list)
        self.streams = defaultdict(list)
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.server = None

    def fail(self, key, *faults):
        self.faults[key].extend(faults)

    @property
    def base_url(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.closed.set()  # ends the hostile streams still running
        self.server.shutdown()
        self.server.server_close()

    def _page(self, query):
        params = parse_qs(query)
        first = int(params.get("m", ["1"])[0])
        last = min(int(params.get("n", [str(first + 99)])[0]), first + self.page_cap - 1)
        items = self.items if params.get("coll", ["cxr"])[0] == "cxr" else []
        chosen = items[first - 1:last]
        return f"page:{first}", json.dumps({"min": first, "max": first + len(chosen) - 1, "count": len(chosen),
                                             "total": len(items), "approximage": "false", "list": chosen}).encode()

    def handle(self, request):
        url = urlsplit(request.path)
        if url.path == "/api/search":
            key, body, kind = *self._page(url.query), "application/json"
            time.sleep(self.api_delay)
        elif url.path in self.pngs:
            key, body, kind = url.path, self.pngs[url.path], "image/png"
            time.sleep(self.image_delay)
        else:
            key, body, kind = url.path, None, None
        with self.lock:
            self.hits[key] += 1
            self.times[key].append(time.monotonic())
            fault = self.faults[key].pop(0) if self.faults[key] else None
        if fault == "timeout":
            time.sleep(self.stall)
        if body is None or fault == "404":
            return self._send(request, 404, b"not found", "text/plain")
        if fault == "500":
            return self._send(request, 500, b"server error", "text/plain")
        if fault == "429":
            return self._send(request, 429, b"slow down", "text/plain", {"Retry-After": self.retry_after})
        if fault == "redirect":
            return self._send(request, 302, b"", "text/plain", {"Location": "http://evil.example" + url.path})
        if fault == "close":
            request.close_connection = True
            return
        if fault in ("endless", "endless-500", "endless-redirect"):
            status, headers = {"endless": (200, {}), "endless-500": (500, {}),
                               "endless-redirect": (302, {"Location": request.path})}[fault]
            head = self._head(status, kind, headers)  # no Content-Length: the body ends when the connection does
            return self._stream(request, key, itertools.chain([head], _endless(self.endless_limit)))
        if fault == "trickle":
            head = self._head(200, kind, {"Content-Length": len(body)})
            return self._stream(request, key, itertools.chain([head], _trickled(body, self.trickle)))
        if fault == "trickle-head":
            head = self._head(200, kind, {"Content-Length": len(body)})
            return self._stream(request, key, _trickled(head + body, self.trickle))
        if fault == "badjson":
            body = b'{"list": [{"uid": '
        if fault == "notpng":
            body = b"<html><body>maintenance</body></html>"
        if fault == "truncate":
            return self._send(request, 200, body[: len(body) // 2], kind, length=len(body))
        self._send(request, 200, body, kind)

    @staticmethod
    def _head(status, kind, headers):
        lines = [f"HTTP/1.0 {status} Hostile", f"Content-Type: {kind}", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _stream(self, request, key, chunks):
        """Send the byte strings ``chunks`` until they end, the client hangs up or a limit is hit."""
        start, sent = time.monotonic(), 0
        request.close_connection = True
        try:
            # a small send buffer, so that what was sent is close to what the client received
            request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            request.connection.settimeout(5)  # a client that neither reads nor hangs up
            for chunk in chunks:
                if self.closed.is_set() or time.monotonic() - start > self.stream_seconds:
                    break
                request.wfile.write(chunk)
                sent += len(chunk)
        except OSError:  # the client hung up (or stopped reading for 5 s)
            pass
        with self.lock:
            self.streams[key].append({"sent": sent, "seconds": time.monotonic() - start})

    @staticmethod
    def _send(request, status, body, kind, headers=None, length=None):
        try:
            request.send_response(status)
            request.send_header("Content-Type", kind)
            request.send_header("Content-Length", str(len(body) if length is None else length))
            for name, value in (headers or {}).items():
                request.send_header(name, value)
            request.end_headers()
            request.wfile.write(body)
            request.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. after its timeout)
            pass
        request.close_connection = True
