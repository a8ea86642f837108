"""Offline route: build the scraper's OUT (``images/<image id>.png`` + ``datas.json``) from the official archives.

``NLMCXR_reports.tgz`` holds one XML per report (``ecgen-radiology/N.xml``): ``<uId id="CXR1"/>``, MeSH ``<major>``
and ``<automatic>`` terms, ``<AbstractText Label="FINDINGS">`` / ``"IMPRESSION"`` and one ``<parentImage id=...>``
per image. ``NLMCXR_png.tgz`` holds ``<image id>.png`` files (under any folder). Members are read one at a time
and written only under names made from checked ids; nothing is extracted by its archive path.
"""

import os
import tarfile
import xml.etree.ElementTree as ET

from models.errors import UserError
from models.progress import progress_bar
from scraper import store


def _open_tar(path, what):
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise UserError(f"{what} {path} is not a readable tar/tgz archive ({err})") from None


def _texts(root, path):
    return [" ".join(e.text.split()) for e in root.findall(path) if e.text and e.text.strip()]


def parse_report(xml_bytes):
    """The datas.json entries (image id -> entry) of one report XML; ValueError if it is not a report."""
    root = ET.fromstring(xml_bytes)
    uid_element = root.find("uId")
    uid = store.safe_id(uid_element.get("id") if uid_element is not None else None)
    if uid is None:
        raise ValueError("no usable <uId id=...>")
    major = _texts(root, "MeSH/major")
    sections = {(e.get("Label") or "").lower(): " ".join((e.text or "").split())
                for e in root.iter("AbstractText")}
    report = {  # the same for every image of the report
        "uid": uid, "major": major, "minor": _texts(root, "MeSH/minor"), "automatic": _texts(root, "MeSH/automatic"),
        "findings": sections.get("findings", ""), "impression": sections.get("impression", ""),
        "license": " ".join((root.findtext("ccLicense") or "").split()),
        "license_url": " ".join((root.findtext("licenseURL") or "").split()),
    }
    entries = {}
    for parent in root.findall("parentImage"):
        image_id = store.safe_id(parent.get("id"))
        if image_id is None:
            continue
        entries[image_id] = {
            "id": image_id, **report,
            "img": None, "file": store.image_file(image_id),  # no Open-i URL: the image came from the archive
            "type": "Major", "items": major,
        }
    return entries


def read_reports(path):
    """Image id -> datas.json entry for every image of every report XML in the archive."""
    entries, reports, bad = {}, 0, []
    with _open_tar(path, "reports archive") as tar:
        for member in tar:
            if not (member.isfile() and member.name.lower().endswith(".xml")):
                continue
            try:
                entries.update(parse_report(tar.extractfile(member).read()))
                reports += 1
            except (ET.ParseError, ValueError) as err:
                bad.append(f"{member.name}: {err}")
    if not reports:
        raise UserError(f"no report XMLs (<uId>, <MeSH>, <parentImage>) in {path}; "
                        "give the NLMCXR_reports.tgz archive to --reports" + (f" ({bad[0]})" if bad else ""))
    return entries, bad


def build_from_archives(out, png_archive, reports_archive, max_image_bytes=10 * 2**20, progress=True):
    """Write OUT/images/<id>.png for each report image found in ``png_archive``, then OUT/datas.json.

    Images already in OUT are kept (a killed run resumes); a file that is not a complete PNG is reported, not kept.
    """
    out = os.fspath(out)
    reports, bad_reports = read_reports(reports_archive)
    failed, not_in_reports = {}, 0
    with store.locked_output(out):
        if os.path.exists(os.path.join(out, store.API_STATE_FILE)):
            raise UserError(f"{out} holds a download from the Open-i API; build from the archives into another folder")
        done = store.finished_images(out)
        with _open_tar(png_archive, "image archive") as tar, \
                progress_bar(desc="images", unit="img", total=len(reports), enabled=progress) as bar:
            for member in tar:
                name = os.path.basename(member.name)
                if not (member.isfile() and name.lower().endswith(".png")):
                    continue
                image_id = store.safe_id(name[:-4])
                if image_id not in reports:
                    not_in_reports += 1
                    continue
                if image_id in done:
                    bar.update(1)
                    continue
                if member.size > max_image_bytes:
                    failed[image_id] = f"{member.name} is {member.size} bytes, over the {max_image_bytes} byte cap"
                    continue
                source = tar.extractfile(member)
                try:
                    store.save_image(out, image_id, iter(lambda: source.read(64 * 1024), b""), max_image_bytes)
                    done.add(image_id)
                    bar.update(1)
                except store.BadImage as err:
                    failed[image_id] = f"{member.name}: {err}"
        if not done & set(reports):
            raise UserError(f"none of the {len(reports)} report images (<image id>.png) is in {png_archive}; "
                            "give the NLMCXR_png.tgz archive to --from-archive")
        datas = {image_id: entry for image_id, entry in reports.items() if image_id in done}
        store.save_datas(out, datas)
    return {"entries": len(datas), "images": len(datas), "failed": failed, "bad_reports": bad_reports,
            "missing": len(reports) - len(datas) - len(failed), "not_in_reports": not_in_reports}
