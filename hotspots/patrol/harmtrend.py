"""The harm-trend scrutiny report: per quarter (or month) and area, combined harm, counts of the main offence
types, and the change against the previous period and the same period a year earlier, with whether each change
is beyond chance.

Written after the quarterly reports forces already write by hand ("the combined harm score for the NTE this
quarter was 61,052, compared to 65,826 for the same period in 2023 (-7 %) and 70,225 the quarter before (-13 %)").

Statistics (docs/patrol-planning.md#the-harm-trend-scrutiny-report):

* **Harm** is heavy-tailed: one homicide outweighs a thousand common assaults, so a normal approximation to a
  change in total harm is poor and a plain count test ignores the weights. *Beyond chance* is decided by a
  **conditional randomisation test**: pool the records of the two periods; under equal harm per day each record
  falls in this period with probability p0 = days / (days + comparison days), independently, so this period's
  harm is sum_k w_k Binomial(n_k, p0) over offence keys (records of one key share one weight). It is exact given
  the pooled records for any count and any weights (with one weight it is the exact conditional Poisson test),
  computed by 2,000 Monte Carlo draws; two-sided p doubles the smaller tail.
* The **interval** of the ratio of harm per day comes from a **Poisson bootstrap over records**: every record's
  multiplicity is an independent Poisson(1) draw, drawn exactly per offence key as sum_k w_k Poisson(n_k); the
  95 % interval is the 2.5-97.5 percentile of the replicate ratios. It agrees with the exact interval when many
  records carry the harm, and is too narrow when a few do (60 vs 40 records: 1.01-2.3 against the exact
  0.98-2.3), so it describes the size of a change and the call rests on the test.
* **Counts** (all selected offences): the exact conditional test of two Poisson rates with the days of each
  period as exposure: given the total, this period's count is binomial (scipy ``binom``; two-sided by doubling
  the smaller tail, cross-checked against statsmodels ``test_poisson_2indep(method="exact-cond")`` in the
  tests); beyond chance when p < 0.05.
* Changes are reported on totals (as the hand-written reports do) and tested on rates per day, since quarters
  (90-92 days) and months (28-31) differ in length.
* Only whole periods are reported: a period counts when the data cover all of it (first record start to last
  record end); data.police.uk data are month-only, so the report is by month or quarter only.
* Each comparison is a separate test at 5 %: across many areas and periods about one in twenty stable series is
  flagged by chance (the response says how many comparisons were made).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
import pandas as pd
import scipy.sparse as sp

from geodata.harm import WeightsTable
from geodata.store import DataCannotAnswer, Store
from geodata.taxonomy import slug
from hotspots.ranking.plan import resolve_plan
from hotspots.ranking.query import HotspotQuery

ALL_ID, ALL_NAME = "all", "All areas"
PERIODS = ("quarter", "month")
BOOTSTRAP = 2000
ALPHA = 0.05
COMPARISONS = {"prev": "the previous period", "yoy": "the same period a year earlier"}
METHOD = {
    "harm": "beyond chance when p < 0.05 in a conditional randomisation test of equal harm per day: given the "
            "two periods' records pooled, each falls in this period with probability days / (days + days of the "
            "comparison) under equal rates, so this period's harm is sum_k w_k Binomial(n_k, p0) - exact for any "
            "count and any weights, 2,000 Monte Carlo draws; rr_low/rr_high: 95 % interval of the ratio of harm per "
            "day from a Poisson bootstrap over records (each record's multiplicity ~ Poisson(1), drawn exactly per "
            "offence key), percentile, 2,000 replicates - it describes the size of the change and is too narrow "
            "when a few records carry the harm, so the call rests on the test",
    "count": "exact conditional test of two Poisson rates, days as exposure (given the total, this period's count "
             "is binomial; two-sided p doubles the smaller tail, scipy.stats.binom); beyond chance when p < 0.05",
    "change_pct": "100 x (this period / comparison period - 1) on totals, as written in force reports; the tests "
                  "use rates per day",
}


class ReportError(ValueError):
    """The report cannot be made (no whole period in the data, unknown layer...)."""


@dataclass
class HarmTrend:
    rows: pd.DataFrame
    types: list[dict]  # main offence types: label, slug (column n_<slug>), count, harm
    meta: dict = field(default_factory=dict)

    def fields(self) -> list[str]:
        return list(self.rows.columns)


# ------------------------------------------------------------------------------------------ statistics
def poisson_bootstrap_totals(group: np.ndarray, weight: np.ndarray, n: np.ndarray, n_groups: int,
                             reps: int = BOOTSTRAP, seed: int = 0, chunk: int = 20_000) -> np.ndarray:
    """Replicate totals (n_groups x reps, float32): per group sum_k w_k * Poisson(n_k) over its rows (one row per
    offence key, i.e. per distinct weight). Rows are drawn in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n_groups, reps), dtype=np.float64)
    for lo in range(0, len(n), chunk):
        hi = min(lo + chunk, len(n))
        draws = rng.poisson(n[lo:hi, None].astype(float), size=(hi - lo, reps)) * weight[lo:hi, None]
        ind = sp.csr_matrix((np.ones(hi - lo), (group[lo:hi], np.arange(hi - lo))), shape=(n_groups, hi - lo))
        out += ind @ draws
    return out.astype(np.float32)


def ratio_interval(t1: np.ndarray, d1: np.ndarray, t0: np.ndarray, d0: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per comparison (rows): 95 % percentile interval and two-sided bootstrap p of the rate ratio from replicate
    totals t1 (this period, days d1) and t0 (comparison, days d0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (t1 / d1[:, None]) / (t0 / d0[:, None])
    r = np.where(np.isnan(r), 1.0, r)  # 0/0: no harm in either replicate, no change
    lo, hi = np.percentile(r, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)], axis=1)
    reps = r.shape[1]
    below, above = (r <= 1).sum(axis=1), (r >= 1).sum(axis=1)
    p = np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (reps + 1))
    return lo, hi, p


def conditional_harm_test(pair: np.ndarray, weight: np.ndarray, n1: np.ndarray, n0: np.ndarray, p0: np.ndarray,
                          n_pairs: int, reps: int = BOOTSTRAP, seed: int = 0, chunk: int = 20_000) -> np.ndarray:
    """Two-sided p per comparison of 'equal harm rate per day', exact given the pooled records (Monte Carlo).

    Rows: one per comparison (``pair``) and offence key, with the key's weight, its count in this period (n1) and
    in the comparison period (n0), and p0 = d1 / (d1 + d0). Under equal rates every pooled record falls in this
    period with probability p0, independently, so this period's harm is sum_k w_k Binomial(n1_k + n0_k, p0): with
    one weight it is the exact conditional Poisson test; with CCHI weights it keeps the heavy tail as it is."""
    rng = np.random.default_rng(seed)
    sims = np.zeros((n_pairs, reps), dtype=np.float64)
    for lo in range(0, len(pair), chunk):
        hi = min(lo + chunk, len(pair))
        draws = rng.binomial((n1[lo:hi] + n0[lo:hi])[:, None], p0[lo:hi, None], size=(hi - lo, reps)) * weight[lo:hi, None]
        ind = sp.csr_matrix((np.ones(hi - lo), (pair[lo:hi], np.arange(hi - lo))), shape=(n_pairs, hi - lo))
        sims += ind @ draws
    observed = np.bincount(pair, weights=weight * n1, minlength=n_pairs)
    tol = 1e-9 * np.maximum(1.0, np.abs(observed))[:, None]
    above = (sims >= observed[:, None] - tol).sum(axis=1)
    below = (sims <= observed[:, None] + tol).sum(axis=1)
    return np.minimum(1.0, 2 * (np.minimum(above, below) + 1) / (reps + 1))


def count_test(c1: np.ndarray, d1: np.ndarray, c0: np.ndarray, d0: np.ndarray) -> np.ndarray:
    """Two-sided p of the exact conditional test of equal Poisson rates, per comparison (vectorised): given the
    total n = c1 + c0, c1 ~ Binomial(n, d1 / (d1 + d0)) under equal rates; p doubles the smaller tail."""
    from scipy.stats import binom

    c1, c0 = np.asarray(c1, dtype=float), np.asarray(c0, dtype=float)
    n, p0 = c1 + c0, np.asarray(d1, float) / (np.asarray(d1, float) + np.asarray(d0, float))
    lower, upper = binom.cdf(c1, n, p0), binom.sf(c1 - 1, n, p0)
    return np.where(n > 0, np.minimum(1.0, 2 * np.minimum(lower, upper)), np.nan)


# ------------------------------------------------------------------------------------------ data
def _period_of(month: pd.Series, by: str) -> pd.Series:
    m = pd.to_datetime(month)
    if by == "month":
        return m.dt.strftime("%Y-%m")
    return m.dt.year.astype(str) + " Q" + m.dt.quarter.astype(str)


def _period_bounds(label: str, by: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a period label."""
    if by == "month":
        start = pd.Timestamp(label + "-01")
        return start, start + pd.offsets.MonthBegin(1)
    year, q = label.split(" Q")
    start = pd.Timestamp(year=int(year), month=3 * (int(q) - 1) + 1, day=1)
    return start, start + pd.offsets.MonthBegin(3)


def _shift(label: str, by: str, steps: int) -> str:
    """The label ``steps`` periods away ('2021 Q2', -4 -> '2020 Q2'; '2021-05', -1 -> '2021-04')."""
    if by == "month":
        y, m = int(label[:4]), int(label[5:7])
        k = y * 12 + (m - 1) + steps
        return f"{k // 12:04d}-{k % 12 + 1:02d}"
    y, q = label.split(" Q")
    k = int(y) * 4 + (int(q) - 1) + steps
    return f"{k // 4} Q{k % 4 + 1}"


def _records(store: Store, q: HotspotQuery, weights: WeightsTable, layer: str | None
             ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Offences of the query over the whole dataset, aggregated per month, area and offence key."""
    span = store.query_df("SELECT min(occurred_from) AS first, max(occurred_to) AS last, "
                          "bool_and(precision = 'month') AS month_only FROM offences WHERE dataset = ?", [q.dataset])
    first, last = span["first"].iloc[0], span["last"].iloc[0]
    if first is None or pd.isna(first):
        raise DataCannotAnswer(f"dataset '{q.dataset}' has no offences")
    plan = resolve_plan(store, q.model_copy(update={"date_from": None, "date_to": None}), weights,
                        (pd.Timestamp(first).to_pydatetime(), pd.Timestamp(last).to_pydatetime(), "whole dataset"))
    base, params = plan.base_sql()
    area_sql, area_params = "NULL::VARCHAR AS fid", []
    join = ""
    if layer:
        join = ("LEFT JOIN (SELECT h3_10, min(feature_id) AS fid FROM area_cells WHERE layer = ? GROUP BY 1) a "
                "USING (h3_10)")
        area_sql, area_params = "a.fid", [layer]
    sql, sql_params = plan.with_kw(f"""
            SELECT r.month, {area_sql}, r.offence_key, r.w, count(*) AS n,
                   sum(CASE WHEN r.multi THEN 1 ELSE 0 END) AS multi
            FROM (SELECT date_trunc('month', o.occurred_from) AS month, o.offence_key, kw.days AS w, o.h3_10,
                         date_trunc('month', o.occurred_from) <> date_trunc('month', o.occurred_to
                             - INTERVAL 1 MICROSECOND) AS multi {base}) r {join}
            GROUP BY ALL""", [*params, *area_params])
    cur = store.cursor()
    try:
        plan.register_area(cur)
        rows = cur.execute(sql, sql_params).df()
    finally:
        cur.close()
    labels = plan.keys.assign(label=[g if isinstance(g, str) else c for g, c in
                                     zip(plan.keys["offence_group"], plan.keys["category"])])[["offence_key", "label"]]
    info = {"first": pd.Timestamp(first), "last_exclusive": pd.Timestamp(last),
            "month_only": bool(span["month_only"].iloc[0]), "weights_table": plan.table.name,
            "preset": q.preset if not q.offences else None, "offences": q.offences,
            "multi_month_records": int(rows["multi"].sum()) if len(rows) else 0}
    rows = rows[rows["multi"] == 0].drop(columns="multi")  # a record spanning months belongs to none
    return rows, labels, info


# ------------------------------------------------------------------------------------------ report
def harm_trend(store: Store, q: HotspotQuery, weights: WeightsTable, by: str = "quarter",
               area_layer: str | None = "districts", types: int = 5, reps: int = BOOTSTRAP, seed: int = 0
               ) -> HarmTrend:
    """The report over every whole period of the dataset (``q``'s offence selection; its dates are ignored)."""
    if by not in PERIODS:
        raise ReportError(f"by must be one of {list(PERIODS)} (data.police.uk records are month-only)")
    store.require_dataset(q.dataset)
    if area_layer:
        layers = store.area_layers()["layer"].tolist()
        if area_layer not in layers:
            raise ReportError(f"no area layer '{area_layer}' is loaded; layers: {layers} (or area_layer=none)")
    rows, labels, info = _records(store, q, weights, area_layer)
    rows["period"] = _period_of(rows["month"], by)
    # whole periods only: covered from the first record's start to the last record's end
    periods = sorted(rows["period"].unique(), key=lambda p: _period_bounds(p, by)[0])
    whole = [p for p in periods if _period_bounds(p, by)[0] >= info["first"]
             and _period_bounds(p, by)[1] <= info["last_exclusive"]]
    if not whole:
        raise ReportError(f"the data ({info['first'].date()} to {info['last_exclusive'].date()}, exclusive) hold no "
                          f"whole {by}")
    partial = [p for p in periods if p not in whole]
    rows = rows[rows["period"].isin(whole)]
    rows = rows.merge(labels, on="offence_key", how="left")
    names = (store.areas(area_layer)[["feature_id", "name"]].drop_duplicates("feature_id")
             .set_index("feature_id")["name"] if area_layer else pd.Series(dtype=object))
    per_area = rows.dropna(subset=["fid"]) if area_layer else rows.iloc[0:0]
    every = rows.assign(fid=ALL_ID)
    outside = int(rows.loc[rows["fid"].isna(), "n"].sum()) if area_layer else 0
    long = (pd.concat([per_area, every], ignore_index=True)
            .groupby(["period", "fid", "offence_key", "w", "label"], as_index=False)["n"].sum())
    area_ids = [ALL_ID] + sorted(set(per_area["fid"]) if len(per_area) else [])
    grid = pd.MultiIndex.from_product([whole, area_ids], names=["period", "fid"]).to_frame(index=False)
    grid["g"] = np.arange(len(grid))
    long = long.merge(grid, on=["period", "fid"])
    long["harm"] = long["w"] * long["n"]
    tot = long.groupby("g").agg(harm=("harm", "sum"), count=("n", "sum"))
    out = grid.join(tot, on="g").fillna({"harm": 0.0, "count": 0})
    out["count"] = out["count"].astype(int)
    # main offence types: most frequent over the whole report, whole dataset
    top = (long[long["fid"] == ALL_ID].groupby("label").agg(count=("n", "sum"), harm=("harm", "sum"))
           .sort_values(["count", "harm"], ascending=False).head(types).reset_index())
    type_list = [{"label": r.label, "column": f"n_{slug(r.label).replace('-', '_')}", "count": int(r.count),
                  "harm": float(r.harm)} for r in top.itertuples()]
    for t in type_list:
        per = long[long["label"] == t["label"]].groupby("g")["n"].sum()
        out[t["column"]] = out["g"].map(per).fillna(0).astype(int)
    bounds = [_period_bounds(p, by) for p in out["period"]]
    out["period_start"] = [b[0].date().isoformat() for b in bounds]
    out["period_end"] = [(b[1] - pd.Timedelta(days=1)).date().isoformat() for b in bounds]
    out["days"] = [(b[1] - b[0]).days for b in bounds]
    out["area_id"] = out["fid"]
    out["area_name"] = [ALL_NAME if f == ALL_ID else str(names.get(f, f)) for f in out["fid"]]
    # bootstrap replicates of every (period, area) total, then both comparisons
    reps_tot = poisson_bootstrap_totals(long["g"].to_numpy(), long["w"].to_numpy(float), long["n"].to_numpy(),
                                        len(grid), reps, seed)
    index = {(p, f): g for p, f, g in zip(grid["period"], grid["fid"], grid["g"])}
    n_tests = 0
    for cmp, steps in (("prev", -1), ("yoy", -12 if by == "month" else -4)):
        other = [index.get((_shift(p, by, steps), f)) for p, f in zip(out["period"], out["fid"])]
        has = np.array([o is not None for o in other])
        o = np.array([x if x is not None else 0 for x in other])
        out[f"{cmp}_period"] = np.where(has, [_shift(p, by, steps) for p in out["period"]], None)
        h0, c0, d0 = out["harm"].to_numpy()[o], out["count"].to_numpy()[o], out["days"].to_numpy(float)[o]
        h1, c1, d1 = out["harm"].to_numpy(), out["count"].to_numpy(), out["days"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"harm_{cmp}"] = np.where(has, h0, np.nan)
            out[f"harm_{cmp}_change_pct"] = np.where(has & (h0 > 0), 100 * (h1 / h0 - 1), np.nan)
            out[f"harm_{cmp}_rate_ratio"] = np.where(has & (h0 > 0), (h1 / d1) / (h0 / d0), np.nan)
        lo = np.full(len(out), np.nan)
        hi, p = lo.copy(), lo.copy()
        test = has & (h0 > 0) & (h1 + h0 > 0)
        if test.any():
            idx = out["g"].to_numpy()[test]
            lo[test], hi[test], _ = ratio_interval(reps_tot[idx], d1[test], reps_tot[o[test]], d0[test])
            p[test] = _pair_test(long, out["g"].to_numpy()[test], o[test], d1[test], d0[test], reps, seed)
        out[f"harm_{cmp}_rr_low"], out[f"harm_{cmp}_rr_high"], out[f"harm_{cmp}_p"] = lo, hi, p
        out[f"harm_{cmp}_beyond_chance"] = np.where(test, p < ALPHA, None)
        out[f"count_{cmp}"] = np.where(has, c0, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"count_{cmp}_change_pct"] = np.where(has & (c0 > 0), 100 * (c1 / c0 - 1), np.nan)
        cp = np.full(len(out), np.nan)
        if has.any():
            cp[has] = count_test(c1[has], d1[has], c0[has], d0[has])
        out[f"count_{cmp}_p"] = cp
        out[f"count_{cmp}_beyond_chance"] = np.where(has & ~np.isnan(cp), cp < ALPHA, None)
        for t in type_list:
            out[f"{t['column']}_{cmp}"] = np.where(has, out[t["column"]].to_numpy()[o], np.nan)
        n_tests += int(test.sum() + (has & ~np.isnan(cp)).sum())
    cols = ["period", "period_start", "period_end", "days", "area_id", "area_name", "harm", "count",
            *[t["column"] for t in type_list]]
    for cmp in COMPARISONS:
        cols += [f"{cmp}_period", f"harm_{cmp}", f"harm_{cmp}_change_pct", f"harm_{cmp}_rate_ratio",
                 f"harm_{cmp}_rr_low", f"harm_{cmp}_rr_high", f"harm_{cmp}_p", f"harm_{cmp}_beyond_chance",
                 f"count_{cmp}", f"count_{cmp}_change_pct", f"count_{cmp}_p", f"count_{cmp}_beyond_chance",
                 *[f"{t['column']}_{cmp}" for t in type_list]]
    order = {a: i for i, a in enumerate(area_ids)}
    table = out.sort_values(["fid", "period"], key=lambda s: s.map(order) if s.name == "fid" else s.map(
        {p: i for i, p in enumerate(whole)}))[cols].reset_index(drop=True)
    meta = {
        "dataset": q.dataset, "preset": info["preset"], "offences": info["offences"],
        "weights_table": info["weights_table"], "by": by, "area_layer": area_layer,
        "periods": whole, "partial_periods_left_out": partial,
        "data_span": {"from": info["first"].isoformat(), "to_exclusive": info["last_exclusive"].isoformat(),
                      "month_only": info["month_only"]},
        "main_offence_types": type_list, "method": METHOD, "bootstrap": {"replicates": reps, "seed": seed},
        "comparisons": COMPARISONS, "tests_made": n_tests,
        "records_outside_areas": outside, "records_spanning_months_left_out": info["multi_month_records"],
        "caveats": [
            f"{n_tests} comparisons are each tested at 5 %: about {max(1, round(n_tests * ALPHA))} may be flagged "
            "beyond chance by chance alone; look for changes that persist or that are large",
            "beyond chance is not 'caused by': recording practice, reporting campaigns and data.police.uk "
            "re-classification change counts too",
            "a period with very few high-harm offences (a homicide, a rape) has a wide interval: one such record "
            "can move combined harm by thousands of days",
            f"the '{ALL_NAME}' row counts every selected record, including {outside} outside the areas of "
            f"'{area_layer}'" if area_layer else "no area layer: whole dataset only",
        ],
    }
    return HarmTrend(table, type_list, meta)


def _pair_test(long: pd.DataFrame, g1: np.ndarray, g0: np.ndarray, d1: np.ndarray, d0: np.ndarray, reps: int,
               seed: int) -> np.ndarray:
    """conditional_harm_test for the comparisons (g1 vs g0), from the per-group, per-key counts in ``long``."""
    pairs = pd.DataFrame({"pair": np.arange(len(g1)), "g1": g1, "g0": g0, "p0": d1 / (d1 + d0)})
    counts = long[["g", "offence_key", "w", "n"]]
    a = pairs.merge(counts.rename(columns={"g": "g1", "n": "n1"}), on="g1")
    b = pairs.merge(counts.rename(columns={"g": "g0", "n": "n0"}), on="g0")
    rows = a.merge(b, on=["pair", "g1", "g0", "p0", "offence_key", "w"], how="outer").fillna({"n1": 0, "n0": 0})
    return conditional_harm_test(rows["pair"].to_numpy(int), rows["w"].to_numpy(float), rows["n1"].to_numpy(int),
                                 rows["n0"].to_numpy(int), rows["p0"].to_numpy(float), len(g1), reps, seed + 1)


def narrative(row: pd.Series, by: str, types: list[dict]) -> str:
    """The sentence the scrutiny reports write by hand, for one period and area."""
    def pct(v):
        return "n/a" if v is None or pd.isna(v) else f"{v:+.0f} %"

    def chance(flag):
        return "" if flag is None or (isinstance(flag, float) and pd.isna(flag)) else \
            (", beyond chance" if flag else ", within chance")

    parts = [f"The combined harm score for {row['area_name']} in {row['period']} was {row['harm']:,.0f}"]
    if pd.notna(row.get("harm_yoy")):
        parts.append(f", compared to {row['harm_yoy']:,.0f} for the same period a year earlier "
                     f"({pct(row['harm_yoy_change_pct'])}{chance(row['harm_yoy_beyond_chance'])})")
    if pd.notna(row.get("harm_prev")):
        parts.append(f", and {row['harm_prev']:,.0f} the {by} before ({pct(row['harm_prev_change_pct'])}"
                     f"{chance(row['harm_prev_beyond_chance'])})")
    text = "".join(parts) + f"; {row['count']:,} offences"
    if types:
        t = types[0]
        yoy = row.get(f"{t['column']}_yoy")
        text += f"; {t['label'].replace('_', ' ')} {row[t['column']]:,}" + (
            f" vs {int(yoy):,} a year earlier" if yoy is not None and pd.notna(yoy) else "")
    return text + "."



def area_order(rows: pd.DataFrame) -> list:
    """Area ids as the chart and the printable page show them: All areas first, then by total harm."""
    order = rows.groupby("area_id", sort=False)["harm"].sum().sort_values(ascending=False, kind="mergesort")
    return [ALL_ID] + [a for a in order.index.tolist() if a != ALL_ID]


def chart_png(report: HarmTrend, max_panels: int = 12) -> bytes:
    """Small multiples, one panel per area (all areas first, then by total harm): combined harm per period;
    red / blue bars = up / down against the previous period beyond chance, grey = within chance; a triangle
    above a bar = beyond chance against the same period a year earlier."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = report.rows
    order = area_order(rows)
    shown = order[:max_panels]
    cols = 3 if len(shown) > 4 else min(len(shown), 2)
    nrows = int(np.ceil(len(shown) / cols))
    width, height = 11.0, 2.3 * nrows + 0.8
    fig, axes = plt.subplots(nrows, cols, figsize=(width, height), dpi=90, squeeze=False)
    periods = report.meta["periods"]
    widest = 0.0  # the longest y tick label, for the margins below
    for ax, area in zip(axes.flat, shown):
        sub = rows[rows["area_id"] == area].set_index("period").reindex(periods)
        up = sub["harm_prev_beyond_chance"].eq(True) & (sub["harm_prev_rate_ratio"] > 1)
        down = sub["harm_prev_beyond_chance"].eq(True) & (sub["harm_prev_rate_ratio"] < 1)
        colour = np.where(up, "#b2182b", np.where(down, "#2166ac", "#9a9a9a"))
        x = np.arange(len(periods))
        ax.bar(x, sub["harm"].fillna(0).to_numpy(float), color=colour, width=0.8)
        yoy = sub["harm_yoy_beyond_chance"].eq(True).to_numpy()
        yoy_up = (sub["harm_yoy_rate_ratio"] > 1).to_numpy()
        top = float(np.nanmax(sub["harm"].to_numpy(float))) if len(sub) else 1.0
        for i in np.flatnonzero(yoy):
            ax.text(i, sub["harm"].iloc[i] + 0.02 * top, "▲" if yoy_up[i] else "▼", ha="center", va="bottom",
                    fontsize=7, color="#b2182b" if yoy_up[i] else "#2166ac")
        ax.set_ylim(0, top * 1.15 if top > 0 else 1)
        # y given: the title sits where automatic placement puts it with nothing above the axes, without
        # measuring every tick label to find that out
        ax.set_title(str(sub["area_name"].dropna().iloc[0]) if sub["area_name"].notna().any() else area, fontsize=9,
                     y=1.0)
        widest = max(widest, len(f"{top * 1.15:,.0f}"))
        step = max(1, int(np.ceil(len(periods) / 5)))
        ax.set_xticks(x[::step], [periods[i] for i in x[::step]], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    m = report.meta
    fig.suptitle(f"Combined harm per {m['by']} · {m['dataset']} · {m['preset'] or m['offences']} · weights "
                 f"{m['weights_table']}" + (f" · {len(order) - len(shown)} more areas in the CSV"
                                            if len(order) > len(shown) else ""), fontsize=10)
    fig.legend(handles=[Patch(color="#b2182b", label="up vs previous, beyond chance"),
                        Patch(color="#2166ac", label="down vs previous, beyond chance"),
                        Patch(color="#9a9a9a", label="within chance"),
                        Patch(color="white", label="▲▼ vs a year earlier, beyond chance")],
               loc="lower center", ncol=4, fontsize=8, frameon=False)
    _layout(fig, width, height, nrows, cols, widest)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _layout(fig, width: float, height: float, nrows: int, cols: int, label_chars: float) -> None:
    """Margins of the small multiples in inches, from the font sizes chart_png uses: y tick labels of
    ``label_chars`` characters at 7 pt left of each panel, the 9 pt title above it and the 7 pt period labels below
    it, the 10 pt heading at the top and the legend at the bottom. It places what ``tight_layout`` placed without
    measuring every tick label of every panel first (that measuring was half the chart's time: ~1 s for 12
    panels on the shared 2-core machine)."""
    label = (label_chars * 0.62 * 7 + 3.5 + 3.5) / 72 + 0.08  # digit ~0.62 em, tick 3.5 pt, pad 3.5 pt
    left, right = label + 0.05, 0.12
    top, bottom = 0.70, 0.62  # heading + a title; legend + period labels
    gap_x, gap_y = label + 0.3, 0.55  # a neighbour's y labels; period labels + a title
    axes_w = (width - left - right - (cols - 1) * gap_x) / cols
    axes_h = (height - top - bottom - (nrows - 1) * gap_y) / nrows
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=gap_x / axes_w if cols > 1 else 0.2, hspace=gap_y / axes_h if nrows > 1 else 0.2)
