"""Presets, harm weights, areas and health."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from app.deps import State
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


@router.get("/areas", summary="Loaded boundary layers")
def areas(state: State) -> dict:
    return {"layers": state.store.area_layers().to_dict("records")}


@router.get("/areas/{layer}.geojson", summary="A boundary layer as GeoJSON (for the map and GIS)",
            responses={200: {"content": {"application/geo+json": {}}}})
def area_geojson(state: State, layer: str) -> JSONResponse:
    import shapely

    frame = state.store.areas(layer)
    if frame.empty:
        from app.errors import ApiError

        raise ApiError(404, "not_found", f"no area layer '{layer}'")
    feats = []
    for r in frame.itertuples():
        geom = shapely.from_wkb(bytes(r.geometry_wkb))
        geom = shapely.orient_polygons(geom) if hasattr(shapely, "orient_polygons") else geom
        feats.append({"type": "Feature", "id": r.feature_id,
                      "properties": {"id": r.feature_id, "name": r.name, "district": r.district},
                      "geometry": json.loads(shapely.to_geojson(geom))})
    return JSONResponse({"type": "FeatureCollection", "features": feats}, media_type="application/geo+json")
