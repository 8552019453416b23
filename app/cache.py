"""Results computed once per store state: a bounded in-memory result cache for the read doors, with ETag/304,
Cache-Control and gzip.

The data only change when a write transaction commits (ingest, weights, areas, layers, packs...), and every
transaction bumps :attr:`geodata.store.Store.version`.  So a result is a pure function of (store version,
canonical query): it is computed once, kept in memory (bounded by ``HARMSPOT_CACHE_MB``, least recently used
evicted first) and dropped as soon as the version moves on.  Identical requests that arrive while the result is
being computed wait for that one computation instead of starting their own.

The calls (one store, one cache: ``state.cache``, built by app.state.open_state):

* :func:`cached_value` (sync code: a ``def`` route, an engine call in the threadpool) - a computed object (a
  ``HotspotResult``, a Gi* result, a ranked frame) shared by several representations or pages.  An OGC page is
  a slice of one cached result, never a recomputation::

      result = cached_value(state, ("harm_spots", q), lambda: harm_spots(state.store, q, state.default_weights))
      page = result.cells.iloc[req.offset: req.offset + req.limit]      # slice it; never mutate a cached value

  (``app.routes.hotspots.hotspot_result`` and ``gistar_result`` are these for harm spots and Gi*.)

* :func:`cached_response_async` (an ``async def`` route) / :func:`cached_response` (a ``def`` route) - a whole
  HTTP response (body bytes, media type, headers), with an ``ETag`` derived from (process, store version, key),
  ``Cache-Control: private, no-cache`` (browsers and GIS clients keep it and revalidate with ``If-None-Match``:
  a 304 costs no computation at all) and a gzip copy made once.  The async form answers a hit on the event loop
  with no thread hop and runs ``render`` in the threadpool on a miss; build the key without blocking::

      @router.get("/thing")
      async def get_thing(request: Request, state: State, q: Query_, format: str = "json") -> Response:
          return await cached_response_async(request, state, ("thing", q, format),
                                             lambda: render(compute(state.store, q), format))

* :func:`cached_route` - a decorator turning a ``def`` route that declares ``request`` and ``state`` into a
  cached one keyed by its name and the whole query string (the OGC doors, which echo raw parameters in links).

The key is any tuple of pydantic models, dataclasses, dicts, lists and scalars; :func:`canonical` turns it into
stable JSON (sorted keys, models dumped with their field names), so parameters given in any order or spelling that
the query model normalises share one entry (``HotspotQuery`` resolves the default dataset before it is keyed; a new
field such as ``method`` is covered automatically).  **Everything that changes the result must be in the key**:
the query, the format, the disclosure policy, page parameters, defaults resolved from the clock (``date.today()``).
The request path, base URL (absolute links) and ``Accept`` header are added by :func:`cached_response` itself.

Only 200 responses are kept; an exception (a 422, a StoreError) is passed to every waiter of that computation and
nothing is cached.  ``HARMSPOT_CACHE_MB=0`` turns caching off (duplicate in-flight requests are still shared).
:class:`GzipMiddleware` compresses the other JSON/GeoJSON/CSV responses, off the event loop; static files have
their own gzip copies (app/assets.py).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import gzip
import hashlib
import json
import secrets
import sys
import threading
from collections import OrderedDict, deque
from datetime import date, datetime
from typing import Any, Callable, TypeVar

import anyio
import numpy as np
import pandas as pd
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

T = TypeVar("T")
COMPRESSIBLE = ("application/json", "application/geo+json", "text/csv", "application/vnd.oai.openapi+json",
                "text/html", "text/plain")
MIN_GZIP = 1024          # smaller bodies are sent as they are
MAX_ALIASES = 20_000     # raw requests remembered for the fast path (cleared when full)
INLINE_GZIP = 16 * 1024  # the middleware compresses larger bodies in a worker thread, not on the event loop
GZIP_LEVEL = 6


# ------------------------------------------------------------------------------------------------- keys
def _plain(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return {"__model__": type(v).__name__, **_plain(v.model_dump(mode="json"))}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {"__dataclass__": type(v).__name__, **_plain(dataclasses.asdict(v))}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = [_plain(x) for x in v]
        return sorted(items, key=json.dumps) if isinstance(v, (set, frozenset)) else items
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    raise TypeError(f"cache key part of type {type(v).__name__} cannot be canonicalised; pass its parameters")


def canonical(key: Any) -> str:
    """Stable text for a key: the same parameters give the same text whatever their order."""
    return json.dumps(_plain(key), sort_keys=True, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------------- sizes
def estimate_size(obj: Any, _depth: int = 0) -> int:
    """Approximate bytes held by ``obj`` (frames, arrays, containers, dataclasses; nested a few levels)."""
    if _depth > 4:
        return sys.getsizeof(obj)
    if isinstance(obj, pd.DataFrame):  # numeric columns by their dtype; others from a sample of their values
        n = len(obj)
        total = 256 + 8 * n  # the index
        for i, dtype in enumerate(obj.dtypes):
            if isinstance(dtype, np.dtype) and dtype != object:
                total += dtype.itemsize * n
            else:
                total += 8 * n + _object_contents(obj.iloc[:, i], _depth + 1)
        return total
    if isinstance(obj, (pd.Series, pd.Index)):
        if obj.dtype == object and len(obj):  # lists/dicts per cell (top offences): pandas counts only the shells
            return 8 * len(obj) + _object_contents(obj, _depth)
        return int(obj.memory_usage(deep=True))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (bytes, bytearray, str)):
        return sys.getsizeof(obj)
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(estimate_size(k, _depth + 1) + estimate_size(v, _depth + 1)
                                        for k, v in list(obj.items())[:10_000])
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sys.getsizeof(obj) + sum(estimate_size(v, _depth + 1) for v in list(obj)[:10_000])
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(estimate_size(getattr(obj, f.name), _depth + 1) for f in dataclasses.fields(obj)) + 64
    if hasattr(obj, "__dict__"):
        return estimate_size(vars(obj), _depth + 1)
    return sys.getsizeof(obj)


def _object_contents(values: pd.Series | pd.Index, _depth: int, samples: int = 16) -> int:
    """Bytes held by the objects of an object column beyond its pointers, from ``samples`` evenly spaced values."""
    n = len(values)
    if not n:
        return 0
    step = max(1, n // samples)
    spaced = values[::step] if isinstance(values, pd.Index) else values.iloc[::step]
    return int(n * np.mean([estimate_size(v, _depth + 1) for v in spaced]))


# ------------------------------------------------------------------------------------------------ cache
class ComputeSlots:
    """At most ``n`` computations at once, granted first come, first served (0: no limit).

    A computation holds a slot from start to end; one started inside another in the same thread (a response
    rendered from a cached value) runs in its caller's slot. A thread that waits for someone else's computation
    gives its slot back while it waits, so a slot is only ever held by work that runs and no wait can close a
    cycle. Why a limit at all (docs/serving.md): fifty distinct queries at once in fifty threads contend for the
    GIL with the event loop, which then answered even cached requests in up to a second.
    """

    def __init__(self, n: int):
        self.n = n
        self._lock = threading.Lock()
        self._free = n
        self._queue: deque[threading.Event] = deque()
        self._local = threading.local()

    def _held(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def _acquire(self) -> None:
        with self._lock:
            if self._free > 0 and not self._queue:
                self._free -= 1
                return
            turn = threading.Event()
            self._queue.append(turn)
        turn.wait()  # release() handed this thread its slot

    def _release(self) -> None:
        with self._lock:
            if self._queue:
                self._queue.popleft().set()  # the slot passes straight to the longest waiter
            else:
                self._free += 1

    def run(self, compute: Callable[[], T]) -> T:
        """``compute()`` in a slot (its caller's, when it already holds one)."""
        if self.n <= 0 or self._held():
            return compute()
        self._acquire()
        self._local.depth = 1
        try:
            return compute()
        finally:
            self._local.depth = 0
            self._release()

    def wait(self, event: threading.Event) -> None:
        """Wait for another thread's computation, without holding a slot meanwhile."""
        if self.n <= 0 or not self._held():
            event.wait()
            return
        self._release()
        try:
            event.wait()
        finally:
            self._acquire()


class _Flight:
    """One computation in progress; duplicates wait on its event."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class ResultCache:
    """Values keyed by (store version, canonical key); bounded in bytes, LRU; old versions dropped on sight.

    Thread-safe.  ``get(version, key, compute)`` returns the cached value, waits for an identical computation in
    flight, or computes it (outside the lock) and keeps it if the store has not moved on meanwhile.
    """

    def __init__(self, max_bytes: int, max_computing: int = 0):
        self.max_bytes = max_bytes
        self.slots = ComputeSlots(max_computing)  # at most this many computations at once (0: no limit)
        self.nonce = secrets.token_hex(4)  # ETags of another process (or an earlier run) never match
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, str], tuple[Any, int]] = OrderedDict()
        self._inflight: dict[tuple[int, str], _Flight] = {}
        self._aliases: dict[tuple, tuple[str, str]] = {}  # raw request -> (response key, ETag), this version
        self._version = -1
        self.bytes = 0
        self.stats = {"hits": 0, "misses": 0, "waits": 0, "evictions": 0, "uncacheable": 0}

    def get(self, version: int, key: str, compute: Callable[[], T],
            sizeof: Callable[[T], int | None] = estimate_size) -> T:
        """The value for ``key`` at ``version``; ``sizeof(value)`` is its cost in bytes, None: do not keep it."""
        slot = (version, key)
        with self._lock:
            if version > self._version:  # a write committed: nothing older can be asked for again
                self._entries.clear()
                self._aliases.clear()
                self.bytes = 0
                self._version = version
            hit = self._entries.get(slot)
            if hit is not None:
                self._entries.move_to_end(slot)
                self.stats["hits"] += 1
                return hit[0]
            flight = self._inflight.get(slot)
            owner = flight is None
            if owner:
                flight = self._inflight[slot] = _Flight()
                self.stats["misses"] += 1
            else:
                self.stats["waits"] += 1
        assert flight is not None
        if not owner:
            self.slots.wait(flight.event)
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            value = self.slots.run(compute)
            flight.value = value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._inflight.pop(slot, None)
            flight.event.set()
        self._keep(slot, value, sizeof)
        return value

    def _keep(self, slot: tuple[int, str], value: Any, sizeof: Callable[[Any], int | None]) -> None:
        if self.max_bytes <= 0:
            return
        size = sizeof(value)
        with self._lock:
            if size is None or slot[0] != self._version or size > self.max_bytes // 4:  # stale, or too big to be worth it
                self.stats["uncacheable"] += 1
                return
            old = self._entries.pop(slot, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[slot] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes and self._entries:
                _, (_, s) = self._entries.popitem(last=False)
                self.bytes -= s
                self.stats["evictions"] += 1

    def peek(self, version: int, key: str) -> Any | None:
        """The cached value or None, without computing or waiting (safe on the event loop)."""
        with self._lock:
            hit = self._entries.get((version, key))
            if hit is None:
                return None
            self._entries.move_to_end((version, key))
            self.stats["hits"] += 1
            return hit[0]

    def remember(self, version: int, raw: tuple, key: str, etag: str) -> None:
        """Note that the raw request ``raw`` was answered by the response kept under ``key`` (see recall)."""
        with self._lock:
            if version == self._version and (version, key) in self._entries:
                if len(self._aliases) >= MAX_ALIASES:
                    self._aliases.clear()
                self._aliases[raw] = (key, etag)

    def recall(self, version: int, raw: tuple) -> tuple[Any, str] | None:
        """(response, ETag) a byte-identical earlier request got at this store version, or None."""
        with self._lock:
            alias = self._aliases.get(raw) if version == self._version else None
            hit = self._entries.get((version, alias[0])) if alias else None
            if hit is None:
                return None
            self._entries.move_to_end((version, alias[0]))
            self.stats["hits"] += 1
            return hit[0], alias[1]

    def describe(self) -> dict:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self.bytes, "max_bytes": self.max_bytes,
                    "store_version": self._version, **self.stats}


# ------------------------------------------------------------------------------------------ the doors
def _cache_of(state) -> ResultCache:
    return state.cache


def cached_value(state, key: Any, compute: Callable[[], T]) -> T:
    """``compute()`` once per store state and canonical ``key`` (see the module docstring). Sync code only."""
    return _cache_of(state).get(state.store.version, "v:" + canonical(key), compute)


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    gz: bytes | None          # gzip copy, made once (None: too small or not compressible)
    headers: tuple[tuple[str, str], ...]
    media_type: str | None
    wire: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)  # (ETag, gzip) -> message parts

    def size(self) -> int | None:
        """Bytes held; None for anything but a 200 (never kept)."""
        return len(self.body) + len(self.gz or b"") + 512 if self.status == 200 else None


def _store_response(resp: Response) -> StoredResponse:
    body = bytes(resp.body)
    ctype = resp.headers.get("content-type", resp.media_type or "")
    gz = gzip.compress(body, GZIP_LEVEL, mtime=0) if len(body) >= MIN_GZIP and ctype.startswith(COMPRESSIBLE) \
        else None
    headers = tuple((k, v) for k, v in resp.headers.items() if k not in ("content-length", "content-type"))
    return StoredResponse(resp.status_code, body, gz, headers, ctype or None)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header value allows gzip."""
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return float(q) > 0 if params.strip().startswith("q=") else True
            except ValueError:
                return True
    return False


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an If-None-Match header value names ``etag`` (weak comparison, RFC 9110 s13.1.2; ``*`` matches)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags


CACHE_CONTROL = "private, no-cache"  # keep it, but revalidate every time (cheap: 304 without recomputing)
VARY = "Accept-Encoding, X-API-Key"


def _slot(request: Request, state, key: Any) -> tuple[ResultCache, int, str, dict[str, str]]:
    cache = _cache_of(state)
    version = state.store.version
    scope, headers = request.scope, request.headers
    where = (scope.get("scheme"), headers.get("host"), scope.get("root_path", ""), scope["path"])
    text = "r:" + canonical((where, headers.get("accept"), key))
    return cache, version, text, _common(f'"{cache.nonce}-{version}-{_digest(text)}"')


def raw_request(scope) -> tuple:
    """A request as bytes, with everything besides the store version a cached response can depend on: path,
    query string, host and scheme (links), Accept (format negotiation), X-API-Key (a key's role may force the
    public output) and the day (defaults taken from the clock)."""
    headers = dict(scope.get("headers") or [])
    return (scope.get("scheme"), headers.get(b"host"), scope.get("root_path", ""), scope["path"],
            scope.get("query_string", b""), headers.get(b"accept"), headers.get(b"x-api-key"), date.today())


def cached_response(request: Request, state, key: Any, render: Callable[[], Response]) -> Response:
    """The response ``render()`` gives, computed once per store state and key; ETag, 304, gzip (module docstring).
    Sync code only."""
    cache, version, text, common = _slot(request, state, key)
    if etag_matches(request.headers.get("if-none-match"), common["ETag"]):
        return Response(status_code=304, headers=common)
    stored = cache.get(version, text, lambda: _store_response(render()), sizeof=StoredResponse.size)
    cache.remember(version, raw_request(request.scope), text, common["ETag"])
    return _send(request.headers.get("accept-encoding", ""), stored, common)


async def cached_response_async(request: Request, state, key: Any, render: Callable[[], Response]) -> Response:
    """:func:`cached_response` for an ``async def`` route: a 304 or a cached response is answered on the event
    loop with no thread hop (a dictionary look-up); a miss runs ``render()`` (and any wait for an identical
    computation in flight) in the threadpool. ``key`` must be built without blocking (no store call)."""
    cache, version, text, common = _slot(request, state, key)
    if etag_matches(request.headers.get("if-none-match"), common["ETag"]):
        return Response(status_code=304, headers=common)
    stored = cache.peek(version, text)
    if stored is None:
        stored = await run_in_threadpool(cache.get, version, text, lambda: _store_response(render()),
                                         StoredResponse.size)
    cache.remember(version, raw_request(request.scope), text, common["ETag"])
    return _send(request.headers.get("accept-encoding", ""), stored, common)


def _common(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": VARY}


def _send(accept_encoding: str, stored: StoredResponse, common: dict[str, str]) -> Response:
    headers = dict(stored.headers)
    headers.update(common)
    if stored.gz is not None and accepts_gzip(accept_encoding):
        headers["Content-Encoding"] = "gzip"
        return Response(stored.gz, status_code=stored.status, headers=headers, media_type=stored.media_type)
    return Response(stored.body, status_code=stored.status, headers=headers, media_type=stored.media_type)


def _wire(stored: StoredResponse, etag: str, accept_encoding: str) -> tuple[int, tuple, bytes]:
    """(status, raw headers, body) of :func:`_send`'s response, built once per stored response, ETag and
    encoding (a repeated request is sent from these without building a Response)."""
    gz = stored.gz is not None and accepts_gzip(accept_encoding)
    parts = stored.wire.get((etag, gz))
    if parts is None:
        response = _send("gzip" if gz else "identity", stored, _common(etag))
        parts = (response.status_code, tuple(response.raw_headers), bytes(response.body))
        if len(stored.wire) < 8:  # a few ETags per body at most (one per store version); bounded anyway
            stored.wire[(etag, gz)] = parts
    return parts


def cached_route(name: str):
    """Decorator for a sync route that declares ``request`` and ``state`` by those names: the response is
    :func:`cached_response` keyed by ``name`` and the request's whole query string (sorted; path parameters are in
    the path). For routes that read raw parameters or echo them in links (the OGC doors); normalised sharing comes
    from :func:`cached_value` inside. The signature is kept for FastAPI::

        @router.get("/collections/{collection_id}/items")
        @cached_route("ogc-items")
        def get_items(request: Request, state: State, collection_id: str, limit: str | None = None): ...
    """
    def wrap(fn):
        @functools.wraps(fn)
        async def route(*args, **kwargs):  # a hit is answered on the loop; ``fn`` runs in the threadpool
            request, state = kwargs["request"], kwargs["state"]
            # a public key (or deployment) gets public output for the same URL: never share it with internal
            key = (name, sorted(request.query_params.multi_items()), getattr(request.state, "harmspot_public", None))
            return await cached_response_async(request, state, key, lambda: fn(*args, **kwargs))
        route.__signature__ = resolved_signature(fn)
        return route
    return wrap


def resolved_signature(fn) -> inspect.Signature:
    """``fn``'s signature with its postponed (string) annotations evaluated in ``fn``'s own module: a wrapper's
    ``__globals__`` are those of the wrapper's module, where FastAPI before 0.115 looked the names up."""
    try:
        return inspect.signature(fn, eval_str=True)
    except NameError:
        return inspect.signature(fn)


# ------------------------------------------------------------------------------------------ fast path
class CachedFastPath:
    """ASGI middleware (inside the access middleware: keys are checked and audited first): a GET that is
    byte-identical to one already answered from the cache at this store version (:func:`raw_request`) gets the
    same response, or a 304, straight from memory, without routing, parameter parsing or dependencies. A miss
    (or any other request) goes through the app as usual, which is what fills the cache."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        state = getattr(getattr(scope.get("app"), "state", None), "harmspot", None)
        hit = state.cache.recall(state.store.version, raw_request(scope)) if state is not None else None
        if hit is None:
            return await self.app(scope, receive, send)
        stored, etag = hit
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []
                   if k in (b"if-none-match", b"accept-encoding")}
        if etag_matches(headers.get("if-none-match"), etag):
            await Response(status_code=304, headers=_common(etag))(scope, receive, send)
            return
        status, raw, body = _wire(stored, etag, headers.get("accept-encoding", ""))
        await send({"type": "http.response.start", "status": status, "headers": list(raw)})
        await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------ gzip middleware
class GzipMiddleware:
    """gzip for JSON, GeoJSON, CSV (and HTML/OpenAPI) responses of at least 1 KB when the client accepts it.

    A whole-body response is compressed once (large bodies in a worker thread, so the event loop never does
    more than ~16 KB of deflate); streamed responses, bodies that already carry a Content-Encoding (the cached
    responses, compressed once in :func:`cached_response`; the static files' gzip copies, app/assets.py) and
    files sent as they are (``Accept-Ranges``, a 206: their byte ranges are of the file's own bytes) pass
    through untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        accept = b""
        for k, v in scope.get("headers") or []:
            if k == b"accept-encoding":
                accept = v
        if b"gzip" not in accept.lower():
            return await self.app(scope, receive, send)
        start: dict | None = None

        async def send_gz(message):
            nonlocal start
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                ctype = headers.get(b"content-type", b"").decode("latin-1")
                if (b"content-encoding" in headers or b"accept-ranges" in headers
                        or not ctype.startswith(COMPRESSIBLE) or message.get("status", 200) in (204, 206, 304)):
                    start = None
                    await send(message)
                    return
                start = message  # held back until the body is known
                return
            if message["type"] == "http.response.body" and start is not None:
                held, start = start, None
                body = message.get("body", b"")
                if message.get("more_body") or len(body) < MIN_GZIP:  # streamed, or small: as it is
                    await send(held)
                    await send(message)
                    return
                if len(body) > INLINE_GZIP:
                    gz = await anyio.to_thread.run_sync(gzip.compress, body, GZIP_LEVEL)
                else:
                    gz = gzip.compress(body, GZIP_LEVEL)
                raw = [(k, v) for k, v in held.get("headers", []) if k.lower() not in (b"content-length", b"vary")]
                vary = [v for k, v in held.get("headers", []) if k.lower() == b"vary"]
                raw += [(b"content-encoding", b"gzip"), (b"content-length", str(len(gz)).encode()),
                        (b"vary", (vary[0] + b", Accept-Encoding") if vary else b"Accept-Encoding")]
                await send({**held, "headers": raw})
                await send({"type": "http.response.body", "body": gz})
                return
            await send(message)

        await self.app(scope, receive, send_gz)


__all__ = ["CachedFastPath", "GzipMiddleware", "ResultCache", "StoredResponse", "accepts_gzip", "cached_response",
           "cached_response_async", "cached_route", "cached_value", "canonical", "estimate_size", "etag_matches",
           "raw_request"]
