"""Presets, harm weights, health and the map's settings (boundary layers and their OGC collections live in
app.routes.areas)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from app.collections import MAX_LIMIT
from app.deps import State
from app.render import JSONResponse
from geodata.harm import load_weights_file
from hotspots.ranking.presets import PRESETS

router = APIRouter(tags=["reference"])


@router.get("/health", summary="Liveness and store status")
def health(state: State, request: Request) -> dict:
    from app.security import access_status

    n = state.store.scalar("SELECT count(*) FROM offences")
    return {"status": "ok", "offences": int(n or 0), "default_weights": state.default_weights.name,
            "store": str(state.settings.store_path), "access": access_status(request.app)}


@router.get("/presets", summary="Offence selections with their source definitions")
def presets() -> dict:
    return {"presets": [p.to_dict() for p in PRESETS.values()]}


@router.get("/harm-weights", summary="Loaded harm weights tables; the default first")
def harm_weights(state: State) -> dict:
    tables = []
    for name in [state.default_weights.name] + [n for n in state.store.weights_tables()["weights_table"]
                                                 if n != state.default_weights.name]:
        t = state.store.weights_table(name)
        tables.append({**t.describe(), "default": name == state.default_weights.name})
    return {"default": state.default_weights.name, "tables": tables}


@router.post("/harm-weights", summary="Load a harm weights table (CSV: ho_code|group|category, days; or a CCHI sheet)",
             status_code=201)
def post_harm_weights(state: State, file: Annotated[UploadFile, File()],
                      name: Annotated[str, Form(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]) -> JSONResponse:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as fh:
        fh.write(file.file.read())
        path = Path(fh.name)
    try:
        table = load_weights_file(path, name)
    finally:
        path.unlink(missing_ok=True)
    state.store.save_weights(table)
    return JSONResponse(table.describe(), status_code=201)


@router.get("/map/config", summary="What the map page needs from settings (tile URL, page size, protective marking)", tags=["map"])
def map_config(state: State) -> dict:
    """Settings for the map, as JSON (never spliced into HTML): the optional XYZ tile URL and paging limits."""
    tile_url = state.settings.tile_url
    problem = None
    if tile_url:
        ok = (re.match(r"^(https?://|/)[^\s\"'<>]+$", tile_url) is not None
              and all(k in tile_url for k in ("{z}", "{x}", "{y}")))
        if not ok:
            problem = "HARMSPOT_TILE_URL must be http(s):// or /path with {z}, {x} and {y}; ignored"
            tile_url = None
    return {"tile_url": tile_url, "tile_url_problem": problem, "max_limit": MAX_LIMIT,
            "collections": "/collections", "hotspot_collection": "harm-spots",
            "protective_marking": state.settings.protective_marking}
