"""HTML pages of results: one file each that opens anywhere, offline, and prints on A4.

Everything is inside the file: the styles inline, the figures as data URIs, no script. Its Content-Security-Policy
forbids fetching anything, so a page that slipped a reference out would show a hole, not a request. Jinja2 renders
the templates in ``models/templates`` with autoescaping on, so a file, class or folder name shows as text, whatever
characters it holds."""

import base64
import io
import math
import os

from models.fileio import atomic_path

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
PHOTO_QUALITY = 82  # JPEG quality of embedded radiographs: about a tenth of the PNG's bytes, no loss seen at page size
PHOTO_WIDTH = 1400  # pixels: wider radiograph grids are scaled down (an A4 page is ~1100 px at 130 dpi)
NOT_AVAILABLE = "n/a"


def environment():
    import jinja2

    # optional keys of report.json (absent for three classes, for older heads) read as empty: hence not StrictUndefined
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(num=number, pct=percent, span=span, pct_span=percent_span)
    return env


def _missing(value):
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def number(value, digits=3):
    """``value`` with ``digits`` decimals, or n/a."""
    return NOT_AVAILABLE if _missing(value) else f"{value:.{digits}f}"


def percent(value, digits=1):
    return NOT_AVAILABLE if _missing(value) else f"{100 * value:.{digits}f} %"


def span(interval, digits=3):
    """A 95% interval as "low–high", or n/a."""
    if interval is None or any(_missing(v) for v in interval):
        return NOT_AVAILABLE
    return f"{interval[0]:.{digits}f}–{interval[1]:.{digits}f}"


def percent_span(interval, digits=1):
    if interval is None or any(_missing(v) for v in interval):
        return NOT_AVAILABLE
    return f"{100 * interval[0]:.{digits}f}–{100 * interval[1]:.{digits}f} %"


def _uri(kind, data):
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def file_uri(path, photo=False):
    """The image file at ``path`` as a data URI, or None where it is missing. ``photo``: radiographs (grids of films
    with heatmaps), re-encoded as JPEG and scaled to ``PHOTO_WIDTH`` at most; plots stay PNG (sharp lines, few
    bytes)."""
    if not os.path.isfile(path):
        return None
    if not photo:
        with open(path, "rb") as f:
            return _uri("image/png", f.read())
    from PIL import Image

    with Image.open(path) as image:
        return photo_uri(image)


def photo_uri(image, width=PHOTO_WIDTH):
    """A PIL image (or an H x W x 3 uint8 array) as a JPEG data URI, ``width`` pixels wide at most."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=PHOTO_QUALITY, optimize=True)
    return _uri("image/jpeg", buffer.getvalue())


def write_page(path, template, **context):
    """Render ``template`` with ``context`` into ``path`` (atomically: a reader never sees half a page)."""
    html = environment().get_template(template).render(**context)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(html)
    return path
