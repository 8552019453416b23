"""The browser door's static files (``/static``, and the map page at ``/map``), gzip-compressed once per file
version.

:class:`GzipMiddleware` (app/cache.py) compresses whole-body JSON/HTML answers; a file is sent by Starlette as a
stream (64 KB pieces), which the middleware passes through, and JavaScript and CSS are not in its types, so the
map's code (Leaflet's 147 kB among it) went out as it is. :class:`StaticAssets` is Starlette's ``StaticFiles``
(same paths, path checks, 404/405, HEAD through app/head.py) with one change for text files (JavaScript, CSS,
HTML, JSON, SVG, plain text) of at least 1 KB:

* the file is read and compressed **once per version** - keyed by its path, modification time (ns) and size - in a
  worker thread (never on the event loop); only the gzip copy is kept in memory (about 1 MB for the whole
  directory, Swagger UI and ReDoc included), a changed file is compressed again at its next request;
* a client sending ``Accept-Encoding: gzip`` (and no ``Range``) gets that copy, ``Content-Encoding: gzip``;
  any other client gets the file itself, streamed from disk as before (byte ranges included);
* both carry a **strong ETag** made from the file's content (its SHA-256), one per coding (``"<hash>"`` for the
  file, ``"<hash>-gzip"`` for the gzip copy, as a strong validator must differ between the two), plus
  ``Last-Modified``, ``Cache-Control: no-cache`` and ``Vary: Accept-Encoding``. ``If-None-Match`` with either
  ETag (the same file version), or else ``If-Modified-Since``, is answered ``304 Not Modified``.

``no-cache`` rather than a lifetime: the page names its assets without a version (``/static/map.js``), so a browser
must ask again to see a new release; the answer to that question is a 304 of a few hundred bytes.
"""
from __future__ import annotations

import gzip
import hashlib
import mimetypes
import os
import threading
from dataclasses import dataclass
from email.utils import formatdate, parsedate

import anyio
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from app.cache import MIN_GZIP, accepts_gzip, etag_matches

TEXT_TYPES = ("text/", "application/javascript", "application/json", "application/geo+json", "image/svg+xml",
              "application/xml")
STATIC_GZIP_LEVEL = 9  # once per file version, so the smallest copy: leaflet.js 42,434 bytes (42,650 at 6), 12 ms
CACHE_CONTROL = "no-cache"  # unversioned names: keep, but revalidate (a 304) every time
VARY = "Accept-Encoding"


@dataclass(frozen=True)
class Packed:
    """One version of a text file: its validators and its gzip copy."""
    version: tuple[int, int]  # (st_mtime_ns, st_size) of the file that was read
    etag: str                 # the file's own bytes
    gz_etag: str              # the gzip copy
    gz: bytes


def _version(st: os.stat_result) -> tuple[int, int]:
    return st.st_mtime_ns, st.st_size


def pack_file(path: str) -> Packed:
    """Read ``path`` and compress it (blocking: call it in a worker thread)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        body = f.read()
    digest = hashlib.sha256(body).hexdigest()[:32]
    return Packed(_version(st), f'"{digest}"', f'"{digest}-gzip"', gzip.compress(body, STATIC_GZIP_LEVEL, mtime=0))


class StaticAssets(StaticFiles):
    """``StaticFiles`` whose text files go out gzip-compressed from a copy made once (module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._packed: dict[str, Packed] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def file_response(self, full_path, stat_result: os.stat_result, scope: Scope, status_code: int = 200) -> Response:
        media_type = mimetypes.guess_type(str(full_path))[0] or ""  # as FileResponse guesses it
        if status_code != 200 or stat_result.st_size < MIN_GZIP or not media_type.startswith(TEXT_TYPES):
            return super().file_response(full_path, stat_result, scope, status_code)
        return _AssetResponse(self, str(full_path), stat_result, media_type)

    def peek(self, path: str, st: os.stat_result) -> Packed | None:
        """The kept copy of this version of ``path``, or None (a dictionary look-up: safe on the event loop)."""
        hit = self._packed.get(path)
        return hit if hit is not None and hit.version == _version(st) else None

    def packed(self, path: str, st: os.stat_result) -> Packed:
        """The copy of this version of ``path``, made now if needed (blocking: a worker thread). Requests for one
        file arriving together compress it once."""
        with self._guard:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            hit = self.peek(path, st)
            if hit is None:
                hit = pack_file(path)
                self._packed[path] = hit
            return hit

    def stats(self) -> dict:
        return {"files": len(self._packed), "gzip_bytes": sum(len(p.gz) for p in list(self._packed.values()))}


class _AssetResponse(Response):
    """A text file: the gzip copy, the file itself (streamed), or a 304, chosen from the request's headers."""

    def __init__(self, assets: StaticAssets, path: str, st: os.stat_result, media_type: str) -> None:
        super().__init__(status_code=200, media_type=media_type)  # a Response, so a route may return it (/map)
        self.assets, self.path, self.st = assets, path, st

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Headers(scope=scope)
        packed = self.assets.peek(self.path, self.st)
        if packed is None:
            packed = await anyio.to_thread.run_sync(self.assets.packed, self.path, self.st)
        gz = accepts_gzip(request.get("accept-encoding", "")) and "range" not in request
        headers = {"ETag": packed.gz_etag if gz else packed.etag, "Last-Modified": formatdate(self.st.st_mtime,
                   usegmt=True), "Cache-Control": CACHE_CONTROL, "Vary": VARY}
        if _not_modified(request, packed, self.st):
            response: Response = Response(status_code=304, headers=headers)
        elif gz:
            response = Response(packed.gz, media_type=self.media_type, headers={**headers, "Content-Encoding": "gzip"})
        else:
            response = FileResponse(self.path, stat_result=self.st, media_type=self.media_type, headers=headers)
        await response(scope, receive, send)


def _not_modified(request: Headers, packed: Packed, st: os.stat_result) -> bool:
    """RFC 9110 s13.1.2-3: If-None-Match (either coding's ETag) decides when present, else If-Modified-Since."""
    if_none_match = request.get("if-none-match")
    if if_none_match:
        return etag_matches(if_none_match, packed.etag) or etag_matches(if_none_match, packed.gz_etag)
    since = parsedate(request.get("if-modified-since", ""))
    modified = parsedate(formatdate(st.st_mtime, usegmt=True))
    return since is not None and modified is not None and since >= modified


__all__ = ["CACHE_CONTROL", "Packed", "StaticAssets", "pack_file"]
