"""Open-i API client: page through ``/api/search``, catalogue each result in datas.json, download its PNG.

Resuming: the next page window is saved in ``OUT/.scraper-state.json`` after the page's entries are saved in
datas.json (re-reading a page is harmless: entries are keyed by image id), and an image counts as done when its
verified file exists, so a rerun fetches only the pages and images that are still missing.

Hostile or broken servers: every answer (API page or image) is streamed and read only up to a byte cap, and must
come in whole within a wall-clock deadline from its request; ``--timeout`` alone bounds each socket read, which a
server sending a byte now and then never trips.
"""

import json
import os
import re
import socket
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from urllib.parse import urljoin, urlsplit

import requests
from bs4 import BeautifulSoup
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util.retry import Retry

from models.errors import UserError, counted
from models.fileio import read_json, write_json
from models.progress import progress_bar
from scraper import store

DEFAULT_BASE_URL = "https://openi.nlm.nih.gov"
USER_AGENT = ("Xvision-MX-scraper/1.0 (research download of the Indiana University chest X-ray collection; "
              "python-requests; about 1 API request per second)")
PAGE_SIZE = 100
MAX_RETRY_AFTER = 120  # seconds: a longer Retry-After is capped rather than obeyed


class ScrapeStopped(Exception):
    """The host is unreachable or keeps failing: the run stops; what is saved stays valid for a rerun."""


class ImageFailed(Exception):
    """One image could not be downloaded; the others go on."""


class DeadlinePassed(Exception):
    """An answer did not come in whole within the deadline; it was abandoned (worth another try)."""


class _BrokenBody(Exception):
    """Reading a body failed midway (connection lost, truncated, undecodable; worth another try)."""


class _Deadline:
    """The wall-clock limit on one request's answer: its headers and its whole body within ``seconds``.

    The time starts when the request goes out on a connection (see _DeadlineConnection; each HTTP try, urllib3's
    retries and redirects included, gets the full time, so waits between tries do not count). When it is up, the
    answer's socket is shut down: any read blocked on it ends at once, and ``expired`` tells that this was why.
    """

    _lock = threading.Lock()  # one for all: a connection may pass to another thread's request

    def __init__(self, seconds):
        self.seconds, self.expired = seconds, False
        self._conn = self._sock = self._timer = None
        self._try = 0  # which HTTP try the running timer is for

    def __enter__(self):
        _active.deadline = self
        return self

    def __exit__(self, *exc):
        _active.deadline = None
        self._release()

    def _release(self):
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self._conn is not None and self._conn.deadline is self:
                self._conn.deadline = None
            self._conn = self._sock = self._timer = None

    def sending(self, conn):
        """A request of this thread goes out on ``conn``: its time starts now."""
        self._release()
        with self._lock:
            self.expired, self._try = False, self._try + 1
            self._conn, conn.deadline = conn, self
            self._timer = threading.Timer(self.seconds, self._expire, (self._try,))
            self._timer.daemon = True
            self._timer.start()

    def receiving(self, conn):
        """The answer is about to be read from ``conn``'s socket (which http.client drops from ``conn`` after the
        headers of an answer that ends with the connection, while the body is still read from it)."""
        with self._lock:
            if self._conn is conn and conn.deadline is self:
                self._sock = conn.sock

    def _expire(self, try_):
        with self._lock:
            if try_ != self._try or self._conn is None or self._conn.deadline is not self:
                return  # answered, the connection moved on, or this timer was for an earlier try
            self.expired = True
            sock = self._sock or self._conn.sock  # None while connecting (bounded by --timeout): see getresponse
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def passed(self):
        return DeadlinePassed(f"no complete answer within the {self.seconds:g} s deadline (--deadline)")


_active = threading.local()  # .deadline: the _Deadline of the request this thread is making, if any


class _DeadlineConnection:
    """Mixed into urllib3's connections: a request sent while this thread has an active _Deadline is held to it."""

    deadline = None

    def request(self, *args, **kwargs):
        deadline = getattr(_active, "deadline", None)
        if deadline is not None:
            deadline.sending(self)
        return super().request(*args, **kwargs)

    def getresponse(self):
        deadline = self.deadline
        try:
            if deadline is not None:
                deadline.receiving(self)
                if deadline.expired:  # it ran out while connecting or sending
                    raise deadline.passed()
            response = super().getresponse()
        except Exception:
            if deadline is not None and deadline.expired:
                raise deadline.passed() from None  # not an OSError: urllib3 passes it on without retrying
            raise
        if response.status >= 300:  # urllib3 reads the whole body of one it retries (429/5xx), however long: drop it
            response.drain_conn = lambda: (response.close(), response.release_conn())
        return response


class _HTTPConnection(_DeadlineConnection, HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections (direct or through an HTTP proxy) obey the thread's _Deadline."""

    pools = {"http": _HTTPPool, "https": _HTTPSPool}

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self.pools

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # not SOCKS, whose pools are its own
            manager.pool_classes_by_scheme = self.pools
        return manager


class _CappedRetry(Retry):
    def get_retry_after(self, response):
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, MAX_RETRY_AFTER)


class _SameHostSession(requests.Session):
    """A Session that refuses to follow a redirect to another host."""

    origin = None

    def get_redirect_target(self, resp):
        target = super().get_redirect_target(resp)
        if target and origin_of(urljoin(resp.url, target)) != self.origin:
            raise requests.exceptions.InvalidURL(f"refused redirect off {self.origin} to {target}")
        if target:  # requests would read the redirect's whole body, however long: drop it unread
            resp.close()
        return target


def origin_of(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def make_session(base_url, retries, backoff, workers):
    retry = _CappedRetry(total=retries, connect=retries, read=retries, status=retries, other=0,
                         backoff_factor=backoff, status_forcelist=(429, 500, 502, 503, 504),
                         allowed_methods=frozenset({"GET"}), respect_retry_after_header=True)
    session = _SameHostSession()
    session.origin = origin_of(base_url)
    session.headers["User-Agent"] = USER_AGENT
    adapter = _DeadlineAdapter(max_retries=retry, pool_connections=2, pool_maxsize=max(4, workers))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def image_url(base_url, path):
    """Absolute URL of a server image path, which must stay on the base host (None if it would not)."""
    if not isinstance(path, str) or not path:
        return None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path):  # absolute URL: only if it is on the base host
        url = path
    else:  # a path; Open-i's own links may start with '//' (e.g. '//imgs/512/...'), which is still a path here
        url = origin_of(base_url) + "/" + path.lstrip("/")
    return url if origin_of(url) == origin_of(base_url) and urlsplit(url).scheme in ("http", "https") else None


def _body(response, cap, deadline):
    """The byte chunks of streamed ``response``'s body, read up to ``cap`` bytes and within ``deadline``.

    Raises store.TooLarge past the cap (as soon as Content-Length says so, else once the bytes read pass it),
    DeadlinePassed when the deadline cut the body short, and _BrokenBody when reading it failed otherwise.
    """
    length = _int_or_none(response.headers.get("Content-Length"))
    if length is not None and length > cap:
        raise store.TooLarge(f"{length} bytes, over the {_mib(cap)} MiB cap")
    received = 0
    try:
        for chunk in response.iter_content(64 * 1024):
            received += len(chunk)
            if received > cap:
                raise store.TooLarge(f"larger than the {_mib(cap)} MiB cap")
            yield chunk
    except requests.RequestException as err:
        raise deadline.passed() if deadline.expired else _BrokenBody(_short(err)) from None
    if deadline.expired:  # the socket was shut down: a body without a length just ends there, incomplete
        raise deadline.passed()


def abstract_sections(html):
    """``{'findings': ..., 'impression': ...}`` as plain text from an item's HTML abstract (bold labels)."""
    sections, label = {}, None
    if not isinstance(html, str) or not html.strip():
        return sections
    soup = BeautifulSoup(html, "html.parser")
    for line_break in soup.find_all("br"):
        line_break.replace_with("\n")
    for text in soup.find_all(string=True):
        if text.find_parent(["b", "strong"]) is not None:
            label = text.strip().rstrip(":").strip().lower() or label
            continue
        if label:
            sections[label] = sections.get(label, "") + text
    return {key: " ".join(value.split()) for key, value in sections.items()}


def entry_from_item(item, base_url):
    """One datas.json entry from an API result, or (None, reason) when the result cannot be used safely."""
    if not isinstance(item, dict):
        return None, "result is not an object"
    path = item.get("imgLarge")
    url = image_url(base_url, path)
    if url is None:
        return None, f"image path {path!r} is missing or not on {origin_of(base_url)}"
    stem = os.path.basename(urlsplit(url).path)
    image_id = store.safe_id(stem[:-4]) if stem.lower().endswith(".png") else None
    if image_id is None:
        return None, f"image name {stem!r} is not a safe PNG file name"
    mesh = item.get("MeSH") if isinstance(item.get("MeSH"), dict) else {}
    major = [t for t in mesh.get("major") or [] if isinstance(t, str)]
    minor = [t for t in mesh.get("minor") or [] if isinstance(t, str)]
    sections = abstract_sections(item.get("abstract"))
    uid = item.get("uid") if store.safe_id(item.get("uid")) else store.report_id_of(image_id)
    return {
        "id": image_id, "uid": uid, "major": major, "minor": minor,
        "findings": sections.get("findings", ""),
        "impression": sections.get("impression") or " ".join(str(item.get("impression") or "").split()),
        "img": url, "file": store.image_file(image_id),
        "license": item.get("ccLicense") or "", "license_url": item.get("licenseURL") or "",
        "type": "Major", "items": major,  # the original scraper's fields
    }, None


class Scraper:
    def __init__(self, out, base_url=DEFAULT_BASE_URL, collection="cxr", query="", limit=None, delay=1.0,
                 workers=4, retries=5, backoff=1.0, timeout=30.0, max_image_bytes=10 * 2**20, max_api_bytes=8 * 2**20,
                 deadline=120.0, progress=True):
        self.out, self.base_url = os.fspath(out), base_url.rstrip("/")
        self.collection, self.query, self.limit = collection, query, limit
        self.delay, self.workers, self.retries, self.backoff = delay, workers, retries, backoff
        self.timeout, self.deadline = timeout, deadline
        self.max_image_bytes, self.max_api_bytes = max_image_bytes, max_api_bytes
        self._progress = progress  # a bar on a terminal, plain lines in a log; False: nothing
        self.session = make_session(self.base_url, retries, backoff, workers)
        self.datas = {}
        self.failed = {}  # image id -> reason
        self.skipped = []  # API results that could not be used

    # ---- catalogue -------------------------------------------------------------------------------------------
    def _state(self):
        path = os.path.join(self.out, store.API_STATE_FILE)
        state = read_json(path, "scraper state") if os.path.exists(path) else {}
        if not isinstance(state, dict):
            raise UserError(f"{path} is damaged; delete it (finished images are kept) and run again")
        wanted = {"base_url": self.base_url, "collection": self.collection, "query": self.query}
        started = state.get("next", 1) > 1 or bool(self.datas)
        if state and started and {k: state.get(k) for k in wanted} != wanted:
            raise UserError(f"{self.out} holds a scrape of {state.get('collection')!r} query {state.get('query')!r} "
                            f"from {state.get('base_url')}; use the same options or another output folder")
        if not started:  # nothing fetched yet: the options may change
            state = {}
        return {**wanted, "next": 1, "total": None, "skipped": [], **state}

    def _get(self, url, **kwargs):
        try:
            return self.session.get(url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise ScrapeStopped(f"cannot reach {origin_of(self.base_url)} ({_short(err)})") from None

    @contextmanager
    def _open(self, url, cap, **kwargs):
        """GET ``url`` streamed, under the deadline: ``(response, chunks of its body)``, the body read by _body."""
        with _Deadline(self.deadline) as deadline:
            response = self._get(url, stream=True, **kwargs)
            with response:
                yield response, _body(response, cap, deadline)

    def fetch_page(self, first, last):
        """The ``list`` of results ``first``..``last`` and the reported total; a bad body is asked for again."""
        params = {"query": self.query, "coll": self.collection, "m": first, "n": last}
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._backoff_seconds(attempt - 1))
            try:
                with self._open(self.base_url + "/api/search", self.max_api_bytes, params=params) as (response, body):
                    if response.status_code != 200:
                        raise ScrapeStopped(f"the API answered HTTP {response.status_code} for {response.url}; "
                                            "check --base-url, --collection and --query")
                    content = b"".join(body)
            except _BrokenBody as err:
                reason = f"a broken body ({err})"
                continue
            except DeadlinePassed as err:
                reason = str(err)
                continue
            except store.TooLarge as err:  # asking again would get the same
                raise ScrapeStopped(f"the API answer for results {first}-{last} is {err} (--max-api-mb)") from None
            except requests.exceptions.RetryError:
                raise ScrapeStopped(f"the API kept failing for results {first}-{last} (HTTP 5xx/429)") from None
            except requests.RequestException as err:
                raise ScrapeStopped(f"the API request failed ({_short(err)})") from None
            try:
                data = json.loads(content)  # JSON is UTF-8 (or -16/-32, which json detects)
            except ValueError as err:
                reason = f"invalid JSON ({_short(err)})"
                continue
            if isinstance(data, dict) and isinstance(data.get("list", []), list):
                return data.get("list", []), _int_or_none(data.get("total"))
            reason = "JSON without a 'list' of results"
        raise ScrapeStopped(f"the API kept answering {reason} for results {first}-{last}")

    def catalogue(self):
        """Page through the search results, saving datas.json and the next window after each page."""
        state = self._state()
        self.skipped = state["skipped"]
        # written before datas.json: it marks OUT as an API download
        write_json(os.path.join(self.out, store.API_STATE_FILE), state)
        pages = 0
        bar = progress_bar(desc="catalogue", unit="result", total=self._wanted(state["total"]), enabled=self._progress,
                           initial=state["next"] - 1)
        with bar:
            while self._wanted(state["total"]) is None or state["next"] <= self._wanted(state["total"]):
                if pages:
                    time.sleep(self.delay)  # polite pause between API calls
                first = state["next"]
                last = first + PAGE_SIZE - 1 if self.limit is None else min(first + PAGE_SIZE - 1, self.limit)
                results, total = self.fetch_page(first, last)
                state["total"] = total if total is not None else state["total"]
                results = results[: last - first + 1]
                if not results:  # no more results, whatever the total said
                    state["total"] = first - 1
                for item in results:
                    entry, reason = entry_from_item(item, self.base_url)
                    if entry is None:
                        if reason not in state["skipped"]:
                            state["skipped"].append(reason)
                    else:
                        self.datas[entry["id"]] = entry
                store.save_datas(self.out, self.datas)
                state["next"] = first + len(results)
                write_json(os.path.join(self.out, store.API_STATE_FILE), state)
                bar.total = self._wanted(state["total"])
                bar.update(len(results))
                pages += 1

    def _wanted(self, total):
        if total is None:
            return self.limit
        return total if self.limit is None else min(total, self.limit)

    # ---- images ----------------------------------------------------------------------------------------------
    def _backoff_seconds(self, attempt):
        return min(60.0, self.backoff * 2**attempt)

    def download(self, image_id, url):
        """Download one image into place; ImageFailed if it stays bad, ScrapeStopped if the host is gone."""
        reason = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._backoff_seconds(attempt - 1))
            try:
                with self._open(url, self.max_image_bytes) as (response, body):
                    if response.status_code != 200:
                        raise ImageFailed(f"HTTP {response.status_code} for {url}")
                    store.save_image(self.out, image_id, body, self.max_image_bytes)
                    return
            except requests.exceptions.RetryError:
                raise ImageFailed(f"the server kept failing (HTTP 5xx/429) for {url}") from None
            except requests.RequestException as err:
                raise ImageFailed(f"{url}: {_short(err)}") from None
            except store.TooLarge as err:
                raise ImageFailed(f"{url}: {err} (--max-image-mb)") from None
            except (store.BadImage, _BrokenBody, DeadlinePassed) as err:
                reason = _short(err)  # broken, truncated or too slow: try again
        raise ImageFailed(f"{url}: {reason} (after {self.retries + 1} tries)")

    def download_missing(self):
        done = store.finished_images(self.out)
        todo = [(i, e["img"]) for i, e in self.datas.items()
                if i not in done and i not in self.failed and image_url(self.base_url, e.get("img")) == e["img"]]
        stop = threading.Event()

        def work(image_id, url):
            if stop.is_set():
                return
            try:
                self.download(image_id, url)
            except ImageFailed as err:
                self.failed[image_id] = str(err)
            except ScrapeStopped:
                stop.set()
                raise

        with ThreadPoolExecutor(self.workers) as pool, \
                progress_bar(total=len(self.datas), initial=len(done & set(self.datas)), desc="images", unit="img",
                             enabled=self._progress) as bar:
            futures = [pool.submit(work, *job) for job in todo]
            for future in futures:
                future.add_done_callback(lambda _: bar.update(1))
            try:
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            finally:  # on a failure or Ctrl-C: start nothing new, let the running downloads end
                stop.set()
                for future in futures:
                    future.cancel()
        for future in finished:
            if future.exception() is not None:
                raise future.exception()

    def run(self):
        with store.locked_output(self.out):
            self.datas = store.load_datas(os.path.join(self.out, store.DATAS_FILE))
            if self.datas and not os.path.exists(os.path.join(self.out, store.API_STATE_FILE)):
                raise UserError(f"{self.out}/datas.json was not made by an Open-i API download (built from the "
                                "archives, or by the original scraper?); download into another folder")
            try:
                self.catalogue()
                self.download_missing()
            finally:
                self.session.close()
        return self.summary()

    def summary(self):
        done = store.finished_images(self.out)
        return {"entries": len(self.datas), "images": len(done & set(self.datas)), "failed": dict(self.failed),
                "skipped": list(self.skipped)}


def saved_summary(out):
    """What a stopped run left in OUT, in words."""
    path = os.path.join(os.fspath(out), store.DATAS_FILE)
    try:
        datas = store.load_datas(path)
    except UserError:
        datas = {}
    images = len(store.finished_images(out) & set(datas))
    return f"{counted(len(datas), 'catalogued result')} and {counted(images, 'image')} are saved in {out}"


def _mib(size):
    return f"{size / 2**20:g}"


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _short(err):
    """The innermost reason of a (urllib3-wrapped) exception, in one short line."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "reason", None)
        if inner is None and err.args and isinstance(err.args[0], BaseException):
            inner = err.args[0]
        if not isinstance(inner, BaseException):
            break
        err = inner
    text = " ".join(str(err).split()) or type(err).__name__
    return text.split(">: ", 1)[-1][:300]  # drop urllib3's '<...Connection object at 0x...>: ' prefix
