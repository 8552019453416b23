"""One error shape for every failure: {"error": {"code", "message", "details"}} with the right status."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from geodata.harm import WeightsError
from geodata.ingest import IngestError
from geodata.store import StoreError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: object = None):
        self.status, self.code, self.message, self.details = status, code, message, details


def error_body(code: str, message: str, details: object = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        details = [{"loc": list(e.get("loc", [])), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"] if x not in ("query", "body"))
        return JSONResponse(error_body("invalid_parameter", f"{where}: {first['msg']}" if where else str(first["msg"]),
                                       details), status_code=422)

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError):
        msg = str(exc)
        status = 404 if msg.startswith("unknown dataset") or msg.startswith("unknown area") or msg.startswith("unknown weights") else 422
        return JSONResponse(error_body("not_found" if status == 404 else "invalid_request", msg), status_code=status)

    @app.exception_handler(IngestError)
    async def _ingest(_: Request, exc: IngestError):
        return JSONResponse(error_body("unreadable_file", str(exc)), status_code=422)

    @app.exception_handler(WeightsError)
    async def _weights(_: Request, exc: WeightsError):
        return JSONResponse(error_body("invalid_weights_table", str(exc)), status_code=422)

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError):
        return JSONResponse(error_body("invalid_parameter", str(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)
