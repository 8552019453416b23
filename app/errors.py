"""One error shape for every failure: {"error": {"code", "message", "details"}} with the right status."""
from __future__ import annotations

import errno
import logging

import duckdb
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.head import allowed_methods
from app.render import JSONResponse
from geodata.harm import WeightsError
from geodata.ingest import IngestError, IngestLimitError
from geodata.store import DataCannotAnswer, NotStored, StoreConflict, StoreError
from hotspots.publish.disclosure import DisclosureError


log = logging.getLogger("harmspot")
_FULL = ("no space left", "disk quota", "disk is full", "out of disk")


def storage_failure(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, code, message) for a write the machine could not complete (disk full: 507; other I/O
    failures of the store: 503), or None when ``exc`` is not one."""
    text = str(exc)
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
        f in text.lower() for f in _FULL)
    if full:
        return 507, "insufficient_storage", ("the store's disk is full: nothing was written (the request was rolled "
                                             "back); reads keep working. Free space on the data directory's file "
                                             f"system and retry. Cause: {text[:300]}")
    if isinstance(exc, duckdb.IOException) or (isinstance(exc, OSError) and exc.errno == errno.EIO):
        return 503, "storage_unavailable", f"the store could not read or write its files; retry later. Cause: {text[:300]}"
    return None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: object = None, headers: dict | None = None):
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers  # e.g. Retry-After on a 429


def error_body(code: str, message: str, details: object = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def _status(request: Request, status: int) -> int:
    """OGC API - Features answers an invalid parameter value with 400 (/req/core/query-param-invalid) where the
    rest of the API answers 422: the routes tagged ogc-features get 400."""
    route = request.scope.get("route")
    if status == 422 and "ogc-features" in (getattr(route, "tags", None) or []):
        return 400
    return status


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=_status(request, exc.status),
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        details = [{"loc": list(e.get("loc", [])), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"] if x not in ("query", "body"))
        return JSONResponse(error_body("invalid_parameter", f"{where}: {first['msg']}" if where else str(first["msg"]),
                                       details), status_code=_status(request, 422))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError):
        msg = str(exc)
        if isinstance(exc, DataCannotAnswer):
            return JSONResponse(error_body("data_cannot_answer", msg), status_code=409)
        status = 404 if isinstance(exc, NotStored) else 422  # geodata.store.NotStored: a name not in the store
        return JSONResponse(error_body("not_found" if status == 404 else "invalid_request", msg),
                            status_code=_status(request, status))

    @app.exception_handler(StoreConflict)
    async def _conflict(_: Request, exc: StoreConflict):  # a lost write race (docs/security.md#concurrent-writes)
        return JSONResponse(error_body("conflict", str(exc)), status_code=409)

    @app.exception_handler(IngestError)
    async def _ingest(_: Request, exc: IngestError):
        return JSONResponse(error_body("unreadable_file", str(exc)), status_code=422)

    @app.exception_handler(IngestLimitError)
    async def _ingest_limit(_: Request, exc: IngestLimitError):
        return JSONResponse(error_body("payload_too_large", str(exc)), status_code=413)

    async def _storage(request: Request, exc: Exception):
        found = storage_failure(exc)
        if isinstance(exc, duckdb.FatalException):
            # DuckDB invalidated the database (e.g. a checkpoint failed on a full disk): reopen it from its
            # file so reads answer again, and say why this request failed
            state = getattr(request.app.state, "harmspot", None)
            recovered = state is not None and await run_in_threadpool(state.store.recover)
            log.error("store invalidated (%s); reopened: %s", exc, recovered)
            found = found or (503, "storage_unavailable", f"the store hit a fatal error and was reopened "
                              f"({'it answers again' if recovered else 'reopening failed'}); retry. Cause: "
                              f"{str(exc)[:300]}")
        if found is None:
            raise exc
        status, code, message = found
        log.error("storage failure (%s): %s", code, exc)
        return JSONResponse(error_body(code, message), status_code=status, headers={"Retry-After": "60"})

    app.add_exception_handler(duckdb.Error, _storage)
    app.add_exception_handler(OSError, _storage)

    @app.exception_handler(DisclosureError)
    async def _disclosure(_: Request, exc: DisclosureError):
        # a well-formed request that the disclosure policy does not publish (public keys, HARMSPOT_DISCLOSURE,
        # mode=public): refused as a matter of policy, not of syntax - 403 on every door, OGC included
        return JSONResponse(error_body("disclosure_refused", str(exc)), status_code=403)

    @app.exception_handler(WeightsError)
    async def _weights(_: Request, exc: WeightsError):
        return JSONResponse(error_body("invalid_weights_table", str(exc)), status_code=422)

    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError):
        return JSONResponse(error_body("invalid_parameter", str(exc)), status_code=_status(request, 422))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method the path takes (RFC 9110 s15.5.6), not only the first route's
            allowed = allowed_methods(request.app, request.scope)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers or None)
