"""Access control, audit log and CORS: API keys (``X-API-Key``) with roles viewer < analyst < admin.

* Keys look like ``hs_<key_id>_<secret>``. Only ``sha256(salt || secret)`` is stored, with a random 16-byte salt
  per key (the secret is 256 random bits, so a fast hash is enough; nothing guessable is hashed).
* The role a request needs is decided in ONE place, :func:`required_role`, from its method and path
  (:data:`RULES`, first match wins). :class:`AccessMiddleware` applies it to every request, including routes
  added later by other modules, so no endpoint can forget it.
* Without any active key (and ``HARMSPOT_KEYS_MODE=auto``) the service runs in **local demo mode**: no key is
  needed, every response carries ``X-Harmspot-Mode: demo``, ``/health`` says so, only loopback clients are
  served, and ``harmspot serve`` refuses to bind anything but loopback.
* Every data fetch and upload (and every refused request) writes one ``audit_log`` row: who (key id), when,
  what (method, path, query), which dataset, and the response status.
* CORS is closed: no CORS middleware at all unless ``HARMSPOT_CORS_ORIGINS`` lists origins.

See docs/security.md.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import parse_qs

import pandas as pd
from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field

from app.render import JSONResponse
from geodata.settings import Settings
from geodata.store import Store, utc_now

log = logging.getLogger("harmspot.security")

Role = Literal["viewer", "analyst", "admin"]
ROLES: tuple[str, ...] = ("viewer", "analyst", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
OPEN = None  # marker: no key needed
HEADER = "x-api-key"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY, name VARCHAR, role VARCHAR, salt VARCHAR, key_hash VARCHAR,
    created_at TIMESTAMP, revoked_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS audit_log (
    at_utc TIMESTAMP, key_id VARCHAR, role VARCHAR, method VARCHAR, path VARCHAR, query VARCHAR, dataset VARCHAR,
    status SMALLINT, client VARCHAR, mode VARCHAR);
"""

# (methods or None for any, path pattern, role or OPEN). First match wins; keep this the only place roles live.
_R = re.compile
RULES: list[tuple[frozenset[str] | None, re.Pattern[str], str | None]] = [
    (None, _R(r"^/(health|docs|redoc|openapi\.json|docs/oauth2-redirect|map|favicon\.ico)?$"), OPEN),
    (None, _R(r"^/static/"), OPEN),
    (frozenset({"OPTIONS"}), _R(r".*"), OPEN),  # CORS pre-flight carries no data
    (None, _R(r"^/(keys|audit)(/.*)?$"), "admin"),
    (frozenset({"POST", "PUT", "PATCH", "DELETE"}), _R(r"^/harm-weights(/.*)?$"), "admin"),
    (frozenset({"DELETE"}), _R(r"^/areas(/.*)?$"), "admin"),  # POST /areas: analyst (the catch-all write rule)
    (frozenset({"POST", "PUT", "PATCH", "DELETE"}), _R(r"^/(datasets|rtm/runs|patrols|keydates)(/.*)?$"), "analyst"),
    (frozenset({"GET", "HEAD"}), _R(r"^/datasets/[^/]+/rejects$"), "analyst"),  # raw source rows
    (frozenset({"GET", "HEAD"}), _R(r".*"), "viewer"),  # maps, hotspots, collections, statistics, reference
    (None, _R(r".*"), "analyst"),  # any other write: analyst at least
]
# Requests that are not audited (no data in them): documentation, the map shell, static assets, health.
_NOT_AUDITED = _R(r"^/(health|docs|redoc|openapi\.json|docs/oauth2-redirect|map|favicon\.ico|presets)?$|^/static/")


def required_role(method: str, path: str) -> str | None:
    """The least role allowed to make this request (None: open to anyone)."""
    method = method.upper()
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


def create_key(store: Store, role: str, name: str) -> tuple[str, str]:
    """Create a key; returns (key_id, full key). The full key is shown once and never stored."""
    if role not in RANK:
        raise ValueError(f"role must be one of {list(ROLES)}")
    if not name or len(name) > 100:
        raise ValueError("name: 1-100 characters")
    ensure_tables(store)
    key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    with store.write_lock, store.transaction() as cur:
        cur.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    [key_id, name, role, salt.hex(), _hash(salt, secret), utc_now()])
    return key_id, f"hs_{key_id}_{secret}"


def revoke_key(store: Store, key_id: str) -> bool:
    ensure_tables(store)
    with store.write_lock, store.transaction() as cur:
        n = cur.execute("SELECT count(*) FROM api_keys WHERE key_id = ? AND revoked_at IS NULL", [key_id]).fetchall()[0][0]
        if n:
            cur.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [utc_now(), key_id])
    return bool(n)


def list_keys(store: Store) -> pd.DataFrame:
    ensure_tables(store)
    return store.query_df("""SELECT key_id, name, role, created_at, revoked_at, revoked_at IS NULL AS active
                             FROM api_keys ORDER BY created_at""")


def active_key_count(store: Store) -> int:
    ensure_tables(store)
    return int(store.scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") or 0)


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
    demo = settings.keys_mode == "auto" and (ring is None or ring.empty)
    if demo:
        return {"mode": "demo", "message": "LOCAL DEMO MODE: no API keys exist, so there is no access control; "
                "served to loopback clients only. Create a key (harmspot keys create --role admin --name ...) "
                "to require X-API-Key."}
    return {"mode": "keys", "message": "X-API-Key required (roles viewer < analyst < admin)",
            "cors": bool(settings.cors_origins)}


def _is_loopback_or_local(host: str | None) -> bool:
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # not an IP (in-process test clients, unix sockets)


_FORM_DATASET = re.compile(rb'name="dataset"\r\n(?:[^\r\n]*\r\n)*?\r\n([^\r\n]{1,64})\r\n')


def _error(status: int, code: str, message: str, extra_headers: list | None = None):
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return status, headers + (extra_headers or []), body


class AccessMiddleware:
    """ASGI middleware: authenticate, authorise by :func:`required_role`, label demo mode, write the audit row."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        fastapi_app = scope.get("app")
        ring = keyring_of(fastapi_app) if fastapi_app is not None else None
        if ring is None:  # lifespan not started (should not happen)
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        needed = required_role(method, path)
        demo = self.settings.keys_mode == "auto" and ring.empty
        headers = dict(scope.get("headers") or [])
        client = (scope.get("client") or ("", 0))[0]
        principal: Principal | None = DEMO if demo else ring.verify(headers.get(HEADER.encode(), b"").decode("latin-1"))
        mode_header = [(b"x-harmspot-mode", b"demo" if demo else b"keys")]
        refusal = None
        if demo and not _is_loopback_or_local(client):
            refusal = _error(403, "demo_mode_loopback_only", "local demo mode serves loopback clients only")
        elif needed is not OPEN and principal is None:
            given = HEADER.encode() in headers
            refusal = _error(401, "unauthorized", "invalid or revoked API key" if given
                             else "an API key is required: send it in the X-API-Key header",
                             [(b"www-authenticate", b'ApiKey header="X-API-Key"')])
        elif needed is not OPEN and RANK[principal.role] < RANK[needed]:  # type: ignore[union-attr]
            refusal = _error(403, "forbidden", f"{method} {path} needs the {needed} role; this key is "
                             f"{principal.role}")  # type: ignore[union-attr]

        audited = self.settings.audit and (refusal is not None or not _NOT_AUDITED.match(path))
        status_box = {"status": 500}
        found: dict[str, str] = {}
        if refusal is not None:
            status, hdrs, body = refusal
            status_box["status"] = status
            await send({"type": "http.response.start", "status": status, "headers": hdrs + mode_header})
            await send({"type": "http.response.body", "body": body})
        else:
            async def send_labelled(message):
                if message["type"] == "http.response.start":
                    status_box["status"] = message["status"]
                    message = {**message, "headers": [*message.get("headers", []), *mode_header]}
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
        path = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")[:2000]
        dataset = form_dataset
        if dataset is None:
            dataset = (parse_qs(query).get("dataset") or [None])[0]
        if dataset is None:
            m = re.match(r"^/datasets/([^/]+)", path)
            dataset = m.group(1) if m else ("uploads" if path == "/datasets" and scope["method"] == "POST" else None)
        row = [utc_now(), principal.key_id if principal else None, principal.role if principal else None,
               scope["method"], path[:500], query, dataset, int(status), client, mode]
        try:  # one writer thread, batched (app.rowwriter): no threadpool token held behind a long ingest
            await app.state.harmspot_audit.write(row)
        except Exception:  # the audit must never turn a served request into an error
            log.exception("audit write failed")


# ---------------------------------------------------------------------------------------------- key & audit API

router = APIRouter(tags=["access"])


class KeyRequest(BaseModel):
    name: str = Field(..., min_length=1, max_length=100, description="Who or what holds the key")
    role: Role = Field(..., description="viewer (maps, hotspots), analyst (+ uploads, runs), admin (+ keys, weights)")


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


@router.delete("/keys/{key_id}", summary="Revoke an API key - admin")
def delete_key(request: Request, key_id: str) -> dict:
    from app.errors import ApiError

    if not revoke_key(request.app.state.harmspot.store, key_id):
        raise ApiError(404, "not_found", f"no active key '{key_id}'")
    keyring_of(request.app).reload()  # type: ignore[union-attr]
    return {"key_id": key_id, "revoked": True}


@router.get("/audit", summary="Audit log, newest first - admin")
def get_audit(request: Request, limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
              key_id: Annotated[str | None, Query(max_length=64)] = None,
              dataset: Annotated[str | None, Query(max_length=64)] = None) -> dict:
    frame = audit_rows(request.app.state.harmspot.store, limit, key_id, dataset)
    return {"rows": json.loads(frame.to_json(orient="records", date_format="iso"))}


def install_security(app: FastAPI, settings: Settings) -> None:
    """The one line in app/main.py: access middleware, key/audit routes, and CORS only if configured."""
    app.add_middleware(AccessMiddleware, settings=settings)
    app.include_router(router)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["X-API-Key", "Content-Type"], expose_headers=["X-Harmspot-Mode"])


def is_loopback_host(host: str) -> bool:
    """True for a bind address that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
