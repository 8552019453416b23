"""Hot spot statistics doors: GET /hotspots/emerging, GET /spikes, GET /evaluation.

All three take the /hotspots query parameters (``app.deps.hotspot_query``: dataset, preset, offences, area,
bbox, resolution, weights...) and run the engines through ``hotspots.stats.for_query``. Unlike /hotspots,
their default period is every record of the dataset (``from``/``to`` narrow it): they need a history.
Methods, defaults and sources: docs/statistics.md.
"""
from __future__ import annotations

import io
import json
from typing import Annotated, Literal

import numpy as np
import shapely
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.cache import cached_response_async, cached_value
from app.collections import (Collection, Items, ItemsRequest, Registry, cells_page, hotspot_query_for_items,
                             offences_extent)
from app.deps import ObservedQuery_, Query_, State
from app.errors import ApiError
from app.render import GEOJSON_MEDIA, JSONResponse, cells_response, records, to_csv, to_geojson
from app.routes.hotspots import QUERY_FIELDS, describe_query, gistar_result
from app.state import ServiceState
from geodata.areas import choose_layer
from geodata.cells import cell_centres, to_hex
from geodata.store import NotStored, StoreError
from hotspots.stats.backtest import METHODS, MIN_RELIABLE_ORIGINS, BacktestConfig, ratio_to_best
from hotspots.stats.for_query import (backtest_for_query, emerging_cells, emerging_for_query,
                                       spike_units, spikes_for_query)

SLICE_RE = r"^(\s*0*[1-9][0-9]{0,2}\s*[DdWwMm][A-Za-z]*\s*)?$"  # what hotspots.stats.timeslices.parse_slice reads; empty: default
router = APIRouter(tags=["statistics"])
EMERGING_FIELDS = ["h3", "pattern", "offences", "harm", "trend_z", "trend_p", "tau", "n_hot", "n_cold", "share_hot",
                   "final_z", "final_q", "total", "lat", "lon"]
SPIKE_FIELDS = ["observed", "expected", "ratio", "baseline", "p", "q", "spike", "harm_observed", "harm_expected"]


def _engine_errors(fn, *args, **kwargs):
    """Engine ValueErrors (too few slices, bad slice text...) are the caller's to fix: 422."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        if isinstance(exc, StoreError):  # unknown names (404), data that cannot answer (409): app/errors.py
            raise
        raise ApiError(422, "invalid_parameter", str(exc)) from exc



# ---------------------------------------------------------------------------------------------- emerging
@router.get(
    "/hotspots/emerging",
    summary="Emerging hot spots: ESRI pattern per H3 cell over consecutive time slices",
    description="Gi* (k=1, every study-area cell, two-sided, BH FDR per slice) on each consecutive slice (1 month "
    "for month-only police.uk data, 14 days for dated data), then a Mann-Kendall trend on each cell's z series. "
    "Each cell gets one pattern: new, consecutive, intensifying, persistent, diminishing, sporadic, oscillating, "
    "historical (and the `_cold` mirror images) or no_pattern, following ESRI's Emerging Hot Spot Analysis rules. "
    "Default period: every record of the dataset. Returns cells with a pattern (highest final-slice z first, `top` "
    "of them); `summary.patterns` counts every domain cell.",
    responses={200: {"content": {"application/json": {}, "text/csv": {}, "application/geo+json": {}}}},
)
async def get_emerging(
    request: Request, state: State, q: Query_,
    slice: Annotated[str | None, Query(pattern=SLICE_RE, description="Slice length: '14D', '7D', '28D', '1M', '2M'. Default: 1M "
                                       "for month-only data, 14D otherwise. Month-only data refuse day slices.")] = None,
    value: Annotated[Literal["count", "harm"], Query(description="What Gi* is computed on per slice: offence counts "
                                                     "(the default: harm per cell-month is dominated by single "
                                                     "serious offences) or harm.")] = "count",
    transform: Annotated[Literal["none", "log", "cap"], Query(description="Transform cell-slice values before "
                                                              "Gi* (harm): log1p or cap at the 99th percentile.")] = "none",
    include_no_pattern: Annotated[bool, Query(description="Also return cells with no pattern.")] = False,
    format: Annotated[Literal["json", "csv", "geojson"], Query(description="json, csv or geojson")] = "json",
) -> Response:
    return await cached_response_async(request, state, ("emerging", q, slice, value, transform, include_no_pattern, format),
                           lambda: _emerging(state, q, slice, value, transform, include_no_pattern, format))


def _emerging(state, q, slice, value, transform, include_no_pattern, format) -> Response:
    t = None if transform == "none" else transform
    res, meta = cached_value(state, ("emerging", q.model_copy(update={"top": None}), slice, value, t),
                             lambda: _engine_errors(emerging_for_query, state.store, q, state.default_weights,
                                                    slice_=slice, value=value, transform=t))
    cells = emerging_cells(res, include_no_pattern, q.top)
    patterned = res.cells["pattern"] != "no_pattern"
    meta = {**meta, "summary": res.summary(), "slice_labels": res.slice_labels, "top": q.top,
            "cells_returned": int(len(cells)),
            "cells_with_a_pattern_but_no_offences": int((patterned & (res.cells["offences"] == 0)).sum()),
            "listing_rule": "cells with a pattern and at least one offence of their own in the period, highest "
                            "final-slice z first; offences and harm are the cell's own, total is the Gi* value "
                            "summed over the slices"}
    return cells_response(meta, cells, EMERGING_FIELDS, format, "emerging")


# ------------------------------------------------------------------------------------------------ spikes
@router.get(
    "/spikes",
    summary="Spikes: cells or areas whose latest weeks/month exceed their own trailing baseline",
    description="Per unit (H3 cell at `resolution`, or a feature of an area layer such as districts or wards), "
    "offences in the recent window (last month for month-only data, else the last 28 days) against the trailing "
    "baseline before it (12 months / 12 weeks; shortened, with a caveat, when the data do not reach that far "
    "back). One-sided exact conditional Poisson test (or negative binomial), Benjamini-Hochberg FDR across the "
    "units tested; a spike also needs `min_observed` offences. Reports observed, expected, ratio, p, q and "
    "harm observed/expected (descriptive).",
    responses={200: {"content": {"application/json": {}, "text/csv": {}, "application/geo+json": {}}}},
)
async def get_spikes(
    request: Request, state: State, q: ObservedQuery_,
    unit: Annotated[str, Query(description="cell (H3 at `resolution`) or an area layer: districts (the loaded "
                               "layer when it covers the dataset, else the automatic districts), lad, lsoa (automatic, "
                               "from the records), wards, or any loaded boundary layer; the response's `area_layer` "
                               "names the layer used.", examples=["cell", "districts", "lad", "wards"])] = "cell",
    recent: Annotated[str | None, Query(pattern=SLICE_RE, description="Recent window: '28D', '14D', '1M'. Default "
                                        "1M (month-only data) or 28D; days or weeks on month-only data are a 409.")] = None,
    baseline: Annotated[str | None, Query(pattern=SLICE_RE, description="Baseline window: '12W', '12M'. Default "
                                          "12M or 12W.")] = None,
    method: Annotated[Literal["poisson", "negbin"], Query(description="poisson (exact conditional test) or "
                                                          "negbin (pooled over-dispersion).")] = "poisson",
    min_observed: Annotated[int, Query(ge=1, le=1000, description="Fewest recent offences for a spike.")] = 3,
    all_units: Annotated[bool, Query(alias="all", description="Return every unit tested, not only spikes.")] = False,
    format: Annotated[Literal["json", "csv", "geojson"], Query(description="json, csv or geojson")] = "json",
) -> Response:
    return await cached_response_async(
        request, state, ("spikes", q, unit, recent, baseline, method, min_observed, all_units, format),
        lambda: _spikes(state, q, unit, recent, baseline, method, min_observed, all_units, format))


def _spikes(state, q, unit, recent, baseline, method, min_observed, all_units, format) -> Response:
    layer = None
    if unit != "cell":
        try:
            layer = choose_layer(state.store, q.dataset, unit)
        except StoreError as exc:
            raise NotStored(f"unit: 'cell' or an area layer; {exc}") from exc
        unit = layer.stored
    res, meta = _engine_errors(spikes_for_query, state.store, q, state.default_weights, unit=unit, recent=recent,
                               baseline=baseline, method=method, min_observed=min_observed)
    units = spike_units(state.store, res, unit, not all_units, q.top)
    meta = {**meta, "summary": res.summary(), "top": q.top, "units_returned": int(len(units))}
    if layer is not None:
        meta.update(unit=layer.name, area_layer=layer.to_dict())
    if unit == "cell":
        return cells_response(meta, units, ["h3", *SPIKE_FIELDS, "lat", "lon"], format, "spikes")
    fields = ["id", "name", "district", *SPIKE_FIELDS]
    if format == "csv":
        return Response(to_csv(units, fields), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="spikes.csv"'})
    if format == "geojson":
        geoms = state.store.areas(unit).set_index("feature_id")["geometry_wkb"]
        geoms.index = geoms.index.astype(str)
        feats = [{"type": "Feature", "id": p["id"], "properties": p,
                  "geometry": json.loads(shapely.to_geojson(shapely.from_wkb(bytes(geoms[p["id"]]))))}
                 for p in records(units, fields) if p["id"] in geoms.index]
        return JSONResponse({"type": "FeatureCollection", "features": feats, "metadata": meta},
                            media_type=GEOJSON_MEDIA)
    return JSONResponse({**meta, "units": records(units, fields)})


# -------------------------------------------------------------------------------------------- evaluation
_METHOD = "(" + "|".join(METHODS) + r"|kde_[1-9][0-9]{0,4}m)"
_PCT = r"(100(\.0{1,6})?|[1-9][0-9]?(\.[0-9]{1,6})?|0\.[0-9]{0,5}[1-9])%?"  # a share in (0, 100] percent


def _coverages(text: str) -> tuple[float, ...]:
    try:
        vals = [float(x.strip().rstrip("%")) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", "coverages: numbers, e.g. 1,2,5 (percent of the area)") from exc
    vals = [v / 100 for v in vals]
    if not vals or len(vals) > 20 or not all(0 < v <= 1 for v in vals):
        raise ApiError(422, "invalid_parameter", "coverages: 1 to 20 percentages in (0, 100]")
    return tuple(vals)


@router.get(
    "/evaluation",
    summary="Backtest: would the map have pointed at next period's harm? (hit rate, PAI, harm PAI, PEI)",
    description="Rolling-origin backtest of the query's offence selection over every record of the dataset: at "
    "each origin every method scores every study-area cell from the `train_slices` slices before it, the top "
    "cells covering each `coverages` share of the area are selected, and they are scored on the next "
    "`test_slices` slice(s): hit rate, PAI, harm PAI, PEI, harm PEI, with bootstrap 95 % intervals over origins. "
    "Methods: harm_spots, prior_counts, prior_period_harm, gistar, kde (quartic, 400 m; kde_<m>m for another "
    "bandwidth), prospective (Bowers et al. 2004) and forecast (the service's method=forecast, on every slice "
    "before the origin; `forecast_vs_best_baseline` gives its harm-PAI ratio to the best other method with a "
    "paired bootstrap interval). Intervals from fewer than 5 origins are flagged `interval_reliable: false`. `format=json` returns the summary table and per-origin rows; "
    "`csv` the summary; `png` the harm-capture curve (share of next-period harm vs share of area). Default "
    "resolution is the query's (10); the committed Leicestershire report uses 9.",
    responses={200: {"content": {"application/json": {}, "text/csv": {}, "image/png": {}}}},
)
async def get_evaluation(
    request: Request, state: State, q: Query_,
    methods: Annotated[str | None, Query(description=f"Comma-separated methods; default all of {list(METHODS)}; "
                                         "kde_<metres>m for another KDE bandwidth.",
                                         json_schema_extra={"pattern": rf"^(|{_METHOD}(,{_METHOD})*)$"},
                                         examples=["harm_spots,prior_counts,kde"])] = None,
    coverages: Annotated[str, Query(description="Area shares to select, in percent: 1 to 20 numbers in (0, 100].",
                                    json_schema_extra={"pattern": rf"^{_PCT}(,{_PCT}){{0,19}}$"})] = "1,2,5",
    train_slices: Annotated[int | None, Query(ge=1, le=120, description="Training slices before each origin (12 = "
                                              "12 months for police.uk, 24 weeks for dated data). Default: 12, or "
                                              "the longest window the data allow when they hold fewer slices (said "
                                              "in `caveats` and `config.train_slices`).")] = None,
    test_slices: Annotated[int, Query(ge=1, le=24, description="Slices scored after each origin.")] = 1,
    slice: Annotated[str | None, Query(pattern=SLICE_RE, description="Slice length ('14D', '1M'); default 1M "
                                       "month-only, else 14D.")] = None,
    bootstrap: Annotated[int, Query(ge=0, le=10000, description="Bootstrap resamples of origins.")] = 2000,
    per_origin: Annotated[bool, Query(description="Include the per-origin rows (json).")] = True,
    format: Annotated[Literal["json", "csv", "png"], Query(description="json, csv (summary) or png (curve)")] = "json",
) -> Response:
    meths = tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else METHODS
    cfg = BacktestConfig(slice=slice, train_slices=train_slices, test_slices=test_slices, methods=meths,
                         coverages=_coverages(coverages), bootstrap=max(bootstrap, 1))
    return await cached_response_async(request, state, ("evaluation", q, cfg, per_origin, format),
                                       lambda: _evaluation(state, q, cfg, per_origin, format))


def _evaluation(state, q, cfg: BacktestConfig, per_origin: bool, format: str) -> Response:
    # one backtest per store state, query and config, whatever the format or per_origin asked for
    ev = cached_value(state, ("backtest", q, cfg),
                      lambda: _engine_errors(backtest_for_query, state.store, q, state.default_weights, cfg))
    res = ev.result
    if format == "png":
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = res.plot_capture(Path(tmp) / "capture.png", title=f"{q.dataset}: harm capture, next period")
            return Response(path.read_bytes(), media_type="image/png")
    if format == "csv":
        buf = io.StringIO()
        res.summary.to_csv(buf, index=False)
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="evaluation.csv"'})
    body = {**ev.meta, "config": res.config, "slices": res.slices, "domain": res.domain,
            "events_used": res.events_used, "events_outside_domain": res.events_outside_domain,
            "origins": int(res.per_origin["origin"].nunique()),
            "intervals_reliable": bool(res.per_origin["origin"].nunique() >= MIN_RELIABLE_ORIGINS),
            "summary": records(res.summary),
            "table_markdown": res.table(), "caveats": res.caveats}
    if "forecast" in cfg.methods and len(cfg.methods) > 1:
        body["forecast_vs_best_baseline"] = records(ratio_to_best(res.per_origin, n_boot=cfg.bootstrap))
    if per_origin:
        body["per_origin"] = records(res.per_origin)
    return JSONResponse(json.loads(json.dumps(body, default=_json_default)))


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if not np.isfinite(v) else float(v)
    return str(v)


# ------------------------------------------------------------------------------------- OGC collection
GISTAR_FIELDS = ["h3", "patrol_rank", "gi_class", "gi_z", "gi_p", "gi_q", "value", "raw", "lat", "lon"]


def gistar_items(state: ServiceState, req: ItemsRequest) -> Items:
    """Items of the OGC ``gistar`` collection: the Gi* hot cells (FDR q <= 0.10) of the /hotspots query (same
    parameters, harm, analytic). Patrol candidates (hot_* cells with harm of their own) first, highest z first,
    numbered by ``patrol_rank``; then the ``neighbourhood_hot`` cells (hot only through their neighbours, no harm
    in the cell), with no patrol rank; ``bbox`` filters them."""
    q = hotspot_query_for_items(state, req)
    gi = gistar_result(state, q)  # one Gi* per store state and query: every page is a slice of it
    hot = gi.cells[gi.cells["class"] != "not_significant"].assign(_first=lambda c: ~c["patrol_candidate"])
    hot = hot.sort_values(["_first", "z", "cell"], ascending=[True, False, True]).drop(columns="_first")
    n_cand = int(hot["patrol_candidate"].sum())
    hot["patrol_rank"] = np.where(hot["patrol_candidate"], np.arange(1, len(hot) + 1), np.nan)
    hot["patrol_rank"] = hot["patrol_rank"].astype("Int64")
    if q.top is not None:
        hot = hot.head(q.top)
    ids = hot["cell"].to_numpy(dtype=np.uint64)
    lat, lon = cell_centres(ids)
    cells = hot.rename(columns={"class": "gi_class", "z": "gi_z", "p": "gi_p", "q": "gi_q"}).assign(
        h3=to_hex(ids), lat=lat, lon=lon).reset_index(drop=True)
    cells, page = cells_page(cells, req, q.resolution)
    described = describe_query(state, req)
    meta = {"dataset": q.dataset, "resolution": q.resolution, "preset": q.preset, "value": "harm",
            "listed": "cells with FDR q <= 0.10 (classes hot_90 and above): first the "
                      f"{n_cand} patrol candidates (harm in the cell), then cells hot only through their neighbours",
            "period": described.fields["period"], "weights_table": described.fields["weights_table"],
            "gistar": gi.summary()}
    fields = [*GISTAR_FIELDS, *QUERY_FIELDS]
    fc = to_geojson(meta, page.assign(**described.fields), fields)
    return Items(fc["features"], int(len(cells)), fc["metadata"], fields)


GISTAR = Collection(
    id="gistar", title="Gi* hot spots",
    description="Getis-Ord Gi* hot spots (k=1, every study-area cell, analytic z, Benjamini-Hochberg FDR, "
    "one-sided) for the same query parameters as harm-spots: every cell with FDR q <= 0.10, classed hot_99 "
    "(q <= 0.01), hot_95 (q <= 0.05) or hot_90 (q <= 0.10) - the response's gistar.class_q_levels; its q_level "
    "(0.05) is the `significant` flag only. Cells with harm of their own come first, highest z first, numbered by "
    "patrol_rank; cells hot only because their neighbours are (no harm in the cell) are classed "
    "neighbourhood_hot, listed after them and never ranked. Same engine as GET /hotspots?stats=gistar "
    "(docs/statistics.md).",
    items=gistar_items, extent=offences_extent, kind="cells", describe=describe_query,
    style={"property": "gi_class", "type": "categorical"}, keywords=("Gi*", "hot spots", "H3", "FDR"))


def register_collections(registry: Registry) -> None:
    registry.add(GISTAR)
