"""The RTM doors: environmental layers (``/layers``) and Risk Terrain Model runs (``/rtm/runs``).

* ``POST /layers`` (multipart: file, name, type) stores a point layer (CSV lon/lat or easting/northing,
  GeoJSON, GeoPackage) with its rejects (line + reason) and attribution; ``GET /layers``,
  ``GET /layers/{name}``, ``GET /layers/{name}.geojson``.
* ``POST /rtm/runs`` (JSON) plans a run (a bad request is a 422, no run is created) and queues it: 202 with the
  run id.  It runs in the background (``app.rtm_jobs.RunManager``, one worker); ``GET /rtm/runs/{id}`` reports
  status, stage and fraction, and the result when done; ``GET /rtm/runs/{id}/cells.geojson`` is the risk
  surface and ``GET /rtm/runs/{id}/priority-places`` the priority places with their narratives.
* OGC API - Features collections ``rtm-risk`` and ``priority-places`` (latest done run) and ``poi-<layer>``
  (one per stored layer) live here and are registered in ``app.collections`` (``register_collections``).

Roles (app/security.py): POST /layers and POST /rtm/runs need analyst; reads need viewer.  See docs/rtm.md.
"""
from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator

from app.collections import CRS84, Collection, Items, ItemsRequest, Registry
from app.deps import PERIOD_SCHEMA, PRESET_SCHEMA, State
from app.errors import ApiError
from app.render import JSONResponse, to_csv
from app.rtm_jobs import PlanError, QueueFull, RunManager, get_run, latest_done, list_runs, plan_run
from geodata import layer_store
from geodata.cells import bbox_mask, cell_boundaries_lonlat, cell_centres, from_hex, to_hex
from geodata.layers import DEFAULT_BUFFER_M, LayerError
from hotspots.ranking.presets import offence_names
from hotspots.ranking.query import PERIOD_PATTERN
from rtm.features import Variable
from rtm.grid import square_centres_lonlat, square_geometry, square_ids
from rtm.run import CLASS_LABELS

GEOJSON = "application/geo+json"
MAX_CELLS = 100_000


@asynccontextmanager
async def _lifespan(app):
    """Nested in the app's lifespan (FastAPI merges router lifespans): the store is open here, and the worker
    is stopped (the running run cancelled at its next progress report) before the store closes."""
    state = app.state.harmspot
    manager = RunManager(state.store, state.default_weights)
    app.state.harmspot_rtm = manager
    try:
        yield
    finally:
        manager.shutdown()


router = APIRouter(tags=["rtm"], lifespan=_lifespan)


def _manager(request: Request) -> RunManager:
    return request.app.state.harmspot_rtm


# ============================================================================================== layers
@router.post("/layers", status_code=201, summary="Upload an environmental point layer (pubs, stations, ...)",
             description="CSV/TSV with longitude/latitude or easting/northing columns (detected from the header), "
             "GeoJSON or GeoPackage. Every row is kept, rejected with its line and reason, or counted as lying "
             "more than buffer_m outside the dataset's study area (features within it are kept: edge effects). "
             "The layer is stored in one transaction; the name check is inside it, so of parallel uploads of one new "
             "name without replace exactly one is stored (201) and the others get 409. Needs the analyst role.",
             responses={409: {"description": "A layer of that name exists (replace=false), or the write conflicted"}})
def post_layer(
    state: State,
    file: Annotated[UploadFile, File(description="The layer file")],
    name: Annotated[str, Form(description="Layer id: letters, digits, _ or -", examples=["bus_stops"],
                              json_schema_extra={"pattern": layer_store.LAYER_NAME.pattern})],
    type: Annotated[str, Form(description="Singular noun used in narratives (1-60 characters)", examples=["bus stop"],
                              json_schema_extra={"pattern": r"^\s*\S.{0,59}$"})],
    plural: Annotated[str | None, Form(description="Plural noun (default: type + s)")] = None,
    licence: Annotated[str | None, Form(description="Licence, e.g. OGL v3.0 or ODbL 1.0")] = None,
    attribution: Annotated[str | None, Form(description="Attribution to show with the layer")] = None,
    dataset: Annotated[str | None, Form(description="Keep only features within buffer_m of this dataset's "
                                        "study area (default: keep every feature; an unknown dataset is a 404)")] = None,
    buffer_m: Annotated[float, Form(ge=0, le=10_000, description="Edge buffer, metres")] = DEFAULT_BUFFER_M,
    replace: Annotated[bool, Form(description="Replace a layer of the same name")] = False,
) -> JSONResponse:
    try:
        summary = layer_store.add_layer(state.store, file.filename or "upload.csv", name, type,
                                        data=file.file.read(), plural=plural or "", licence=licence or "",
                                        attribution=attribution or "", dataset=dataset, buffer_m=buffer_m,
                                        replace=replace)
    except layer_store.LayerExists as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    except layer_store.InvalidLayerRequest as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from exc
    except LayerError as exc:
        raise ApiError(422, "unreadable_file", str(exc)) from exc
    return JSONResponse(summary, status_code=201)


@router.get("/layers", summary="Stored environmental layers: type, features, rejects, licence and attribution")
def get_layers(state: State) -> dict:
    return {"layers": layer_store.list_layers(state.store)}


@router.get("/layers/{name}.geojson", summary="A layer's points as GeoJSON (RFC 7946)",
            responses={200: {"content": {GEOJSON: {}}}})
def get_layer_geojson(state: State, name: str) -> Response:
    meta = _layer_or_404(state, name)
    return Response(json.dumps(_points_fc(state, name, meta)), media_type=GEOJSON)


@router.get("/layers/{name}", summary="One layer: summary and its first rejected rows (line + reason)")
def get_layer(state: State, name: str, limit: Annotated[int, Query(ge=0, le=10_000)] = 100) -> dict:
    meta = _layer_or_404(state, name)
    return {**meta, "rejects": layer_store.layer_rejects(state.store, name, limit=limit)}


def _layer_or_404(state, name: str) -> dict:
    try:
        return layer_store.layer_summary(state.store, name)
    except layer_store.UnknownLayer as exc:
        raise ApiError(404, "not_found", str(exc)) from exc


def _point_features(state, name: str, meta: dict, bbox=None) -> list[dict]:
    pts = layer_store.layer_points(state.store, name)
    if bbox:
        pts = pts[bbox_mask(pts.lon.to_numpy(float), pts.lat.to_numpy(float), bbox)]
    return [{"type": "Feature", "id": f"{name}.{int(r.idx)}",
             "geometry": {"type": "Point", "coordinates": [round(float(r.lon), 7), round(float(r.lat), 7)]},
             "properties": {"layer": name, "type": meta["type"], "name": None if pd.isna(r.label) else r.label}}
            for r in pts.itertuples(index=False)]


def _points_fc(state, name: str, meta: dict) -> dict:
    return {"type": "FeatureCollection", "features": _point_features(state, name, meta),
            "metadata": {k: meta[k] for k in ("name", "type", "features", "source", "licence", "attribution")}}


# ============================================================================================== runs
def _unset(name: str) -> dict:
    """Schema clause: ``name`` is absent or null."""
    return {"properties": {name: {"type": "null"}}}


def _given(name: str, schema: dict) -> dict:
    """Schema clause: ``name`` is present and matches ``schema`` (not null)."""
    return {"required": [name], "properties": {name: schema}}


# The run options that only go together, stated in the body's schema so that a body the document allows is one
# the service takes (issue 13 item 14). OpenAPI 3.0 has no if/then, but "A only with B" is anyOf[A unset, B];
# app.rtm_jobs.plan_run refuses the same bodies with a 422 that names the rule (tests/test_rtm_api.py checks the
# two agree). What stays unstated is a comparison of values: the test period right after training, periods that
# hold data.
RUN_RULES = [
    {"description": "cell_size_m is for grid=square",
     "anyOf": [_unset("cell_size_m"), _given("grid", {"enum": ["square"]})]},
    {"description": "grid=square needs cell_size_m or block_length_m (cells are half a block)",
     "anyOf": [{"properties": {"grid": {"enum": ["h3"]}}}, _given("cell_size_m", {"type": "number"}),
               _given("block_length_m", {"type": "number"})]},
    {"description": "distances_blocks needs block_length_m",
     "anyOf": [_unset("distances_blocks"), _given("block_length_m", {"type": "number"})]},
    {"description": "tweedie_power is for outcome=harm",
     "anyOf": [_unset("tweedie_power"), _given("outcome", {"enum": ["harm"]})]},
]


class RTMRunRequest(BaseModel):
    """An RTM run. Offences are selected as on /hotspots (dataset, preset or offences, area, weights); the grid
    is every H3 cell of the area (or of the dataset's study area) at ``resolution``."""

    model_config = {"populate_by_name": True, "extra": "forbid", "json_schema_extra": {"allOf": RUN_RULES}}

    dataset: str | None = Field(None, description="Dataset (default: the most recent).", examples=["essex-sample"])
    date_from: str | None = Field(None, alias="from", json_schema_extra=PERIOD_SCHEMA, description="Training start, YYYY-MM or YYYY-MM-DD "
                                  "(default: the first offence).")
    date_to: str | None = Field(None, alias="to", json_schema_extra=PERIOD_SCHEMA, description="Training end, inclusive (default: test_months "
                                "before the end of the data or of test_to).")
    test_from: str | None = Field(None, json_schema_extra=PERIOD_SCHEMA, description="Test start: must be the day after training ends (or give "
                                  "only this instead of `to`).")
    test_to: str | None = Field(None, json_schema_extra=PERIOD_SCHEMA, description="Test end, inclusive (default: the end of the data).")
    test_months: int = Field(3, ge=1, le=36, description="Test period length in months when `to`/`test_from` "
                             "are not given.")
    preset: str | None = Field(None, description="Offence preset (default op-ark; see GET /presets).",
                               json_schema_extra=PRESET_SCHEMA)
    offences: list[Annotated[str, Field(json_schema_extra={"enum": offence_names()})]] | None = Field(
        None, max_length=100, description="Offence categories or groups (as on /hotspots); overrides the preset.")
    layers: list[str] | None = Field(None, max_length=60, json_schema_extra={"uniqueItems": True},
                                     description="Layer names, each once (default: every stored layer).")
    resolution: int = Field(10, ge=7, le=11, description="H3 resolution of the grid (10 ~ 15,000 m2 cells); "
                            "with grid=square, the resolution of the study-area cells the squares must fall in.")
    grid: Literal["h3", "square"] = Field("h3", description="h3: H3 cells at `resolution`; square: square cells in "
                                          "EPSG:27700 of `cell_size_m`, or half `block_length_m` (the RTMDx "
                                          "rule), whose centres lie in the study area.")
    cell_size_m: float | None = Field(None, ge=25, le=2000, description="Square grid cell side in metres "
                                      "(default: half the median street-block length).")
    block_length_m: float | None = Field(None, ge=20, le=1000, description="Median street-block length in "
                                         "metres. When given, spatial influence is tested at multiples of it "
                                         "(`distances_blocks`, default 0.5 to 3 blocks in half-block steps) "
                                         "unless `distances` are given, and a square grid defaults to half a "
                                         "block. harmspot cannot measure it (no street network in the bundled "
                                         "data): take it from a street centreline layer such as OS Open Roads.")
    distances_blocks: list[Annotated[float, Field(ge=0.1, le=20)]] | None = Field(None, min_length=1, max_length=20, description="Multiples of "
                                                 "block_length_m to test (default 0.5, 1, 1.5, 2, 2.5, 3).")
    outcome: Literal["count", "harm"] = Field("count", description="count: offences per cell, Poisson or "
                                              "negative binomial by BIC (RTMDx). harm: harm per cell (sum of the "
                                              "offences' harm weights), Tweedie compound Poisson-gamma model; "
                                              "RRVs are then ratios of expected harm.")
    tweedie_power: float | None = Field(None, gt=1, lt=2, description="harm outcome: fix the Tweedie power "
                                        "(default: estimated by profile likelihood).")
    area: str | None = Field(None, description="Area (layer:feature_id or a name), e.g. districts:E07000070; "
                             "default: the dataset's study area.")
    weights: str | None = Field(None, description="Harm weights table for priority places (default: service's).")
    distances: list[Annotated[float, Field(ge=1, le=5000)]] | None = Field(None, min_length=1, max_length=20, description="Spatial influence "
                                          "distances in metres (default 50 m steps to 400 m).")
    operationalisations: list[Literal["proximity", "density"]] | None = Field(None, min_length=1, max_length=2)
    bootstrap: int = Field(5, ge=0, le=100, description="Block-bootstrap resamples for selection stability "
                           "(default 5 keeps a sample run to seconds; the library default is 20).")
    folds: int = Field(5, ge=2, le=10, description="Spatially blocked CV folds for screening.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    recent_months: int = Field(12, ge=1, le=60, description="Window of recent harm for priority places.")
    priority_top: int = Field(25, ge=1, le=500, description="Number of priority places.")

    @field_validator("date_from", "date_to", "test_from", "test_to")
    @classmethod
    def _period(cls, v: str | None) -> str | None:
        if v is not None and not PERIOD_PATTERN.match(v.strip()):
            raise ValueError("use YYYY-MM or YYYY-MM-DD")
        return v.strip() if v else v

    @field_validator("distances")
    @classmethod
    def _distances(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not (1 <= d <= 5000) for d in v):
            raise ValueError("distances are 1 to 5000 metres")
        return v

    @field_validator("distances_blocks")
    @classmethod
    def _blocks(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not (0.1 <= d <= 20) for d in v):
            raise ValueError("distances_blocks are 0.1 to 20 block lengths")
        return v


@router.post("/rtm/runs", status_code=202, summary="Start a Risk Terrain Model run (background job)",
             description="Validates the request (404 for a dataset, area, layer or weights table that is not "
             "stored; 409 when the stored data cannot answer it: periods outside the data, no layers, a grid over "
             "600,000 cells for the study area; 422 for a bad period or options that do not go together, as the "
             "body schema states), "
             "queues the run and returns its id at once. Poll GET /rtm/runs/{id} for status, stage and fraction; "
             "the result (factor table, model, risk classes, priority places with narratives, validation, "
             "bootstrap stability) is there when status is done. Options: outcome=harm models harm per cell with a "
             "Tweedie model (RRVs are ratios of expected harm); block_length_m sets distances in street-block "
             "lengths (0.5-3 blocks); grid=square uses EPSG:27700 squares (half a block by default). "
             "Needs the analyst role. The queue is bounded: an API key may have HARMSPOT_RTM_MAX_QUEUED_PER_KEY "
             "runs (default 2) queued or running, the service HARMSPOT_RTM_MAX_QUEUED (default 20); beyond, 429 "
             "with Retry-After (seconds, estimated from recent runs) and no run is created.",
             responses={429: {"description": "Too many runs queued or running for this key (or in all); see "
                                             "Retry-After", "headers": {"Retry-After": {
                                                 "description": "Seconds to wait", "schema": {"type": "integer"}}}}})
def post_run(request: Request, state: State, body: RTMRunRequest) -> JSONResponse:
    try:
        plan = plan_run(state.store, state.default_weights, body.model_dump(by_alias=True))
    except PlanError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from exc
    principal = getattr(request.state, "harmspot_principal", None)
    try:
        run_id = _manager(request).submit(plan, principal.key_id if principal else None,
                                          state.settings.rtm_max_queued_per_key, state.settings.rtm_max_queued)
    except QueueFull as exc:
        raise ApiError(429, "too_many_runs", str(exc), {"retry_after_s": exc.retry_after},
                       headers={"Retry-After": str(exc.retry_after)}) from exc
    return JSONResponse({"id": run_id, "status": "queued", "links": _run_links(run_id)}, status_code=202,
                        headers={"Location": f"/rtm/runs/{run_id}"})


@router.get("/rtm/runs", summary="RTM runs, newest first (status and progress; no results)")
def get_runs(state: State, dataset: Annotated[str | None, Query(max_length=64)] = None,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    return {"runs": [{**r, "links": _run_links(r["id"])} for r in list_runs(state.store, dataset, limit)]}


@router.get("/rtm/runs/{run_id}", summary="One RTM run: status, stage, fraction; the result when done")
def get_run_doc(state: State, run_id: str) -> dict:
    return {**_run_or_404(state, run_id), "links": _run_links(run_id)}


_NOT_DONE = {"description": "the run failed or is not done yet (its status says which)"}


@router.get("/rtm/runs/{run_id}/cells.geojson", summary="The risk surface: H3 cells with relative risk, class "
            "and a narrative (RFC 7946)", responses={200: {"content": {GEOJSON: {}}}, 409: _NOT_DONE})
def get_run_cells(state: State, run_id: str,
                  min_class: Annotated[int, Query(ge=0, le=3, description="0 all cells, 1 above mean (default), "
                                                  "2 mean + 1 SD, 3 mean + 2 SD")] = 1,
                  limit: Annotated[int, Query(ge=1, le=MAX_CELLS)] = 50_000,
                  offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    run = _done_run(state, run_id)
    feats, matched = risk_features(state, run, min_class=min_class, limit=limit, offset=offset)
    fc = {"type": "FeatureCollection", "features": feats, "numberMatched": matched,
          "metadata": _surface_meta(run, min_class)}
    return Response(json.dumps(fc), media_type=GEOJSON)


PLACE_FIELDS = ["rank", "cell", "h3", "lon", "lat", "relative_risk", "risk_class", "risk_label", "recent_offences",
                "recent_harm", "factors", "narrative"]


@router.get("/rtm/runs/{run_id}/priority-places", summary="Priority places (high risk and recent harm), ranked, "
            "with risk narratives", responses={200: {"content": {"application/json": {}, "text/csv": {},
                                                                   GEOJSON: {}}}, 409: _NOT_DONE})
def get_priority_places(state: State, run_id: str,
                        format: Annotated[Literal["json", "csv", "geojson"], Query()] = "json") -> Response:
    run = _done_run(state, run_id)
    places = _places(run)
    if format == "csv":
        frame = pd.DataFrame(places, columns=PLACE_FIELDS)
        frame["factors"] = frame["factors"].map(lambda v: "; ".join(v))
        return Response(to_csv(frame, PLACE_FIELDS), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="rtm-{run_id}-priority-places.csv"'})
    if format == "geojson":
        fc = {"type": "FeatureCollection", "features": place_features(places, run["result"]),
              "metadata": _surface_meta(run, None)}
        return Response(json.dumps(fc), media_type=GEOJSON)
    return JSONResponse({"run": run_id, **_surface_meta(run, None), "priority_places": places})


# ---------------------------------------------------------------------------------------------- helpers
def _run_links(run_id: str) -> dict:
    base = f"/rtm/runs/{run_id}"
    return {"self": base, "cells": f"{base}/cells.geojson", "priority_places": f"{base}/priority-places",
            "priority_places_csv": f"{base}/priority-places?format=csv"}


def _run_or_404(state, run_id: str) -> dict:
    run = get_run(state.store, run_id)
    if run is None:
        raise ApiError(404, "not_found", f"no RTM run '{run_id}'")
    return run


def _done_run(state, run_id: str) -> dict:
    run = _run_or_404(state, run_id)
    if run["status"] == "failed":
        raise ApiError(409, "run_failed", f"RTM run '{run_id}' failed: {run['error']}")
    if run["status"] != "done":
        raise ApiError(409, "run_not_done", f"RTM run '{run_id}' is {run['status']} ({run['stage']}, "
                       f"{100 * (run['fraction'] or 0):.0f}%): poll GET /rtm/runs/{run_id}")
    return run


def _surface_meta(run: dict, min_class: int | None) -> dict:
    res = run["result"]
    out = {"run": run["id"], "finished_at": run["finished_at"], "query": res.get("query"),
           "periods": res.get("periods"), "model": {k: res["model"].get(k) for k in ("family", "bic", "intercept")},
           "factors": [{k: f[k] for k in ("factor", "operationalisation", "spatial_influence_m", "rrv")}
                       for f in res.get("factors", [])],
           "attribution": [f"{lay['name']}: {lay.get('attribution') or lay.get('licence') or ''}"
                           for lay in res.get("layers", [])],
           "caveat": "RTM factors are markers of risky places, not causes; police.uk locations are snapped to "
                     "anonymised map points (docs/rtm.md)."}
    if min_class is not None:
        out["min_class"] = min_class
    return out


def _factor_phrases(result: dict) -> list[tuple[str, float]]:
    """(phrase, RRV) per bit of the stored factor mask (the selected variables in model order)."""
    family = result["model"]["family"]
    keys = result["model"]["selected_by_family"][family]
    by_key = {f"{f['factor']}:{f['operationalisation']}:{f['spatial_influence_m']:g}": f for f in result["factors"]}
    plural = {lay["name"]: lay.get("plural", "") for lay in result.get("layers", [])}
    block = result.get("config", {}).get("block_length_m")
    out = []
    for k in keys:
        f = by_key[k]
        v = Variable(f["factor"], f["operationalisation"], float(f["spatial_influence_m"]), f.get("type", ""),
                     plural.get(f["factor"], ""), block)
        out.append((v.phrase(), float(f["rrv"])))
    return out


def cell_narrative(phrases: list[tuple[str, float]], mask: int, rr: float, cls: int, train: int, test: int,
                   label: str, harm_outcome: bool = False) -> str:
    here = sorted((phrases[k] for k in range(len(phrases)) if mask >> k & 1), key=lambda p: -p[1])
    text = " and ".join(f"{p} (RRV {r:.1f})" for p, r in here) or "no selected risk factor"
    return (f"{text}: {'expected harm ' if harm_outcome else ''}{rr:.1f}x the lowest-risk cell "
            f"({CLASS_LABELS[cls]}); {train} {label} in training, {test} in the test period")


def risk_features(state, run: dict, *, min_class: int = 1, limit: int = 50_000, offset: int = 0,
                  bbox=None, cell: str | None = None) -> tuple[list[dict], int]:
    """Risk-surface features of a done run from ``rtm_cells``, highest relative risk first."""
    where, params = "run_id = ? AND risk_class >= ?", [run["id"], int(min_class)]
    result = run["result"]
    if cell is not None:
        try:
            where, params = where + " AND cell = ?", params + [int(_cell_ids(result, [cell])[0])]
        except Exception:
            return [], 0
    frame = state.store.query_df(f"SELECT * FROM rtm_cells WHERE {where} ORDER BY relative_risk DESC, cell",
                                 params)
    if bbox and len(frame):
        lon, lat = cell_centres_lonlat(result, frame["cell"].to_numpy(np.uint64))
        frame = frame[bbox_mask(lon, lat, bbox)]
    matched = len(frame)
    page = frame.iloc[offset: offset + limit]
    hexes, rings = cell_geometry(result, page["cell"].to_numpy(np.uint64))
    is_h3 = _grid(result).get("kind", "h3") == "h3"
    harm_outcome = result.get("model", {}).get("outcome") == "harm"
    phrases = _factor_phrases(result)
    label = result.get("config", {}).get("offence_label", "offences")
    feats = []
    for h, ring, r in zip(hexes, rings, page.itertuples(index=False)):
        cls = int(r.risk_class)
        feats.append({"type": "Feature", "id": h, "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {"cell": h, "h3": h if is_h3 else None,
                                     "relative_risk": round(float(r.relative_risk), 4), "risk_class": cls,
                                     "risk_label": CLASS_LABELS[cls], "train_offences": int(r.train_offences),
                                     "test_offences": int(r.test_offences),
                                     "narrative": cell_narrative(phrases, int(r.factors), float(r.relative_risk), cls,
                                                                 int(r.train_offences), int(r.test_offences), label,
                                                                 harm_outcome)}})
    return feats, matched


def _places(run: dict) -> list[dict]:
    """Priority places of a run as published: ``cell`` (H3 hex or square id), ``h3`` (the hex, None for a
    square grid), ``risk_label`` added."""
    is_h3 = _grid(run["result"]).get("kind", "h3") == "h3"
    return [{**{k: p.get(k) for k in PLACE_FIELDS}, "cell": p["cell"], "h3": p["cell"] if is_h3 else None,
             "risk_label": CLASS_LABELS[int(p["risk_class"])]}
            for p in run["result"].get("priority_places", [])]


def _grid(result: dict) -> dict:
    return result.get("grid") or {}


def _cell_ids(result: dict, names: list[str]) -> np.ndarray:
    """Stored cell numbers of published ids (H3 hex, or sq<size>_<row>_<col> for a square grid)."""
    g = _grid(result)
    if g.get("kind") == "square":
        return square_ids(names, int(g["ncols"])).astype(np.uint64)
    return from_hex(names)


def cell_geometry(result: dict, ids: np.ndarray) -> tuple[list[str], list]:
    """(published ids, lon/lat rings) of stored cells of a run, H3 or square."""
    g = _grid(result)
    if g.get("kind") == "square":
        return square_geometry(np.asarray(ids).astype(np.int64), g["origin"], g["cell_size_m"], int(g["ncols"]))
    return to_hex(ids), cell_boundaries_lonlat(ids)


def cell_centres_lonlat(result: dict, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) centres of stored cells of a run (no rings: the bbox filter and the extent need only these)."""
    g = _grid(result)
    if g.get("kind") == "square":
        return square_centres_lonlat(np.asarray(ids).astype(np.int64), g["origin"], g["cell_size_m"],
                                     int(g["ncols"]))
    lat, lon = cell_centres(np.asarray(ids, dtype=np.uint64))
    return lon, lat


def place_features(places: list[dict], result: dict) -> list[dict]:
    if not places:
        return []
    _, rings = cell_geometry(result, _cell_ids(result, [p["cell"] for p in places]))
    return [{"type": "Feature", "id": p["cell"], "geometry": {"type": "Polygon", "coordinates": [ring]},
             "properties": {**p, "relative_risk": round(float(p["relative_risk"]), 4),
                            "recent_harm": round(float(p["recent_harm"]), 3)}}
            for p, ring in zip(places, rings)]


# ============================================================================================== OGC collections
def _latest(state, req) -> dict | None:
    run_id = latest_done(state.store, (req.query or {}).get("dataset") if req is not None else None)
    return get_run(state.store, run_id) if run_id else None


def rtm_available(state) -> bool:
    return latest_done(state.store) is not None


def rtm_risk_items(state, req: ItemsRequest) -> Items:
    """OGC ``rtm-risk``: the risk surface (classes >= 1) of the latest done run (of ``dataset`` when given)."""
    run = _latest(state, req)
    if run is None:
        return Items([], 0, {"note": "no finished RTM run for this dataset: POST /rtm/runs"}, RISK_FIELDS)
    feats, matched = risk_features(state, run, min_class=1, limit=req.limit, offset=req.offset, bbox=req.bbox,
                                   cell=req.feature_id)
    return Items(feats, matched, _surface_meta(run, 1), RISK_FIELDS)


RISK_FIELDS = ["cell", "h3", "relative_risk", "risk_class", "risk_label", "train_offences", "test_offences",
               "narrative"]


def priority_items(state, req: ItemsRequest) -> Items:
    """OGC ``priority-places``: the latest done run's priority places (cell polygons) with narratives."""
    run = _latest(state, req)
    if run is None:
        return Items([], 0, {"note": "no finished RTM run for this dataset: POST /rtm/runs"}, PLACE_FIELDS)
    places = _places(run)
    if req.feature_id is not None:
        places = [p for p in places if p["cell"] == req.feature_id]
    if req.bbox:
        inside = bbox_mask(np.array([p["lon"] for p in places], float), np.array([p["lat"] for p in places], float),
                           req.bbox)
        places = [p for p, keep in zip(places, inside) if keep]
    matched = len(places)
    if req.feature_id is None:
        places = places[req.offset: req.offset + req.limit]
    feats = place_features(places, run["result"])
    for ft in feats:
        ft["properties"]["factors"] = "; ".join(ft["properties"]["factors"] or [])
    return Items(feats, matched, _surface_meta(run, None), PLACE_FIELDS)


def rtm_extent(state) -> dict:
    run_id = latest_done(state.store)
    if run_id is None:
        return {}
    cells = state.store.query_df("SELECT cell FROM rtm_cells WHERE run_id = ? AND risk_class >= 1",
                                 [run_id])["cell"].to_numpy(np.uint64)
    if not len(cells):
        return {}
    lon, lat = cell_centres_lonlat(get_run(state.store, run_id)["result"], cells)
    return {"spatial": {"bbox": [[round(float(v), 6) for v in (lon.min(), lat.min(), lon.max(), lat.max())]],
                        "crs": CRS84}}


def poi_collections(state) -> list[Collection]:
    """One OGC collection per stored layer, ``poi-<name>``, with its attribution."""
    out = []
    for meta in layer_store.list_layers(state.store):
        name = meta["name"]

        def items(st, req, name=name):
            m = layer_store.layer_summary(st.store, name)
            feats = _point_features(st, name, m, req.bbox)
            if req.feature_id is not None:
                feats = [f for f in feats if f["id"] == req.feature_id]
                return Items(feats, len(feats), None, ["layer", "type", "name"])
            return Items(feats[req.offset: req.offset + req.limit], len(feats),
                         {"attribution": m["attribution"], "licence": m["licence"]}, ["layer", "type", "name"])

        def extent(st, name=name):
            m = layer_store.layer_summary(st.store, name)
            return ({"spatial": {"bbox": [m["bbox"]], "crs": CRS84}}
                    if m["bbox"] else {})

        attribution = meta["attribution"] or meta["licence"] or ""
        out.append(Collection(
            id=f"poi-{name}", title=f"POI: {name} ({meta['type']})",
            description=f"Environmental layer '{name}' ({meta['features']} {meta['plural']}) for risk terrain "
            f"modelling. Source: {meta['source']}. {attribution}",
            items=items, extent=extent, kind="points",
            style={"property": "type", "type": "categorical", "attribution": attribution},
            keywords=("POI", "RTM", meta["type"])))
    return out


RTM_RISK = Collection(
    id="rtm-risk", title="RTM risk surface",
    description="Risk Terrain Model: H3 cells above the mean relative risk of the latest finished RTM run (of "
    "`dataset` when given), highest first, with risk class and a narrative of the risk factors present. "
    "Same cells as GET /rtm/runs/{id}/cells.geojson (docs/rtm.md).",
    items=rtm_risk_items, extent=rtm_extent, available=rtm_available, kind="cells",
    style={"property": "risk_class", "type": "sequential",
           "labels": "1 above mean, 2 mean + 1 SD, 3 mean + 2 SD"}, keywords=("RTM", "risk terrain", "H3"))
PRIORITY_PLACES = Collection(
    id="priority-places", title="RTM priority places",
    description="Priority places of the latest finished RTM run: high risk (above mean + 1 SD) and recent "
    "harm, ranked, with a plain-language risk narrative. Same as GET /rtm/runs/{id}/priority-places.",
    items=priority_items, extent=rtm_extent, available=rtm_available, kind="cells",
    style={"property": "recent_harm", "type": "sequential"}, keywords=("RTM", "priority places", "H3"))


def register_collections(registry: Registry) -> None:
    registry.add(RTM_RISK, PRIORITY_PLACES)
    registry.add_dynamic(poi_collections)
