"""The FastAPI application: wires the engines to HTTP. Start it with `harmspot serve` or `make serve`."""
from __future__ import annotations

import gc
import inspect
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

from app.assets import StaticAssets
from app.cache import CachedFastPath, GzipMiddleware
from app.collections import Registry
from app.errors import install_error_handlers
from app.eventloop import LoopGuard
from app.head import HeadAsGet
from app.limits import BodyLimitMiddleware
from app.render import JSONResponse
from app.routes import areas, datasets, hotspots, meta
from app.rowwriter import RowWriter
from app.security import AUDIT_COLUMNS, install_security, keyring_of
from app.state import open_state
from geodata.settings import Settings, get_settings

STATIC = Path(__file__).resolve().parent / "static"
DESCRIPTION = """
Harm-weighted hotspots for patrol planning. Offences are weighted by a crime harm index (the Cambridge
Crime Harm Index when a force loads its copy; harmspot's open Sentencing-Council-based table otherwise) and
mapped to H3 hexagons. Three doors onto one engine: the map (`/map`), `GET /hotspots` (JSON/CSV) for tasking
scripts, and GeoJSON for GIS. Every result names its weights table, time precision and caveats.

Results are computed once per store state: the read doors send an `ETag` and `Cache-Control: private, no-cache`,
answer `If-None-Match` with 304 until the next write, and gzip JSON/GeoJSON/CSV for `Accept-Encoding: gzip`;
the map's JavaScript and CSS are sent gzip-compressed too, with an ETag (docs/serving.md).

Contains public sector information licensed under the Open Government Licence v3.0 (data.police.uk; ONS/OS
boundaries).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.harmspot = state = open_state(settings)
        keyring_of(app)  # the keys, loaded here: the access middleware runs on the event loop
        app.state.harmspot_audit = RowWriter(state.store, "audit_log", AUDIT_COLUMNS, name="harmspot-audit",
                                            linger_s=settings.audit_linger_ms / 1000)
        await build_route_tables(app)
        app.openapi()  # the OpenAPI 3.0 document, built once here: FastAPI's /openapi.json route builds it on the loop
        gc.collect()
        gc.freeze()  # start-up objects (modules, schemas, routes) out of every later collection (docs/serving.md)
        try:
            yield
        finally:
            gc.unfreeze()  # collectable again (tests start many apps in one process)
            app.state.harmspot_audit.close()
            state.store.close()

    app = FastAPI(title="harmspot", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, default_response_class=JSONResponse, **_telemetry_off())
    app.add_middleware(CachedFastPath)  # innermost: a repeated GET answered from memory after the key check
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_mb * 1024 * 1024)
    install_security(app, settings)  # API keys + roles, audit log, demo mode, CORS (docs/security.md)
    app.add_middleware(GzipMiddleware)  # JSON/GeoJSON/CSV, compressed off the event loop (app/cache.py)
    app.add_middleware(LoopGuard, warn_ms=settings.loop_lag_warn_ms)  # no store call on the loop (app/eventloop.py)
    app.add_middleware(HeadAsGet)  # outermost: HEAD runs as GET, body dropped (app/head.py)
    install_error_handlers(app)
    app.state.harmspot_collections = Registry()  # OGC collections, registered by the routers that own them
    for module in (hotspots, datasets, meta, areas):
        _include(app, module)
    _include_optional_routers(app)
    _install_openapi_extras(app)
    assets = StaticAssets(directory=STATIC)  # text files gzip-compressed once per version (app/assets.py)
    app.mount("/static", assets, name="static")

    @app.get("/map", include_in_schema=False)
    async def map_page(request: Request) -> Response:
        return await assets.get_response("map.html", request.scope)  # the file found in a worker thread

    _install_docs(app)

    return app


async def build_route_tables(app: FastAPI) -> None:
    """FastAPI 0.165 (what pip installs today) builds each included router's table of routes on the first request that is matched
    against it - about 0.2-0.5 s for harmspot's routers on 2 cores, on the event loop, so the first request after a
    start froze every other one (the watchdog logged it). One request for a path no route matches, sent straight to
    the router at start-up (no middleware: no key check, no audit row), is matched against every router and builds
    them all. Older FastAPI builds them when routes are included: this costs a 404 then."""
    path = "/.harmspot-start-up"  # matches no route
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0), "app": app, "state": {}}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    try:
        await app.router(scope, receive, send)
    except HTTPException as exc:  # Starlette raises the 404 inside an app (the app's handler would render it)
        if exc.status_code != 404:
            raise


def _telemetry_off() -> dict:
    """FastAPI's own OpenTelemetry hooks (FastAPI >= 0.16x) look for a configured provider on every request;
    harmspot configures none, so they are switched off unless an ``OTEL_*`` variable asks for telemetry
    (docs/serving.md). Older FastAPI has no such hooks (and no ``telemetry`` argument)."""
    if any(k.startswith("OTEL_") for k in os.environ):
        return {}
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _install_docs(app: FastAPI) -> None:
    """Swagger UI (/docs) and ReDoc (/redoc) from assets vendored under app/static/vendor (npm swagger-ui-dist
    and redoc, licences beside them), so the documentation works with no internet."""
    vendor = "/static/vendor"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API documentation",
                                   swagger_js_url=f"{vendor}/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url=f"{vendor}/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url=f"{vendor}/swagger-ui/favicon-32x32.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - API reference",
                              redoc_js_url=f"{vendor}/redoc/redoc.standalone.js",
                              redoc_favicon_url=f"{vendor}/swagger-ui/favicon-32x32.png", with_google_fonts=False)


def _install_openapi_extras(app: FastAPI) -> None:
    """OGC API - Features: QGIS reads the largest `limit` from components.parameters (app/routes/ogc.py); then
    the whole description is served as OpenAPI 3.0.3, the version /conformance claims (app/openapi.py)."""
    from app import openapi

    try:
        from app.routes.ogc import install_openapi
    except ModuleNotFoundError:
        pass
    else:
        install_openapi(app)
    openapi.install(app)


def _include_optional_routers(app: FastAPI) -> None:
    """Routers of engines that may not be present in every build (statistics, RTM, patrol planning, OGC)."""
    import importlib

    for name in ("stats", "rtm", "ogc", "patrol", "reports", "exports"):
        try:
            module = importlib.import_module(f"app.routes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"app.routes.{name}":
                raise
            continue
        _include(app, module)


def _include(app: FastAPI, module) -> None:
    """A router, and the OGC collections it provides (``register_collections``, see app/collections.py)."""
    app.include_router(module.router)
    register = getattr(module, "register_collections", None)
    if register is not None:
        register(app.state.harmspot_collections)


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
