"""Boundary layers: list, load (GeoJSON / GeoPackage / zipped Shapefile, any CRS), delete, GeoJSON, and one OGC
collection per layer (loaded layers, and each dataset's automatic ``lad``/``lsoa`` layers), registered in
``app.collections``.  The engines are geodata.boundaries (reading, checking, storing) and geodata.areas (which
layer a request means for a dataset)."""
from __future__ import annotations

import json
from typing import Annotated, Callable

import numpy as np
import pandas as pd
import shapely
from fastapi import APIRouter, File, Form, Query, Request, UploadFile

from app.collections import CRS84, Collection, Items, ItemsRequest, Registry
from app.deps import State, forced_public
from app.errors import ApiError
from app.render import GEOJSON_MEDIA, JSONResponse
from app.state import ServiceState
from geodata import boundaries as bd
from geodata import roads as rd
from geodata.areas import choose_layer, layer_listing
from geodata.auto_areas import APPROXIMATE_NOTE, split_layer
from geodata.cells import bbox_geometry
from geodata.datasets import default_dataset
from geodata.store import DATASET_LAYER, StoreError

router = APIRouter(tags=["areas"])
AREA_FIELDS = ["id", "name", "district"]  # automatic layers add "approximate": true


def _dataset(state: ServiceState, dataset: str | None) -> str | None:
    if dataset is not None:
        state.store.require_dataset(dataset)
        return dataset
    return default_dataset(state.store, state.settings.default_dataset)[0]


# bd.check_layer_name as a pattern: bd.LAYER_NAME without the automatic layers' reserved names (lad, lsoa, lad-*,
# lsoa-*); '@' and '__dataset__' are outside LAYER_NAME already
LAYER_NAME_SCHEMA = {"pattern": r"^(?!(lad|lsoa)(-|$))[a-z][a-z0-9_-]{0,39}$"}


def _boundary_error(exc: bd.BoundaryError) -> ApiError:
    return ApiError(exc.status, "invalid_boundary_file" if exc.status == 422 else "payload_too_large", str(exc),
                    exc.details)


@router.get("/areas", summary="Boundary layers: loaded ones, the dataset's automatic ones, and its district layer",
            description="`layers`: every loaded layer (features, fields used, source) and the automatic `lad` and "
            "`lsoa` layers of `dataset` (default: the default dataset), built from its records and approximate. "
            "`district_layer`: the layer tasking, spikes by area and the map's district list use for that dataset "
            "- the loaded `districts` layer when at least half of the dataset's records fall in it, else the "
            "automatic `lad` layer - and why.")
def get_areas(state: State, dataset: Annotated[str | None, Query(description="Dataset (default: the default "
                                                                 "dataset).")] = None) -> JSONResponse:
    ds = _dataset(state, dataset)
    out = layer_listing(state.store, ds)
    out["dataset"] = ds
    if out.get("district_layer"):
        out["district_layer"]["collection"] = collection_id(out["district_layer"]["stored_as"])
    return JSONResponse(out)


@router.post("/areas", status_code=201, summary="Load a boundary layer (GeoJSON, GeoPackage or zipped Shapefile)",
             description="Any CRS (British National Grid is common) is reprojected to WGS84. Fields not given are "
             "guessed (ONS/OS patterns: LAD*NM/LAD*CD, WD*NM/WD*CD, *_NAME, name...) and the guess is reported. "
             "Invalid rings are repaired with make_valid, or the feature is rejected with its index and reason; "
             "Polygon and MultiPolygon are stored as MultiPolygon (one geometry type per layer). Re-adding a layer "
             "replaces it in one transaction; a refused file stores nothing. Name the layer `districts` to make it "
             "the patrol-area layer of every dataset it covers. Analyst role.")
def post_areas(
    state: State,
    file: Annotated[UploadFile, File(description="GeoJSON, GeoPackage (.gpkg) or a zip holding one Shapefile")],
    layer: Annotated[str, Form(description="Layer name: lower-case letters, digits, _ or - (e.g. districts, "
                               "wards, beats)", json_schema_extra=LAYER_NAME_SCHEMA)],
    name_field: Annotated[str | None, Form(description="Field with the feature name (guessed if left out)")] = None,
    id_field: Annotated[str | None, Form(description="Field with the feature id/code (guessed if left out)")] = None,
    district_field: Annotated[str | None, Form(description="Field with the district each feature lies in")] = None,
    source_layer: Annotated[str | None, Form(description="Layer inside a GeoPackage holding several")] = None,
) -> JSONResponse:
    data = file.file.read()
    try:
        report = bd.add_layer(state.store, layer, data, file.filename or "upload", name_field or None,
                              id_field or None, district_field or None, source_layer or None)
    except bd.BoundaryError as exc:
        raise _boundary_error(exc) from exc
    report["collection"] = collection_id(layer)
    return JSONResponse(report, status_code=201)


@router.delete("/areas/{layer}", summary="Delete a loaded boundary layer (admin)",
               description="Automatic layers (lad, lsoa) follow their dataset's records and cannot be deleted.")
def delete_areas(state: State, layer: str) -> JSONResponse:
    try:
        n = bd.delete_layer(state.store, layer)
    except bd.BoundaryError as exc:  # a name no layer can have: none stored (404); an automatic layer's: 409
        if not bd.LAYER_NAME.match(layer):
            raise ApiError(404, "not_found", f"no loaded area layer '{layer}'") from exc
        raise ApiError(409, "conflict", str(exc)) from exc
    if not n:
        raise ApiError(404, "not_found", f"no loaded area layer '{layer}'")
    return JSONResponse({"layer": layer, "deleted_features": n})


@router.get("/areas/{layer}.geojson", summary="A boundary layer as GeoJSON (for the map and GIS)",
            description="`layer` may be a loaded layer, `lad` or `lsoa` (the dataset's automatic layers), or "
            "`districts` (the dataset's district layer: loaded when it covers the dataset, else automatic). The "
            "`metadata` member names the layer used. Public output (a public key, HARMSPOT_DISCLOSURE=public) "
            "gets loaded layers only: an automatic outline is drawn from res-10 cells holding records, finer than "
            "the published grid (403 `not_public`).",
            responses={200: {"content": {GEOJSON_MEDIA: {}}},
                       403: {"description": "An automatic layer asked for with public output"}})
def area_geojson(request: Request, state: State, layer: str,
                 dataset: Annotated[str | None, Query(description="Dataset whose automatic or district layer is "
                                                      "meant (default: the default dataset).")] = None) -> JSONResponse:
    ds = _dataset(state, dataset)
    try:
        choice = choose_layer(state.store, ds, layer) if ds else None
    except StoreError as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    stored = choice.stored if choice else layer
    frame = state.store.areas(stored)
    if frame.empty or stored == DATASET_LAYER:
        raise ApiError(404, "not_found", f"no area layer '{layer}'")
    if split_layer(stored)[1] is not None and forced_public(request):
        raise ApiError(403, "not_public", f"area layer '{layer}' of {ds} is automatic: its outlines follow the "
                       "res-10 cells holding records, finer than public output publishes; load a boundary file "
                       "(POST /areas) to publish outlines (docs/security.md#public-output-mode-disclosure-control)")
    feats = _features(frame, split_layer(stored)[1] is not None)
    meta = {"layer": choice.to_dict() if choice else {"name": layer}, "dataset": ds,
            "collection": collection_id(stored)}
    if choice and choice.approximate:
        meta["note"] = APPROXIMATE_NOTE
    return JSONResponse({"type": "FeatureCollection", "features": feats, "metadata": meta},
                        media_type=GEOJSON_MEDIA)


def _features(frame: pd.DataFrame, approximate: bool) -> list[dict]:
    geoms = shapely.from_wkb(np.array([bytes(b) for b in frame["geometry_wkb"]], dtype=object)) if len(frame) else []
    out = []
    for r, g in zip(frame.itertuples(index=False), geoms):
        if g.geom_type == "Polygon":  # one geometry type per layer (a valid GeoPackage layer in GDAL/QGIS)
            g = shapely.MultiPolygon([g])
        g = shapely.orient_polygons(g) if hasattr(shapely, "orient_polygons") else shapely.normalize(g)
        props = {"id": str(r.feature_id), "name": r.name,
                 "district": None if r.district is None or pd.isna(r.district) else r.district}
        if approximate:
            props["approximate"] = True
        out.append({"type": "Feature", "id": str(r.feature_id), "properties": props,
                    "geometry": json.loads(shapely.to_geojson(g))})
    return out


# ------------------------------------------------------------------------------------ OGC collections
def collection_id(stored: str) -> str:
    """OGC collection id of a stored layer: the layer's own name, or ``lad-<dataset>`` for an automatic one
    (loaded layer names may not start with lad-/lsoa-, so the two never collide)."""
    name, own = split_layer(stored)
    return stored if own is None else f"{name}-{own}"


def _items_for(stored: str) -> Callable[[ServiceState, ItemsRequest], Items]:
    def items(state: ServiceState, req: ItemsRequest) -> Items:
        frame = state.store.areas(stored)
        if req.feature_id is not None:
            frame = frame[frame["feature_id"].astype(str) == req.feature_id]
        geoms = np.array([shapely.from_wkb(bytes(b)) for b in frame["geometry_wkb"]], dtype=object)
        if req.bbox and len(geoms):  # datetime does not apply: boundaries have no time (OGC: ignored)
            keep = shapely.intersects(geoms, bbox_geometry(req.bbox))
            frame = frame[keep]
        matched = len(frame)
        if req.feature_id is None:
            frame = frame.iloc[req.offset: req.offset + req.limit]
        auto = split_layer(stored)[1] is not None
        return Items(_features(frame, auto), matched, None, AREA_FIELDS + (["approximate"] if auto else []))

    return items


def _extent_for(stored: str) -> Callable[[ServiceState], dict]:
    def extent(state: ServiceState) -> dict:
        frame = state.store.areas(stored)
        if frame.empty:
            return {}
        b = shapely.total_bounds(shapely.from_wkb(np.array([bytes(x) for x in frame["geometry_wkb"]], dtype=object)))
        return {"spatial": {"bbox": [[round(float(v), 6) for v in b]], "crs": CRS84}}

    return extent


def area_collections(state: ServiceState) -> list[Collection]:
    """One collection per stored layer (loaded first, then automatic), every geometry a MultiPolygon."""
    names = state.store.cached("area_collections", lambda: state.store.query_df(
        f"SELECT DISTINCT layer FROM areas WHERE layer <> '{DATASET_LAYER}' ORDER BY layer")["layer"].tolist())
    out = []
    for stored in sorted(names, key=lambda n: (split_layer(n)[1] is not None, n)):
        name, own = split_layer(stored)
        if own is None:
            title = name.replace("_", " ").replace("-", " ").capitalize()
            desc = f"Boundary layer '{name}' loaded into harmspot (POST /areas); MultiPolygon features."
        else:
            title = f"{'Districts' if name == 'lad' else 'LSOAs'} of {own} (automatic, approximate)"
            desc = (f"{'Local authority districts' if name == 'lad' else 'LSOAs'} of dataset '{own}', built from "
                    f"its records; {APPROXIMATE_NOTE}.")
        out.append(Collection(id=collection_id(stored), title=title, description=desc, items=_items_for(stored),
                              extent=_extent_for(stored), kind="areas", style={"type": "outline"},
                              public=own is None,  # automatic outlines are drawn from record locations
                              keywords=("boundaries",) if own is None else ("boundaries", "automatic", own)))
    return out


def register_collections(registry: Registry) -> None:
    registry.add_dynamic(area_collections)
    registry.add_dynamic(lambda state: road_collections(state))  # defined below


# ------------------------------------------------------------------------------------ road layers
@router.post("/roads", status_code=201, summary="Load a road layer (street lines: GeoJSON, GeoPackage or zipped "
             "Shapefile)", tags=["roads"],
             description="Street lines drawn under the hexagons on the map and on the patrol sheet's small maps, so "
             "an officer can find the street without a tile server (OS Open Roads, OS MasterMap Highways, an "
             "OpenStreetMap extract, a force gazetteer). Any CRS is reprojected to WGS84; every geometry is stored "
             "as a MultiLineString; a feature that is not a line is rejected with its index and reason; the road "
             "name field is guessed when not given (name, name1, road_name, street...) and the guess reported. "
             "Same bounds as boundary files. Re-adding a layer replaces it in one transaction; a refused file "
             "stores nothing. Analyst role.")
def post_roads(
    state: State,
    file: Annotated[UploadFile, File(description="GeoJSON, GeoPackage (.gpkg) or a zip holding one Shapefile")],
    layer: Annotated[str, Form(description="Layer name: lower-case letters, digits, _ or - (e.g. roads)",
                               json_schema_extra=LAYER_NAME_SCHEMA)] = "roads",
    name_field: Annotated[str | None, Form(description="Field with the road name (guessed if left out)")] = None,
    source_layer: Annotated[str | None, Form(description="Layer inside a GeoPackage holding several")] = None,
) -> JSONResponse:
    data = file.file.read()
    try:
        report = rd.add_roads(state.store, layer, data, file.filename or "upload", name_field or None,
                              source_layer or None)
    except bd.BoundaryError as exc:
        raise _boundary_error(exc) from exc
    report["collection"] = ROADS_PREFIX + layer
    return JSONResponse(report, status_code=201)


@router.get("/roads", summary="Road layers loaded", tags=["roads"])
def get_roads(state: State) -> JSONResponse:
    return JSONResponse({"layers": [{**r, "collection": ROADS_PREFIX + r["layer"]} for r in rd.list_roads(state.store)]})


@router.delete("/roads/{layer}", summary="Delete a road layer (admin)", tags=["roads"])
def delete_roads(state: State, layer: str) -> JSONResponse:
    n = rd.delete_roads(state.store, layer)
    if not n:
        raise ApiError(404, "not_found", f"no road layer '{layer}'")
    return JSONResponse({"layer": layer, "deleted_features": n})


ROADS_PREFIX = "roads-"


def _road_items(layer: str) -> Callable[[ServiceState, ItemsRequest], Items]:
    def items(state: ServiceState, req: ItemsRequest) -> Items:
        if req.feature_id is not None:
            frame, _ = rd.roads_in_bbox(state.store, None, layer)
            frame = frame[frame["idx"].astype(str) == req.feature_id]
            matched = len(frame)
        else:
            frame, matched = rd.roads_in_bbox(state.store, req.bbox, layer, req.limit, req.offset)
        feats = [{"type": "Feature", "id": str(r.idx), "properties": {"name": r.name or None},
                  "geometry": json.loads(shapely.to_geojson(r.geometry))} for r in frame.itertuples()]
        return Items(feats, matched, None, ["name"])

    return items


def _road_extent(layer: str) -> Callable[[ServiceState], dict]:
    def extent(state: ServiceState) -> dict:
        row = [r for r in rd.list_roads(state.store) if r["layer"] == layer]
        return {"spatial": {"bbox": [[round(v, 6) for v in row[0]["bbox"]]], "crs": CRS84}} if row else {}

    return extent


def road_collections(state: ServiceState) -> list[Collection]:
    """One collection per road layer: MultiLineString features with their name; the map draws them under the
    hexagons."""
    names = state.store.cached("road_collections", lambda: rd.road_layer_names(state.store))
    return [Collection(id=ROADS_PREFIX + n, title=f"Roads: {n}", description=f"Road layer '{n}' loaded into "
                       "harmspot (POST /roads); MultiLineString features with the road name.", items=_road_items(n),
                       extent=_road_extent(n), kind="lines", style={"type": "lines", "property": "name"},
                       keywords=("roads",)) for n in names]

