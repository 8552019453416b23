"""Harm spots: filter offences, weigh them by harm, aggregate to H3 cells, rank, and measure concentration.

A query is resolved once into a :class:`~hotspots.ranking.plan.QueryPlan`; running it is one scan in the store
(DuckDB: a filter plus a group-by) and a little numpy over the few thousand cells that carry harm. Two rankings:

* ``method=observed`` - cells by harm (or count) in the period, as recorded;
* ``method=forecast`` - cells by expected harm in the period after the look-back (``hotspots.ranking.forecast``):
  the same scan over the scope, grouped by day as well, counting every record beside the selected offences.

Nothing here knows about HTTP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from geodata.cell_locations import location_index
from geodata.cells import cell_area_km2, cell_centres, to_hex_array
from geodata.datasets import period_note
from geodata.harm import WeightsTable
from geodata.store import Store
from hotspots.ranking.context import context_columns, selected_counts
from hotspots.ranking.forecast import (DEFAULT_PARAMS, FORECAST_COLUMNS, FORECAST_FIELDS, exposure_months,
                                       forecast_cells, horizon, record_age_months, skill)
from hotspots.ranking.plan import QueryPlan, resolve_plan
from hotspots.ranking.presets import Preset
from hotspots.ranking.query import HotspotQuery

CONCENTRATION_SHARES = (0.01, 0.02, 0.05)
TOP_OFFENCES = 3


@dataclass
class HotspotResult:
    query: HotspotQuery
    period_from: datetime
    period_to_exclusive: datetime
    period_rule: str
    cells: pd.DataFrame  # ranked, all cells with any selected offence (top-N applied in `top_cells`)
    total_harm: float
    total_count: int
    domain_cells: int
    domain_rule: str
    concentration: dict
    weights_table: str
    weights_exact: str  # 'exact', 'approximate' or 'mixed'
    exact_share: float
    time_precision: list[str]
    not_applied: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    preset: dict | None = None
    method: str = "observed"
    harm_unit: str = "days"  # 'CCHI days' with a CCHI table, else "days (weights table '<name>')"
    forecast: dict | None = None  # the forecast block (method=forecast): model, parameters, skill, caveats
    coverage: dict | None = None  # the dataset's own first/last day and month (geodata.datasets.coverage)
    period_note: str | None = None  # set when the period lies partly or wholly outside the coverage
    no_records: str | None = None  # set when no record matched: why the result is empty

    @property
    def top_cells(self) -> pd.DataFrame:
        return self.cells if self.query.top is None else self.cells.head(self.query.top)

    def meta(self) -> dict:
        q = self.query
        return {
            "dataset": q.dataset,
            "from": self.period_from.date().isoformat(),
            "to": (self.period_to_exclusive - pd.Timedelta(days=1)).date().isoformat(),
            "period_rule": self.period_rule,
            "preset": q.preset if not q.offences else None,
            "offences": q.offences,
            "resolution": q.resolution,
            "method": self.method,
            "rank_by": "forecast_harm" if self.method == "forecast" else q.rank_by,
            "top": q.top,
            "weights_table": self.weights_table,
            "harm_unit": self.harm_unit,
            "weights_exact": self.weights_exact,
            "exact_share_of_harm": round(self.exact_share, 4),
            "time_precision": self.time_precision,
            "not_applied": self.not_applied,
            "caveats": self.caveats,
            "total_harm": round(self.total_harm, 3),
            "total_count": self.total_count,
            "cells_with_offences": int(len(self.cells)),
            "cells_in_area": self.domain_cells,
            "area_rule": self.domain_rule,
            "concentration": self.concentration,
            **({"forecast": self.forecast} if self.forecast is not None else {}),
            "coverage": self.coverage,
            "period_note": self.period_note,
            "no_records": self.no_records,
        }


def offence_rows(store: Store, q: HotspotQuery, default_weights: WeightsTable,
                 period: tuple[datetime, datetime, str] | None = None) -> tuple[pd.DataFrame, QueryPlan]:
    """One row per selected offence: cell (uint64, at ``q.resolution``), h3_10, occurred_from, precision,
    harm (days under the weights table), x, y (BNG metres) - the input of the space-time statistics engines.
    ``period`` overrides the query's own window. Returns the rows and the plan they were selected by."""
    plan = resolve_plan(store, q, default_weights, period)
    return plan_rows(store, plan), plan


def plan_rows(store: Store, plan: QueryPlan, all_records: bool = False) -> pd.DataFrame:
    """The rows of :func:`offence_rows` for a resolved plan (one scan). ``all_records``: every record in the
    plan's scope (any offence type, ASB included) with a boolean ``selected`` column and harm 0 where not
    selected - the forecast's all-record part."""
    base, params = plan.base_sql()
    cols = f"o.h3_{plan.resolution} AS cell, o.h3_10, o.occurred_from, o.precision"
    if all_records:
        scope, params = plan.scope_sql()
        sel = plan.selection_sql()
        sql = (f"SELECT {cols}, CASE WHEN {sel} THEN kw.days ELSE 0.0 END AS harm, o.x, o.y, ({sel}) AS selected "
               f"FROM offences o LEFT JOIN kw ON kw.offence_key = o.offence_key WHERE {scope}")
    else:
        sql = f"SELECT {cols}, kw.days AS harm, o.x, o.y {base}"
    sql, params = plan.with_kw(sql, params)
    cur = store.cursor()
    try:
        plan.register_area(cur)
        rows = cur.execute(sql, params).df()
    finally:
        cur.close()
    rows["cell"] = rows["cell"].to_numpy(dtype=np.uint64)
    rows["h3_10"] = rows["h3_10"].to_numpy(dtype=np.uint64)
    if all_records:
        rows["selected"] = rows["selected"].fillna(False).astype(bool)
    return rows


def harm_spots(store: Store, q: HotspotQuery, default_weights: WeightsTable,
               default_method: str = "observed") -> HotspotResult:
    """Run a harm-spot query against the store: resolve its plan, then one scan (:func:`run_plan`).
    ``default_method`` is the door's default when ``q.method`` is null (tasking passes 'forecast')."""
    return run_plan(store, resolve_plan(store, q, default_weights, default_method=default_method))


def run_plan(store: Store, plan: QueryPlan) -> HotspotResult:
    """The embedded executor: one DuckDB scan of the plan (grouped by cell, precision, offence key and, for the
    observed ranking, location text), then numpy over the cells."""
    q = plan.query
    res = q.resolution
    present = _present_counts(plan.preset)
    forecast = plan.method == "forecast"
    cur = store.cursor()
    try:
        plan.register_area(cur)
        # one scan: per cell, precision and offence key: count (harm), and how many records carry each field a
        # preset condition needs (only the preset's own conditions: the others are never reported). The
        # forecast scans the scope (every record type) once, by day, counting the selection beside all records.
        if forecast:
            scope, params = plan.scope_sql()
            sel = plan.selection_sql()
            sql = f"""SELECT o.h3_{res} AS cell, o.precision, o.offence_key, date_trunc('day', o.occurred_from) AS t,
                             coalesce(sum(kw.days) FILTER (WHERE {sel}), 0) AS harm,
                             count(*) FILTER (WHERE {sel}) AS count, count(*) AS records
                             {"".join(f", count({e}) FILTER (WHERE {sel}) AS {c}" for c, e in present)}
                      FROM offences o LEFT JOIN kw ON kw.offence_key = o.offence_key WHERE {scope}
                      GROUP BY 1, 2, 3, 4"""
            sql, params = plan.with_kw(sql, params)
        else:  # grouped by the raw location text too: the returned cells' street context needs no second read.
            # The keys filter the scan as an IN list (no join): a group holds one key, so its harm is its count
            # times the key's weight, taken below (cheaper for DuckDB than joining and summing the weights)
            # A month-only dataset (every police.uk file) has one precision: a constant, not a grouped string
            # column (1-2 ms of a top-50 query at 1 M)
            scope, params = plan.scope_sql()
            month_only = plan.dataset.month_only
            precision, keys = ("'month' AS precision", "1, 3, 4") if month_only else ("o.precision", "1, 2, 3, 4")
            sql = f"""SELECT o.h3_{res} AS cell, {precision}, o.offence_key, o.location,
                             count(*) AS count{"".join(f", count({e}) AS {c}" for c, e in present)}
                      FROM offences o WHERE {scope} AND {plan.selection_sql(keys_inline=True)}
                      GROUP BY {keys}"""
        rel = cur.sql(sql, params=params)
        table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()
    finally:
        cur.close()
    per, precisions, locations = scan_columns(table)
    fc = None
    if forecast:
        fc = forecast_part(plan, per["cell"], per["t"], per["harm"], per["records"])
        keep = per["count"] > 0
        per = {k: v[keep] for k, v in per.items() if k not in ("t", "records")}  # the forecast has no locations
    for c in FLAG_COLUMNS:
        per[c] = per["count"] - per.pop(c) if c in per else np.zeros(len(per["count"]), dtype=np.int64)
    # a group holds one offence key: its harm is its count times the key's weight (the observed scan sums no
    # weights), and its exact harm all of its harm or none of it
    chosen = plan.keys
    days, exact = key_weights(chosen["offence_key"].to_numpy(np.int64), chosen["days"].to_numpy(float),
                              chosen["exact"].to_numpy(bool), per["offence_key"])
    if not forecast:
        per["harm"] = per["count"] * days
    per["exact_harm"] = np.where(exact, per["harm"], 0.0)
    cell, harm, count = per["cell"], per["harm"], per["count"]
    agg = _per_cell(cell.astype(np.uint64), harm.astype(float), count, per["exact_harm"])
    agg = rank_forecast(agg, fc[0]) if fc is not None else rank_cells(agg, q.rank_by)
    flags = flags_by_precision(per, precisions)
    top_n = len(agg) if q.top is None else min(q.top, len(agg))
    in_top = np.isin(cell, agg["cell"].to_numpy()[:top_n])
    labels = _labels(chosen, cell[in_top], per["offence_key"][in_top], harm[in_top], count[in_top])
    # the returned cells' location texts: from the observed scan's groups; the forecast's scan has none, so
    # its context is a second (small) read of the period. (A thread beside the assembly was slower on 2 cores:
    # DuckDB's own threads and pandas contend for them.)
    selected = None
    if locations is not None:  # only the returned cells' texts become Python strings
        texts = locations.take(pa.array(np.flatnonzero(in_top), type=pa.int64())).to_pylist()
        selected = selected_counts(cell[in_top], texts, count[in_top])
    ids = agg["cell"].to_numpy(np.uint64)
    context = context_columns(store, plan, ids, top_n, selected)
    centres = location_index(store, q.dataset, res).centres(ids) if len(ids) else None  # kept per ingest
    return assemble_result(plan, agg, flags, labels, fc[1] if fc is not None else None, centres, context)


def scan_columns(table: pa.Table) -> tuple[dict[str, np.ndarray], list, pa.Array | None]:
    """The scan's Arrow result as (numpy columns, precision values, location texts): ``precision_code`` indexes
    the few precision values (-1 for none); the location texts stay Arrow (None when the scan has none); NULL
    numbers read as 0. Arrow, not fetchnumpy: no Python string per group (at 60 M, 165,000 groups: 97 -> 61 ms)."""
    per: dict[str, np.ndarray] = {}
    precisions: list = []
    locations = None
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if name == "precision":
            enc = pc.dictionary_encode(col)
            per["precision_code"] = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False),
                                               dtype=np.int64)
            precisions = enc.dictionary.to_pylist()
        elif name == "location":
            locations = col
        else:
            if col.null_count:
                col = pc.fill_null(col, pa.scalar(0, type=col.type)) if not pa.types.is_timestamp(col.type) else col
            per[name] = col.to_numpy(zero_copy_only=False)
    return per, precisions, locations


def key_weights(selected: np.ndarray, days: np.ndarray, exact: np.ndarray,
                keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(days, exact) of each of ``keys``, all among the ``selected`` keys (whose weights and exact flags are
    ``days`` and ``exact``, in the same order): one sort of the few selected keys, then a binary search."""
    order = np.argsort(selected)
    pos = order[np.searchsorted(selected[order], np.asarray(keys, dtype=selected.dtype))]
    return days[pos], exact[pos]


def _per_cell(cell: np.ndarray, harm: np.ndarray, count: np.ndarray, exact_harm: np.ndarray) -> pd.DataFrame:
    """Harm, count and exact harm summed per cell over the scan's groups (cell, precision, key[, text]) (numpy: one
    sort of the few thousand groups; rows in cell order, which the ranking then replaces)."""
    cells, inv = np.unique(cell, return_inverse=True)
    n = len(cells)
    return pd.DataFrame({"cell": cells,
                         "harm": np.bincount(inv, weights=harm, minlength=n).astype(float),
                         "count": np.bincount(inv, weights=count, minlength=n).astype(np.int64),
                         "exact_harm": np.bincount(inv, weights=exact_harm, minlength=n).astype(float)})


def _labels(chosen: pd.DataFrame, cells: np.ndarray, keys: np.ndarray, harm: np.ndarray,
            count: np.ndarray) -> pd.DataFrame:
    """Harm and count per (cell, offence label) over the top cells' groups (a few hundred rows: plain Python);
    the label is the offence group, else the police.uk category; keys with neither are left out."""
    label_of = {int(k): (g if isinstance(g, str) else c if isinstance(c, str) else None)
                for k, g, c in zip(chosen["offence_key"].tolist(), chosen["offence_group"].tolist(),
                                   chosen["category"].tolist())}
    sums: dict[tuple[int, str], list] = {}
    for c, k, h, n in zip(cells.tolist(), keys.tolist(), harm.tolist(), count.tolist()):
        label = label_of.get(k)
        if label is None:
            continue
        acc = sums.get((c, label))
        if acc is None:
            sums[(c, label)] = [h, n]
        else:
            acc[0] += h
            acc[1] += n
    order = sorted(sums)  # by cell, then label (what a sorted groupby gave)
    return pd.DataFrame({"cell": np.array([c for c, _ in order], dtype=np.uint64),
                         "offence": pd.Series([o for _, o in order], dtype=object),
                         "harm": np.array([sums[k][0] for k in order], dtype=float),
                         "count": np.array([sums[k][1] for k in order], dtype=np.int64)})


def forecast_part(plan: QueryPlan, cells: np.ndarray, times: np.ndarray, harm: np.ndarray,
                  records: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """The forecast columns per cell (every cell with any record in the scope) and the response's ``forecast``
    block, from rows grouped by cell and time; shared by every executor."""
    params = DEFAULT_PARAMS
    month_only = plan.dataset.month_only
    exposure = exposure_months(plan.start, plan.end, month_only, params.half_life_months)
    h_from, h_to, h_months = horizon(plan.end, month_only)
    frame, per_record = forecast_cells(cells, record_age_months(times, plan.end), harm, records, exposure,
                                       h_months, params)
    block = {
        "method": "forecast",
        "forecast_period": {"from": h_from.date().isoformat(),
                            "to": (pd.Timestamp(h_to) - pd.Timedelta(days=1)).date().isoformat()},
        "look_back": {"from": pd.Timestamp(plan.start).date().isoformat(),
                      "to": (pd.Timestamp(plan.end) - pd.Timedelta(days=1)).date().isoformat(), "rule": plan.rule},
        "model": FORECAST_MODEL,
        "parameters": {**params.describe(), "exposure_months": round(exposure, 4),
                       "horizon_months": round(h_months, 4), "harm_per_record": round(per_record, 4)},
        "fields": FORECAST_FIELDS,
        "backtest_skill": skill(plan.resolution),
        "caveats": FORECAST_CAVEATS,
    }
    return frame, block


FORECAST_MODEL = ("expected harm next period = (1 - records_weight) x the cell's own harm rate + records_weight x "
                  "its rate of ALL records (every crime type and ASB) x the study area's harm per record; both rates "
                  "are exponentially decayed means over the look-back (weight 0.5 ** (age / half_life_months)), "
                  "scaled to the forecast period. Only records up to the end of the look-back are used.")
FORECAST_CAVEATS = [
    "a forecast of where harm will be recorded, from where it was recorded: it assumes next period resembles the "
    "decayed past (no seasonality, events or operations are modelled)",
    "police.uk locations are snapped to anonymous map points: the forecast ranks those points' cells",
    "cells with records of any type but no selected offence get a forecast from their record volume alone",
]


def rank_forecast(agg: pd.DataFrame, fc: pd.DataFrame) -> pd.DataFrame:
    """Observed per-cell sums joined to the forecast (every cell with any record), ordered by forecast harm
    (6 decimals, as rank_cells), then harm, count and cell id."""
    out = fc.merge(agg, on="cell", how="left")
    out[["harm", "exact_harm"]] = out[["harm", "exact_harm"]].fillna(0.0)
    out["count"] = out["count"].fillna(0).astype(np.int64)
    out = out[["cell", "harm", "count", "exact_harm", *FORECAST_COLUMNS]]
    keys = (-np.round(out["count"].to_numpy(float), 0), -np.round(out["harm"].to_numpy(float), 6),
            -np.round(out["forecast_harm"].to_numpy(float), 6))
    order = np.lexsort((out["cell"].to_numpy(), *keys))
    return out.take(order).reset_index(drop=True)


def rank_cells(agg: pd.DataFrame, rank_by: str) -> pd.DataFrame:
    """Order cells highest first; ties by the other measure, then cell id. Harm is compared at 6 decimals
    (what the renderers publish), so executors that sum in a different order rank identically."""
    harm = np.round(agg["harm"].to_numpy(dtype=float), 6)
    count = agg["count"].to_numpy()
    keys = (-count, -harm) if rank_by == "harm" else (-harm, -count)  # np.lexsort: last key is the primary one
    order = np.lexsort((agg["cell"].to_numpy(), *keys))
    return agg.take(order).reset_index(drop=True)


# per flag column: the preset condition that reports it and the SQL value that is NULL when the field is missing
_FLAG_FIELDS = (("no_public", "require_public_place", "o.public_place"), ("no_domestic", "exclude_domestic", "o.domestic"),
                ("no_age", "victim_age_range", "o.victim_age"), ("no_knife", "robbery_needs_weapon", "o.knife"),
                ("no_nte", "nte", "coalesce(o.nte::SMALLINT, o.hour)"))
FLAG_COLUMNS = tuple(col for col, _, _ in _FLAG_FIELDS)


def _present_counts(preset: Preset | None) -> list[tuple[str, str]]:
    """(flag column, SQL expression) for the fields ``preset``'s active conditions need."""
    if preset is None:
        return []
    return [(col, expr) for col, attr, expr in _FLAG_FIELDS if getattr(preset, attr)]


def flags_by_precision(per: dict[str, np.ndarray], precisions: list) -> pd.DataFrame:
    """Records (n) and records lacking each preset field, per time precision (rows without one left out);
    ``per["precision_code"]`` indexes ``precisions`` (-1: none)."""
    codes = per["precision_code"]
    keep = codes >= 0
    order = sorted((i for i, v in enumerate(precisions) if isinstance(v, str)), key=lambda i: precisions[i])
    out: dict = {"precision": np.asarray([precisions[i] for i in order], dtype=object)}
    for name, col in (("n", "count"), *((c, c) for c in FLAG_COLUMNS)):
        sums = np.bincount(codes[keep], weights=np.asarray(per[col], dtype=float)[keep], minlength=len(precisions))
        out[name] = np.rint(sums[order]).astype(np.int64)
    return pd.DataFrame(out)


def assemble_result(plan: QueryPlan, agg: pd.DataFrame, flags: pd.DataFrame, labels: pd.DataFrame,
                    forecast: dict | None = None,
                    centres: tuple[np.ndarray, np.ndarray] | None = None,
                    extra_columns: dict[str, np.ndarray] | None = None) -> HotspotResult:
    """Turn per-cell aggregates (ranked by :func:`rank_cells` or :func:`rank_forecast`) into a
    :class:`HotspotResult`; shared by every executor (the embedded DuckDB one above and
    hotspots.executors.dask_backend), so the statistics exist once. Reads nothing from the store.
    ``centres``: (lat, lon) of ``agg``'s cells when the caller has them (looked up), else computed here.
    ``extra_columns``: more per-cell columns in ``agg``'s order (the street context), added last."""
    q, table, preset, chosen = plan.query, plan.table, plan.preset, plan.keys
    start, end, rule = plan.start, plan.end, plan.rule
    top_n = len(agg) if q.top is None else min(q.top, len(agg))
    not_applied: list[str] = []
    caveats: list[str] = []
    total_harm = float(agg["harm"].sum()) if len(agg) else 0.0
    total_count = int(agg["count"].sum()) if len(agg) else 0
    exact_share = float(agg["exact_harm"].sum() / total_harm) if total_harm > 0 else 0.0
    n_cells = len(agg)
    cell_ids = agg["cell"].to_numpy(dtype=np.uint64)
    area = np.full(n_cells, np.nan)  # exact cell areas for the returned (top-N) cells only: it is the
    area[:top_n] = cell_area_km2(cell_ids[:top_n])  # costliest step, and only returned cells are shown
    lat, lon = centres if centres is not None else cell_centres(cell_ids)
    # built in one go from numpy arrays (column inserts and index alignment cost more than the maths)
    columns: dict = {"rank": np.arange(1, n_cells + 1)}
    columns.update({c: agg[c].to_numpy() for c in agg.columns if c != "exact_harm"})
    harm_values, count_values = agg["harm"].to_numpy(float), agg["count"].to_numpy()
    columns["harm_share"] = harm_values / total_harm if total_harm > 0 else np.zeros(n_cells)
    columns["count_share"] = count_values / total_count if total_count else np.zeros(n_cells)
    columns.update(area_km2=area, harm_per_km2=harm_values / area, lat=lat, lon=lon, h3=to_hex_array(cell_ids))
    # lists in an object array (np.fromiter does not look inside them; pandas would probe a list of lists)
    columns["top_offences"] = np.fromiter(_top_offences(labels, cell_ids, top_n), dtype=object, count=n_cells)
    columns.update(extra_columns or {})  # in the one constructor: a later assign() would copy every column
    cells = pd.DataFrame(columns, index=agg.index)

    domain, domain_rule = plan.domain_cells, plan.domain_rule
    concentration = concentration_curve(cells["harm"].to_numpy(float), domain)

    precisions = sorted(flags["precision"].dropna().unique().tolist()) if len(flags) else []
    n = int(flags["n"].sum()) if len(flags) else 0
    if preset is not None:
        category_only = any(not isinstance(g, str) or g == "" for g in chosen["offence_group"].tolist())
        if category_only or (not len(chosen) and not preset.categories_if_category_only):
            not_applied.append(preset.category_only_caveat)
        checks = [(preset.require_public_place, "no_public", "public-place condition"),
                  (preset.exclude_domestic, "no_domestic", "domestic-abuse exclusion"),
                  (preset.victim_age_range is not None, "no_age", "victim-age exclusion"),
                  (preset.robbery_needs_weapon, "no_knife", "weapon condition on robbery"),
                  (preset.nte, "no_nte", "night-time-economy window")]
        for active, col, what in checks:
            missing = int(flags[col].sum()) if active and len(flags) else 0
            if missing:
                not_applied.append(f"{what}: not applied to {missing} of {n} records that lack the field")
    if (q.days or q.hours) and "minute" not in precisions:
        not_applied.append("day-of-week/hour window: records have no time of day, so none matched")
    if "month" in precisions:
        caveats.append("data.police.uk records are month-only and snapped to anonymised map points: a cell's "
                       "harm is where offences were mapped, not exact addresses")
    if exact_share < 1.0 and total_harm > 0:
        caveats.append(f"harm weights are approximate for {100 * (1 - exact_share):.1f}% of harm (weighted by "
                       f"offence group or police.uk category, not by Home Office code); method: {table.category_method}")
    if not q.include_asb:
        caveats.append("anti-social behaviour is excluded (it carries no harm weight)"
                       + (" from harm and counts; the forecast's all-record part counts it" if forecast else ""))
    cov = plan.coverage
    note = period_note(cov, start.date(), end.date()) if cov else None
    empty = None
    if n_cells == 0:
        why = note or (plan.caveats[0] if plan.caveats else None)
        empty = (f"no records of the selected offences in the period {start.date()} to "
                 f"{(end - pd.Timedelta(days=1)).date()}" + (f"; {why}" if why else
                 (f"; the dataset covers {cov['first_month']} to {cov['last_month']}" if cov and cov.get("first_month")
                  else "")))
    caveats[:0] = [*([note] if note else []), *plan.caveats]
    return HotspotResult(
        query=q, period_from=start, period_to_exclusive=end, period_rule=rule, cells=cells, coverage=cov,
        period_note=note, no_records=empty,
        total_harm=total_harm, total_count=total_count, domain_cells=domain, domain_rule=domain_rule,
        concentration=concentration, weights_table=table.name,
        weights_exact="exact" if exact_share >= 0.9999 else ("approximate" if exact_share == 0 else "mixed"),
        exact_share=exact_share, time_precision=precisions, not_applied=not_applied, caveats=caveats,
        preset=preset.to_dict() if preset else None, method=plan.method, forecast=forecast,
        harm_unit=plan.harm_unit,
    )


def _top_offences(labels: pd.DataFrame, cells: np.ndarray, top_n: int) -> list[list[dict]]:
    """The TOP_OFFENCES largest offence groups of each top cell (highest harm at 6 decimals, then count, then
    name, so output is deterministic); the few rows of the top cells are sorted in plain Python."""
    none: list[dict] = []  # cells outside the top N share one empty list (thousands of cells, never filled)
    out: list[list[dict]] = [[] for _ in range(top_n)] + [none] * (len(cells) - top_n)
    if labels.empty or top_n == 0:
        return out
    position = {c: i for i, c in enumerate(cells[:top_n].astype(np.uint64).tolist())}
    rows = sorted(zip(labels["cell"].to_numpy(np.uint64).tolist(), labels["harm"].round(6).tolist(),
                      labels["count"].tolist(), labels["offence"].tolist(), labels["harm"].tolist()),
                  key=lambda r: (r[0], -r[1], -r[2], r[3]))
    for c, _, count, offence, harm in rows:
        i = position.get(c)
        if i is not None and len(out[i]) < TOP_OFFENCES:
            out[i].append({"offence": offence, "harm": round(float(harm), 3), "count": int(count)})
    return out


def concentration_curve(harm: np.ndarray, domain_cells: int) -> dict:
    """Share of harm in the top 1/2/5 % of cells with any harm, and of all cells in the area ("power few")."""
    h = np.sort(harm[harm > 0])[::-1]
    total = h.sum()
    csum = np.concatenate([[0.0], np.cumsum(h)])

    def share(n_cells: float) -> float | None:
        if total <= 0:
            return None
        k = int(np.ceil(n_cells))
        return round(float(csum[min(k, len(h))] / total), 4)

    return {
        "of_cells_with_harm": {f"top_{int(s * 100)}pct": share(s * len(h)) for s in CONCENTRATION_SHARES},
        "of_all_cells_in_area": {f"top_{int(s * 100)}pct": share(s * domain_cells) for s in CONCENTRATION_SHARES},
        "cells_with_harm": int(len(h)),
        "cells_in_area": int(domain_cells),
        "share_of_area_with_harm": round(len(h) / domain_cells, 4) if domain_cells else None,
    }
