"""Presets, harm weights, areas, health, the map's settings, and the OGC boundary collections (one per loaded
area layer: districts, wards, lsoas...), registered in ``app.collections``."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile

from app.collections import CRS84, MAX_LIMIT, Collection, Items, ItemsRequest, Registry
from app.deps import State
from app.render import JSONResponse, frame_records
from app.state import ServiceState
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
    return {"layers": frame_records(state.store.area_layers())}


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


@router.get("/map/config", summary="What the map page needs from settings (tile URL, page size)", tags=["map"])
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
            "collections": "/collections", "hotspot_collection": "harm-spots"}


# ------------------------------------------------------------------------------------ OGC collections
def _area_items_for(layer: str) -> Callable[[ServiceState, ItemsRequest], Items]:
    def items(state: ServiceState, req: ItemsRequest) -> Items:
        import shapely

        frame = state.store.areas(layer)
        if req.feature_id is not None:
            frame = frame[frame["feature_id"].astype(str) == req.feature_id]
        geoms = np.array([shapely.from_wkb(bytes(b)) for b in frame["geometry_wkb"]], dtype=object)
        if req.bbox and len(geoms):  # datetime does not apply: boundaries have no time (OGC: ignored)
            keep = shapely.intersects(geoms, shapely.box(*req.bbox))
            frame, geoms = frame[keep], geoms[keep]
        matched = len(frame)
        if req.feature_id is None:
            frame, geoms = frame.iloc[req.offset: req.offset + req.limit], geoms[req.offset: req.offset + req.limit]
        feats = []
        for r, g in zip(frame.itertuples(index=False), geoms):
            g = shapely.orient_polygons(g) if hasattr(shapely, "orient_polygons") else shapely.normalize(g)
            feats.append({"type": "Feature", "id": str(r.feature_id),
                          "properties": {"id": str(r.feature_id), "name": r.name, "district": r.district},
                          "geometry": json.loads(shapely.to_geojson(g))})
        return Items(feats, matched, None, ["id", "name", "district"])

    return items


def _area_extent_for(layer: str) -> Callable[[ServiceState], dict]:
    def extent(state: ServiceState) -> dict:
        import shapely

        frame = state.store.areas(layer)
        if frame.empty:
            return {}
        b = shapely.total_bounds(shapely.from_wkb(np.array([bytes(x) for x in frame["geometry_wkb"]], dtype=object)))
        return {"spatial": {"bbox": [[round(float(v), 6) for v in b]], "crs": CRS84}}

    return extent


def _area_available_for(layer: str) -> Callable[[ServiceState], bool]:
    def available(state: ServiceState) -> bool:
        return bool(state.store.scalar("SELECT count(*) FROM areas WHERE layer = ?", [layer]))

    return available


def area_collection(layer: str, title: str, description: str) -> Collection:
    """A boundary layer loaded in the store (``Store.load_areas``) as a collection; shown once loaded."""
    return Collection(id=layer, title=title, description=description, items=_area_items_for(layer),
                      extent=_area_extent_for(layer), available=_area_available_for(layer), kind="areas",
                      style={"type": "outline"}, keywords=("boundaries",))


BOUNDARIES = (
    area_collection("districts", "Districts", "Local authority districts (ONS/OS boundaries, OGL v3.0)."),
    area_collection("wards", "Wards", "Electoral wards (ONS/OS boundaries, OGL v3.0)."),
    area_collection("lsoas", "LSOAs", "Lower layer super output areas, when a force loads them."),
)


def register_collections(registry: Registry) -> None:
    registry.add(*BOUNDARIES)
