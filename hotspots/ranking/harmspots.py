"""Harm spots: filter offences, weigh them by harm, aggregate to H3 cells, rank, and measure concentration.

A query is a filter plus a group-by in the store (DuckDB) and a little numpy over the few thousand cells
that carry harm.  Nothing here knows about HTTP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from geodata.cells import AREA_RESOLUTION, cell_area_km2, cell_centres, to_hex
from geodata.harm import WeightsTable
from geodata.store import DATASET_LAYER, Store, StoreError
from hotspots.ranking.presets import PRESETS, Preset, resolve_offences, select_keys
from hotspots.ranking.query import HotspotQuery, default_period, period_end_exclusive, period_start

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
            "rank_by": q.rank_by,
            "top": q.top,
            "weights_table": self.weights_table,
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
        }


def _resolve_period(store: Store, q: HotspotQuery) -> tuple[datetime, datetime, str]:
    last, month_only = store.cached(("period_info", q.dataset), lambda: _period_info(store, q.dataset))
    return resolve_period(q, last, month_only)


def _period_info(store: Store, dataset: str) -> tuple:
    info = store.query_df("""SELECT max(occurred_to) AS last, min(occurred_from) AS first,
                             bool_and(precision = 'month') AS month_only FROM offences WHERE dataset = ?""", [dataset])
    return info["last"].iloc[0], bool(info["month_only"].iloc[0])


def resolve_period(q: HotspotQuery, last, month_only: bool) -> tuple[datetime, datetime, str]:
    """The query's period from the dataset's last record end and whether it is month-only (any executor)."""
    if last is None or pd.isna(last):
        raise StoreError(f"dataset '{q.dataset}' has no offences")
    d_start, d_end, rule = default_period(pd.Timestamp(last).to_pydatetime(), "month" if month_only else "day")
    start = period_start(q.date_from) if q.date_from else (d_start if not q.date_to else None)
    end = period_end_exclusive(q.date_to) if q.date_to else d_end
    if start is None:  # only 'to' given: the same length of window as the default, ending there
        start = end - (d_end - d_start)
    if q.date_from or q.date_to:
        rule = "as requested"
    return start, end, rule


def offence_selection(q: HotspotQuery) -> tuple[Preset | None, frozenset[str], frozenset[str]]:
    if q.offences:
        groups, cats = resolve_offences(q.offences)
        return None, groups, cats
    preset = PRESETS[q.preset or "all-crime"]
    return preset, preset.groups, preset.categories_if_category_only


def area_filter(store: Store, q: HotspotQuery) -> tuple[str, list, str, str, list]:
    """SQL fragment + params selecting offences in the area, and the domain (cells in the area)."""
    if q.area:
        layer, ids, label = store.resolve_area(q.area)
        placeholders = ",".join("?" * len(ids))
        frag = f" AND o.h3_10 IN (SELECT h3_10 FROM area_cells WHERE layer = ? AND feature_id IN ({placeholders}))"
        return frag, [layer, *ids], layer, f"area {label}", ids
    return "", [], DATASET_LAYER, "", [q.dataset]


def _h3_parent_sql(col: str, res: int) -> str:
    """H3 parent in SQL bit arithmetic: set the resolution field (bits 52-55) and blank finer digits to 7."""
    return f"(({col} & ~(15::UBIGINT << 52)) | ({res}::UBIGINT << 52) | ((1::UBIGINT << {3 * (15 - res)}) - 1))"


def _domain_cells(store: Store, layer: str, ids: list, q: HotspotQuery) -> int:
    """Number of cells at the query resolution in the area (counted in the store, no rows fetched)."""
    placeholders = ",".join("?" * len(ids))
    res = min(q.resolution, AREA_RESOLUTION)
    expr = "h3_10" if res == AREA_RESOLUTION else _h3_parent_sql("h3_10", res)
    sql = f"SELECT count(DISTINCT {expr}) FROM area_cells WHERE layer = ? AND feature_id IN ({placeholders})"
    params: list = [layer, *ids]
    if q.bbox:
        sql += " AND lon BETWEEN ? AND ? AND lat BETWEEN ? AND ?"
        params += [q.bbox[0], q.bbox[2], q.bbox[1], q.bbox[3]]
    n = int(store.cached(("domain_cells", sql, tuple(params)), lambda: store.scalar(sql, params)) or 0)
    return n * 7 ** (q.resolution - AREA_RESOLUTION) if q.resolution > AREA_RESOLUTION else n


@dataclass
class OffenceFilter:
    """The WHERE clause of a query (period, offence selection, preset conditions, time window, bbox, area) and
    what it was built from; shared by :func:`harm_spots` and :func:`offence_rows`. Register ``chosen`` as ``kw``
    on the cursor before running :attr:`base`."""

    table: WeightsTable
    start: datetime
    end: datetime
    rule: str
    preset: Preset | None
    chosen: pd.DataFrame
    base: str  # "FROM offences o JOIN kw ... WHERE ..."
    params: list
    domain: tuple[str, list, str]  # (area_cells layer, feature ids, label)


def offence_filter(store: Store, q: HotspotQuery, default_weights: WeightsTable,
                   period: tuple[datetime, datetime, str] | None = None) -> OffenceFilter:
    """Build the filter of ``q``; ``period`` overrides the query's own (resolve_period) window."""
    store.require_dataset(q.dataset)
    table = store.weights_table(q.weights) if q.weights else default_weights
    start, end, rule = period or _resolve_period(store, q)
    preset, groups, cats = offence_selection(q)
    keys = store.key_weights(table)
    chosen = keys[select_keys(keys, groups, cats, q.include_asb)]

    where = ["o.dataset = ?", "o.occurred_from >= ?", "o.occurred_to <= ?"]
    params: list = [q.dataset, start, end]
    if preset is not None:
        if preset.require_public_place:
            where.append("coalesce(o.public_place, TRUE)")
        if preset.exclude_domestic:
            where.append("NOT coalesce(o.domestic, FALSE)")
        if preset.victim_age_range:
            lo, hi = preset.victim_age_range
            where.append(f"(o.victim_age IS NULL OR o.victim_age BETWEEN {int(lo)} AND {int(hi)})")
        if preset.robbery_needs_weapon:
            rob = chosen.loc[chosen["offence_group"].isin(["robbery", "robbery_personal", "robbery_business"]), "offence_key"]
            if len(rob):
                where.append(f"(o.offence_key NOT IN ({','.join(str(int(k)) for k in rob)}) OR coalesce(o.knife, FALSE))")
        if preset.nte:
            where.append("(o.nte OR (o.nte IS NULL AND (o.hour IS NULL OR (o.dow IN (4, 5) AND o.hour >= 20) "
                         "OR (o.dow IN (5, 6) AND o.hour < 6))))")
    if q.days:
        where.append(f"o.dow IN ({','.join(str(int(d)) for d in q.days)})")
    if q.hours:
        where.append(f"o.hour IN ({','.join(str(int(h)) for h in q.hours)})")
    if q.bbox:
        where.append("o.lon BETWEEN ? AND ? AND o.lat BETWEEN ? AND ?")
        params += [q.bbox[0], q.bbox[2], q.bbox[1], q.bbox[3]]
    area_sql, area_params, domain_layer, domain_label, domain_ids = area_filter(store, q)
    params += area_params
    base = f"FROM offences o JOIN kw ON kw.offence_key = o.offence_key WHERE {' AND '.join(where)}{area_sql}"
    return OffenceFilter(table, start, end, rule, preset, chosen, base, params,
                         (domain_layer, domain_ids, domain_label))


def offence_rows(store: Store, q: HotspotQuery, default_weights: WeightsTable,
                 period: tuple[datetime, datetime, str] | None = None) -> tuple[pd.DataFrame, OffenceFilter]:
    """One row per selected offence: cell (uint64, at ``q.resolution``), h3_10, occurred_from, precision,
    harm (days under the weights table), x, y (BNG metres) - the input of the space-time statistics engines."""
    f = offence_filter(store, q, default_weights, period)
    cur = store.cursor()
    try:
        cur.register("kw", f.chosen[["offence_key", "days", "exact"]])
        rows = cur.execute(f"""SELECT o.h3_{q.resolution} AS cell, o.h3_10, o.occurred_from, o.precision,
                                      kw.days AS harm, o.x, o.y {f.base}""", f.params).df()
    finally:
        cur.close()
    rows["cell"] = rows["cell"].to_numpy(dtype=np.uint64)
    rows["h3_10"] = rows["h3_10"].to_numpy(dtype=np.uint64)
    return rows, f


def harm_spots(store: Store, q: HotspotQuery, default_weights: WeightsTable) -> HotspotResult:
    """Run a harm-spot query against the store."""
    f = offence_filter(store, q, default_weights)
    table, start, end, rule, preset, chosen, base, params = (f.table, f.start, f.end, f.rule, f.preset, f.chosen,
                                                             f.base, f.params)
    domain_layer, domain_ids, domain_label = f.domain
    res = q.resolution
    cur = store.cursor()
    try:
        cur.register("kw", chosen[["offence_key", "days", "exact"]])
        # one scan: per cell, precision and offence key: harm, count, and how many records carry each field a
        # preset condition needs (only the preset's own conditions: the others are never reported)
        present = _present_counts(preset)
        per = cur.execute(f"""SELECT o.h3_{res} AS cell, o.precision, o.offence_key, sum(kw.days) AS harm,
                                     count(*) AS count{"".join(f", count({e}) AS {c}" for c, e in present)}
                              {base} GROUP BY 1, 2, 3""", params).fetchnumpy()
    finally:
        cur.close()
    # plain numpy columns (fetchnumpy masks a column only where it holds NULLs); no per-row Python below
    per = {k: (np.ma.filled(v, None) if v.dtype == object else np.ma.getdata(v)) if np.ma.isMaskedArray(v) else v
           for k, v in per.items()}
    for c in _FLAG_COLUMNS:
        per[c] = per["count"] - per.pop(c) if c in per else np.zeros(len(per["count"]), dtype=np.int64)
    # a group holds one offence key, so its exact harm is all of its harm or none of it
    exact_keys = chosen.loc[chosen["exact"].to_numpy(dtype=bool), "offence_key"].to_numpy()
    per["exact_harm"] = np.where(np.isin(per["offence_key"], exact_keys), per["harm"], 0.0)
    cell, harm, count = per["cell"], per["harm"], per["count"]
    agg = rank_cells(pd.DataFrame({"cell": cell, "harm": harm, "count": count, "exact_harm": per["exact_harm"]})
                     .groupby("cell", as_index=False, sort=False).sum(), q.rank_by)
    flags = _flags_by_precision(per)
    top_n = len(agg) if q.top is None else min(q.top, len(agg))
    in_top = np.isin(cell, agg["cell"].to_numpy()[:top_n])
    label_of = {int(k): (g if isinstance(g, str) else c if isinstance(c, str) else None)
                for k, g, c in zip(chosen["offence_key"].tolist(), chosen["offence_group"].tolist(),
                                   chosen["category"].tolist())}
    labels = (pd.DataFrame({"cell": cell[in_top],
                            "offence": [label_of.get(k) for k in per["offence_key"][in_top].tolist()],
                            "harm": harm[in_top], "count": count[in_top]})
              .groupby(["cell", "offence"], as_index=False)[["harm", "count"]].sum())
    return assemble_result(store, q, table, start, end, rule, preset, chosen, agg, flags, labels,
                           (domain_layer, domain_ids, domain_label))


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
_FLAG_COLUMNS = tuple(col for col, _, _ in _FLAG_FIELDS)


def _present_counts(preset: Preset | None) -> list[tuple[str, str]]:
    """(flag column, SQL expression) for the fields ``preset``'s active conditions need."""
    if preset is None:
        return []
    return [(col, expr) for col, attr, expr in _FLAG_FIELDS if getattr(preset, attr)]


def _flags_by_precision(per: dict[str, np.ndarray]) -> pd.DataFrame:
    """Records (n) and records lacking each preset field, per time precision (rows without one left out)."""
    codes, values = pd.factorize(per["precision"], sort=True)
    keep = codes >= 0
    out = {"precision": np.asarray(values, dtype=object)}
    for name, col in (("n", "count"), *((c, c) for c in _FLAG_COLUMNS)):
        out[name] = np.bincount(codes[keep], weights=per[col][keep], minlength=len(values)).astype(np.int64)
    return pd.DataFrame(out)


def assemble_result(store: Store, q: HotspotQuery, table: WeightsTable, start: datetime, end: datetime, rule: str,
                    preset: Preset | None, chosen: pd.DataFrame, agg: pd.DataFrame, flags: pd.DataFrame,
                    labels: pd.DataFrame, domain: tuple[str, list, str]) -> HotspotResult:
    """Turn per-cell aggregates (ranked by :func:`rank_cells`) into a :class:`HotspotResult`; shared by every
    executor (the embedded DuckDB one above and hotspots.executors.dask_backend), so the statistics exist once."""
    domain_layer, domain_ids, domain_label = domain
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
    lat, lon = cell_centres(cell_ids)
    columns: dict = {"rank": np.arange(1, n_cells + 1)}  # built in one go (column inserts cost more than the maths)
    columns.update({c: agg[c] for c in agg.columns if c != "exact_harm"})
    columns["harm_share"] = agg["harm"] / total_harm if total_harm > 0 else 0.0
    columns["count_share"] = agg["count"] / total_count if total_count else 0.0
    columns.update(area_km2=area, harm_per_km2=agg["harm"].to_numpy(float) / area, lat=lat, lon=lon,
                   h3=to_hex(cell_ids))
    cells = pd.DataFrame(columns, index=agg.index)
    cells["top_offences"] = _top_offences(labels, cell_ids, top_n)

    domain = _domain_cells(store, domain_layer, domain_ids, q)
    domain_rule = domain_label or store.cached(("dataset_area_name", q.dataset), lambda: store.scalar(
        "SELECT name FROM areas WHERE layer = ? AND feature_id = ?", [DATASET_LAYER, q.dataset])) or "cells with offences"
    if q.bbox:
        domain_rule += " within the bbox"
    concentration = concentration_curve(cells["harm"].to_numpy(float), domain)

    precisions = sorted(flags["precision"].dropna().unique().tolist()) if len(flags) else []
    n = int(flags["n"].sum()) if len(flags) else 0
    if preset is not None:
        category_only = chosen["offence_group"].isna() | (chosen["offence_group"].astype("string") == "")
        if category_only.any() or (not len(chosen) and not preset.categories_if_category_only):
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
        caveats.append("anti-social behaviour is excluded (it has no CCHI value)")
    return HotspotResult(
        query=q, period_from=start, period_to_exclusive=end, period_rule=rule, cells=cells,
        total_harm=total_harm, total_count=total_count, domain_cells=domain, domain_rule=domain_rule,
        concentration=concentration, weights_table=table.name,
        weights_exact="exact" if exact_share >= 0.9999 else ("approximate" if exact_share == 0 else "mixed"),
        exact_share=exact_share, time_precision=precisions, not_applied=not_applied, caveats=caveats,
        preset=preset.to_dict() if preset else None,
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
