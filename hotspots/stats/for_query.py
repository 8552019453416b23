"""Glue between the query model (:class:`HotspotQuery`) and the statistics engines (Gi*, emerging hot spots,
spikes, backtest): fetch the selected offences from the store, build the study-area domain, call the engine.

No HTTP here: ``app/routes/hotspots.py``, ``app/routes/stats.py`` and ``harmspot backtest`` all call these
functions, so the API, the CLI and the map see the same numbers.

Domain (every cell Gi* and the backtest are computed over, zero cells included): the res-10 cells stored in
``area_cells`` for the query's ``area`` (its boundary polygons, filled) or, without an area, for the dataset's
study area (layer ``__dataset__``: the study-area polygon given at ingest, else the trimmed convex hull of the
data); cut to ``bbox`` when one is given. Converted to the query resolution with h3ronpy ``change_resolution``:
coarser resolutions (7-9) take the distinct *parents* of the res-10 cells (a parent on the boundary is in when
any of its res-10 children is), res 11 takes all seven *children* of each res-10 cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from geodata.areas import layer_cells
from geodata.cells import AREA_RESOLUTION, bbox_sql, cell_centres, to_hex, unique_cells
from geodata.harm import WeightsTable
from geodata.store import DATASET_LAYER, DataCannotAnswer, Store
from hotspots.stats.backtest import BacktestConfig, BacktestResult, run_backtest
from hotspots.stats.emerging import EmergingResult, emerging_hotspots
from hotspots.stats.gistar import Domain, GiStarResult, gistar, neighbour_matrix
from hotspots.ranking.harmspots import HotspotResult, offence_rows, plan_rows
from hotspots.ranking.plan import QueryPlan, dataset_info, resolve_plan
from hotspots.ranking.query import HotspotQuery, period_end_exclusive, period_start
from hotspots.stats.spikes import SpikeResult, window_start, find_spikes
from hotspots.stats.timeslices import coarsest_precision, parse_slice

GI_FIELDS = ["gi_z", "gi_p", "gi_q", "gi_class"]
_W_CACHE: dict[tuple, object] = {}  # (dataset, area, bbox, resolution, k, n cells) -> neighbour matrix


# ---------------------------------------------------------------------------------------------------- domain


def _to_resolution(cells10: np.ndarray, res: int) -> np.ndarray:
    """res-10 cells -> distinct parents (res < 10) or all children (res 11), via h3ronpy change_resolution."""
    from h3ronpy import change_resolution

    if res == AREA_RESOLUTION or len(cells10) == 0:
        return unique_cells(cells10)
    out = np.asarray(pa.array(change_resolution(pa.array(cells10, type=pa.uint64()), res)), dtype=np.uint64)
    return unique_cells(out)


_D_CACHE: dict[tuple, Domain] = {}


def study_domain(store: Store, q: HotspotQuery, label: tuple[str, list, str]) -> Domain:
    """The query's domain at ``q.resolution`` (see the module docstring). Cached per store, area, bbox and
    resolution, invalidated by any new ingest batch or boundary load (max batch id, number of area rows)."""
    layer, ids, area_label = label
    stamp = store.query_df("SELECT (SELECT max(batch_id) FROM batches) AS b, (SELECT count(*) FROM areas) AS a")
    key = (id(store), str(store.path), layer, tuple(ids), q.bbox, q.resolution, *stamp.iloc[0].tolist())
    if key not in _D_CACHE:
        if len(_D_CACHE) > 16:
            _D_CACHE.clear()
        _D_CACHE[key] = _study_domain(store, q, label)
    return _D_CACHE[key]


def _study_domain(store: Store, q: HotspotQuery, label: tuple[str, list, str]) -> Domain:
    layer, ids, area_label = label
    placeholders = ",".join("?" * len(ids))
    sql = f"SELECT DISTINCT h3_10 FROM area_cells WHERE layer = ? AND feature_id IN ({placeholders})"
    params: list = [layer, *ids]
    if q.bbox:
        cond, values = bbox_sql(q.bbox)
        sql += f" AND {cond}"
        params += values
    cells10 = store.query_df(sql, params)["h3_10"].to_numpy(dtype=np.uint64)
    if len(cells10) == 0:
        raise DataCannotAnswer(f"the study area of '{q.dataset}' has no cells" + (" inside the bbox" if q.bbox else ""))
    if layer == DATASET_LAYER:
        name = store.scalar("SELECT name FROM areas WHERE layer = ? AND feature_id = ?", [DATASET_LAYER, q.dataset]) or ""
        source = "hull" if name.startswith("convex hull") else "polygon"
        desc = f"study area of dataset '{q.dataset}': {name or 'stored cells'}"
    else:
        source, desc = "polygon", f"{area_label} (boundary polygons of layer '{layer}', filled)"
    if q.bbox:
        desc += " within the bbox"
    how = {True: "", False: f"; res-10 cells converted to res {q.resolution} "
           + ("parents" if q.resolution < AREA_RESOLUTION else "children")}[q.resolution == AREA_RESOLUTION]
    return Domain(_to_resolution(cells10, q.resolution), q.resolution, source,
                  desc + f", every cell whose centre is inside at res {AREA_RESOLUTION}" + how)


def _weights_for(q: HotspotQuery, domain: Domain, k: int):
    key = (q.dataset, q.area, q.bbox, q.resolution, k, len(domain), int(domain.cells[0]), int(domain.cells[-1]))
    w = _W_CACHE.get(key)
    if w is None:
        if len(_W_CACHE) > 16:
            _W_CACHE.clear()
        w = _W_CACHE[key] = neighbour_matrix(domain.cells, k)
    return w


def all_data_period(store: Store, q: HotspotQuery) -> tuple[datetime, datetime, str]:
    """The space-time engines default to every record of the dataset (the query's from/to when given)."""
    info = dataset_info(store, q.dataset)
    if info.first is None:
        raise DataCannotAnswer(f"dataset '{q.dataset}' has no offences")
    start = period_start(q.date_from) if q.date_from else info.first
    end = period_end_exclusive(q.date_to) if q.date_to else info.last
    return start, end, "as requested" if (q.date_from or q.date_to) else "all records of the dataset"


def _period_meta(f: QueryPlan) -> dict:
    return {"from": f.start.date().isoformat(), "to": (f.end - pd.Timedelta(days=1)).date().isoformat(),
            "period_rule": f.rule, "weights_table": f.table.name}


def _query_meta(q: HotspotQuery) -> dict:
    return {"dataset": q.dataset, "preset": q.preset if not q.offences else None, "offences": q.offences,
            "area": q.area, "resolution": q.resolution}


# ------------------------------------------------------------------------------------------------------ Gi*


def gistar_for_query(store: Store, q: HotspotQuery, default_weights: WeightsTable, *, value: str = "harm",
                     transform: str | None = None, permutations: int = 0, k: int = 1,
                     seed: int | None = 0) -> GiStarResult:
    """Gi* over the query's domain, on harm or counts of the offences the query selects (same period)."""
    rows, f = offence_rows(store, q, default_weights)
    domain = study_domain(store, q, f.domain)
    vals = rows["harm"].to_numpy(float) if value == "harm" else np.ones(len(rows))
    return gistar(rows["cell"].to_numpy(np.uint64), vals, domain, k=k, transform=transform,
                  permutations=permutations, seed=seed, weights=_weights_for(q, domain, k))


def add_gistar(result: HotspotResult, gi: GiStarResult, value: str) -> tuple[HotspotResult, dict]:
    """Attach gi_z, gi_p, gi_q, gi_class to every cell of a harm-spot result; cells outside the domain get
    gi_class 'outside_domain' and no z. Returns the result and the meta block describing the Gi* run."""
    g = gi.cells.set_index("cell")[["z", "p", "q", "class"]]
    ids = result.cells["cell"].to_numpy(dtype=np.uint64)
    hit = g.reindex(ids)
    cells = result.cells.copy()
    cells["gi_z"] = hit["z"].to_numpy(float)
    cells["gi_p"] = hit["p"].to_numpy(float)
    cells["gi_q"] = hit["q"].to_numpy(float)
    cells["gi_class"] = hit["class"].fillna("outside_domain").to_numpy(object)
    result.cells = cells
    meta = {"value": value, **gi.summary(value),
            "cells_outside_domain": int(hit["z"].isna().sum())}
    return result, meta


# -------------------------------------------------------------------------------------------------- emerging


def emerging_for_query(store: Store, q: HotspotQuery, default_weights: WeightsTable, *, slice_: str | None = None,
                       value: str = "count", transform: str | None = None, k: int = 1) -> tuple[EmergingResult, dict]:
    rows, f = offence_rows(store, q, default_weights, all_data_period(store, q))
    if rows.empty:
        raise DataCannotAnswer("no offences match the query")
    domain = study_domain(store, q, f.domain)
    end = f.end if q.date_to else None
    # slices run from `from` or, when it precedes every record, from the first record: years with no data are
    # not observed zeros (and 1,500 empty monthly slices since 1900 filled memory: a cube of 400 M cells)
    first = pd.Timestamp(pd.to_datetime(rows["occurred_from"]).min())
    start = f.start if q.date_from and pd.Timestamp(f.start) > first else None
    res = emerging_hotspots(rows, domain, slice=slice_, value_col="harm" if value == "harm" else None,
                            transform=transform, k=k, end=end, start=start, weights=_weights_for(q, domain, k))
    if q.date_from and start is None:
        res.caveats.insert(0, f"'from' ({q.date_from}) precedes the first record ({first.date()}): the slices start "
                              "at the first record")
    # each cell's own offences and harm over the sliced period, beside the pattern (a pattern is about the
    # neighbourhood's Gi*, so a cell can carry one with nothing recorded in it)
    t = pd.to_datetime(rows["occurred_from"])
    inside = (t >= pd.Timestamp(res.slices["first"])) & (t < pd.Timestamp(res.slices["last_end"]))
    own = (rows.loc[inside].groupby("cell").agg(offences=("harm", "size"), harm=("harm", "sum")))
    own.index = own.index.astype(np.uint64)
    hit = own.reindex(res.cells["cell"].to_numpy(np.uint64))
    res.cells = res.cells.assign(offences=hit["offences"].fillna(0).astype(np.int64).to_numpy(),
                                 harm=hit["harm"].fillna(0.0).to_numpy(float))
    return res, {**_query_meta(q), **_period_meta(f), "value": value,
                 "value_note": f"Gi* per slice on {'harm (days under the weights table)' if value == 'harm' else 'offence counts'}"
                               f"{' (the default; value=harm for harm)' if value == 'count' else ' (value=count is the default)'}"}


def emerging_cells(res: EmergingResult, include_no_pattern: bool = False, top: int | None = None) -> pd.DataFrame:
    """Cells to list, highest final-slice z first. Cells with no offence of their own in the period are never
    listed (their pattern comes from their neighbours; ``summary.patterns`` still counts them)."""
    cells = res.cells if include_no_pattern else res.cells[res.cells["pattern"] != "no_pattern"]
    if "offences" in cells:
        cells = cells[cells["offences"] > 0]
    cells = cells.sort_values(["final_z", "cell"], ascending=[False, True], kind="mergesort")
    if top is not None:
        cells = cells.head(top)
    ids = cells["cell"].to_numpy(dtype=np.uint64)
    lat, lon = cell_centres(ids)
    return cells.assign(h3=to_hex(ids), lat=lat, lon=lon).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- spikes


def spikes_for_query(store: Store, q: HotspotQuery, default_weights: WeightsTable, *, unit: str = "cell",
                     recent: str | None = None, baseline: str | None = None, method: str = "poisson",
                     min_observed: int = 3) -> tuple[SpikeResult, dict]:
    """Spikes per H3 cell (at the query resolution) or per feature of an area layer (districts, wards...).

    The baseline is cut to the data actually held: a 12-month baseline on 3 months of data would otherwise
    expect a quarter of the true rate and flag everything."""
    rows, f = offence_rows(store, q, default_weights, all_data_period(store, q))
    if rows.empty:
        raise DataCannotAnswer("no offences match the query")
    notes: list[str] = []
    if unit == "cell":
        rows["unit"] = rows["cell"]
    else:
        ac = layer_cells(store, unit).drop_duplicates("h3_10")
        m = pd.Series(ac["feature_id"].to_numpy(), index=ac["h3_10"].to_numpy())
        rows["unit"] = m.reindex(rows["h3_10"].to_numpy(dtype=np.uint64)).to_numpy()
        outside = int(rows["unit"].isna().sum())
        rows = rows[rows["unit"].notna()]
        if outside:
            notes.append(f"{outside} offences lie in no feature of layer '{unit}' and are not tested")
    prec = coarsest_precision(rows["precision"])
    r_unit, r_len = parse_slice(recent or ("1M" if prec == "month" else "28D"), prec)
    b_unit, b_len = parse_slice(baseline or ("12M" if prec == "month" else "12W"), prec)
    t = pd.to_datetime(rows["occurred_from"])
    end = pd.Timestamp(f.end) if q.date_to else None
    end_ = end if end is not None else ((t.max().to_period("M") + 1).to_timestamp() if r_unit == "month"
                                        else t.max().normalize() + pd.Timedelta(days=1))
    r_start = window_start(r_unit, r_len, end_)
    first = t.min().to_period("M").to_timestamp() if r_unit == "month" else t.min().normalize()
    if window_start(b_unit, b_len, r_start) < first:
        avail = (r_start.to_period("M") - first.to_period("M")).n if b_unit == "month" else (r_start - first).days
        if avail < (1 if b_unit == "month" else 7):
            raise DataCannotAnswer(f"not enough data before the recent window ({r_start.date()}) for a baseline")
        notes.append(f"baseline shortened from {b_len} to {avail} {b_unit}s: the data start {first.date()}")
        b_len = avail
    fmt = (lambda u, n: f"{n}M" if u == "month" else f"{n}D")
    res = find_spikes(rows, unit_col="unit", harm_col="harm", recent=fmt(r_unit, r_len), baseline=fmt(b_unit, b_len),
                      end=end_, method=method, min_observed=min_observed)
    res.caveats = notes + res.caveats
    return res, {**_query_meta(q), **_period_meta(f), "unit": unit}


def spike_units(store: Store, res: SpikeResult, unit: str, only_spikes: bool, top: int | None) -> pd.DataFrame:
    units = res.spikes if only_spikes else res.units
    if top is not None:
        units = units.head(top)
    units = units.reset_index(drop=True)
    if unit == "cell":
        ids = units["unit"].to_numpy(dtype=np.uint64)
        lat, lon = cell_centres(ids)
        return units.drop(columns=["unit"]).assign(h3=to_hex(ids), lat=lat, lon=lon)[
            ["h3", *[c for c in units.columns if c != "unit"], "lat", "lon"]]
    names = store.query_df("SELECT feature_id, name, district FROM areas WHERE layer = ?", [unit])
    names["feature_id"] = names["feature_id"].astype(str)
    out = units.rename(columns={"unit": "id"}).merge(names.rename(columns={"feature_id": "id"}), on="id", how="left")
    return out[["id", "name", "district", *[c for c in units.columns if c != "unit"]]]


# -------------------------------------------------------------------------------------------------- backtest


@dataclass
class Evaluation:
    result: BacktestResult
    meta: dict


def backtest_for_query(store: Store, q: HotspotQuery, default_weights: WeightsTable,
                       config: BacktestConfig | None = None,
                       progress: Callable[[int, int, str], None] | None = None) -> Evaluation:
    """Rolling-origin backtest of the query's offence selection over every record of the dataset (or from/to).
    One scan of the plan's scope: the selected offences are the events, every record (any type, ASB included)
    the forecast's all-record context."""
    plan = resolve_plan(store, q, default_weights, all_data_period(store, q))
    cfg = config or BacktestConfig()
    if "forecast" in cfg.methods:
        scope = plan_rows(store, plan, all_records=True)
        rows = scope[scope["selected"]].reset_index(drop=True)
    else:
        scope, rows = None, plan_rows(store, plan)
    if rows.empty:
        raise DataCannotAnswer("no offences match the query")
    domain = study_domain(store, q, plan.domain)
    w = _weights_for(q, domain, 1) if "gistar" in cfg.methods else None  # the one Gi* on /hotspots keeps
    res = run_backtest(rows, domain, cfg, context=scope, weights=w, progress=progress)
    meta = {**_query_meta(q), **_period_meta(plan), "events": int(len(rows))}
    if scope is not None:
        meta["records_in_scope"] = int(len(scope))
    return Evaluation(res, meta)
