"""Did the patrols work?  Matched difference-in-differences, and the Southend 48-hour check.

1. **Difference-in-differences.** Each patrolled spot is matched to ``controls_per_spot`` comparison cells in
   the same area (district) that were not patrolled and do not touch a patrolled spot (``buffer_rings`` H3
   rings excluded, against displacement and diffusion of benefit), choosing the cells whose harm in the before
   window is closest (ties by count), without replacement.  Per pair
   ``d = (treated after - treated before) - mean(control after - control before)``; the effect is the mean
   of ``d`` over pairs, with a 95 % interval from a pair bootstrap (percentile) and a t interval
   (mean +- t * sd / sqrt(n)).  Harm and counts are rates per 28 days, so windows of unequal length compare.
2. **48-hour check** (after the Southend Op Ark evaluation): harm per hour in the 48 hours after each patrol
   ends vs all other hours of the period, in the patrolled spots, with an exact Poisson interval on the count
   rate ratio.  It needs offence times; data.police.uk records are month-only and cannot support it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import h3
import numpy as np
import pandas as pd
from scipy import stats

from geodata.areas import choose_layer, layer_cells
from geodata.cells import AREA_RESOLUTION, cell_centres, parents, to_hex, unique_cells
from geodata.harm import WeightsTable
from geodata.store import DataCannotAnswer, Store
from hotspots.ranking.harmspots import harm_spots
from hotspots.ranking.plan import offence_selection
from hotspots.ranking.presets import select_keys
from hotspots.ranking.query import HotspotQuery, period_end_exclusive, period_start
from hotspots.patrol.tasking import assign_areas, cell_of_spot

RATE_DAYS = 28
MONTH_ONLY_48H = ("not supported: data.police.uk records are month-only - an offence's time is known only to the "
                  "month, so whether it happened in the 48 hours after a patrol cannot be known. The 48-hour "
                  "analysis needs force data with offence dates and times.")
DAY_ONLY_48H = ("not supported: records carry dates but no times of day, so the 48 hours after a patrol cannot be "
                "separated from other hours")


class EvaluationError(ValueError):
    """Not enough to evaluate (no patrolled spots, windows outside the data...)."""


@dataclass
class Effect:
    measure: str
    treated_before: float
    treated_after: float
    control_before: float
    control_after: float
    did: float
    ci_bootstrap: tuple[float, float]
    ci_t: tuple[float, float]
    se: float
    relative: float | None  # did / treated_before

    def to_dict(self) -> dict:
        r = lambda v: round(float(v), 4)  # noqa: E731
        return {"measure": self.measure, "per": f"spot per {RATE_DAYS} days",
                "treated_before": r(self.treated_before), "treated_after": r(self.treated_after),
                "control_before": r(self.control_before), "control_after": r(self.control_after),
                "did": r(self.did), "ci95_bootstrap": [r(self.ci_bootstrap[0]), r(self.ci_bootstrap[1])],
                "ci95_t": [r(self.ci_t[0]), r(self.ci_t[1])], "se": r(self.se),
                "relative_to_treated_before": r(self.relative) if self.relative is not None else None}


@dataclass
class Evaluation:
    dataset: str
    before: tuple[date, date]  # inclusive from, exclusive to
    after: tuple[date, date]
    effects: dict[str, Effect]
    pairs: pd.DataFrame
    balance: dict
    window_48h: dict
    n_treated: int
    n_unmatched: int
    caveats: list[str] = field(default_factory=list)

    def meta(self) -> dict:
        f = lambda w: {"from": w[0].isoformat(), "to": (w[1] - timedelta(days=1)).isoformat()}  # noqa: E731
        return {"dataset": self.dataset, "before": f(self.before), "after": f(self.after),
                "treated_spots": self.n_treated, "unmatched_spots": self.n_unmatched,
                "difference_in_differences": {k: v.to_dict() for k, v in self.effects.items()},
                "balance": self.balance, "window_48h": self.window_48h, "caveats": self.caveats,
                "method": __doc__.split("\n\n", 1)[1].strip()}


def window_bounds(text_from: str, text_to: str) -> tuple[date, date]:
    return period_start(text_from).date(), period_end_exclusive(text_to).date()


def before_window(after_from: str, after_to: str, before_from: str | None, before_to: str | None) -> tuple[str, str]:
    """The before window when one end or none is given: it ends the day before the after window (or at
    ``before_to``) and lasts as long as the after window (or starts at ``before_from``), as ISO days."""
    a_start, a_end = window_bounds(after_from, after_to)
    end = period_end_exclusive(before_to).date() if before_to else a_start
    start = period_start(before_from).date() if before_from else end - (a_end - a_start)
    return start.isoformat(), (end - timedelta(days=1)).isoformat()


def _as_text(d: date) -> str:
    return d.isoformat()


def _window_outcomes(store: Store, q: HotspotQuery, weights: WeightsTable, win: tuple[date, date]) -> pd.DataFrame:
    last = win[1] - timedelta(days=1)
    month_like = win[0].day == 1 and (last + timedelta(days=1)).day == 1
    f, t = (win[0].strftime("%Y-%m"), last.strftime("%Y-%m")) if month_like else (_as_text(win[0]), _as_text(last))
    res = harm_spots(store, q.model_copy(update={"date_from": f, "date_to": t, "top": 1}), weights)
    scale = RATE_DAYS / (win[1] - win[0]).days
    return pd.DataFrame({"cell": res.cells["cell"].to_numpy(np.uint64), "harm": res.cells["harm"].to_numpy(float) * scale,
                         "count": res.cells["count"].to_numpy(float) * scale})


def _domain(store: Store, layer: str, res: int) -> pd.DataFrame:
    ac = layer_cells(store, layer, "comparison spots are matched within its areas")
    if res == AREA_RESOLUTION:
        return pd.DataFrame({"cell": ac["h3_10"].to_numpy(np.uint64), "area": ac["feature_id"].to_numpy()})
    if res > AREA_RESOLUTION:
        raise EvaluationError("spots finer than H3 resolution 10 are not supported by the evaluation")
    cells = unique_cells(parents(ac["h3_10"].to_numpy(np.uint64), res))
    return assign_areas(store, layer, cells, res).rename(columns={"feature_id": "area"}).dropna()


def evaluate(store: Store, q: HotspotQuery, weights: WeightsTable, spot_ids: list[str],
             before: tuple[str, str] | None, after: tuple[str, str], area_layer: str = "districts",
             controls_per_spot: int = 2, buffer_rings: int = 1, n_boot: int = 2000, seed: int = 0,
             patrol_log: pd.DataFrame | None = None) -> Evaluation:
    """Matched DiD for ``spot_ids`` (before default: the same number of days just before ``after``)."""
    if not spot_ids:
        raise EvaluationError("no patrolled spots to evaluate")
    treated_cells = unique_cells(np.array([cell_of_spot(s) for s in spot_ids], dtype=np.uint64))
    resolutions = {h3.get_resolution(h3.int_to_str(int(c))) for c in treated_cells}
    if len(resolutions) != 1:
        raise EvaluationError(f"spots mix H3 resolutions {sorted(resolutions)}")
    res = resolutions.pop()
    q = q.model_copy(update={"resolution": res})
    a_win = window_bounds(*after)
    b_win = window_bounds(*before) if before else (a_win[0] - (a_win[1] - a_win[0]), a_win[0])
    if b_win[1] > a_win[0]:
        raise EvaluationError("the before window must end on or before the start of the after window")
    first, last = store.query_df("SELECT min(occurred_from) AS f, max(occurred_to) AS l FROM offences WHERE dataset = ?",
                                 [q.dataset]).iloc[0]
    if pd.isna(first) or b_win[0] < pd.Timestamp(first).date() or a_win[1] > pd.Timestamp(last).ceil("D").date():
        raise DataCannotAnswer(f"windows {b_win[0]}..{a_win[1] - timedelta(days=1)} are not inside the data "
                              f"({pd.Timestamp(first).date() if not pd.isna(first) else '-'}.."
                              f"{(pd.Timestamp(last).ceil('D') - pd.Timedelta(days=1)).date() if not pd.isna(last) else '-'})")

    # 'districts' on a dataset no loaded layer covers: its automatic districts (geodata.areas); NotStored: 404
    area_layer = choose_layer(store, q.dataset, area_layer).stored
    dom = _domain(store, area_layer, res)
    for name, win in (("b", b_win), ("a", a_win)):
        out = _window_outcomes(store, q, weights, win).rename(columns={"harm": f"harm_{name}", "count": f"count_{name}"})
        dom = dom.merge(out, on="cell", how="left")
    dom = dom.fillna({"harm_b": 0.0, "harm_a": 0.0, "count_b": 0.0, "count_a": 0.0})
    is_t = dom["cell"].isin(treated_cells)
    near = {int(h3.str_to_int(n)) for c in treated_cells for n in h3.grid_disk(h3.int_to_str(int(c)), buffer_rings)}
    pool = dom[~dom["cell"].isin(np.array(sorted(near), dtype=np.uint64))].copy()
    treated = dom[is_t].sort_values("harm_b", ascending=False, kind="mergesort")
    caveats: list[str] = []
    outside = len(treated_cells) - len(treated)
    if outside:
        caveats.append(f"{outside} patrolled spots lie outside the '{area_layer}' areas and are left out")

    pairs, used = [], np.zeros(len(pool), dtype=bool)
    pool_area = pool["area"].to_numpy()
    pool_hb, pool_cb = pool["harm_b"].to_numpy(float), pool["count_b"].to_numpy(float)
    unmatched = 0
    for t in treated.itertuples(index=False):  # one loop step per patrolled spot (tens), not per offence
        ok = (pool_area == t.area) & ~used
        if ok.sum() < controls_per_spot:
            unmatched += 1
            continue
        idx = np.flatnonzero(ok)
        dist = np.lexsort((np.abs(pool_cb[idx] - t.count_b), np.abs(pool_hb[idx] - t.harm_b)))
        pick = idx[dist[:controls_per_spot]]
        used[pick] = True
        c = pool.iloc[pick]
        pairs.append({"spot_id": "HS-" + format(int(t.cell), "x"), "area": t.area, "treated_cell": int(t.cell),
                      "t_harm_b": t.harm_b, "t_harm_a": t.harm_a, "t_count_b": t.count_b, "t_count_a": t.count_a,
                      "c_harm_b": c["harm_b"].mean(), "c_harm_a": c["harm_a"].mean(),
                      "c_count_b": c["count_b"].mean(), "c_count_a": c["count_a"].mean(),
                      "controls": ";".join(format(int(x), "x") for x in c["cell"])})
    if unmatched:
        caveats.append(f"{unmatched} patrolled spots had fewer than {controls_per_spot} eligible comparison cells "
                       "in their area and are left out")
    if not pairs:
        raise DataCannotAnswer("no patrolled spot could be matched to comparison cells")
    pf = pd.DataFrame(pairs)
    rng = np.random.default_rng(seed)
    boot_idx = rng.integers(0, len(pf), size=(n_boot, len(pf)))
    effects = {m: _effect(pf, m, boot_idx) for m in ("harm", "count")}
    balance = {"treated_mean_harm_before": round(float(pf["t_harm_b"].mean()), 4),
               "control_mean_harm_before": round(float(pf["c_harm_b"].mean()), 4),
               "standardised_difference_harm": _std_diff(pf["t_harm_b"], pf["c_harm_b"]),
               "treated_mean_count_before": round(float(pf["t_count_b"].mean()), 4),
               "control_mean_count_before": round(float(pf["c_count_b"].mean()), 4)}
    if abs(balance["standardised_difference_harm"] or 0) > 0.25:
        caveats.append("treated and comparison spots differ in prior harm by more than 0.25 SD: few similar "
                       "cells in the same area; read the effect with care (regression to the mean)")
    if len(pf) < 10:
        caveats.append(f"only {len(pf)} matched spots: intervals are wide and the bootstrap is rough")
    w48 = window_48h(store, q, weights, patrol_log, a_win) if patrol_log is not None else \
        {"supported": None, "statement": "no patrol log given"}
    return Evaluation(q.dataset, b_win, a_win, effects, pf, balance, w48, len(treated), unmatched, caveats)


def _effect(pf: pd.DataFrame, m: str, boot_idx: np.ndarray) -> Effect:
    d = ((pf[f"t_{m}_a"] - pf[f"t_{m}_b"]) - (pf[f"c_{m}_a"] - pf[f"c_{m}_b"])).to_numpy(float)
    n = len(d)
    did = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    tq = stats.t.ppf(0.975, n - 1) if n > 1 else float("nan")
    boots = d[boot_idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    tb = float(pf[f"t_{m}_b"].mean())
    return Effect(m, tb, float(pf[f"t_{m}_a"].mean()), float(pf[f"c_{m}_b"].mean()), float(pf[f"c_{m}_a"].mean()),
                  did, (float(lo), float(hi)), (did - tq * se, did + tq * se), se, did / tb if tb else None)


def _std_diff(a: pd.Series, b: pd.Series) -> float | None:
    s = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if len(a) > 1 else 0.0
    return round(float((a.mean() - b.mean()) / s), 4) if s > 0 else None


def window_48h(store: Store, q: HotspotQuery, weights: WeightsTable, patrol_log: pd.DataFrame,
               win: tuple[date, date], hours: int = 48) -> dict:
    """Harm per hour in the ``hours`` after each patrol ends vs the other hours, in patrolled spots."""
    precisions = set(store.query_df("SELECT DISTINCT precision FROM offences WHERE dataset = ? AND occurred_from >= ? "
                                    "AND occurred_to <= ?", [q.dataset, win[0], win[1]])["precision"].dropna())
    if "minute" not in precisions:
        return {"supported": False, "statement": MONTH_ONLY_48H if precisions <= {"month"} else DAY_ONLY_48H,
                "time_precision": sorted(precisions)}
    start, end = pd.Timestamp(win[0]), pd.Timestamp(win[1])
    log = patrol_log.copy()
    log["cell"] = [np.uint64(cell_of_spot(s)) for s in log["spot_id"]]
    log["end_at"] = pd.to_datetime(log["end_at"])
    log = log[(log["end_at"] >= start - pd.Timedelta(hours=hours)) & (log["end_at"] < end)]
    if log.empty:
        return {"supported": True, "statement": "no patrols ended in the period", "time_precision": sorted(precisions)}
    cells = unique_cells(log["cell"].to_numpy(np.uint64))
    res = h3.get_resolution(h3.int_to_str(int(cells[0])))
    table = store.weights_table(q.weights) if q.weights else weights
    _, groups, cats = offence_selection(q)
    keys = store.key_weights(table)
    kw = keys[select_keys(keys, groups, cats, q.include_asb)][["offence_key", "days"]]
    cur = store.cursor()
    try:
        cur.register("sel", pd.DataFrame({"cell": cells}))
        cur.register("kw", kw)
        off = cur.execute(f"""SELECT o.h3_{res} AS cell, o.occurred_from AS t, kw.days AS harm FROM offences o
                              JOIN kw ON kw.offence_key = o.offence_key
                              WHERE o.dataset = ? AND o.precision = 'minute' AND o.occurred_from >= ?
                                AND o.occurred_from < ? AND o.h3_{res} IN (SELECT cell FROM sel)""",
                          [q.dataset, start.to_pydatetime(), end.to_pydatetime()]).df()
    finally:
        cur.close()
    win_td = pd.Timedelta(hours=hours)
    # covered hours per cell: union of [end, end + 48h) clipped to the period, from sorted patrol ends
    ends = log[["cell", "end_at"]].sort_values(["cell", "end_at"])
    nxt = ends.groupby("cell")["end_at"].shift(-1).fillna(end + win_td)
    s = ends["end_at"].clip(lower=start)
    e = np.minimum(np.minimum(ends["end_at"] + win_td, nxt.clip(lower=start)), end)
    covered_h = float(((e - s).clip(lower=pd.Timedelta(0))).dt.total_seconds().sum() / 3600)
    total_h = float(len(cells) * (end - start).total_seconds() / 3600)
    if len(off):
        off = off.sort_values("t")
        off["cell"] = off["cell"].astype(np.uint64)
        m = pd.merge_asof(off, ends.rename(columns={"end_at": "last_end"}).sort_values("last_end"),
                          left_on="t", right_on="last_end", by="cell", direction="backward")
        inside = (m["t"] - m["last_end"] < win_td).fillna(False).to_numpy(bool)
        harm_in, harm_out = float(m.loc[inside, "harm"].sum()), float(m.loc[~inside, "harm"].sum())
        n_in, n_out = int(inside.sum()), int((~inside).sum())
    else:
        harm_in = harm_out = 0.0
        n_in = n_out = 0
    other_h = total_h - covered_h
    out = {"supported": True, "hours": hours, "spots": int(len(cells)), "patrols": int(len(log)),
           "hours_after_patrol": round(covered_h, 2), "hours_other": round(other_h, 2),
           "harm_after_patrol": round(harm_in, 3), "harm_other": round(harm_out, 3),
           "count_after_patrol": n_in, "count_other": n_out, "time_precision": sorted(precisions),
           "statement": f"offences in the {hours} h after a patrol ended vs all other hours, patrolled spots only"}
    if covered_h > 0 and other_h > 0:
        rate_in, rate_out = harm_in / covered_h, harm_out / other_h
        out["harm_per_hour_after_patrol"] = round(rate_in, 5)
        out["harm_per_hour_other"] = round(rate_out, 5)
        out["harm_rate_ratio"] = round(rate_in / rate_out, 4) if rate_out > 0 else None
        n = n_in + n_out
        if n > 0:
            lo = stats.beta.ppf(0.025, n_in, n_out + 1) if n_in > 0 else 0.0
            hi = stats.beta.ppf(0.975, n_in + 1, n_out) if n_out > 0 else 1.0
            k = other_h / covered_h
            rr = lambda p: p / (1 - p) * k if p < 1 else float("inf")  # noqa: E731
            out["count_rate_ratio"] = round((n_in / covered_h) / (n_out / other_h), 4) if n_out else None
            out["count_rate_ratio_ci95"] = [round(rr(lo), 4), round(rr(hi), 4) if np.isfinite(rr(hi)) else None]
    return out


def spots_patrolled(log: pd.DataFrame, start: date, end_exclusive: date, min_visits: int = 1) -> list[str]:
    """Spot ids with at least ``min_visits`` patrols starting in the window."""
    if log.empty:
        return []
    t = pd.to_datetime(log["start_at"])
    sel = log[(t >= pd.Timestamp(start)) & (t < pd.Timestamp(end_exclusive))]
    counts = sel["spot_id"].value_counts()
    return sorted(counts[counts >= min_visits].index.tolist())


def centres(cells: np.ndarray) -> pd.DataFrame:
    lat, lon = cell_centres(cells)
    return pd.DataFrame({"cell": cells, "h3": to_hex(cells), "lat": lat, "lon": lon})


