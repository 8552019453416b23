"""Access control, audit log and CORS: API keys (``X-API-Key``) with roles viewer < analyst < admin.

* Keys look like ``hs_<key_id>_<secret>``. Only ``sha256(salt || secret)`` is stored, with a random 16-byte salt
  per key (the secret is 256 random bits, so a fast hash is enough; nothing guessable is hashed).
* The role a request needs is decided in ONE place, :func:`required_role`, from its method and path
  (:data:`RULES`, first match wins). :class:`AccessMiddleware` applies it to every request, including routes
  added later by other modules, so no endpoint can forget it.
* Without any active key (and ``HARMSPOT_KEYS_MODE=auto``) a service BOUND TO LOOPBACK runs in **local demo
  mode**: no key is needed, every response carries ``X-Harmspot-Mode: demo``, ``/health`` says so, only loopback
  clients without proxy headers are served. The bind address is checked at every request, so a service bound to
  anything else is never in demo mode (no key, no access), and its last admin key cannot be revoked.
  ``harmspot serve`` on a non-loopback address with no key starts keyed: with the admin key of
  ``HARMSPOT_ADMIN_KEY`` (or ``_FILE``), or a generated one printed once (:func:`bootstrap_admin_key`).
* The ``public`` role (below viewer) and ``HARMSPOT_DISCLOSURE=public`` (the whole deployment) force public
  output (hotspots/publish/disclosure.py) on every door that has one and refuse every other data door
  (:data:`PUBLIC_READS`); the routes learn it from ``request.state.harmspot_public`` (app.deps.disclosure_policy).
* Every data fetch and upload writes one ``audit_log`` row: who (key id), when, what (method, path, query,
  secrets redacted by app/redact.py), which dataset, and the response status. Refused requests are aggregated
  per client, status and key over a window (app/refusals.py): the first one row, the rest one row with a count.
* CORS is closed: no CORS middleware at all unless ``HARMSPOT_CORS_ORIGINS`` lists origins.

See docs/security.md.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import parse_qs

import pandas as pd
from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field

from app.head import allowed_methods
from app.render import JSONResponse
from app.redact import REDACTED, install_log_redaction, redact, redact_query
from app.refusals import AGGREGATED, RefusalAggregator
from geodata.settings import Settings
from geodata.store import Store, StoreConflict, utc_now

log = logging.getLogger("harmspot.security")

Role = Literal["public", "viewer", "analyst", "admin"]
ROLES: tuple[str, ...] = ("public", "viewer", "analyst", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
OPEN = None  # marker: no key needed
HEADER = "x-api-key"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY, name VARCHAR, role VARCHAR, salt VARCHAR, key_hash VARCHAR,
    created_at TIMESTAMP, revoked_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS audit_log (
    at_utc TIMESTAMP, key_id VARCHAR, role VARCHAR, method VARCHAR, path VARCHAR, query VARCHAR, dataset VARCHAR,
    status SMALLINT, client VARCHAR, mode VARCHAR, repeats INTEGER DEFAULT 1);
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS repeats INTEGER DEFAULT 1;
"""
AUDIT_COLUMNS = 11  # at_utc .. mode, repeats (the number of requests a row stands for: app/refusals.py)
AUDIT_FLUSH_S = 10  # GET /audit waits at most this long for the buffered rows (a long ingest holds the lock)

# (methods or None for any, path pattern, role or OPEN). First match wins; keep this the only place roles live.
_R = re.compile
# GET doors a `public` key (or a HARMSPOT_DISCLOSURE=public deployment) may use: disclosure-controlled output
# (hotspots, its GeoJSON, OGC harm-spot items; app.deps.disclosure_policy forces it) and reference data with no
# offence records in it. Every other data door (tasking, emerging, spikes, key-date hotspots, Gi*, RTM, patrols,
# evaluation, rejects) has no public form and is refused.
PUBLIC_READS = _R(r"^/(hotspots(\.geojson)?|collections(/[^/]+(/items(/[^/]+)?)?)?|conformance|datasets|presets|"
                  r"harm-weights|areas(/[^/]+\.geojson)?|map/config|keydates)$")
# Doors that have a public form (`mode=public`); elsewhere mode=public is refused rather than silently ignored.
PUBLIC_FORM = _R(r"^/(hotspots(\.geojson)?|collections/[^/]+/items(/[^/]+)?)$")
RULES: list[tuple[frozenset[str] | None, re.Pattern[str], str | None]] = [
    (None, _R(r"^/(health|docs|redoc|openapi\.json|docs/oauth2-redirect|map|favicon\.ico)?$"), OPEN),
    (None, _R(r"^/static/"), OPEN),
    (frozenset({"OPTIONS"}), _R(r".*"), OPEN),  # CORS pre-flight carries no data
    (None, _R(r"^/(keys|audit)(/.*)?$"), "admin"),
    (frozenset({"POST", "PUT", "PATCH", "DELETE"}), _R(r"^/harm-weights(/.*)?$"), "admin"),
    (frozenset({"DELETE"}), _R(r"^/(areas|roads)(/.*)?$"), "admin"),  # POST /areas, /roads: analyst (catch-all)
    (frozenset({"POST", "PUT", "PATCH", "DELETE"}), _R(r"^/(datasets|rtm/runs|patrols|keydates)(/.*)?$"), "analyst"),
    (frozenset({"GET", "HEAD"}), _R(r"^/datasets/[^/]+/rejects$"), "analyst"),  # raw source rows
    (frozenset({"GET", "HEAD"}), PUBLIC_READS, "public"),  # disclosure-controlled or reference only
    (frozenset({"GET", "HEAD"}), _R(r".*"), "viewer"),  # maps, hotspots, collections, statistics, reference
    (None, _R(r".*"), "analyst"),  # any other write: analyst at least
]
_ROUTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests that are not audited (no data in them): documentation, the map shell, static assets, health.
_NOT_AUDITED = _R(r"^/(health|docs|redoc|openapi\.json|docs/oauth2-redirect|map|favicon\.ico|presets)?$|^/static/")


@functools.lru_cache(maxsize=4096)  # a pure function of its text arguments: asked on every request
def required_role(method: str, path: str) -> str | None:
    """The least role allowed to make this request (None: open to anyone)."""
    method = method.upper()
    if method not in _ROUTED_METHODS:  # no route takes it: the router answers 405 (with Allow) and runs nothing
        return OPEN
    for methods, pattern, role in RULES:
        if (methods is None or method in methods) and pattern.match(path):
            return role
    return "admin"  # unreachable: the last rule matches everything



# ---------------------------------------------------------------------------------------------- key storage

def ensure_tables(store: Store) -> None:
    """Create this module's tables once per store handle."""
    store.ensure_schema(SCHEMA)

def _hash(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


KEY_FORMAT = re.compile(r"^hs_([0-9a-f]{8})_([A-Za-z0-9_-]{32,200})$")


class LastAdminKey(StoreConflict):
    """Revoking this key would leave a non-loopback service without an admin (or without any key): 409."""


def new_key() -> str:
    """A fresh, well-formed key (``hs_<8 hex>_<43 URL-safe characters>``), stored nowhere."""
    return f"hs_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def _store_key(store: Store, key: str, role: str, name: str) -> str:
    if role not in RANK:
        raise ValueError(f"role must be one of {list(ROLES)}")
    if not name or len(name) > 100:
        raise ValueError("name: 1-100 characters")
    m = KEY_FORMAT.match(key)
    if not m:
        raise ValueError("a key looks like hs_<8 hex digits>_<32-200 URL-safe characters> (make one with "
                         "`harmspot keys generate`)")
    key_id, secret = m.groups()
    salt = secrets.token_bytes(16)
    ensure_tables(store)

    def write(cur) -> None:
        if cur.execute("SELECT count(*) FROM api_keys WHERE key_id = ?", [key_id]).fetchall()[0][0]:
            raise StoreConflict(f"a key with id {key_id} exists (active or revoked): use another key")
        cur.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    [key_id, name, role, salt.hex(), _hash(salt, secret), utc_now()])

    store.write(write, scope="keys")
    return key_id


def create_key(store: Store, role: str, name: str) -> tuple[str, str]:
    """Create a key; returns (key_id, full key). The full key is shown once and never stored."""
    key = new_key()
    return _store_key(store, key, role, name), key


def import_key(store: Store, key: str, role: str, name: str) -> str:
    """Store a key made elsewhere (a deployment secret); returns its id. Only its salted hash is kept."""
    return _store_key(store, key.strip(), role, name)


def revoke_key(store: Store, key_id: str, keep_an_admin: bool = False) -> bool:
    """Revoke an active key (False: no such active key). With ``keep_an_admin`` (a service bound to a
    non-loopback address) the last active admin key, or the last active key, is refused (LastAdminKey): such a
    service must never be left with no way in, nor fall into local demo mode."""
    ensure_tables(store)

    def write(cur) -> bool:
        row = cur.execute("SELECT role FROM api_keys WHERE key_id = ? AND revoked_at IS NULL", [key_id]).fetchall()
        if not row:
            return False
        if keep_an_admin:
            others = cur.execute("""SELECT count(*), count(*) FILTER (WHERE role = 'admin') FROM api_keys
                                    WHERE revoked_at IS NULL AND key_id <> ?""", [key_id]).fetchall()[0]
            if others[0] == 0 or (row[0][0] == "admin" and others[1] == 0):
                raise LastAdminKey(f"refusing to revoke {key_id}: it is the last active {'admin ' if others[0] else ''}"
                                   "key of a service bound to a non-loopback address (it would be left with no admin; "
                                   "without keys it would not serve at all). Create another admin key first "
                                   "(POST /keys), then revoke this one")
        cur.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [utc_now(), key_id])
        return True

    return store.write(write, scope="keys")


def bootstrap_admin_key(store: Store, settings: Settings) -> tuple[str, str | None] | None:
    """For a start that must be keyed and has no active key (non-loopback bind, or HARMSPOT_KEYS_MODE=required):
    store the admin key given in ``HARMSPOT_ADMIN_KEY`` / ``HARMSPOT_ADMIN_KEY_FILE`` -> ("environment", None), or
    generate one -> ("generated", key) for the caller to print ONCE. None when active keys exist."""
    if active_key_count(store):
        return None
    given = settings.admin_key.get_secret_value() if settings.admin_key else None
    if given is None and settings.admin_key_file:
        given = settings.admin_key_file.read_text().strip()
    if given:
        import_key(store, given, "admin", "first admin (HARMSPOT_ADMIN_KEY)")
        return "environment", None
    key_id, key = create_key(store, "admin", "first admin (generated at first start)")
    return "generated", key


def active_admin_count(store: Store) -> int:
    ensure_tables(store)
    return int(store.scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL AND role = 'admin'") or 0)


def list_keys(store: Store) -> pd.DataFrame:
    ensure_tables(store)
    return store.query_df("""SELECT key_id, name, role, created_at, revoked_at, revoked_at IS NULL AS active
                             FROM api_keys ORDER BY created_at""")


def active_key_count(store: Store) -> int:
    ensure_tables(store)
    return int(store.scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") or 0)


def write_audit_rows(store: Store, rows: list[list]) -> None:
    """Rows written directly (the aggregated refusals flushed before /audit reads): one transaction."""
    if rows:
        ensure_tables(store)
        sql = f"INSERT INTO audit_log VALUES ({', '.join('?' * AUDIT_COLUMNS)})"
        store.write(lambda cur: cur.executemany(sql, rows), scope="audit")


def audit_rows(store: Store, limit: int = 100, key_id: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    ensure_tables(store)
    sql, params = "SELECT * FROM audit_log WHERE 1=1", []
    if key_id:
        sql, params = sql + " AND key_id = ?", params + [key_id]
    if dataset:
        sql, params = sql + " AND dataset = ?", params + [dataset]
    return store.query_df(sql + " ORDER BY at_utc DESC LIMIT ?", params + [int(limit)])


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: str


DEMO = Principal("demo", "local demo mode", "admin")


class KeyRing:
    """Active keys held in memory (key id -> salt, hash, role); reloaded whenever keys change in this process.
    The service holds the store's write lock, so keys cannot change behind its back (the CLI is refused)."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[bytes, str, Principal]] = {}
        self.reload()

    def reload(self) -> None:
        ensure_tables(self.store)
        rows = self.store.query_df("SELECT key_id, name, role, salt, key_hash FROM api_keys WHERE revoked_at IS NULL")
        with self._lock:
            self._keys = {r.key_id: (bytes.fromhex(r.salt), r.key_hash, Principal(r.key_id, r.name, r.role))
                          for r in rows.itertuples()}

    @property
    def empty(self) -> bool:
        return not self._keys

    def verify(self, presented: str | None) -> Principal | None:
        if not presented or not presented.startswith("hs_") or presented.count("_") < 2:
            return None
        _, key_id, secret = presented.split("_", 2)
        entry = self._keys.get(key_id)
        if entry is None:
            return None
        salt, digest, principal = entry
        return principal if hmac.compare_digest(_hash(salt, secret), digest) else None


# ---------------------------------------------------------------------------------------------- middleware

def keyring_of(app) -> KeyRing | None:
    ring = getattr(app.state, "harmspot_keys", None)
    if ring is None:
        state = getattr(app.state, "harmspot", None)
        if state is None:
            return None
        ring = KeyRing(state.store)
        app.state.harmspot_keys = ring
    return ring


def access_status(app) -> dict:
    """For /health: which access mode the service is in."""
    ring = keyring_of(app)
    settings: Settings = app.state.harmspot.settings
    empty = ring is None or ring.empty
    disclosure = {"disclosure": settings.disclosure}
    if demo_allowed(settings) and empty:
        return {"mode": "demo", "message": "LOCAL DEMO MODE: no API keys exist, so there is no access control; "
                "served to loopback clients only. Create a key (harmspot keys create --role admin --name ...) "
                "to require X-API-Key.", **disclosure}
    if empty:
        return {"mode": "keys", "message": "X-API-Key required, but no active key exists: nothing but /health and "
                "the documentation is served. Stop the service and create one (harmspot keys create --role admin "
                "--name ...), or restart it: a non-loopback start without keys makes an admin key "
                "(docs/security.md#first-start)", "cors": bool(settings.cors_origins), **disclosure}
    return {"mode": "keys", "message": "X-API-Key required (roles public < viewer < analyst < admin)",
            "cors": bool(settings.cors_origins), **disclosure}


def demo_allowed(settings: Settings) -> bool:
    """Demo mode is possible only in keys_mode auto AND on a loopback bind (HARMSPOT_HOST, which `harmspot serve`
    sets from --host): checked at every request, so a service bound elsewhere never drops into it."""
    return settings.keys_mode == "auto" and is_loopback_host(settings.host)


def _is_loopback_or_local(host: str | None) -> bool:
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # not an IP (in-process test clients, unix sockets)


_FORM_DATASET = re.compile(rb'name="dataset"\r\n(?:[^\r\n]*\r\n)*?\r\n([^\r\n]{1,64})\r\n')


_PROXY_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")
_KEY_BYTES = re.compile(rb"hs_([0-9a-fA-F]{8})_[A-Za-z0-9_\-%]+")
_REDACT_BODY_MAX = 1 << 20  # error bodies are small; a larger one passes through after its first MB


def _redact_bytes(body: bytes) -> bytes:
    return _KEY_BYTES.sub(lambda m: b"hs_" + m.group(1) + b"_" + REDACTED.encode(), body) if b"hs_" in body else body


def _may_name_mode(query_string: bytes) -> bool:
    """Whether a query string can hold a ``mode`` parameter (spelt out or percent-encoded): the parse is skipped
    for the others."""
    return b"mode" in query_string or b"%" in query_string


def _error(status: int, code: str, message: str, extra_headers: list | None = None):
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return status, headers + (extra_headers or []), body


class AccessMiddleware:
    """ASGI middleware: authenticate, authorise by :func:`required_role`, label demo mode, write the audit row."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings
        self.refusals = RefusalAggregator(settings.audit_refusal_window_s)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        fastapi_app = scope.get("app")
        ring = keyring_of(fastapi_app) if fastapi_app is not None else None
        if ring is None:  # lifespan not started (should not happen)
            return await self.app(scope, receive, send)
        fastapi_app.state.harmspot_refusals = self.refusals  # flushed by GET /audit and at shutdown
        method, path = scope["method"], scope["path"]
        needed = required_role(method, path)
        demo = demo_allowed(self.settings) and ring.empty  # the bind is re-checked at every request
        headers = dict(scope.get("headers") or [])
        client = (scope.get("client") or ("", 0))[0]
        principal: Principal | None = DEMO if demo else ring.verify(headers.get(HEADER.encode(), b"").decode("latin-1"))
        forced = ("deployment" if self.settings.disclosure == "public"
                  else "key" if principal is not None and principal.role == "public" else None)
        state = scope.setdefault("state", {})
        state["harmspot_principal"], state["harmspot_public"] = principal, forced
        mode_header = [(b"x-harmspot-mode", b"demo" if demo else b"keys")]
        reading = method in ("GET", "HEAD")
        refusal = None
        if demo and (not _is_loopback_or_local(client) or any(h in headers for h in _PROXY_HEADERS)):
            refusal = _error(403, "demo_mode_loopback_only", "local demo mode serves loopback clients only (and "
                             "not through a proxy)")
        elif needed is not OPEN and principal is None:
            given = HEADER.encode() in headers
            refusal = _error(401, "unauthorized", "invalid or revoked API key" if given
                             else "an API key is required: send it in the X-API-Key header",
                             [(b"www-authenticate", b'ApiKey header="X-API-Key"')])
        elif forced and reading and needed in ("viewer", "analyst"):
            why = ("this deployment publishes only disclosure-controlled output (HARMSPOT_DISCLOSURE=public)"
                   if forced == "deployment" else "a public key sees only disclosure-controlled output")
            refusal = _error(403, "not_public", f"{why}: GET {path} has no public form (public doors: /hotspots, "
                             "/hotspots.geojson, OGC harm-spots and boundaries; docs/security.md#public-output-mode)")
        elif needed is not OPEN and RANK[principal.role] < RANK[needed]:  # type: ignore[union-attr]
            refusal = _error(403, "forbidden", f"{method} {path} needs the {needed} role; this key is "
                             f"{principal.role}")  # type: ignore[union-attr]
        elif reading and _may_name_mode(scope.get("query_string", b"")) and not PUBLIC_FORM.match(path) and \
                "public" in parse_qs(scope.get("query_string", b"").decode("latin-1")).get("mode", []):
            refusal = _error(422, "invalid_parameter", f"mode=public: GET {path} has no public form (only "
                             "/hotspots, /hotspots.geojson and OGC harm-spot items do); nothing was computed")
        if refusal is not None and refusal[0] in (401, 403) and not demo:
            allowed = allowed_methods(fastapi_app, scope)
            if allowed is not None and method not in allowed:  # no route takes it: 405 whatever the key
                refusal = _error(405, "method_not_allowed", f"{path} takes {', '.join(allowed)}",
                                 [(b"allow", ", ".join(allowed).encode())])

        audited = self.settings.audit and (refusal is not None or not _NOT_AUDITED.match(path))
        status_box = {"status": 500}
        found: dict[str, str] = {}
        if refusal is not None:
            status, hdrs, body = refusal
            status_box["status"] = status
            await send({"type": "http.response.start", "status": status, "headers": hdrs + mode_header})
            await send({"type": "http.response.body", "body": body})
        else:
            held: dict = {}  # an error response, held until its body is complete and redacted

            async def send_labelled(message):
                if message["type"] == "http.response.start":
                    status_box["status"] = message["status"]
                    message = {**message, "headers": [*message.get("headers", []), *mode_header]}
                    plain = not any(k.lower() == b"content-encoding" for k, _ in message["headers"])
                    if message["status"] >= 400 and plain:
                        held.update(start=message, body=[], size=0)
                        return
                elif message["type"] == "http.response.body" and "start" in held:
                    chunk = message.get("body", b"")
                    held["body"].append(chunk)
                    held["size"] += len(chunk)
                    more = message.get("more_body", False)
                    if more and held["size"] < _REDACT_BODY_MAX:
                        return
                    body = _redact_bytes(b"".join(held["body"]))
                    start = held.pop("start")
                    hdrs = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    if not more:
                        hdrs.append((b"content-length", str(len(body)).encode()))
                    await send({**start, "headers": hdrs})
                    message = {**message, "body": body}
                await send(message)

            recv = receive
            ctype = headers.get(b"content-type", b"")
            if audited and method == "POST" and ctype.startswith(b"multipart/form-data"):
                tail = b""

                async def recv():  # find the dataset form field in the stream, keeping only a small window
                    nonlocal tail
                    message = await receive()
                    if message["type"] == "http.request" and "dataset" not in found:
                        window = tail + message.get("body", b"")
                        m = _FORM_DATASET.search(window)
                        if m:
                            found["dataset"] = m.group(1).decode("utf-8", "replace")
                        tail = window[-512:]
                    return message
            try:
                await self.app(scope, recv, send_labelled)
            finally:
                if audited:
                    await self._audit(fastapi_app, scope, principal, status_box["status"], found.get("dataset"),
                                      "demo" if demo else "keys", client)
            return
        if audited:
            await self._audit(fastapi_app, scope, principal, status_box["status"], None, "demo" if demo else "keys",
                              client)

    async def _audit(self, app, scope, principal: Principal | None, status: int, form_dataset: str | None,
                     mode: str, client: str) -> None:
        path = redact(scope["path"])
        query = redact_query(scope.get("query_string", b"").decode("latin-1"))[:2000]  # never a secret in the log
        dataset = form_dataset
        if dataset is None:
            dataset = (parse_qs(query).get("dataset") or [None])[0]
        if dataset is None:
            m = re.match(r"^/datasets/([^/]+)", path)
            dataset = m.group(1) if m else ("uploads" if path == "/datasets" and scope["method"] == "POST" else None)
        key_id = principal.key_id if principal else None
        row = [utc_now(), key_id, principal.role if principal else None,
               scope["method"], path[:500], query, dataset and redact(dataset), int(status), client, mode, 1]
        writer = app.state.harmspot_audit
        try:  # one writer thread, batched (app.rowwriter): no threadpool token held behind a long ingest
            if int(status) in AGGREGATED:  # refusals: one row per client, status and key per window
                now, due = self.refusals.admit(row, client, int(status), key_id)
                for summary in due:
                    writer.write_nowait(summary)
                if not now:
                    return
            pending = writer.submit(row)  # buffered (app.rowwriter): waits only when the buffer is full
            if pending is not None:
                await pending
        except Exception:  # the audit must never turn a served request into an error
            log.exception("audit write failed")


# ---------------------------------------------------------------------------------------------- key & audit API

@asynccontextmanager
async def _lifespan(app):
    """Nested in the app's lifespan: at shutdown the refusals still being counted are written (the audit writer
    is closed after this)."""
    try:
        yield
    finally:
        refusals = getattr(app.state, "harmspot_refusals", None)
        writer = getattr(app.state, "harmspot_audit", None)
        if refusals is not None and writer is not None:
            for row in refusals.flush():
                writer.write_nowait(row)


router = APIRouter(tags=["access"], lifespan=_lifespan)


class KeyRequest(BaseModel):
    name: str = Field(..., min_length=1, max_length=100, description="Who or what holds the key")
    role: Role = Field(..., description="public (disclosure-controlled output only: docs/security.md#public-output-"
                       "mode), viewer (maps, hotspots), analyst (+ uploads, runs), admin (+ keys, weights)")


@router.get("/keys", summary="API keys (ids, names, roles; never the secrets) - admin")
def get_keys(request: Request) -> dict:
    frame = list_keys(request.app.state.harmspot.store)
    return {"keys": json.loads(frame.to_json(orient="records", date_format="iso"))}


@router.post("/keys", summary="Create an API key - admin; the key is shown once", status_code=201)
def post_key(request: Request, body: KeyRequest) -> JSONResponse:
    store = request.app.state.harmspot.store
    key_id, key = create_key(store, body.role, body.name)
    keyring_of(request.app).reload()  # type: ignore[union-attr]
    return JSONResponse({"key_id": key_id, "name": body.name, "role": body.role, "key": key,
                         "note": "store this key now: only its salted hash is kept"}, status_code=201)


@router.delete("/keys/{key_id}", summary="Revoke an API key - admin",
               description="Takes effect on the next request. On a service bound to a non-loopback address the last "
               "active admin key (or the last key) cannot be revoked: 409 (create another admin key first).",
               responses={404: {"description": "No active key with that id"},
                          409: {"description": "The last admin key of a non-loopback service"}})
def delete_key(request: Request, key_id: str) -> dict:
    from app.errors import ApiError

    settings: Settings = request.app.state.harmspot.settings
    if not revoke_key(request.app.state.harmspot.store, key_id, keep_an_admin=not is_loopback_host(settings.host)):
        raise ApiError(404, "not_found", f"no active key '{key_id}'")
    keyring_of(request.app).reload()  # type: ignore[union-attr]
    return {"key_id": key_id, "revoked": True}


@router.get("/audit", summary="Audit log, newest first - admin",
            description="One row per data request; refused requests (401/403/429) are aggregated per client, status "
            "and key over HARMSPOT_AUDIT_REFUSAL_WINDOW_S seconds: the first as its own row, the rest as one row "
            "whose `repeats` says how many requests it stands for. Query strings are stored with secrets redacted.")
def get_audit(request: Request, limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
              key_id: Annotated[str | None, Query(max_length=64)] = None,
              dataset: Annotated[str | None, Query(max_length=64)] = None) -> dict:
    store = request.app.state.harmspot.store
    refusals = getattr(request.app.state, "harmspot_refusals", None)
    if refusals is not None:
        write_audit_rows(store, refusals.flush())  # counted refusals first, so the admin sees them
    writer = getattr(request.app.state, "harmspot_audit", None)
    if writer is not None:
        writer.flush(AUDIT_FLUSH_S)  # the buffered rows of every request answered before this one
    frame = audit_rows(store, limit, key_id, dataset)
    return {"rows": json.loads(frame.to_json(orient="records", date_format="iso"))}


def install_security(app: FastAPI, settings: Settings) -> None:
    """The one line in app/main.py: access middleware, key/audit routes, and CORS only if configured."""
    install_log_redaction()  # no secret in any log record (app/redact.py)
    app.add_middleware(AccessMiddleware, settings=settings)
    app.include_router(router)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["X-API-Key", "Content-Type"], expose_headers=["X-Harmspot-Mode"])


@functools.lru_cache(maxsize=64)  # the bind address, checked on every request (demo_allowed)
def is_loopback_host(host: str) -> bool:
    """True for a bind address that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
