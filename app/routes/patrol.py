"""Patrol planning doors: tasking packs, key dates, the patrol log, compliance and patrol evaluation.

Thin layer over hotspots.patrol.tasking / keydates / patrols / evaluation: requests become typed queries, results
go through the shared renderers (app.render) or the printable HTML below (inline SVG maps, no JS, no tiles).
"""
from __future__ import annotations

import html
import math
import re
from datetime import date
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import shapely
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, BeforeValidator, Field

from app.cache import cached_response_async
from app.deps import PRESET_SCHEMA, Query_, State, on_loop
from app.errors import ApiError
from app.render import GEOJSON_MEDIA, JSONResponse, to_csv, to_geojson, to_json
from geodata import roads as rd
from geodata.cells import cell_boundaries_lonlat
from geodata.store import DATASET_LAYER, DataCannotAnswer, Store, StoreError
from hotspots.patrol import evaluation as ev
from hotspots.patrol import gps
from hotspots.patrol import governance
from hotspots.patrol import keydates as kd
from hotspots.patrol import patrols as pl
from hotspots.patrol import tasking as tk
from hotspots.ranking.query import DAY_REGEX, PERIOD_REGEX, HotspotQuery

router = APIRouter(tags=["patrol planning"])
TaskFormat = Literal["json", "csv", "geojson", "html"]
KEYDATE_FIELDS = ["h3", "rank", "harm_after", "count_after", "harm_before", "count_before", "harm_per_day_after",
                  "harm_per_day_before", "change_per_day", "change_pct", "rank_before", "lat", "lon", "top_offences"]
FORECAST_FIELDS = ["h3", "rank", "forecast_harm_per_day", "analogue_share", "recent_share", "lat", "lon"]
COMPLIANCE_FIELDS = ["spot_id", "h3", "area_name", "rank", "week", "plan_days", "planned_visits", "visits",
                     "visits_pct", "planned_minutes", "minutes", "minutes_pct", "teams", "lat", "lon"]


def _bad(exc: Exception) -> ApiError:
    details = getattr(exc, "errors", None)
    return ApiError(422, "invalid_parameter", str(exc), details if isinstance(details, list) else None)


def _iso_day(v):
    """A query date as YYYY-MM-DD only (pydantic would also read a number as a Unix time: '?to=0')."""
    if isinstance(v, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v.strip()):
        raise ValueError("a date YYYY-MM-DD")
    return v


# ============================================================================================ tasking
def tasking_params(
    layer: Annotated[str, Query(description="Boundary layer of patrol areas (e.g. districts, wards).")] = "districts",
    spots_per_area: Annotated[int, Query(ge=1, le=100, description="Most spots per area.")] = 5,
    total_minutes: Annotated[float | None, Query(gt=0, description="Patrol minutes available over the whole plan "
                                                 "period, all areas together (default: no limit); less than one spot's dose gives a pack "
                                                 "with no spots and a warning.")] = None,
    visit_minutes: Annotated[int, Query(ge=1, le=120, description="Minutes per visit (Koper curve: 15).")] = 15,
    visits_per_day: Annotated[float, Query(gt=0, le=48, description="Visits per spot per day.")] = 2.0,
    plan_from: Annotated[date | None, Query(description="First day of the plan, YYYY-MM-DD (default: today)."),
                         BeforeValidator(_iso_day)] = None,
    plan_days: Annotated[int, Query(ge=1, le=92, description="Plan length in days (biweekly: 14).")] = 14,
    include_police_stations: Annotated[bool, Query(description="Keep cells whose main location text is 'Police "
                                                   "Station' (crimes recorded at the station); left out by "
                                                   "default, the pack says how many.")] = False,
) -> tk.TaskingParams:
    return tk.TaskingParams(area_layer=layer, spots_per_area=spots_per_area, total_minutes=total_minutes,
                            visit_minutes=visit_minutes, visits_per_day=visits_per_day, plan_from=plan_from,
                            plan_days=plan_days, include_police_stations=include_police_stations)


TParams = Annotated[tk.TaskingParams, Depends(on_loop(tasking_params))]


def _pack(state, q: HotspotQuery, params: tk.TaskingParams) -> tk.TaskingPack:
    try:
        return tk.build_pack(state.store, q, state.default_weights, params)
    except tk.TaskingError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from exc


def tasking_csv(pack: tk.TaskingPack) -> str:
    return to_csv(pack.rows, list(tk.TASKING_FIELDS))


def _render_pack(pack: tk.TaskingPack, fmt: str, store: Store, marking: str = "OFFICIAL") -> Response:
    fields = list(tk.TASKING_FIELDS)
    if fmt == "csv":
        return Response(tasking_csv(pack), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="tasking.csv"'})
    if fmt == "geojson":
        return JSONResponse(to_geojson(pack.meta(), pack.rows, fields), media_type=GEOJSON_MEDIA)
    if fmt == "html":
        return HTMLResponse(patrol_sheet_html(pack, marking, sheet_roads(store)))
    return JSONResponse({**to_json(pack.meta(), pack.spots, fields), "dropped": to_json({}, pack.dropped, fields)["cells"]})


@router.get("/tasking", summary="Tasking pack: top harm spots per patrol area for the next period",
            description="The look-back window is the hotspot query's period (default: the last full month for "
            "month-only data, the last 14 days otherwise). Spots are ranked inside each area of `layer`, cut to "
            "`spots_per_area` and to `total_minutes`; each has a stable id (`HS-` + H3 hex), streets, harm, count, "
            "main offences, peak windows where times exist and a dose. `status` compares with the last pack saved "
            "by POST /tasking. `format=csv` (columns in docs/patrol-planning.md), `geojson`, or `html` (printable "
            "patrol sheet, one page per area).",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, GEOJSON_MEDIA: {}, "text/html": {}}}})
async def get_tasking(request: Request, state: State, q: Query_, params: TParams,
                format: Annotated[TaskFormat, Query(description="json, csv, geojson or html")] = "json") -> Response:
    if params.plan_from is None:  # resolved before keying: the default pack changes at midnight, not only on writes
        params = params.model_copy(update={"plan_from": date.today()})
    return await cached_response_async(request, state, ("tasking", q, params, format),
                                       lambda: _render_pack(_pack(state, q, params), format, state.store,
                                                            state.settings.protective_marking))


TASKING_SAVE_ATTEMPTS = 5  # builds of one POST in all: n parallel posts (n <= 5) all land, chained


@router.post("/tasking", summary="Compute and save a tasking pack (the baseline for the next pack's statuses)",
             description="Same parameters as GET /tasking; the saved pack gets a `pack_id`, is the plan that "
             "GET /patrols/compliance measures against, and the 'last pack' for new/continuing/dropped. Packs "
             "saved in parallel for one dataset and layer are chained: each is compared with the pack saved just "
             "before it (a pack overtaken while it was built is built again; 409 if that keeps happening).",
             status_code=201,
             responses={201: {"content": {"application/json": {}, "text/csv": {}, GEOJSON_MEDIA: {}, "text/html": {}}},
                        409: {"description": "Other packs of this dataset and layer kept being saved while this one "
                                             "was built; post it again"}})
def post_tasking(state: State, q: Query_, params: TParams,
                 format: Annotated[TaskFormat, Query()] = "json") -> Response:
    for attempt in range(TASKING_SAVE_ATTEMPTS):
        pack = _pack(state, q, params)
        try:
            tk.save_pack(state.store, pack)
            break
        except tk.StalePack:
            if attempt == TASKING_SAVE_ATTEMPTS - 1:
                raise  # StoreConflict: 409 (app/errors.py)
    resp = _render_pack(pack, format, state.store, state.settings.protective_marking)
    resp.status_code = 201
    return resp


@router.get("/tasking/packs", summary="Saved tasking packs, newest first")
def get_packs(state: State, dataset: str | None = None) -> JSONResponse:
    packs = tk.list_packs(state.store, dataset)
    return JSONResponse({"packs": to_json({}, packs.astype({"created_at": str, "plan_from": str, "plan_to": str,
                                                            "lookback_from": str, "lookback_to": str}))["cells"]})


# ============================================================================================ key dates
class KeyDateIn(BaseModel):
    date: date
    label: str = Field(..., min_length=1, max_length=200, pattern=r"\S")
    kind: str | None = Field(None, max_length=60, description="Dates of the same kind are analogues of each other.")
    analogue: date | None = Field(None, description="Explicit analogue date (overrides kind); it must be earlier "
                                  "than `date` (422 otherwise: a later one would forecast from the future).")


class KeyDateSetIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$", examples=["leicester-events"],
                      description="Set name: letters, digits, '-', '_' or '.'; a shipped set's name or an existing "
                      "set's (without replace) is a 409.")
    description: str = Field("", max_length=500)
    dates: list[KeyDateIn] = Field(..., min_length=1, max_length=500, description="Each date at most once "
                                   "(422 otherwise).")
    replace: bool = Field(False, description="Overwrite an existing user set of that name.")


@router.get("/keydates", summary="Key-date sets (shipped England 2020-21 roadmap and user sets)")
def get_keydates(state: State, dataset: Annotated[str | None, Query(description="Mark each date against this "
                                                                   "dataset's data (in_data, status).")] = None
                 ) -> JSONResponse:
    sets = [s.to_dict() for s in kd.list_sets(state.store)]
    if dataset:
        state.store.require_dataset(dataset)
        for kset, body in zip(kd.list_sets(state.store), sets):
            cov = kd.coverage(state.store, dataset, kset)
            for d in body["dates"]:
                d.update(cov[date.fromisoformat(d["date"])])
    return JSONResponse({"sets": sets, "dataset": dataset,
                         "analogue_rule": "explicit analogue if given, else the latest earlier date of the same kind"})


@router.post("/keydates", status_code=201, summary="Add a user key-date set (events, bank holidays, festivals)",
             description="The set is stored whole in one transaction. A name that exists (without replace) is a 409; "
             "of parallel posts of one new name exactly one is stored (201) and the others get 409.",
             responses={409: {"description": "A set of that name exists (replace=false), or the write conflicted"}})
def post_keydates(state: State, body: Annotated[KeyDateSetIn, Body()]) -> JSONResponse:
    try:
        kset = kd.make_set(body.name, body.description, [d.model_dump(mode="json") for d in body.dates])
        kd.save_set(state.store, kset, replace=body.replace)
    except kd.KeyDateError as exc:
        taken = "already exists" in str(exc) or "is a shipped set" in str(exc)  # the name is taken: 409
        raise ApiError(409 if taken else 422, "conflict" if taken else "invalid_parameter", str(exc)) from exc
    return JSONResponse(kset.to_dict(), status_code=201)


@router.get("/keydates/{set_name}/{when}/hotspots",
            summary="Harm spots after a key date, change vs before, and the analogue forecast",
            description="Windows keep the data's precision: day windows for dated data; whole months for "
            "data.police.uk (a key date inside a month leaves that month out of both windows by default, "
            "`month_rule=majority` gives it to the side with most of its days). `format=html` is a printable map "
            "page with a switcher between the set's key dates.",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, GEOJSON_MEDIA: {}, "text/html": {}}}})
def get_keydate_hotspots(
    state: State, q: Query_, set_name: str, when: date,
    window_days: Annotated[int, Query(ge=1, le=366, description="Window length (month data: rounded to months).")] = 28,
    month_rule: Annotated[kd.MonthRule, Query(description="Straddling month: exclude (default) or majority.")] = "exclude",
    blend: Annotated[float, Query(ge=0, le=1, description="Weight of the analogue pattern in the forecast.")] = 0.5,
    format: Annotated[TaskFormat, Query()] = "json",
    layer: Annotated[Literal["after", "change", "forecast", "all"], Query(
        description="format=geojson/csv: the top cells after the date (after), the top cells by size of change in "
        "harm per day against before (change), the analogue forecast (forecast), or all three with a `layer` "
        "property (the map's key-date layers).")] = "after",
) -> Response:
    try:
        kset = kd.get_set(state.store, set_name)
        kset.get(when)
    except kd.KeyDateError as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    top = q.top or 20
    try:
        res = kd.key_date_hotspots(state.store, q, state.default_weights, kset, when, window_days, month_rule, blend, top)
    except kd.KeyDateError as exc:
        raise _bad(exc) from exc
    cells = res.cells.head(top)
    if layer != "after" and format in ("csv", "geojson"):
        rows = kd.layer_table(res, top, layer)
        fields = ["layer", *KEYDATE_FIELDS, *[f for f in FORECAST_FIELDS if f not in KEYDATE_FIELDS]]
        if format == "csv":
            return Response(to_csv(rows, fields), media_type="text/csv; charset=utf-8")
        return JSONResponse(to_geojson({**res.meta(), "layers": kd.LAYER_NOTES}, rows, fields), media_type=GEOJSON_MEDIA)
    if format == "csv":
        return Response(to_csv(cells, KEYDATE_FIELDS), media_type="text/csv; charset=utf-8")
    if format == "geojson":
        return JSONResponse(to_geojson(res.meta(), cells, KEYDATE_FIELDS), media_type=GEOJSON_MEDIA)
    if format == "html":
        return HTMLResponse(keydate_html(res, kset, state.store, q))
    return JSONResponse({**to_json(res.meta(), cells, KEYDATE_FIELDS),
                         "forecast": to_json({}, res.forecast, FORECAST_FIELDS)["cells"]})


# ============================================================================================ patrols
# a CSV upload: a text/csv body or a multipart `file` part (its rows are checked one by one; docs/patrol-planning.md)
CSV_BODY = {"type": "string", "minLength": 1, "description": "CSV with a header row"}
CSV_FILE_PART = {"type": "object", "required": ["file"],
                 "properties": {"file": {"type": "string", "format": "binary", "description": "CSV with a header row"}}}


# an ISO 8601 local date-time to the minute (seconds and an offset optional), as _parse_time reads it
_LOCAL_TIME = (rf"^{DAY_REGEX}[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{{1,6}})?)?"
               r"([Zz]|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])?$")


class PatrolIn(BaseModel):
    spot_id: str = Field(..., examples=["HS-8a195cb62cc7fff"])
    team: str = Field(..., min_length=1, max_length=100)
    start: str = Field(..., description="Local date-time, e.g. 2024-05-08T10:00 (an offset is converted to UK time).",
                       pattern=_LOCAL_TIME)
    end: str = Field(..., description="Local date-time after `start`, at most 12 hours later (422 otherwise: the row "
                     "comes back with its line and reason).", pattern=_LOCAL_TIME)
    note: str | None = Field(None, max_length=500)


class PatrolsIn(BaseModel):
    patrols: list[PatrolIn] = Field(..., min_length=1, max_length=100_000)


@router.post("/patrols", status_code=201, summary="Log patrols: JSON {patrols: [...]} or a CSV upload",
             responses={415: {"description": "a body that is not JSON, CSV or multipart"}},
             description="CSV: a `text/csv` body or a multipart `file`, header `spot_id,team,start,end[,note]`. The "
             "upload is stored whole or not at all; invalid rows come back with line number, field and reason.",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": PatrolsIn.model_json_schema()},
                 "text/csv": {"schema": CSV_BODY},
                 "multipart/form-data": {"schema": CSV_FILE_PART}}}})
async def post_patrols(state: State, request: Request) -> JSONResponse:
    # async only to read the body; parsing, validation and the store write run in the threadpool (app/eventloop.py)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        data, kind = await request.body(), "json"
    elif ctype == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "invalid_parameter", "multipart upload needs a 'file' part")
        data, kind = await upload.read(), "csv"
    elif ctype in ("text/csv", "text/plain", "application/csv"):
        data, kind = await request.body(), "csv"
    else:
        raise ApiError(415, "unsupported_media_type", f"send application/json, text/csv or multipart/form-data "
                       f"(got '{ctype or 'none'}')")
    result = await run_in_threadpool(_record_patrols, state.store, data, kind)
    return JSONResponse(result.to_dict(), status_code=201)


def _record_patrols(store: Store, data: bytes, kind: str) -> pl.PatrolUpload:
    try:
        if kind == "json":
            try:
                body = PatrolsIn.model_validate_json(data)
            except ValueError as exc:
                raise _bad(exc) from exc
            rows = [dict(p.model_dump(), _line=i + 1) for i, p in enumerate(body.patrols)]
        else:
            rows = pl.parse_csv(data)
        return pl.record(store, rows)
    except pl.PatrolError as exc:
        raise ApiError(422, "invalid_rows", str(exc), exc.errors) from exc


def gps_params(
    min_minutes: Annotated[float, Query(ge=1, le=240, description="Shortest stay that counts as a visit.")] = 10,
    buffer_rings: Annotated[int, Query(ge=0, le=3, description="H3 rings added around each spot's cell.")] = 1,
    gap_factor: Annotated[float, Query(ge=1, le=10, description="Bridge gaps up to this many median ping "
                                       "intervals of the unit (2.5: one missing ping).")] = 2.5,
    max_gap_minutes: Annotated[float, Query(gt=0, le=120, description="Never bridge a longer gap.")] = 15,
    max_exit_minutes: Annotated[float, Query(ge=0, le=30, description="Stays in one spot separated by less "
                                             "are one visit.")] = 2,
    max_speed_kmh: Annotated[float, Query(gt=5, le=2000, description="Impossible speed (teleport).")] = 250,
    max_accuracy_m: Annotated[float, Query(gt=0, le=10_000, description="Reject pings less accurate.")] = 100,
    sample_seconds: Annotated[float, Query(ge=1, le=60, description="Interpolation step.")] = 5,
) -> gps.GpsParams:
    return gps.GpsParams(min_minutes=min_minutes, buffer_rings=buffer_rings, gap_factor=gap_factor,
                         max_gap_minutes=max_gap_minutes, max_exit_minutes=max_exit_minutes,
                         max_speed_kmh=max_speed_kmh, max_accuracy_m=max_accuracy_m, sample_seconds=sample_seconds)


@router.post("/patrols/gps", status_code=201,
             responses={200: {"description": "dry_run=true: the visits found, nothing stored"},
                        415: {"description": "a body that is not CSV or multipart"}},
             summary="GPS-measured dosage: officer location pings -> visits to the spots of a saved pack",
             description="CSV (a `text/csv` body or a multipart `file`): `unit,timestamp,lon,lat` or "
             "`unit,timestamp,easting,northing` (British National Grid), optional `accuracy_m`; ISO 8601 times "
             "(no offset = UK local time). A visit is a stay of at least `min_minutes` in a spot of the pack (its "
             "H3 cell plus `buffer_rings`), measured by interpolating between pings; gaps are bridged up to "
             "`gap_factor` x the unit's median ping interval. Visits join the patrol log with `source: gps` and "
             "the unit as the team. Bad rows (timestamps, coordinates, accuracy, duplicates, teleports) are "
             "rejected with line and reason, the rest is used. Raw pings are not stored unless "
             "HARMSPOT_GPS_PING_RETENTION_DAYS > 0. `dry_run=true` detects without storing.",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": CSV_BODY},
                 "multipart/form-data": {"schema": CSV_FILE_PART}}}})
async def post_patrols_gps(state: State, request: Request,
                           params: Annotated[gps.GpsParams, Depends(gps_params)],
                           pack_id: Annotated[int | None, Query(description="Saved pack (default: the latest).")] = None,
                           dataset: Annotated[str | None, Query(description="Latest pack of this dataset.")] = None,
                           dry_run: Annotated[bool, Query(description="Detect visits, store nothing.")] = False,
                           ) -> JSONResponse:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "invalid_parameter", "multipart upload needs a 'file' part")
        data = await upload.read()
    elif ctype in ("text/csv", "text/plain", "application/csv"):
        data = await request.body()
    else:
        raise ApiError(415, "unsupported_media_type", f"send text/csv or multipart/form-data (got '{ctype or 'none'}')")
    result = await run_in_threadpool(_gps_upload, state, data, pack_id, dataset, params, dry_run)
    return JSONResponse(result, status_code=200 if dry_run else 201)


def _gps_upload(state, data: bytes, pack_id: int | None, dataset: str | None, params: gps.GpsParams,
                dry_run: bool) -> dict:
    """The blocking part of POST /patrols/gps (parse, detect, store), run in a worker thread."""
    header, spots = _get_pack(state.store, pack_id, dataset)
    try:
        return gps.record_gps(state.store, data, header, spots, params, state.settings.gps_ping_retention_days,
                              state.settings.gps_max_pings, dry_run).to_dict()
    except gps.GpsError as exc:
        raise ApiError(422, "invalid_rows", str(exc), exc.errors) from exc


@router.get("/patrols/gps/uploads", summary="GPS uploads: counts, parameters and detection figures (no pings)")
def get_gps_uploads(state: State) -> JSONResponse:
    ups = gps.uploads(state.store)
    return JSONResponse({"uploads": to_json({}, ups.astype({"created_at": str}))["cells"],
                         "retention_days": state.settings.gps_ping_retention_days})


@router.get("/patrols", summary="The patrol log (optionally a window and spots)",
            description="Hand-entered rows (`source: manual`) and visits measured from GPS (`source: gps`, the "
            "unit as the team, minutes = time inside the spot).",
            responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
def get_patrols(state: State, date_from: Annotated[date | None, Query(alias="from"), BeforeValidator(_iso_day)] = None,
                date_to: Annotated[date | None, Query(alias="to", description="inclusive"),
                                   BeforeValidator(_iso_day)] = None,
                spot_id: Annotated[str | None, Query(description="comma-separated spot ids")] = None,
                source: Annotated[Literal["manual", "gps"] | None, Query(description="only this source")] = None,
                format: Annotated[Literal["json", "csv"], Query()] = "json") -> Response:
    start = pd.Timestamp(date_from).to_pydatetime() if date_from else None
    end = (pd.Timestamp(date_to) + pd.Timedelta(days=1)).to_pydatetime() if date_to else None
    log = pl.patrols(state.store, start, end, spot_id.split(",") if spot_id else None, source)
    log = log.astype({"start_at": str, "end_at": str, "created_at": str})
    if format == "csv":
        return Response(to_csv(log), media_type="text/csv; charset=utf-8")
    return JSONResponse({"patrols": to_json({}, log)["cells"]})


def _get_pack(store: Store, pack_id: int | None, dataset: str | None) -> tuple[dict, pd.DataFrame]:
    try:
        return tk.get_pack(store, pack_id, dataset)
    except StoreError as exc:
        raise ApiError(404, "not_found", str(exc)) from exc


@router.get("/patrols/compliance", summary="Dosage per spot per week against a saved pack (compliance %)",
            description="Planned visits = visits_per_day x plan days in the week; `visits_pct` = visits / planned. "
            "`format=geojson` puts each spot-week on its hexagon for the map.",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, GEOJSON_MEDIA: {}}}})
def get_compliance(state: State, pack_id: int | None = None, dataset: str | None = None,
                   format: Annotated[Literal["json", "csv", "geojson"], Query()] = "json") -> Response:
    header, spots = _get_pack(state.store, pack_id, dataset)
    comp = pl.compliance(state.store, header, spots)
    if format == "csv":
        return Response(to_csv(comp.weeks, COMPLIANCE_FIELDS), media_type="text/csv; charset=utf-8")
    if format == "geojson":
        return JSONResponse(to_geojson(comp.meta(), comp.weeks, COMPLIANCE_FIELDS), media_type=GEOJSON_MEDIA)
    return JSONResponse({**comp.meta(), "weeks": to_json({}, comp.weeks, COMPLIANCE_FIELDS)["cells"]})


@router.get("/patrols/compliance/weekly",
            summary="Weekly compliance for governance: per area or per team, planned vs delivered, dose reached",
            description="Per ISO week of a saved pack's plan: by `area` — spots, planned and delivered visits and "
            "minutes, % delivered (plain and capped per spot), visits measured from GPS, and the share of spots "
            "with a visit of at least `dose_minutes` (default: the pack's visit_minutes, 15); an 'All areas' row "
            "per week. By `team` — visits, minutes, dosed visits, spots and areas visited (teams have no plan of "
            "their own). `format=csv` for the minutes, `png` for a small chart for the tasking meeting.",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, "image/png": {}}}})
def get_weekly_compliance(
    state: State, pack_id: int | None = None, dataset: str | None = None,
    by: Annotated[Literal["area", "team"], Query(description="area or team")] = "area",
    dose_minutes: Annotated[float | None, Query(gt=0, le=240, description="Minutes a visit needs to count as a "
                                                "full dose (default: the pack's visit_minutes).")] = None,
    format: Annotated[Literal["json", "csv", "png"], Query()] = "json",
) -> Response:
    header, spots = _get_pack(state.store, pack_id, dataset)
    table, meta = governance.weekly(state.store, header, spots, by, dose_minutes)
    name = f"compliance-pack{header['pack_id']}-by-{by}"
    if format == "csv":
        return Response(to_csv(table), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    if format == "png":
        return Response(governance.chart_png(table, meta), media_type="image/png",
                        headers={"Content-Disposition": f'inline; filename="{name}.png"'})
    return JSONResponse({**meta, "rows": to_json({}, table)["cells"]})




@router.get("/evaluation/patrols", summary="Patrol effect: matched difference-in-differences and the 48-hour check",
            description="Patrolled spots (those with patrols starting in the after window, or `spots`) against "
            "comparison cells of similar prior harm in the same area, before vs after; effect with a bootstrap and a "
            "t interval. The Southend 48-hour check needs offence times: with data.police.uk (month-only) the "
            "response says it is not supported.")
def get_patrol_evaluation(
    state: State,
    dataset: Annotated[str, Query(description="Dataset name.")],
    after_from: Annotated[str, Query(pattern=PERIOD_REGEX, description="Start of the patrol (after) window, YYYY-MM or "
                                     "YYYY-MM-DD.")],
    after_to: Annotated[str, Query(pattern=PERIOD_REGEX, description="End of the after window, inclusive.")],
    before_from: Annotated[str | None, Query(pattern=PERIOD_REGEX, description="Before window start (default: the "
                                             "after window's length, ending at before_to or just before the after "
                                             "window).")] = None,
    before_to: Annotated[str | None, Query(pattern=PERIOD_REGEX, description="Before window end, inclusive (default: "
                                           "the day before the after window).")] = None,
    spots: Annotated[str | None, Query(description="Comma-separated spot ids (default: patrolled in the window).")] = None,
    min_visits: Annotated[int, Query(ge=1)] = 1,
    preset: Annotated[str | None, Query(json_schema_extra=PRESET_SCHEMA)] = "op-ark",
    weights: Annotated[str | None, Query()] = None,
    layer: Annotated[str, Query(description="Areas within which comparison cells are matched.")] = "districts",
    controls_per_spot: Annotated[int, Query(ge=1, le=10)] = 2,
    buffer_rings: Annotated[int, Query(ge=0, le=5, description="H3 rings around patrolled spots kept out of the "
                                       "comparison pool (displacement / diffusion).")] = 1,
    seed: Annotated[int, Query()] = 0,
) -> JSONResponse:
    try:
        if (before_from is None) != (before_to is None):  # one end given: the other as the default window's
            before_from, before_to = ev.before_window(after_from, after_to, before_from, before_to)
        q = HotspotQuery.model_validate({"dataset": dataset, "from": after_from, "to": after_to, "preset": preset,
                                         "weights": weights})
        state.store.require_dataset(dataset)
        a_start, a_end = ev.window_bounds(after_from, after_to)
        log = pl.patrols(state.store)
        spot_ids = spots.split(",") if spots else ev.spots_patrolled(log, a_start, a_end, min_visits)
        if not spot_ids:
            raise DataCannotAnswer("no patrols logged in the after window: POST /patrols first or pass spots=")
        log = log[log["spot_id"].isin(set(spot_ids))]
        res = ev.evaluate(state.store, q, state.default_weights, spot_ids,
                          (before_from, before_to) if before_from else None, (after_from, after_to), layer,
                          controls_per_spot, buffer_rings, seed=seed, patrol_log=log)
    except (ev.EvaluationError, ValueError) as exc:
        if isinstance(exc, (ApiError, StoreError)):  # unknown names 404, data that cannot answer 409 (app/errors.py)
            raise
        raise _bad(exc) from exc
    pairs = res.pairs.drop(columns=["treated_cell"])
    return JSONResponse({**res.meta(), "pairs": to_json({}, pairs)["cells"]})


# ============================================================================================ HTML
_CSS = """
@page { size: A4; margin: 12mm; }
body { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 10.5px; color: #111; margin: 0; }
.page { page-break-after: always; padding: 8px 4px; }
.page:last-child { page-break-after: auto; }
h1 { font-size: 17px; margin: 0 0 2px; } h2 { font-size: 13px; margin: 8px 0 4px; }
.meta { color: #444; margin-bottom: 6px; }
.top { display: flex; gap: 12px; align-items: flex-start; }
svg { border: 1px solid #999; background: #fbfbf8; flex: none; }
table { border-collapse: collapse; width: 100%; margin-top: 6px; }
th, td { border: 1px solid #bbb; padding: 2px 4px; vertical-align: top; text-align: left; }
th { background: #eee; } td.n { text-align: right; white-space: nowrap; }
.new { color: #a00; font-weight: bold; } .continuing { color: #064; } .dropped { color: #777; text-decoration: line-through; }
.ticks td { height: 14px; width: 18px; }
.caveat { color: #6a4a00; font-size: 9.5px; }
.marking { text-align: center; color: #b00; font-weight: bold; letter-spacing: 0.08em; margin: 2px 0; }
.warning { color: #fff; background: #b00; font-weight: bold; padding: 3px 6px; margin: 4px 0; }
.switch a { margin-right: 8px; } .switch a.on { font-weight: bold; text-decoration: none; color: #000; }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 10px; border: 1px solid #555; }
"""


class _Projector:
    """lon/lat -> SVG pixels for a small printable map (equirectangular scaled by cos(latitude))."""

    def __init__(self, bounds: tuple[float, float, float, float], width: int, height: int, pad: int = 8):
        minx, miny, maxx, maxy = bounds
        self.k = math.cos(math.radians((miny + maxy) / 2))
        span_x, span_y = max((maxx - minx) * self.k, 1e-6), max(maxy - miny, 1e-6)
        self.s = min((width - 2 * pad) / span_x, (height - 2 * pad) / span_y)
        self.ox = pad + ((width - 2 * pad) - span_x * self.s) / 2
        self.oy = pad + ((height - 2 * pad) - span_y * self.s) / 2
        self.minx, self.maxy = minx, maxy

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        return self.ox + (lon - self.minx) * self.k * self.s, self.oy + (self.maxy - lat) * self.s

    def path(self, coords) -> str:
        pts = [self.xy(x, y) for x, y in coords]
        return "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in pts) + " Z"


def _geom_paths(geom, proj: _Projector) -> str:
    polys = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
    out = []
    for p in polys:
        if p.geom_type != "Polygon":
            continue
        out.append(proj.path(p.exterior.coords))
        out.extend(proj.path(r.coords) for r in p.interiors)
    return " ".join(out)


def _line_paths(geoms, proj: _Projector) -> str:
    """SVG path data of every LineString in ``geoms`` (multi-parts and collections flattened, points dropped)."""
    parts = shapely.get_parts(shapely.get_parts(np.asarray(geoms, dtype=object)))  # collections, then multi-lines
    out = []
    for line in parts:
        if line.geom_type != "LineString" or line.is_empty:
            continue
        pts = [proj.xy(x, y) for x, y in line.coords]
        out.append("M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in pts))
    return " ".join(out)


def _svg_map(boundary, cells: pd.DataFrame, labels: list[str], colours: list[str], width: int = 300,
             height: int = 300, extra_outline: pd.DataFrame | None = None, roads=None) -> str:
    """Inline SVG: the boundary, each cell's hexagon, and a numbered marker (hexes are tiny at district scale)."""
    if boundary is not None and not boundary.is_empty:
        bounds = boundary.bounds
    elif len(cells):
        bounds = (cells["lon"].min() - 0.01, cells["lat"].min() - 0.01, cells["lon"].max() + 0.01,
                  cells["lat"].max() + 0.01)
    else:
        bounds = (-1.0, 52.0, 0.0, 53.0)
    proj = _Projector(bounds, width, height)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">']
    if boundary is not None and not boundary.is_empty:
        simple = boundary.simplify((bounds[2] - bounds[0]) / 400)
        parts.append(f'<path d="{_geom_paths(simple, proj)}" fill="#eef1ea" stroke="#555" stroke-width="1" '
                     'fill-rule="evenodd"/>')
    if roads is not None and len(roads):  # a loaded road layer (POST /roads), under the spots
        parts.append(f'<path d="{_line_paths(roads, proj)}" fill="none" stroke="#9a9a9a" stroke-width="0.8"/>')
    if extra_outline is not None and len(extra_outline):
        from geodata.cells import from_hex

        for ring, (lon, lat) in zip(cell_boundaries_lonlat(from_hex(extra_outline["h3"].tolist())),
                                    extra_outline[["lon", "lat"]].to_numpy()):
            x, y = proj.xy(lon, lat)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="none" stroke="#7b3294" '
                         'stroke-width="1.5" stroke-dasharray="2,1.5"/>')
    if len(cells):
        from geodata.cells import from_hex

        rings = cell_boundaries_lonlat(from_hex(cells["h3"].tolist()))
        for ring, (lon, lat), lab, col in zip(rings, cells[["lon", "lat"]].to_numpy(), labels, colours):
            parts.append(f'<path d="{proj.path(ring)}" fill="{col}" stroke="#000" stroke-width="0.6"/>')
            x, y = proj.xy(lon, lat)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6.5" fill="{col}" fill-opacity="0.85" '
                         'stroke="#000" stroke-width="0.8"/>')
            parts.append(f'<text x="{x:.1f}" y="{y + 3:.1f}" font-size="8" text-anchor="middle" '
                         f'font-family="sans-serif" fill="#fff" font-weight="bold">{html.escape(lab)}</text>')
    # scale bar: 1 km
    x0, y0 = proj.xy(bounds[0], bounds[1])
    km = 1 / (111.32 * proj.k) * proj.k * proj.s  # pixels per km along a parallel
    bar = 1 if km * 1 < width / 3 else 0.5
    while km * bar * 2 < width / 4:
        bar *= 2
    parts.append(f'<line x1="8" y1="{height - 8}" x2="{8 + km * bar:.1f}" y2="{height - 8}" stroke="#000" '
                 f'stroke-width="2"/><text x="8" y="{height - 12}" font-size="8" font-family="sans-serif">'
                 f'{bar:g} km</text>')
    parts.append("</svg>")
    return "".join(parts)


def _generic_note(spot) -> str:
    """A line under the streets when most of the spot's records sit at a generic snap point (car park...)."""
    share = getattr(spot, "generic_point_share", None)
    if share is None or pd.isna(share) or share < 0.5:
        return ""
    return (f"<br><small class='caveat'>{100 * share:.0f}% at generic points (car park, supermarket...): "
            "not a street address</small>")


def _fmt(v, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return "-"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return f"{float(v):,.{nd}f}"


def _offences(v) -> str:
    if not isinstance(v, list):
        return ""
    return ", ".join(f"{o['offence']} ({o['count']})" for o in v)


def sheet_roads(store: Store, max_lines: int = 20_000):
    """The patrol sheet's road source: lines of every loaded road layer within a bbox (None: no road layer)."""
    if not rd.road_layer_names(store):
        return None
    return lambda bounds: list(rd.roads_in_bbox(store, bounds, limit=max_lines)[0]["geometry"])


def patrol_sheet_html(pack: tk.TaskingPack, marking: str = "OFFICIAL", roads=None) -> str:
    """Printable patrol sheet: one A4 page per area with a small inline-SVG map and the spot list; the protective
    marking at the top and bottom of every page, warnings (stale data) in red under the title."""
    meta = pack.meta()
    e = html.escape
    mark = f"<div class='marking'>{e(marking)}</div>"
    warn = "".join(f"<p class='warning'>{e(w)}</p>" for w in meta.get("warnings") or [])
    head = (f"Plan {meta['plan']['from']} to {meta['plan']['to']} ({meta['plan']['days']} days) · look-back "
            f"{meta['lookback']['from']} to {meta['lookback']['to']} ({meta['lookback']['rule']}) · dataset "
            f"{meta['dataset']} · preset {meta['preset'] or meta['offences']} · weights {meta['weights_table']} "
            f"({meta['weights_exact']}) · pack {meta['pack_id'] or '(not saved)'}"
            f"{' · status against saved pack ' + str(meta['previous_pack_id']) if meta['previous_pack_id'] else ''}")
    dose = (f"Dose per spot: {pack.params.visits_per_day:g} visits a day of {pack.params.visit_minutes} minutes "
            f"(Koper curve), at unpredictable times; {pack.params.visits_per_day * pack.params.plan_days:g} visits "
            "over the plan.")
    pages = []
    areas = pack.areas[pack.areas["spots"] > 0].sort_values("name")
    days = [pack.plan_from + pd.Timedelta(days=i) for i in range(pack.params.plan_days)]
    for a in areas.itertuples():
        spots = pack.spots[pack.spots["area_id"] == a.area_id].sort_values("area_rank")
        dropped = pack.dropped[pack.dropped["area_id"] == a.area_id] if len(pack.dropped) else pack.dropped
        geom = shapely.from_wkb(bytes(a.geometry_wkb)) if a.geometry_wkb is not None else None
        colours = ["#c0392b" if s == "new" else "#1e7b4f" for s in spots["status"]]
        area_roads = None
        if roads is not None and geom is not None and not geom.is_empty:
            found = np.array([g for g in roads(geom.bounds) if g is not None], dtype=object)
            if len(found):  # clipped to the area, simplified to the sheet's scale
                inside = shapely.intersection(found, shapely.make_valid(geom))
                inside = inside[~shapely.is_empty(inside)]
                area_roads = list(shapely.simplify(inside, (geom.bounds[2] - geom.bounds[0]) / 600))
        svg = _svg_map(geom, spots, [str(r) for r in spots["area_rank"]], colours, roads=area_roads)
        rows = []
        for s in spots.itertuples():
            rows.append(
                f"<tr><td class='n'><b>{s.area_rank}</b></td><td>{e(s.spot_id)}<br><span class='{s.status}'>"
                f"{e(s.status)}</span></td><td>{e(s.streets or '(no location text)')}{_generic_note(s)}<br>"
                f"<small>{s.lat:.5f}, {s.lon:.5f}</small></td><td class='n'>{_fmt(s.harm)}</td>"
                f"<td class='n'>{_fmt(s.count)}</td><td>{e(_offences(s.top_offences))}</td>"
                f"<td>{e(str(s.peak_days)) if s.peak_days == s.peak_hours else e(str(s.peak_days)) + '<br>' + e(str(s.peak_hours))}</td>"
                f"<td class='n'>{s.visits_per_day:g}/day × {s.visit_minutes} min</td></tr>")
        ticks = "".join(f"<th>{d.strftime('%a')[0]}<br>{d.day}</th>" for d in days)
        tick_rows = "".join(f"<tr class='ticks'><td>{s.area_rank}</td>" + "<td></td>" * len(days) + "</tr>"
                            for s in spots.itertuples())
        drop_txt = ""
        if len(dropped):
            drop_txt = ("<p><b>Dropped since the last pack:</b> " + ", ".join(
                f"<span class='dropped'>{e(d.spot_id)}</span> ({e(str(d.streets or ''))})" for d in dropped.itertuples())
                + "</p>")
        pages.append(f"""
<section class="page">
  {mark}
  <h1>Patrol sheet · {e(str(a.name))}</h1>
  <div class="meta">{e(head)}</div>{warn}
  <div class="top">{svg}
    <div><h2>{len(spots)} harm spots · {_fmt(spots['harm'].sum())} harm days in the look-back</h2>
      <p>{e(dose)}</p>
      <p class="legend">Map: numbered hexagons are the spots (H3 resolution {pack.query.resolution}, about
        {'130' if pack.query.resolution == 10 else '?'} m across), drawn with markers so they show at this scale.
        <span style="background:#c0392b"></span>new <span style="background:#1e7b4f"></span>continuing</p>
      <p>Peak windows: {e(meta['peak_windows'])}</p>
      {drop_txt}
    </div>
  </div>
  <table><tr><th>#</th><th>Spot</th><th>Streets (most frequent location text)</th><th>Harm</th><th>Count</th>
    <th>Main offences</th><th>Peak days / hours</th><th>Dose</th></tr>{''.join(rows)}</table>
  <h2>Visit log (tick each 15-minute visit)</h2>
  <table><tr><th>#</th>{ticks}</tr>{tick_rows}</table>
  <p class="caveat">{'<br>'.join(e(c) for c in meta['caveats'][len(meta.get('warnings') or []):][:4])}</p>
  {mark}
</section>""")
    if not pages:
        pages.append(f"<section class='page'>{mark}<h1>Patrol sheet</h1><p>{e(head)}</p>{warn}<p>No spots with harm "
                     f"in the look-back window.</p>{mark}</section>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>harmspot patrol sheet</title>"
            f"<style>{_CSS}</style></head><body>{''.join(pages)}</body></html>")


def _study_boundary(store: Store, q: HotspotQuery, layer: str = "districts"):
    areas = store.areas(layer)
    geoms = []
    if not areas.empty:
        geoms = [shapely.from_wkb(bytes(g)) for g in areas["geometry_wkb"]]
    else:
        own = store.query_df("SELECT geometry_wkb FROM areas WHERE layer = ? AND feature_id = ?", [DATASET_LAYER, q.dataset])
        geoms = [shapely.from_wkb(bytes(g)) for g in own["geometry_wkb"]]
    return geoms


def keydate_html(res: kd.KeyDateResult, kset: kd.KeyDateSet, store: Store, q: HotspotQuery) -> str:
    """A key-date page: switcher between the set's dates, map of after-window spots and forecast, tables."""
    e = html.escape
    m = res.meta()
    cells = res.cells.head(len(res.forecast) or 20)
    geoms = _study_boundary(store, q)
    union = None
    if geoms:
        g = [x for x in geoms if len(cells) == 0 or x.intersects(shapely.MultiPoint(cells[["lon", "lat"]].to_numpy()))]
        union = shapely.union_all(g or geoms)
        pts = pd.concat([cells[["lon", "lat"]], res.forecast[["lon", "lat"]]])
        if len(pts):  # zoom to the spots (with a margin) so neighbouring hexagons stay legible
            box = shapely.box(pts.lon.min() - 0.03, pts.lat.min() - 0.02, pts.lon.max() + 0.03, pts.lat.max() + 0.02)
            union = union.intersection(box) if union.intersects(box) else box
    colour = ["#b2182b" if (c or 0) > 0 else "#2166ac" if (c or 0) < 0 else "#777"
              for c in cells["change_per_day"].fillna(0)]
    svg = _svg_map(union, cells, [str(r) for r in cells["rank"]], colour, width=520, height=420,
                   extra_outline=res.forecast)
    base = f"/keydates/{e(kset.name)}"
    qs = f"?dataset={e(q.dataset)}&preset={e(q.preset or '')}&top={len(res.forecast) or 20}&format=html"
    switch = " ".join(f"<a class='{'on' if k.date == res.key_date.date else ''}' href='{base}/{k.date}/hotspots{qs}'>"
                      f"{k.date}</a>" for k in kset.dates)
    s = m["summary"]
    rows = "".join(
        f"<tr><td class='n'>{c.rank}</td><td>{e(c.h3)}</td><td class='n'>{_fmt(c.harm_after)}</td>"
        f"<td class='n'>{_fmt(c.harm_before)}</td><td class='n'>{_fmt(c.change_pct)}</td>"
        f"<td class='n'>{'-' if c.rank_before is pd.NA else c.rank_before}</td><td>{e(_offences(c.top_offences))}</td></tr>"
        for c in cells.itertuples())
    frows = "".join(
        f"<tr><td class='n'>{f.rank}</td><td>{e(f.h3)}</td><td class='n'>{_fmt(f.forecast_harm_per_day, 2)}</td>"
        f"<td class='n'>{_fmt(100 * f.analogue_share, 2)}%</td><td class='n'>{_fmt(100 * f.recent_share, 2)}%</td></tr>"
        for f in res.forecast.itertuples())
    win = lambda w: f"{w['from']} to {w['to']}" + (f" ({', '.join(w['months'])})" if w.get("months") else "")  # noqa
    analogue = (f"analogue {m['analogue']['date']} — {e(m['analogue']['label'])}; its after window "
                f"{win(m['analogue_after'])}" if m["analogue"] else "no analogue date: forecast = recent data")
    check = m["forecast_check"]
    check_txt = (f"Hindsight check: the forecast's top {check['top']} cells held {_fmt(100 * check['captured_by_forecast'], 1)}% "
                 f"of the observed after-window harm (recent data alone {_fmt(100 * (check['captured_by_recent_only'] or 0), 1)}%, "
                 f"the observed top {check['top']} {_fmt(100 * (check['captured_by_observed_top'] or 0), 1)}%).") if check else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>harmspot key date {res.key_date.date}</title>
<style>{_CSS} body {{ padding: 10px; }}</style></head><body>
<div class="switch"><b>{e(kset.name)}</b>: {switch}</div>
<h1>{res.key_date.date} · {e(res.key_date.label)}</h1>
<div class="meta">dataset {e(q.dataset)} · preset {e(q.preset or '')} · weights {e(m['weights_table'])} ·
 precision {m['precision']} · {e(m['window_rule'])}</div>
<div class="top">{svg}<div>
 <p><b>Before</b> {win(m['before'])}: harm {_fmt(s['harm_before'])} ({_fmt(s['harm_per_day_before'])}/day)<br>
 <b>After</b> {win(m['after'])}: harm {_fmt(s['harm_after'])} ({_fmt(s['harm_per_day_after'])}/day)<br>
 <b>Change</b>: {_fmt(s['change_pct'])}% per day · {s['top_spots_also_top_before']} of the top {len(cells)} were also top before</p>
 <p><b>Analogue forecast</b> (blend {res.blend:g}): {analogue}; recent window {win(m['recent'])};
 analogue uplift {_fmt(s['analogue_uplift'], 3)}. {check_txt}</p>
 <p class="legend">Map: numbered = after-window rank; <span style="background:#b2182b"></span>up vs before
 <span style="background:#2166ac"></span>down <span style="border:1.5px dashed #7b3294;border-radius:50%"></span>forecast top cells</p>
</div></div>
<div class="top"><div style="flex:1"><h2>Harm spots after the key date</h2>
<table><tr><th>#</th><th>H3</th><th>Harm after</th><th>Harm before</th><th>Change %/day</th><th>Rank before</th><th>Main offences</th></tr>{rows}</table></div>
<div style="flex:0 0 340px"><h2>Analogue forecast</h2>
<table><tr><th>#</th><th>H3</th><th>Harm/day</th><th>Analogue share</th><th>Recent share</th></tr>{frows}</table></div></div>
<p class="caveat">{'<br>'.join(e(c) for c in m['caveats'][:5])}</p>
</body></html>"""

