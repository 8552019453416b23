"""Tasking pack: the top harm spots per patrol area for the next period, within a patrol capacity.

Built on one resolved plan of the shared `HotspotQuery` (``hotspots.ranking.plan``), by default ranked by the
forecast (``method=forecast``: expected harm in the period after the look-back; ``method=observed`` ranks by the
look-back's own harm as before): every cell with a positive score is
assigned to an area of a boundary layer (res-10 cells in ``area_cells``), ranked inside its area, cut to
``spots_per_area`` and then to the total patrol minutes (round robin over areas, so every area keeps its first
spot before any area gets a second).  Each spot has a stable id (``HS-`` + the H3 cell hex), its nearest street
names (most frequent ``location`` text of its records), main offence types, peak day/hour windows when records
carry times, and a dose: ``visits_per_day`` visits of ``visit_minutes`` (15 min, after Koper 1995).  A saved
pack is compared with the previous saved pack of the same dataset and layer: new, continuing, dropped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from geodata.areas import LayerChoice, choose_layer, layer_cells, public_layers
from geodata.cells import AREA_RESOLUTION, parents
from geodata.harm import WeightsTable
from geodata.store import NotStored, Store, StoreConflict, utc_now
from hotspots.ranking.context import MAIN_LOCATION_RULE, police_station_cells
from hotspots.ranking.harmspots import HotspotResult, run_plan
from hotspots.ranking.plan import QueryPlan, resolve_plan
from hotspots.ranking.query import HotspotQuery

SPOT_PREFIX = "HS-"
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
STALE_DAYS = 30  # a look-back ending more than this many days before the plan starts is stale (warned)
PEAK_HOURS_WIDTH = 4  # hours in a peak window: about one patrol shift's evening block; see docs
MONTH_ONLY_PEAK = "n/a: records are month-only (data.police.uk), no day or time"

# The CSV/JSON columns of a tasking pack, in order, with their meaning (docs/patrol-planning.md repeats them).
TASKING_FIELDS: dict[str, str] = {
    "spot_id": "stable spot id: 'HS-' + the H3 cell index (hex); the same cell always has the same id",
    "status": "new / continuing (in the previous saved pack) / dropped (in the previous pack, not in this one)",
    "area_id": "feature id of the patrol area (e.g. district code)",
    "area_name": "patrol area name",
    "area_rank": "rank of the spot inside its area by forecast harm (method=forecast, the default) or by harm "
                 "(method=observed); 1 = most",
    "rank": "rank among all spots in the pack, by the same measure",
    "h3": "H3 cell index (hex)",
    "resolution": "H3 resolution of the cell",
    "lat": "cell centre latitude (WGS84)",
    "lon": "cell centre longitude (WGS84)",
    "streets": "nearest street names: the most frequent location texts of the cell's selected records in the "
               "look-back ('; '-separated; all its records' texts when those carry none)",
    "police_station_share": "share of the cell's selected records mapped to a data.police.uk 'Police Station' point",
    "generic_point_share": "share mapped to any generic snap point ('Parking Area', 'Supermarket'...; "
                           "docs/hotspots.md#location-artefacts)",
    "harm": "harm in the look-back window (days, per the weights table)",
    "count": "offences in the look-back window",
    "forecast_harm": "expected harm in the period after the look-back (method=forecast, the default; empty with "
                     "method=observed): docs/hotspots.md#forecast",
    "harm_share": "share of the area's harm in the look-back window",
    "top_offences": "main offence types by harm, with counts",
    "peak_days": "days of week with most harm (timed data only)",
    "peak_hours": f"the {PEAK_HOURS_WIDTH}-hour window with most harm (timed data only)",
    "visits_per_day": "recommended visits per day",
    "visit_minutes": "recommended minutes per visit (Koper curve: about 15)",
    "visits_planned": "visits over the plan period",
    "minutes_planned": "patrol minutes over the plan period",
}

PACK_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS tasking_pack_seq START 1;
CREATE TABLE IF NOT EXISTS tasking_packs (
    pack_id INTEGER PRIMARY KEY, dataset VARCHAR, area_layer VARCHAR, created_at TIMESTAMP, plan_from DATE,
    plan_to DATE, lookback_from DATE, lookback_to DATE, visits_per_day DOUBLE, visit_minutes INTEGER,
    params VARCHAR);
CREATE TABLE IF NOT EXISTS tasking_spots (
    pack_id INTEGER, spot_id VARCHAR, h3 VARCHAR, resolution SMALLINT, area_id VARCHAR, area_name VARCHAR,
    area_rank INTEGER, rank INTEGER, harm DOUBLE, count INTEGER, lat DOUBLE, lon DOUBLE, streets VARCHAR,
    visits_per_day DOUBLE, visit_minutes INTEGER, visits_planned DOUBLE, minutes_planned DOUBLE);
"""


class TaskingError(ValueError):
    """Invalid tasking parameters (e.g. no area layer, capacity too small)."""


class TaskingParams(BaseModel):
    """Capacity and dose of a tasking pack; every default is explained in docs/patrol-planning.md."""

    area_layer: str = Field("districts", description="Boundary layer whose features are the patrol areas: "
                            "'districts' means the loaded districts layer when it covers the dataset, else the "
                            "dataset's automatic 'lad' layer (districts named from the records' LSOA names).")
    spots_per_area: int = Field(5, ge=1, le=100, description="Most spots per area.")
    total_minutes: float | None = Field(None, gt=0, description="Patrol minutes available over the whole plan "
                                        "period, all areas together; null = no limit beyond spots_per_area.")
    visit_minutes: int = Field(15, ge=1, le=120, description="Minutes per visit (Koper curve: ~15).")
    visits_per_day: float = Field(2.0, gt=0, le=48, description="Visits per spot per day (planning parameter).")
    plan_from: date | None = Field(None, description="First day of the plan period; default: today.")
    plan_days: int = Field(14, ge=1, le=92, description="Length of the plan period in days (biweekly: 14).")
    include_police_stations: bool = Field(False, description="Keep cells whose main location text is 'Police "
                                          "Station' (crimes recorded at the station); left out by default.")


@dataclass
class TaskingPack:
    query: HotspotQuery
    params: TaskingParams
    plan_from: date
    plan_to_exclusive: date
    spots: pd.DataFrame  # TASKING_FIELDS (+ 'cell'), this pack's spots
    dropped: pd.DataFrame  # previous pack's spots not in this one (same columns, status 'dropped')
    areas: pd.DataFrame  # feature_id, name, geometry_wkb, spots, harm (for the sheet)
    hotspots: HotspotResult
    previous_pack_id: int | None
    capacity: dict
    peak_note: str | None
    pack_id: int | None = None
    caveats: list[str] = field(default_factory=list)
    layer: LayerChoice | None = None  # the area layer actually used (see geodata.areas.choose_layer)
    warnings: list[str] = field(default_factory=list)  # shown first, on the sheet too (e.g. stale data)
    police_station_cells: int = 0  # cells left out (or kept) because their main location is a police station

    @property
    def area_layer(self) -> str:
        return self.layer.name if self.layer else self.params.area_layer

    @property
    def rows(self) -> pd.DataFrame:
        """Spots then dropped spots: one table for CSV/GeoJSON, with status telling them apart."""
        return pd.concat([self.spots, self.dropped], ignore_index=True) if len(self.dropped) else self.spots

    def meta(self) -> dict:
        hs = self.hotspots.meta()
        counts = self.spots["status"].value_counts().to_dict() if len(self.spots) else {}
        return {
            "pack_id": self.pack_id, "previous_pack_id": self.previous_pack_id, "dataset": self.query.dataset,
            "area_layer": self.area_layer,
            "area_layer_info": self.layer.to_dict() if self.layer else None,
            "plan": {"from": self.plan_from.isoformat(),
                     "to": (self.plan_to_exclusive - timedelta(days=1)).isoformat(), "days": self.params.plan_days},
            "lookback": {"from": hs["from"], "to": hs["to"], "rule": hs["period_rule"]},
            "method": hs["method"],
            **({"forecast": hs["forecast"]} if "forecast" in hs else {}),
            "preset": hs["preset"], "offences": hs["offences"], "resolution": self.query.resolution,
            "dose": {"visit_minutes": self.params.visit_minutes, "visits_per_day": self.params.visits_per_day,
                     "source": "visit length: Koper (1995) Justice Quarterly 12(4) - disorder-free time after a "
                               "patrol rose with stops up to about 14-15 minutes; visits per day: planning "
                               "parameter (set to capacity)"},
            "capacity": self.capacity,
            "status_counts": {"new": int(counts.get("new", 0)), "continuing": int(counts.get("continuing", 0)),
                              "dropped": int(len(self.dropped))},
            "peak_windows": self.peak_note or "from record times",
            "weights_table": hs["weights_table"], "weights_exact": hs["weights_exact"],
            "time_precision": hs["time_precision"], "coverage": hs["coverage"], "warnings": self.warnings,
            "police_stations": {"included": self.params.include_police_stations,
                                "cells": self.police_station_cells, "rule": MAIN_LOCATION_RULE},
            "caveats": [*self.warnings, *self.caveats, *hs["not_applied"], *hs["caveats"]],
            "fields": TASKING_FIELDS,
        }


def spot_id(h3_hex: str) -> str:
    return SPOT_PREFIX + h3_hex


def cell_of_spot(sid: str) -> int:
    """'HS-8a19...' (or a bare hex) -> the H3 cell as an integer; ValueError if it is not a valid cell."""
    import h3

    text = sid[len(SPOT_PREFIX):] if sid.startswith(SPOT_PREFIX) else sid
    if not h3.is_valid_cell(text):
        raise ValueError(f"'{sid}' is not a spot id ('HS-' + an H3 cell index)")
    return int(h3.str_to_int(text))


def ensure_schema(store: Store) -> None:
    store.ensure_schema(PACK_SCHEMA)  # once per store handle


def assign_areas(store: Store, layer: str, cells: np.ndarray, res: int) -> pd.DataFrame:
    """cell -> feature_id of ``layer`` (cells of res < 10 go to the feature holding most of their res-10 cells)."""
    ac = layer_cells(store, layer)  # NotStored (404) when the layer has no cells
    a10 = ac["h3_10"].to_numpy(np.uint64)
    if res == AREA_RESOLUTION:
        key = cells
        table = pd.DataFrame({"key": a10, "feature_id": ac["feature_id"].to_numpy()}).drop_duplicates("key")
    elif res > AREA_RESOLUTION:
        key = parents(cells, AREA_RESOLUTION) if len(cells) else cells
        table = pd.DataFrame({"key": a10, "feature_id": ac["feature_id"].to_numpy()}).drop_duplicates("key")
    else:
        key = cells
        counts = (pd.DataFrame({"key": parents(a10, res), "feature_id": ac["feature_id"].to_numpy()})
                  .value_counts().reset_index(name="n").sort_values(["key", "n"], ascending=[True, False]))
        table = counts.drop_duplicates("key")[["key", "feature_id"]]
    out = pd.DataFrame({"cell": cells, "key": key}).merge(table, on="key", how="left")
    return out[["cell", "feature_id"]]


def build_pack(store: Store, q: HotspotQuery, weights: WeightsTable, params: TaskingParams,
               today: date | None = None) -> TaskingPack:
    """Compute a tasking pack (not saved; see :func:`save_pack`)."""
    ensure_schema(store)
    # tasking plans the next period: by default its spots are the forecast's (method=forecast), not last period's
    plan = resolve_plan(store, q.model_copy(update={"top": None}), weights, default_method="forecast")
    res = run_plan(store, plan)
    caveats: list[str] = []
    score = "forecast_harm" if plan.method == "forecast" else "harm"
    cells = res.cells[res.cells[score] > 0].copy()
    station = police_station_cells(cells)
    n_station = int(station.sum())
    if n_station and not params.include_police_stations:
        cells = cells[~station]
        caveats.append(f"{n_station} cells whose main location is a police station left out (crimes recorded at "
                       "the station, not in the street); include_police_stations=true keeps them")
    elif n_station:
        caveats.append(f"{n_station} cells whose main location is a police station are kept "
                       "(include_police_stations=true)")
    if score == "harm":
        cells["forecast_harm"] = np.nan
    # parallel float sums differ in the last bits between runs: round so equal-harm ties break by cell id
    cells["harm"] = cells["harm"].round(6)
    cells[score] = cells[score].round(6)
    layer = choose_layer(store, q.dataset, params.area_layer)  # NotStored (404) for an unknown layer
    areas = store.areas(layer.stored)
    if areas.empty:
        raise NotStored(f"no area layer '{params.area_layer}' is loaded; layers: "
                           f"{public_layers(store, q.dataset)}")
    if layer.approximate:
        caveats.append(f"patrol areas: {layer.rule}")
    assigned = assign_areas(store, layer.stored, cells["cell"].to_numpy(np.uint64), q.resolution)
    cells = cells.merge(assigned, on="cell", how="left")
    outside = int(cells["feature_id"].isna().sum())
    if outside:
        caveats.append(f"{outside} cells with harm lie outside every '{layer.name}' area and are not tasked")
    cells = cells[cells["feature_id"].notna()].sort_values([score, "count", "cell"], ascending=[False, False, True],
                                                            kind="mergesort")
    cells["area_rank"] = cells.groupby("feature_id").cumcount() + 1
    area_harm = cells.groupby("feature_id")["harm"].transform("sum")
    cells["harm_share"] = cells["harm"] / area_harm
    cand = cells[cells["area_rank"] <= params.spots_per_area]

    # capacity: round robin over areas (every area's #1 first, by harm), then cut at the minutes available
    plan_from = params.plan_from or today or date.today()
    warnings = stale_warning(res, plan_from)
    per_spot = params.visits_per_day * params.plan_days * params.visit_minutes
    max_spots = len(cand) if params.total_minutes is None else int(params.total_minutes // per_spot)
    if params.total_minutes is not None and max_spots < 1:  # a valid budget that doses no spot: an empty plan
        warnings = [*warnings, f"total_minutes {params.total_minutes:g} is less than one spot's dose ({per_spot:g} "
                    f"minutes = {params.visits_per_day:g} visits/day x {params.plan_days} days x "
                    f"{params.visit_minutes} min): no spot is planned"]
    order = cand.sort_values(["area_rank", score, "cell"], ascending=[True, False, True], kind="mergesort")
    chosen = order.head(max_spots)
    cut = len(cand) - len(chosen)
    chosen = chosen.sort_values([score, "count", "cell"], ascending=[False, False, True], kind="mergesort")
    chosen = chosen.reset_index(drop=True)
    chosen["rank"] = np.arange(1, len(chosen) + 1)
    chosen["spot_id"] = SPOT_PREFIX + chosen["h3"].astype(str)  # astype: an empty plan has no h3 strings
    names = areas.set_index("feature_id")["name"]
    chosen["area_id"] = chosen["feature_id"].astype(str)
    chosen["area_name"] = chosen["area_id"].map(names)
    chosen["resolution"] = q.resolution
    chosen["visits_per_day"] = params.visits_per_day
    chosen["visit_minutes"] = params.visit_minutes
    chosen["visits_planned"] = params.visits_per_day * params.plan_days
    chosen["minutes_planned"] = per_spot

    chosen["streets"] = chosen["top_locations"].map(lambda v: "; ".join(v) if isinstance(v, list) else "")
    peak_days, peak_hours, peak_note = _peaks(store, plan, res, chosen["cell"].to_numpy(np.uint64))
    chosen["peak_days"], chosen["peak_hours"] = peak_days, peak_hours

    prev_id, prev = _previous_pack(store, q.dataset, layer.name)
    prev_ids = set(prev["spot_id"]) if prev is not None else set()
    chosen["status"] = np.where(chosen["spot_id"].isin(prev_ids), "continuing", "new")
    dropped = _dropped(prev, chosen, cells)
    if prev_id is None:
        caveats.append("no previous saved pack for this dataset and layer: every spot is new")

    capacity = {"spots_per_area": params.spots_per_area, "total_minutes": params.total_minutes,
                "minutes_per_spot": per_spot, "max_spots_by_minutes": None if params.total_minutes is None else max_spots,
                "spots": int(len(chosen)), "minutes_planned": float(per_spot * len(chosen)),
                "minutes_per_day": float(per_spot * len(chosen) / params.plan_days),
                "candidates_cut_by_minutes": int(cut),
                "ranked_by": score,
                "rule": f"top spots_per_area per area by {score}; if total_minutes binds, round robin over areas "
                        f"(all areas' #1 by {score}, then all #2 ...)"}
    summary = chosen.groupby("area_id").agg(spots=("spot_id", "size"), harm=("harm", "sum")).reset_index()
    areas = areas.rename(columns={"feature_id": "area_id"}).merge(summary, on="area_id", how="left")
    areas[["spots", "harm"]] = areas[["spots", "harm"]].fillna(0)
    spots = chosen[["cell", *TASKING_FIELDS]].sort_values(["area_name", "area_rank"], kind="mergesort")
    return TaskingPack(q, params, plan_from, plan_from + timedelta(days=params.plan_days),
                       spots.reset_index(drop=True), dropped, areas, res, prev_id, capacity, peak_note,
                       caveats=caveats, layer=layer, warnings=warnings, police_station_cells=n_station)


def stale_warning(res: HotspotResult, plan_from: date) -> list[str]:
    """A warning when the look-back ends more than :data:`STALE_DAYS` days before the plan starts (data.police.uk
    publishes a month about two months late: a pack planned from it is about old patterns)."""
    last = (res.period_to_exclusive - timedelta(days=1)).date()
    gap = (plan_from - last).days
    if gap <= STALE_DAYS:
        return []
    cov = res.coverage or {}
    newest = f"; the dataset's newest record is from {cov['last_day']}" if cov.get("last_day") else ""
    return [f"STALE DATA: the look-back ends {last}, {gap} days before the plan starts ({plan_from}){newest}. "
            "Spots reflect that period, not the present: check for newer data before tasking"]


def _window(res: HotspotResult) -> tuple[datetime, datetime]:
    return res.period_from, res.period_to_exclusive


def _peaks(store: Store, plan: QueryPlan, res: HotspotResult, cells: np.ndarray) -> tuple[list, list, str | None]:
    """Peak days (top two by harm) and the PEAK_HOURS_WIDTH-hour window with most harm, where times exist."""
    precisions = set(res.time_precision)
    if not len(cells):
        return [], [], None
    if precisions <= {"month"}:
        return [MONTH_ONLY_PEAK] * len(cells), [MONTH_ONLY_PEAK] * len(cells), MONTH_ONLY_PEAK
    q = plan.query
    chosen = plan.keys[["offence_key", "days"]]
    start, end = _window(res)
    cur = store.cursor()
    try:
        cur.register("sel", pd.DataFrame({"cell": cells}))
        cur.register("kw", chosen)
        df = cur.execute(f"""
            SELECT o.h3_{q.resolution} AS cell, o.dow, o.hour, sum(kw.days) AS harm
            FROM offences o JOIN kw ON kw.offence_key = o.offence_key
            WHERE o.dataset = ? AND o.occurred_from >= ? AND o.occurred_to <= ? AND o.dow IS NOT NULL
              AND o.h3_{q.resolution} IN (SELECT cell FROM sel) GROUP BY 1, 2, 3""", [q.dataset, start, end]).df()
    finally:
        cur.close()
    pos = pd.Series(np.arange(len(cells)), index=pd.Index(cells, dtype="uint64"))
    day_m = np.zeros((len(cells), 7))
    hour_m = np.zeros((len(cells), 24))
    if len(df):
        i = pos.reindex(df["cell"].to_numpy(np.uint64)).to_numpy()
        np.add.at(day_m, (i, df["dow"].to_numpy(int)), df["harm"].to_numpy(float))
        timed = df["hour"].notna().to_numpy()
        np.add.at(hour_m, (i[timed], df.loc[timed, "hour"].to_numpy(int)), df.loc[timed, "harm"].to_numpy(float))
    top2 = np.argsort(-day_m, axis=1, kind="stable")[:, :2]
    days = [", ".join(DAYS[d] for d in sorted(row) if day_m[k, d] > 0) or "-" for k, row in enumerate(top2)]
    note = None
    if "minute" in precisions:
        window = sum(np.roll(hour_m, -s, axis=1) for s in range(PEAK_HOURS_WIDTH))  # window starting at each hour
        best = window.argmax(axis=1)
        hours = [f"{b:02d}:00-{(b + PEAK_HOURS_WIDTH) % 24:02d}:00" if window[k, b] > 0 else "-"
                 for k, b in enumerate(best)]
    else:
        hours = ["n/a: records carry days but no times"] * len(cells)
        note = "peak days from record dates; no times, so no peak hours"
    return days, hours, note


def _previous_pack(store: Store, dataset: str, layer: str) -> tuple[int | None, pd.DataFrame | None]:
    last = store.query_df("""SELECT pack_id FROM tasking_packs WHERE dataset = ? AND area_layer = ?
                             ORDER BY created_at DESC, pack_id DESC LIMIT 1""", [dataset, layer])
    if last.empty:
        return None, None
    pid = int(last["pack_id"].iloc[0])
    return pid, store.query_df("SELECT * FROM tasking_spots WHERE pack_id = ?", [pid])


def _dropped(prev: pd.DataFrame | None, chosen: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in TASKING_FIELDS]
    if prev is None or prev.empty:
        return pd.DataFrame(columns=["cell", *cols])
    gone = prev[~prev["spot_id"].isin(set(chosen["spot_id"]))].copy()
    now = cells.set_index("h3")[["harm", "count", "area_rank"]]
    gone["harm"] = gone["h3"].map(now["harm"]).fillna(0.0)
    gone["count"] = gone["h3"].map(now["count"]).fillna(0).astype(int)
    gone["area_rank"] = gone["h3"].map(now["area_rank"]).astype("Int64")
    gone["status"] = "dropped"
    gone["cell"] = [cell_of_spot(s) for s in gone["spot_id"]]
    gone["rank"] = pd.NA
    gone["visits_planned"] = 0.0
    gone["minutes_planned"] = 0.0
    for c in cols:
        if c not in gone.columns:
            gone[c] = None
    return gone[["cell", *cols]].reset_index(drop=True)


class StalePack(StoreConflict):
    """Another pack of the same dataset and layer was saved after this one was built: its new/continuing/dropped
    statuses compare with a pack that is no longer the latest. Build it again (the API does, then answers 409)."""


def save_pack(store: Store, pack: TaskingPack) -> int:
    """Store the pack (header + spots) in one transaction; it becomes the 'previous pack' of the next one. The
    check that the pack it was compared with (``previous_pack_id``) is still the latest saved one of its dataset
    and layer runs in the same transaction (Store.write), so two packs saved in parallel never both claim the
    same predecessor: the later one raises :class:`StalePack`."""
    ensure_schema(store)
    hs = pack.hotspots

    def write(cur) -> int:
        latest = cur.execute("""SELECT pack_id FROM tasking_packs WHERE dataset = ? AND area_layer = ?
                                ORDER BY created_at DESC, pack_id DESC LIMIT 1""",
                             [pack.query.dataset, pack.area_layer]).fetchall()  # the layer used, as stored
        if (latest[0][0] if latest else None) != pack.previous_pack_id:
            raise StalePack(f"tasking pack {latest[0][0]} of {pack.query.dataset}/{pack.area_layer} was saved "
                            f"while this one was built against pack {pack.previous_pack_id}; build it again")
        pid = int(cur.execute("SELECT nextval('tasking_pack_seq')").fetchall()[0][0])
        cur.execute("INSERT INTO tasking_packs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [pid, pack.query.dataset, pack.area_layer, utc_now(), pack.plan_from,
                     pack.plan_to_exclusive - timedelta(days=1), hs.period_from.date(),
                     (hs.period_to_exclusive - timedelta(days=1)).date(), pack.params.visits_per_day,
                     pack.params.visit_minutes,
                     json.dumps({"query": pack.query.model_dump(by_alias=True),
                                 "params": pack.params.model_dump(mode="json")})])
        s = pack.spots
        frame = pd.DataFrame({
            "pack_id": pid, "spot_id": s["spot_id"], "h3": s["h3"], "resolution": s["resolution"].astype(int),
            "area_id": s["area_id"], "area_name": s["area_name"], "area_rank": s["area_rank"].astype(int),
            "rank": s["rank"].astype(int), "harm": s["harm"].astype(float), "count": s["count"].astype(int),
            "lat": s["lat"], "lon": s["lon"], "streets": s["streets"], "visits_per_day": s["visits_per_day"],
            "visit_minutes": s["visit_minutes"], "visits_planned": s["visits_planned"],
            "minutes_planned": s["minutes_planned"]})
        cur.register("ts", frame)
        cur.execute("INSERT INTO tasking_spots SELECT * FROM ts")
        cur.unregister("ts")
        return pid

    pid = store.write(write, scope="tasking")
    pack.pack_id = pid
    return pid


def list_packs(store: Store, dataset: str | None = None) -> pd.DataFrame:
    ensure_schema(store)
    sql = """SELECT p.pack_id, p.dataset, p.area_layer, p.created_at, p.plan_from, p.plan_to, p.lookback_from,
                    p.lookback_to, p.visits_per_day, p.visit_minutes, count(s.spot_id) AS spots
             FROM tasking_packs p LEFT JOIN tasking_spots s USING (pack_id)"""
    params: list = []
    if dataset:
        sql += " WHERE p.dataset = ?"
        params.append(dataset)
    return store.query_df(sql + " GROUP BY ALL ORDER BY p.pack_id DESC", params)


def get_pack(store: Store, pack_id: int | None = None, dataset: str | None = None) -> tuple[dict, pd.DataFrame]:
    """A saved pack's header and spots (the latest, of ``dataset`` if given, when pack_id is None)."""
    packs = list_packs(store, dataset)
    if packs.empty:
        raise NotStored("unknown tasking pack: no packs saved yet (POST /tasking saves one)")
    if pack_id is None:
        pack_id = int(packs["pack_id"].iloc[0])
    head = packs[packs["pack_id"] == pack_id]
    if head.empty:
        raise NotStored(f"unknown tasking pack {pack_id}; saved packs: {packs['pack_id'].tolist()[:20]}")
    spots = store.query_df("SELECT * FROM tasking_spots WHERE pack_id = ? ORDER BY rank", [pack_id])
    h = head.iloc[0].to_dict()
    return {k: (v.date().isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in h.items()}, spots
