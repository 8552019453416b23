"""The resolved query plan: a :class:`HotspotQuery` turned, once, into everything an executor needs to run it.

A query names things (a dataset, a preset, an area, a weights table, maybe no period at all); an executor needs
values: the period's bounds, the offence keys it selects with their harm weights, the area's res-10 cells, the
size and name of the study domain. :func:`resolve_plan` looks all of these up in the store once (each look-up is
memoised per store state, so a warm plan costs no query at all) and returns a :class:`QueryPlan`. The embedded
DuckDB engine (``hotspots.ranking.harmspots``), the Dask executor (``hotspots.executors``), the statistics
(``hotspots.stats.for_query``) and tasking (``hotspots.patrol.tasking``) all take the plan; each then runs one
scan of the offences.

The plan splits its WHERE clause in two: the *scope* (dataset, period, bbox, area, days/hours) says which
records are looked at, the *selection* (offence keys and the preset's conditions) which of them count as the
query's offences. The observed ranking scans ``scope AND selection``; the forecast scans the scope once and
counts every record (its all-record part) beside the selected ones.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from geodata.areas import resolve_area
from geodata.cells import AREA_RESOLUTION, bbox_parts, bbox_sql
from geodata.datasets import coverage
from geodata.harm import WeightsTable
from geodata.store import DATASET_LAYER, DataCannotAnswer, Store
from hotspots.ranking.presets import PRESETS, Preset, resolve_offences, select_keys
from hotspots.ranking.query import HotspotQuery, default_period, period_end_exclusive, period_start

ROBBERY_GROUPS = ("robbery", "robbery_personal", "robbery_business")


@dataclass(frozen=True)
class DatasetInfo:
    """What the plan needs to know about a dataset: its record span, whether every record is month-only, and
    the name of its stored study area."""

    first: datetime | None
    last: datetime | None  # latest occurred_to (exclusive end of the data)
    month_only: bool
    area_name: str | None


@dataclass(frozen=True)
class QueryPlan:
    """A query resolved against one store state. Immutable; ``with_period`` gives the same plan for another
    period (the statistics and the backtest look at every record, /hotspots at the default window)."""

    query: HotspotQuery
    method: str  # 'observed' | 'forecast'
    table: WeightsTable
    start: datetime
    end: datetime  # exclusive
    rule: str
    preset: Preset | None
    keys: pd.DataFrame  # the selected offence keys: offence_key, category, offence_group, ho_code, days, exact
    dataset: DatasetInfo
    area_layer: str  # area_cells layer of the domain (DATASET_LAYER without an area)
    area_ids: tuple[str, ...]
    area_label: str  # '' without an area
    area_cells: np.ndarray | None  # res-10 cells of the query's area; None when the query has no area
    domain_cells: int  # cells at the query resolution in the study domain (area or dataset study area, bbox)
    domain_rule: str
    caveats: list[str] = field(default_factory=list)  # the query's own limits (check_precision), first in results
    coverage: dict | None = None  # the dataset's own first/last day and month (geodata.datasets.coverage)

    # ---------------------------------------------------------------------------------------------- views
    @property
    def resolution(self) -> int:
        return self.query.resolution

    @property
    def domain(self) -> tuple[str, list, str]:
        """(area_cells layer, feature ids, label): what :func:`hotspots.stats.for_query.study_domain` builds."""
        return self.area_layer, list(self.area_ids), self.area_label

    @property
    def key_weights(self) -> pd.DataFrame:
        """The selected keys as the scans register them (``kw``: offence_key, days, exact)."""
        return self.keys[["offence_key", "days", "exact"]]

    @property
    def robbery_keys(self) -> np.ndarray:
        """Selected robbery keys that need a weapon flag under the preset (empty when the preset has no such rule)."""
        if self.preset is None or not self.preset.robbery_needs_weapon:
            return np.empty(0, dtype=np.int64)
        return self.keys.loc[self.keys["offence_group"].isin(ROBBERY_GROUPS), "offence_key"].to_numpy(np.int64)

    @property
    def harm_unit(self) -> str:
        """What a harm figure counts: 'CCHI days' only when the weights table is a Cambridge Crime Harm Index
        table, else days under the named table (the open default is Sentencing Council starting points)."""
        return harm_unit(self.table)

    def with_period(self, start: datetime, end: datetime, rule: str) -> "QueryPlan":
        return replace(self, start=start, end=end, rule=rule)

    # ------------------------------------------------------------------------------------------------ SQL
    def scope_sql(self) -> tuple[str, list]:
        """WHERE fragment (alias ``o``) and parameters: the records looked at, of any offence type."""
        q = self.query
        where = ["o.dataset = ?", "o.occurred_from >= ?", "o.occurred_to <= ?"]
        params: list = [q.dataset, self.start, self.end]
        if q.days:
            where.append(f"o.dow IN ({','.join(str(int(d)) for d in q.days)})")
        if q.hours:
            where.append(f"o.hour IN ({','.join(str(int(h)) for h in q.hours)})")
        if q.bbox:
            cond, values = bbox_sql(q.bbox, "o.lon", "o.lat")
            where.append(cond)
            params += values
        if self.area_cells is not None:
            where.append("o.h3_10 IN (SELECT h3_10 FROM area_sel)")
        return " AND ".join(where), params

    def selection_sql(self, keys_inline: bool = False) -> str:
        """SQL condition (alias ``o``, ``kw`` LEFT or inner joined) true for the query's own offences.
        ``keys_inline``: the selected keys as an IN list on ``o.offence_key`` instead, for a scan without ``kw``."""
        where = [self.keys_sql() if keys_inline else "kw.offence_key IS NOT NULL"]
        p = self.preset
        if p is not None:
            if p.require_public_place:
                where.append("coalesce(o.public_place, TRUE)")
            if p.exclude_domestic:
                where.append("NOT coalesce(o.domestic, FALSE)")
            if p.victim_age_range:
                lo, hi = p.victim_age_range
                where.append(f"(o.victim_age IS NULL OR o.victim_age BETWEEN {int(lo)} AND {int(hi)})")
            rob = self.robbery_keys
            if len(rob):
                where.append(f"(o.offence_key NOT IN ({','.join(str(int(k)) for k in rob)}) OR coalesce(o.knife, FALSE))")
            if p.nte:
                where.append("(o.nte OR (o.nte IS NULL AND (o.hour IS NULL OR (o.dow IN (4, 5) AND o.hour >= 20) "
                             "OR (o.dow IN (5, 6) AND o.hour < 6))))")
        return " AND ".join(where)

    def keys_sql(self) -> str:
        """``o.offence_key IN (...)`` of the selected keys (FALSE when none is selected)."""
        keys = self.keys["offence_key"].tolist()
        return f"o.offence_key IN ({','.join(str(int(k)) for k in keys)})" if keys else "FALSE"

    @functools.cached_property
    def _area_table(self) -> pa.Table | None:
        """``area_sel`` as an Arrow table, made once per plan (DuckDB registers an Arrow table in a few
        microseconds; a pandas frame costs it a few milliseconds of type analysis per scan)."""
        return None if self.area_cells is None else pa.table({"h3_10": pa.array(self.area_cells, type=pa.uint64())})

    @functools.cached_property
    def _kw_values(self) -> tuple[str, tuple[float, ...]]:
        """The ``kw`` CTE text and its bound weights, made once per plan (a plan runs two or three scans)."""
        keys = self.keys  # its columns read directly (a sub-frame costs pandas more than the rest of this)
        rows = [f"({int(k)}::INTEGER, ?::DOUBLE, {'true' if e else 'false'})"
                for k, e in zip(keys["offence_key"].tolist(), keys["exact"].tolist())]
        values = (f"(VALUES {', '.join(rows)})" if rows else
                  "(SELECT NULL::INTEGER, NULL::DOUBLE, NULL::BOOLEAN WHERE false)")
        return f"kw(offence_key, days, exact) AS {values}", tuple(float(d) for d in keys["days"].tolist())

    def with_kw(self, sql: str, params: list) -> tuple[str, list]:
        """``sql`` (a SELECT or a WITH query) with ``kw`` defined in it as a VALUES list of the selected keys, and
        its parameters (weights as bound DOUBLEs, so exact): no table registration, which costs DuckDB a catalog
        change per scan. Register ``area_sel`` with :meth:`register_area` beside it."""
        cte, weights = self._kw_values
        body = sql.lstrip()
        text = f"WITH {cte}, {body[5:]}" if body[:5].upper() == "WITH " else f"WITH {cte} {body}"
        return text, [*weights, *params]

    def register_area(self, cur) -> None:
        """Register ``area_sel`` (the area's res-10 cells) on a DuckDB cursor when the query has an area."""
        if self._area_table is not None:
            cur.register("area_sel", self._area_table)

    def base_sql(self) -> tuple[str, list]:
        """``FROM ... WHERE scope AND selection`` for scans of the selected offences only (inner join)."""
        scope, params = self.scope_sql()
        return (f"FROM offences o JOIN kw ON kw.offence_key = o.offence_key WHERE {scope} AND "
                f"{self.selection_sql()}", params)


# ------------------------------------------------------------------------------------------------ resolving


def harm_unit(table: WeightsTable) -> str:
    """'CCHI days' for a Cambridge Crime Harm Index table (by name or source), else "days (weights table 'x')"."""
    text = f"{table.name} {table.source}".lower()
    if "cchi" in text or "cambridge crime harm index" in text:
        return "CCHI days"
    return f"days (weights table '{table.name}')"


def offence_selection(q: HotspotQuery) -> tuple[Preset | None, frozenset[str], frozenset[str]]:
    """(preset or None, offence groups, police.uk categories) the query selects."""
    if q.offences:
        groups, cats = resolve_offences(q.offences)
        return None, groups, cats
    preset = PRESETS[q.preset or "all-crime"]
    return preset, preset.groups, preset.categories_if_category_only


def dataset_info(store: Store, dataset: str) -> DatasetInfo:
    """The dataset's span, month-only flag and study-area name in one query (memoised per store state)."""
    store.require_dataset(dataset)

    def fetch() -> DatasetInfo:
        info = store.query_df(
            """SELECT min(occurred_from) AS first, max(occurred_to) AS last,
                      bool_and(precision = 'month') AS month_only,
                      (SELECT name FROM areas WHERE layer = ? AND feature_id = ?) AS area_name
               FROM offences WHERE dataset = ?""", [DATASET_LAYER, dataset, dataset]).iloc[0]
        ts = lambda v: None if v is None or pd.isna(v) else pd.Timestamp(v).to_pydatetime()  # noqa: E731
        name = info["area_name"]
        return DatasetInfo(ts(info["first"]), ts(info["last"]), bool(info["month_only"]) if ts(info["last"]) else False,
                           None if name is None or pd.isna(name) else str(name))

    return store.cached(("dataset_info", dataset), fetch)


def study_area_name(store: Store, dataset: str) -> str | None:
    """The name of the dataset's stored study area (memoised per store state)."""
    return store.cached(("dataset_area_name", dataset), lambda: store.scalar(
        "SELECT name FROM areas WHERE layer = ? AND feature_id = ?", [DATASET_LAYER, dataset]))


def resolve_period(q: HotspotQuery, last, month_only: bool) -> tuple[datetime, datetime, str]:
    """The observed ranking's period from the dataset's last record end and whether it is month-only."""
    if last is None or pd.isna(last):
        raise DataCannotAnswer(f"dataset '{q.dataset}' has no offences")
    d_start, d_end, rule = default_period(pd.Timestamp(last).to_pydatetime(), "month" if month_only else "day")
    start = period_start(q.date_from) if q.date_from else (d_start if not q.date_to else None)
    end = period_end_exclusive(q.date_to) if q.date_to else d_end
    if start is None:  # only 'to' given: the same length of window as the default, ending there
        start = end - (d_end - d_start)
    if q.date_from or q.date_to:
        rule = "as requested"
    return start, end, rule


def forecast_period(q: HotspotQuery, info: DatasetInfo) -> tuple[datetime, datetime, str]:
    """The forecast's look-back: from ``from`` (default: the first record) to the end of ``to`` (default: the
    end of the observed ranking's default window, i.e. the last full month or the last 14 days of data)."""
    if info.last is None:
        raise DataCannotAnswer(f"dataset '{q.dataset}' has no offences")
    _, d_end, default_rule = default_period(info.last, "month" if info.month_only else "day")
    end = period_end_exclusive(q.date_to) if q.date_to else d_end
    start = period_start(q.date_from) if q.date_from else min(info.first, end)
    rule = ("look-back " + ("from 'from'" if q.date_from else "over all history")
            + (" to 'to'" if q.date_to else f" to the end of the {default_rule}"))
    return start, end, rule


def _h3_parent_sql(col: str, res: int) -> str:
    """H3 parent in SQL bit arithmetic: set the resolution field (bits 52-55) and blank finer digits to 7."""
    return f"(({col} & ~(15::UBIGINT << 52)) | ({res}::UBIGINT << 52) | ((1::UBIGINT << {3 * (15 - res)}) - 1))"


def count_domain_cells(store: Store, layer: str, ids: list | tuple, q: HotspotQuery) -> int:
    """Number of cells at the query resolution in the area (counted in the store, no rows fetched)."""
    placeholders = ",".join("?" * len(ids))
    res = min(q.resolution, AREA_RESOLUTION)
    expr = "h3_10" if res == AREA_RESOLUTION else _h3_parent_sql("h3_10", res)
    sql = f"SELECT count(DISTINCT {expr}) FROM area_cells WHERE layer = ? AND feature_id IN ({placeholders})"
    params: list = [layer, *ids]
    if q.bbox:
        cond, values = bbox_sql(q.bbox)
        sql += f" AND {cond}"
        params += values
    n = int(store.cached(("domain_cells", sql, tuple(params)), lambda: store.scalar(sql, params)) or 0)
    return n * 7 ** (q.resolution - AREA_RESOLUTION) if q.resolution > AREA_RESOLUTION else n


def _area(store: Store, q: HotspotQuery) -> tuple[str, tuple[str, ...], str, np.ndarray | None]:
    if not q.area:
        return DATASET_LAYER, (q.dataset,), "", None

    def fetch():
        layer, ids, label = resolve_area(store, q.area, q.dataset)  # knows the dataset's automatic layers
        ph = ",".join("?" * len(ids))
        cells = store.query_df(f"SELECT DISTINCT h3_10 FROM area_cells WHERE layer = ? AND feature_id IN ({ph})",
                               [layer, *ids])["h3_10"].to_numpy(np.uint64)
        return layer, tuple(ids), f"area {label}", np.sort(cells)

    return store.cached(("plan_area", q.area, q.dataset), fetch)


def resolve_plan(store: Store, q: HotspotQuery, default_weights: WeightsTable,
                 period: tuple[datetime, datetime, str] | None = None, default_method: str = "observed",
                 info: DatasetInfo | None = None) -> QueryPlan:
    """Resolve ``q`` once: dataset span, weights table, period, offence keys with weights, area cells and the
    study domain. ``period`` overrides the query's own window; ``default_method`` fills a null ``q.method``;
    ``info`` replaces the store's record span (the Dask executor measures it on the Parquet partitions)."""
    q = q.with_method(default_method)
    if info is None:
        info = dataset_info(store, q.dataset)
    else:
        store.require_dataset(q.dataset)
    table = store.weights_table(q.weights) if q.weights else default_weights
    precision_notes = check_precision(q, info) if period is None else []  # filters vs the data's precision
    if period is not None:
        start, end, rule = period
    elif q.method == "forecast":
        start, end, rule = forecast_period(q, info)
    else:
        start, end, rule = resolve_period(q, info.last, info.month_only)
    preset, groups, cats = offence_selection(q)
    chosen = chosen_keys(store, table, groups, cats, q.include_asb)
    layer, ids, label, cells = _area(store, q)
    domain_cells = count_domain_cells(store, layer, ids, q)
    domain_rule = label or info.area_name or "cells with offences"
    if q.bbox:
        domain_rule += " within the bbox" + ("" if bbox_parts(q.bbox) else " (upside down, minLat > maxLat: it "
                                             "holds no point, so nothing is selected)")
    return QueryPlan(query=q, method=q.method or default_method, table=table, start=start, end=end, rule=rule,
                     preset=preset, keys=chosen, dataset=info, area_layer=layer, area_ids=ids, area_label=label,
                     area_cells=cells, domain_cells=domain_cells, domain_rule=domain_rule,
                     caveats=precision_notes, coverage=coverage(store, q.dataset))


def chosen_keys(store: Store, table: WeightsTable, groups: frozenset[str], cats: frozenset[str],
                include_asb: bool) -> pd.DataFrame:
    """The offence keys a selection picks, with their weights under ``table`` (memoised per store state, table
    object and selection; a copy, so a caller may change it)."""
    def pick() -> tuple[WeightsTable, pd.DataFrame]:
        keys = store.key_weights(table)
        return table, keys[select_keys(keys, groups, cats, include_asb)].reset_index(drop=True)

    key = ("chosen_keys", id(table), tuple(sorted(groups)), tuple(sorted(cats)), include_asb)
    return store.cached(key, pick)[1].copy()  # the memo holds the table, so its id is not reused while cached


def check_precision(q: HotspotQuery, info: DatasetInfo) -> list[str]:
    """Filters finer than the data. On a month-only dataset (data.police.uk: no day, no time) a day-of-week or
    hour filter would silently match nothing: refused with the reason. A period that starts or ends inside a
    month leaves that month's records out (a record counts only if its whole month lies in the period): allowed
    (OGC datetime instants ask for it) and said, in the returned caveats."""
    if not info.month_only:
        return []
    span = ""
    if info.first is not None and info.last is not None:
        span = (f" (records cover {info.first:%Y-%m} to "
                f"{(info.last - timedelta(microseconds=1)):%Y-%m})")
    what = f"dataset '{q.dataset}' is month-only: its records carry a month, no day and no time{span}"
    if q.days or q.hours:
        raise DataCannotAnswer(f"days/hours: {what}, so a day-of-week or hour filter cannot be applied; leave them out")
    notes = []
    for name, text in (("from", q.date_from), ("to", q.date_to)):
        if text is None or len(text) == 7:
            continue
        day = period_start(text)
        inside = day.day != 1 if name == "from" else (day + timedelta(days=1)).day != 1
        if inside:
            notes.append(f"{name}={text} falls inside a month: {what}, so {day:%Y-%m} is left out (a record counts "
                         f"only when its whole month lies in the period); give whole months, e.g. {name}={day:%Y-%m}")
    return notes
