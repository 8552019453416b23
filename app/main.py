"""The FastAPI application: wires the engines to HTTP. Start it with `harmspot serve` or `make serve`."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from app.errors import install_error_handlers
from app.limits import BodyLimitMiddleware
from app.routes import datasets, hotspots, meta
from app.state import open_state
from geodata.settings import Settings, get_settings

STATIC = Path(__file__).resolve().parent / "static"
DESCRIPTION = """
Harm-weighted hotspots for patrol planning. Offences are weighted by a crime harm index (the Cambridge
Crime Harm Index when a force loads its copy; harmspot's open Sentencing-Council-based table otherwise) and
mapped to H3 hexagons. Three doors onto one engine: the map (`/map`), `GET /hotspots` (JSON/CSV) for tasking
scripts, and GeoJSON for GIS. Every result names its weights table, time precision and caveats.

Contains public sector information licensed under the Open Government Licence v3.0 (data.police.uk; ONS/OS
boundaries).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.harmspot = open_state(settings)
        try:
            yield
        finally:
            app.state.harmspot.store.close()

    app = FastAPI(title="harmspot", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_mb * 1024 * 1024)
    install_error_handlers(app)
    for module in (hotspots, datasets, meta):
        app.include_router(module.router)
    _include_optional_routers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/map", include_in_schema=False)
    def map_page() -> FileResponse:
        return FileResponse(STATIC / "map.html", media_type="text/html")

    @app.get("/", summary="Landing page: the map for browsers, links for API clients", tags=["reference"])
    def landing(request: Request, f: str | None = None):
        accept = request.headers.get("accept", "")
        if f != "json" and "text/html" in accept:
            return RedirectResponse("/map")
        base = str(request.base_url).rstrip("/")
        return JSONResponse({
            "title": "harmspot", "description": "Harm-weighted hotspots (CCHI on H3 cells) for patrol planning",
            "links": [
                {"href": f"{base}/?f=json", "rel": "self", "type": "application/json", "title": "this document"},
                {"href": f"{base}/openapi.json", "rel": "service-desc",
                 "type": "application/vnd.oai.openapi+json;version=3.0", "title": "OpenAPI definition"},
                {"href": f"{base}/docs", "rel": "service-doc", "type": "text/html", "title": "API documentation"},
                {"href": f"{base}/hotspots", "rel": "data", "type": "application/json", "title": "harm spots"},
                {"href": f"{base}/map", "rel": "alternate", "type": "text/html", "title": "map"},
            ]})

    return app


def _include_optional_routers(app: FastAPI) -> None:
    """Routers of engines that may not be present in every build (statistics, RTM, patrol planning, OGC)."""
    import importlib

    for name in ("stats", "rtm", "ogc", "patrol"):
        try:
            module = importlib.import_module(f"app.routes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"app.routes.{name}":
                raise
            continue
        app.include_router(module.router)


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
