"""Rolling-origin backtest of hot spot selection methods on H3 cells: would yesterday's map have pointed at
tomorrow's harm?

For every origin (a slice boundary), each method scores every domain cell from the training window only (the
``train_slices`` slices before the origin); the top cells covering 1 %, 2 % and 5 % of the domain area are
selected and scored on the next ``test_slices`` slice(s):

* hit rate     share of test-period offences inside the selection
* PAI          hit rate / area share (Chainey, Tompson & Uhlig 2008)
* harm PAI     share of test-period harm (CCHI days) inside the selection / area share
* PEI          hit rate / the best hit rate any selection of the same number of cells could have achieved in the
               test period (Hunt 2016; Chainey 2021) - 1 means perfect
* harm PEI     the same with harm

Methods (all from the training window; KDE and prospective need BNG x/y per event):

* ``harm_spots``        harm (CCHI days) summed over the training window
* ``prior_counts``      offence counts over the training window
* ``prior_period_harm`` harm in the last training slice only
* ``gistar``            Gi* z of training-window harm (k=1)
* ``kde`` / ``kde_<m>m`` quartic kernel density of training offences (counts) at cell centres, bandwidth
                        400 m by default (``kde_<m>m`` for another bandwidth)
* ``prospective``       Bowers, Johnson & Pease (2004): sum over offences within 400 m and the last 8 weeks
                        (2 months for month-only data) of 1/(1+d) x 1/(1+t), d in whole 25 m half-widths of
                        their 50 m grid, t in whole weeks (whole months for month-only data) before the origin
* ``forecast``          the service's forecast (``hotspots.ranking.forecast``): decayed harm over ALL slices
                        before the origin (not only the training window) shrunk towards the decayed count of all
                        records (``context``: every crime type and ASB; the events themselves when not given)

Baselines use the ``train_slices`` slices before each origin (``expanding=True``: every slice before it, as the
forecast does); origins start after ``train_slices`` slices either way.

Bootstrap intervals resample origins with replacement (percentile 95 % intervals): they express variation over
time, and origins are autocorrelated, so read them as optimistic. With fewer than ``MIN_RELIABLE_ORIGINS`` origins
they are flagged unreliable (``interval_reliable`` false): a percentile interval over 2-4 values is no interval.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from geodata.store import DataCannotAnswer
from hotspots.ranking.forecast import DAYS_PER_MONTH, DEFAULT_PARAMS, ForecastParams, blend, decay
from hotspots.stats.gistar import Domain, gistar_z, neighbour_matrix
from hotspots.stats.timeslices import Slices, cube, make_slices

Progress = Callable[[int, int, str], None]

METHODS = ("harm_spots", "prior_counts", "prior_period_harm", "gistar", "kde", "prospective", "forecast")
BASELINES = tuple(m for m in METHODS if m != "forecast")
MIN_RELIABLE_ORIGINS = 5
DEFAULT_TRAIN_SLICES = 12
METRICS = ("hit_rate", "pai", "harm_pai", "pei", "harm_pei")

CAVEATS = [
    "police.uk locations are snapped to a fixed set of anonymous points, which favours methods that re-use "
    "exactly the same cells (counts, harm spots) over smoothing methods (KDE).",
    "Month-only data: origins and test periods are whole months; prospective hotspotting loses its weekly "
    "time decay.",
    "Ties: many cells score 0; ties are broken by a fixed random order, so coverages beyond the cells with a "
    "positive score include arbitrary zero-score cells.",
    "Harm is zero-inflated and dominated by rare serious offences (a homicide is 5,475 days): harm PAI varies "
    "much more between origins than count PAI.",
    "Bootstrap intervals over origins ignore the autocorrelation between consecutive origins.",
]


@dataclass
class BacktestConfig:
    slice: str | int | None = None  # None: 1 month for month-only data, 14 days for dated data
    # 12 months (month-only) / 12 x 14 days = 24 weeks (dated); None: 12, or the longest window the data allow
    # (slices - test_slices) when they hold fewer, said in the result's caveats
    train_slices: int | None = DEFAULT_TRAIN_SLICES
    expanding: bool = False  # baselines on every slice before the origin instead of the last train_slices
    test_slices: int = 1
    step: int = 1  # slices between origins
    coverages: tuple[float, ...] = (0.01, 0.02, 0.05)
    methods: tuple[str, ...] = METHODS
    kde_bandwidth_m: float = 400.0
    prospective_radius_m: float = 400.0
    prospective_weeks: int = 8  # 2 months for month-only data
    prospective_unit_m: float = 25.0  # half of Bowers et al.'s 50 m grid width
    bootstrap: int = 2000
    seed: int = 0
    end: str | None = None
    curve_points: int = 201
    forecast_half_life_months: float = DEFAULT_PARAMS.half_life_months
    forecast_records_weight: float = DEFAULT_PARAMS.records_weight


@dataclass
class BacktestResult:
    """``per_origin``: origin, test_start, test_end, method, coverage, cells, area_share, hit_rate, pai,
    harm_share, harm_pai, pei, harm_pei, test_count, test_harm.
    ``summary``: method, coverage, n_origins, then <metric>, <metric>_lo, <metric>_hi for each metric (mean over
    origins and a 95 % bootstrap interval). ``curves``: method, area_share, harm_share (mean over origins of the
    share of test-period harm captured by the top cells covering area_share of the domain), incl. 'oracle'."""

    per_origin: pd.DataFrame
    summary: pd.DataFrame
    curves: pd.DataFrame
    config: dict
    slices: dict
    domain: dict
    events_used: int
    events_outside_domain: int
    caveats: list[str] = field(default_factory=lambda: list(CAVEATS))

    def table(self, metrics: tuple[str, ...] = ("hit_rate", "pai", "harm_pai", "pei")) -> str:
        """Markdown table of the summary (mean [95 % interval])."""
        head = "| method | coverage | " + " | ".join(metrics) + " |"
        lines = [head, "|" + "---|" * (2 + len(metrics))]
        for _, r in self.summary.iterrows():
            cells = [f"{r[m]:.3f} [{r[m + '_lo']:.3f}, {r[m + '_hi']:.3f}]" if m.endswith("rate") or "pei" in m
                     else f"{r[m]:.2f} [{r[m + '_lo']:.2f}, {r[m + '_hi']:.2f}]" for m in metrics]
            lines.append(f"| {r.method} | {r.coverage:.0%} | " + " | ".join(cells) + " |")
        if "interval_reliable" in self.summary and not self.summary["interval_reliable"].all():
            n = int(self.summary["n_origins"].min())
            lines.append(f"\nUnreliable intervals: {n} origin(s), fewer than {MIN_RELIABLE_ORIGINS}; a 95 % interval "
                         "over so few origins looks far more precise than it is.")
        return "\n".join(lines)

    def plot_capture(self, path: str | Path, max_area: float = 0.2, title: str | None = None) -> Path:
        """PNG of the harm-capture curve (share of test-period harm vs share of area) for each method."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
        for method, g in self.curves.groupby("method", sort=False):
            style = dict(color="black", linestyle="--", linewidth=1) if method == "oracle" else {}
            g = g[g.area_share <= max_area + 1e-12]
            ax.plot(100 * g.area_share, 100 * g.harm_share, label=method, **style)
        ax.plot([0, 100 * max_area], [0, 100 * max_area], color="grey", linestyle=":", linewidth=1, label="random")
        for c in self.config["coverages"]:
            ax.axvline(100 * c, color="lightgrey", linewidth=0.8, zorder=0)
        ax.set_xlabel("share of domain area selected (%)")
        ax.set_ylabel("share of next-period harm captured (%)")
        ax.set_xlim(0, 100 * max_area)
        ax.set_ylim(0, None)
        ax.set_title(title or f"Harm capture, mean over {self.per_origin.origin.nunique()} origins")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path


# ------------------------------------------------------------------------------------------------- kernels


def kernel_pairs(cell_xy: np.ndarray, point_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell index, point index, distance) for every cell centre-point pair closer than ``radius`` metres, sorted
    by cell, then point."""
    from scipy.spatial import cKDTree

    # sliding-midpoint trees build in half the time of median-split ones and find the same pairs (each distance
    # is computed from the two points alone, whatever the tree)
    tc, tp = cKDTree(cell_xy, balanced_tree=False), cKDTree(point_xy, balanced_tree=False)
    d = tc.sparse_distance_matrix(tp, radius, output_type="coo_matrix")
    rows, cols, dist = d.row, d.col, d.data
    # depending on the scipy version exact-zero distances may be dropped: add coincident pairs, then dedupe. Asked
    # from the points' side (a few thousand queries, not one per cell): points are distinct and cell centres
    # metres apart, so each coincident pair is found either way
    zd, zi = tc.query(point_xy, distance_upper_bound=1e-6)
    hit = np.isfinite(zd)
    rows = np.concatenate([rows, zi[hit]]).astype(np.int64)
    cols = np.concatenate([cols, np.flatnonzero(hit)]).astype(np.int64)
    dist = np.concatenate([dist, np.zeros(int(hit.sum()))])
    _, first = np.unique(rows * len(point_xy) + cols, return_index=True)
    return rows[first], cols[first], dist[first]


def quartic_matrix(cell_xy: np.ndarray, point_xy: np.ndarray, bandwidth: float,
                   pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> sp.csr_matrix:
    """K[i, j] = 3/(pi h^2) (1 - d^2/h^2)^2 for d < h (quartic / biweight kernel). ``pairs``: ``kernel_pairs`` of
    these points at radius ``bandwidth``, when already found."""
    rows, cols, dist = pairs if pairs is not None else kernel_pairs(cell_xy, point_xy, bandwidth)
    val = 3.0 / (np.pi * bandwidth**2) * (1 - (dist / bandwidth) ** 2) ** 2
    return sp.csr_matrix((val, (rows, cols)), shape=(len(cell_xy), len(point_xy)))


def bowers_matrix(cell_xy: np.ndarray, point_xy: np.ndarray, radius: float, unit: float,
                  pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> sp.csr_matrix:
    """B[i, j] = 1 / (1 + d) for points within radius, d = whole ``unit`` steps between point and cell centre.
    ``pairs``: ``kernel_pairs`` of these points at ``radius``, when already found."""
    rows, cols, dist = pairs if pairs is not None else kernel_pairs(cell_xy, point_xy, radius)
    val = 1.0 / (1.0 + np.floor(dist / unit))
    return sp.csr_matrix((val, (rows, cols)), shape=(len(cell_xy), len(point_xy)))


# -------------------------------------------------------------------------------------------------- scoring


def ranking(score: np.ndarray, tiebreak: np.ndarray, tie_order: np.ndarray | None = None) -> np.ndarray:
    """Cells by descending score, ties by ascending ``tiebreak`` (distinct values, e.g. a permutation): the order
    of ``np.lexsort((tiebreak, -score))``. ``tie_order`` (``np.argsort(tiebreak)``, the same for every score of a
    run) makes it one stable sort of the cells with a non-zero score instead of lexsort's two sorts of every cell:
    scores are mostly zero (cells with no offence, or none near them), and zeros need no sorting, only their place
    between the positive and the negative scores, in tiebreak order."""
    if tie_order is None:
        return np.lexsort((tiebreak, -score))
    s = -score[tie_order]  # the sort key, cells in tiebreak order
    nonzero = np.flatnonzero(s != 0)  # -0.0 == 0: a zero either way, as lexsort compares it
    ranked = nonzero[np.argsort(s[nonzero], kind="stable")]  # positive scores, then negative ones, then NaN
    n_pos = int(np.count_nonzero(s[nonzero] < 0))
    return tie_order[np.concatenate([ranked[:n_pos], np.flatnonzero(s == 0), ranked[n_pos:]])]


def select_and_score(score: np.ndarray, area: np.ndarray, tiebreak: np.ndarray, test_count: np.ndarray,
                     test_harm: np.ndarray, coverages, best_count: np.ndarray, best_harm: np.ndarray,
                     order: np.ndarray | None = None) -> list[dict]:
    """Metrics of the top cells covering each share of the area. ``order``: ``ranking(score, tiebreak)`` when
    already known."""
    order = ranking(score, tiebreak) if order is None else order
    return _coverage_rows(np.cumsum(area[order]) / area.sum(), np.cumsum(test_count[order]),
                          np.cumsum(test_harm[order]), test_count.sum(), test_harm.sum(), coverages, best_count,
                          best_harm)


def _coverage_rows(cum_area: np.ndarray, cum_count: np.ndarray, cum_harm: np.ndarray, n_tot, h_tot, coverages,
                   best_count: np.ndarray, best_harm: np.ndarray) -> list[dict]:
    """select_and_score from the ranked cumulative area share, test counts and test harm."""
    out = []
    for f in coverages:
        k = min(int(np.searchsorted(cum_area, f - 1e-12)) + 1, len(cum_area))
        a = cum_area[k - 1]
        hit = cum_count[k - 1] / n_tot if n_tot else np.nan
        hs = cum_harm[k - 1] / h_tot if h_tot else np.nan
        out.append({"coverage": f, "cells": k, "area_share": a, "hit_rate": hit, "pai": hit / a,
                    "harm_share": hs, "harm_pai": hs / a,
                    "pei": cum_count[k - 1] / best_count[k - 1] if best_count[k - 1] else np.nan,
                    "harm_pei": cum_harm[k - 1] / best_harm[k - 1] if best_harm[k - 1] else np.nan})
    return out


def capture_curve(score, area, tiebreak, test_harm, grid, order: np.ndarray | None = None) -> np.ndarray:
    order = ranking(score, tiebreak) if order is None else order
    return _curve(np.cumsum(area[order]) / area.sum(), np.cumsum(test_harm[order]), test_harm.sum(), grid)


def _curve(cum_area: np.ndarray, cum_harm: np.ndarray, h_tot, grid: np.ndarray) -> np.ndarray:
    """capture_curve from the ranked cumulative area share and test harm."""
    xa = np.concatenate([[0.0], cum_area])
    yh = np.concatenate([[0.0], cum_harm / h_tot]) if h_tot else np.zeros(len(xa))
    return np.interp(grid, xa, yh)


def bootstrap_summary(per_origin: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for (method, cov), g in per_origin.groupby(["method", "coverage"], sort=False):
        row = {"method": method, "coverage": cov, "n_origins": len(g),
               "interval_reliable": bool(len(g) >= MIN_RELIABLE_ORIGINS)}
        idx = rng.integers(0, len(g), size=(n_boot, len(g)))
        for m in METRICS:
            v = g[m].to_numpy(dtype=float)
            boots = np.nanmean(v[idx], axis=1)
            row[m] = float(np.nanmean(v))
            row[m + "_lo"], row[m + "_hi"] = (float(x) for x in np.nanpercentile(boots, [2.5, 97.5]))
        rows.append(row)
    return pd.DataFrame(rows)


def ratio_to_best(per_origin: pd.DataFrame, method: str = "forecast", metric: str = "harm_pai",
                  baselines: tuple[str, ...] | None = None, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per coverage: ``method``'s mean ``metric`` over origins / the best baseline's (the baseline with the
    highest mean at that coverage, chosen once on all origins), with a paired 95 % bootstrap interval (origins
    resampled together for both methods). ``baselines``: default every method in ``per_origin`` but ``method``."""
    rng = np.random.default_rng(seed)
    out = []
    for cov, g in per_origin.groupby("coverage", sort=True):
        wide = g.pivot_table(index="origin", columns="method", values=metric, aggfunc="first")
        if method not in wide:
            continue
        base = [b for b in (baselines or wide.columns) if b != method and b in wide]
        if not base:
            continue
        means = wide[base].mean()
        best = str(means.idxmax())
        a, b = wide[method].to_numpy(float), wide[best].to_numpy(float)
        idx = rng.integers(0, len(a), size=(max(n_boot, 1), len(a)))
        boots = np.nanmean(a[idx], axis=1) / np.nanmean(b[idx], axis=1)
        lo, hi = np.nanpercentile(boots, [2.5, 97.5])
        out.append({"coverage": float(cov), "metric": metric, "method": method, "best_baseline": best,
                    "method_mean": float(np.nanmean(a)), "baseline_mean": float(np.nanmean(b)),
                    "ratio": float(np.nanmean(a) / np.nanmean(b)), "ratio_lo": float(lo), "ratio_hi": float(hi),
                    "n_origins": int(len(a)), "interval_reliable": bool(len(a) >= MIN_RELIABLE_ORIGINS)})
    return pd.DataFrame(out)


def forecast_scores(harm: np.ndarray, records: np.ndarray, starts: pd.DatetimeIndex, s: int,
                    params: ForecastParams) -> np.ndarray:
    """The forecast's ranking score at origin ``s`` from (cells x slices) cubes: every slice before ``s``,
    weighted by 0.5 ** (age / half-life), age = months from the slice start to the origin (as the API dates a
    month-only record by its month start)."""
    age = (starts[s] - starts[:s]).days.to_numpy(dtype=float) / DAYS_PER_MONTH
    w = decay(age, params.half_life_months)
    return blend(harm[:, :s] @ w, records[:, :s] @ w, params)[0]


# ---------------------------------------------------------------------------------------------------- engine


def run_backtest(events: pd.DataFrame, domain: Domain, config: BacktestConfig | None = None, *,
                 cell_col: str = "cell", time_col: str = "occurred_from", precision_col: str | None = "precision",
                 harm_col: str = "harm", x_col: str = "x", y_col: str = "y",
                 context: pd.DataFrame | None = None, weights: sp.csr_matrix | None = None,
                 progress: Progress | None = None) -> BacktestResult:
    """Rolling-origin backtest. ``events``: one row per offence with its cell (at the domain's resolution), time,
    precision, harm (days) and BNG x/y (needed for KDE and prospective methods). ``context``: every record
    (any crime type and ASB) with ``cell_col`` and ``time_col``, for the forecast's all-record part; without it
    the forecast counts ``events``. ``weights``: the domain's k=1 neighbour matrix for ``gistar``, when the
    caller keeps one (``neighbour_matrix(domain.cells, 1)`` otherwise)."""
    cfg = config or BacktestConfig()
    for m in cfg.methods:
        if m not in METHODS and not re.fullmatch(r"kde_\d+m", m):
            raise ValueError(f"unknown method {m!r}; choose from {METHODS} or kde_<metres>m")
    cells = events[cell_col].to_numpy(dtype=np.uint64)
    idx, inside = domain.index_of(cells)
    ev = events.loc[inside]
    idx = idx[inside]
    precision = ev[precision_col] if precision_col and precision_col in ev else None
    sl: Slices = make_slices(ev[time_col], precision, cfg.slice, end=cfg.end)
    s_idx = sl.assign(ev[time_col])
    n, S = len(domain), len(sl)
    notes: list[str] = []
    if cfg.train_slices is None:
        train = min(DEFAULT_TRAIN_SLICES, S - cfg.test_slices)
        if train < 1:
            raise DataCannotAnswer(f"{S} slice(s) of {sl.label} in the data: need at least {1 + cfg.test_slices} "
                                   "for one origin")
        if train < DEFAULT_TRAIN_SLICES:
            notes.append(f"training window shortened to {train} slice(s) of {sl.label} (default "
                         f"{DEFAULT_TRAIN_SLICES}): the data hold only {S} slices, and {cfg.test_slices} must be "
                         "left for the test; this is the longest window the data allow")
        cfg = replace(cfg, train_slices=train)
    if S < cfg.train_slices + cfg.test_slices:
        raise DataCannotAnswer(f"{S} slices of {sl.label} in the data: need at least "
                               f"{cfg.train_slices + cfg.test_slices} (train_slices + test_slices)")
    counts = cube(idx, s_idx, n, S)
    harm = cube(idx, s_idx, n, S, ev[harm_col].to_numpy(dtype=float))
    area = domain.area_km2
    area_total = area.sum()
    tiebreak = np.random.default_rng(cfg.seed).permutation(n)
    tie_order = np.argsort(tiebreak)  # one stable sort per score ranks like lexsort((tiebreak, -score)): ranking()
    grid = np.linspace(0.0, 1.0, cfg.curve_points)
    monthly = sl.unit == "month"

    # spatial kernels on unique event points (police.uk has ~20k distinct snap points)
    need_xy = [m for m in cfg.methods if m.startswith("kde") or m == "prospective"]
    kernels: dict[str, sp.csr_matrix] = {}
    if need_xy:
        if progress:
            progress(0, 1, "building spatial kernels")
        xy = np.round(ev[[x_col, y_col]].to_numpy(dtype=float), 1)
        pts, p_idx = np.unique(xy, axis=0, return_inverse=True)
        p_idx = p_idx.ravel()
        cxy = domain.centres_bng
        pairs: dict[float, tuple] = {}  # cell-point pairs per radius: kde and prospective share 400 m by default
        for m in need_xy:
            r = cfg.prospective_radius_m if m == "prospective" else (
                cfg.kde_bandwidth_m if m == "kde" else float(m[4:-1]))
            if r not in pairs:
                pairs[r] = kernel_pairs(cxy, pts, r)
            if m == "prospective":
                kernels[m] = bowers_matrix(cxy, pts, r, cfg.prospective_unit_m, pairs=pairs[r])
            else:
                kernels[m] = quartic_matrix(cxy, pts, r, pairs=pairs[r])
        del pairs
        pt_counts = cube(p_idx, s_idx, len(pts), S)  # points x slices
        if "prospective" in cfg.methods:
            # time ticks: whole months (month-only) or whole weeks before the origin
            t_ev = pd.to_datetime(ev[time_col]).to_numpy(dtype="datetime64[ns]")
    w_gi = (weights if weights is not None else neighbour_matrix(domain.cells, 1)) if "gistar" in cfg.methods \
        else None
    f_params = ForecastParams(cfg.forecast_half_life_months, cfg.forecast_records_weight)
    if "forecast" in cfg.methods:
        if context is not None:
            c_idx, c_in = domain.index_of(context[cell_col].to_numpy(dtype=np.uint64))
            records = cube(np.where(c_in, c_idx, -1), sl.assign(context[time_col]), n, S)
        else:
            records = counts

    origins = list(range(cfg.train_slices, S - cfg.test_slices + 1, cfg.step))
    rows, curves = [], {m: [] for m in (*cfg.methods, "oracle")}
    for o_num, s in enumerate(origins):
        if progress:
            progress(o_num, len(origins), f"origin {sl.labels()[s]}")
        train = slice(0 if cfg.expanding else s - cfg.train_slices, s)
        test = slice(s, s + cfg.test_slices)
        t_count = counts[:, test].sum(axis=1)
        t_harm = harm[:, test].sum(axis=1)
        if t_count.sum() == 0:
            continue
        best_count = np.cumsum(np.sort(t_count)[::-1])
        best_harm = np.cumsum(np.sort(t_harm)[::-1])
        scores: dict[str, np.ndarray] = {}
        sums: dict[str, np.ndarray] = {}  # training-window sums some methods share (harm: harm_spots and gistar)

        def train_sum(name: str, values: np.ndarray) -> np.ndarray:
            if name not in sums:
                sums[name] = values[:, train].sum(axis=1)
            return sums[name]

        for m in cfg.methods:
            if m == "harm_spots":
                scores[m] = train_sum("harm", harm)
            elif m == "prior_counts":
                scores[m] = train_sum("counts", counts)
            elif m == "prior_period_harm":
                scores[m] = harm[:, s - 1]
            elif m == "gistar":
                scores[m] = gistar_z(train_sum("harm", harm), w_gi)[1]
            elif m.startswith("kde"):
                scores[m] = kernels[m] @ train_sum("points", pt_counts)
            elif m == "prospective":
                origin_t = sl.starts[s]
                if monthly:
                    back = np.arange(1, min(cfg.prospective_weeks // 4, s) + 1)  # months before the origin
                    w_pts = sum(pt_counts[:, s - b] / b for b in back)  # t = b - 1 whole months -> 1/(1+t) = 1/b
                else:
                    lo = origin_t - pd.Timedelta(weeks=cfg.prospective_weeks)
                    sel = (t_ev >= lo.to_datetime64()) & (t_ev < origin_t.to_datetime64())
                    weeks = ((origin_t.to_datetime64() - t_ev[sel]) // np.timedelta64(7, "D")).astype(float)
                    w_pts = np.bincount(p_idx[sel], weights=1.0 / (1.0 + weeks), minlength=kernels[m].shape[1])
                scores[m] = kernels[m] @ w_pts
            elif m == "forecast":
                scores[m] = forecast_scores(harm, records, sl.starts, s, f_params)
        scores["oracle"] = t_harm
        base = {"origin": sl.labels()[s], "test_start": str(sl.starts[s].date()),
                "test_end": str(sl.ends[s + cfg.test_slices - 1].date()),
                "test_count": int(t_count.sum()), "test_harm": float(t_harm.sum())}
        n_tot, h_tot = t_count.sum(), t_harm.sum()
        for m, sc in scores.items():  # select_and_score and capture_curve, sharing one ranking and its sums
            order = ranking(sc, tiebreak, tie_order)
            cum_area = np.cumsum(area[order]) / area_total
            cum_harm = np.cumsum(t_harm[order])
            if m != "oracle":
                for r in _coverage_rows(cum_area, np.cumsum(t_count[order]), cum_harm, n_tot, h_tot, cfg.coverages,
                                        best_count, best_harm):
                    rows.append({**base, "method": m, **r})
            curves[m].append(_curve(cum_area, cum_harm, h_tot, grid))
    if progress:
        progress(len(origins), len(origins), "bootstrapping")
    per_origin = pd.DataFrame(rows)
    if per_origin.empty:
        raise ValueError("no origin had any test-period offences")
    cols = ["origin", "test_start", "test_end", "method", "coverage", "cells", "area_share", "hit_rate", "pai",
            "harm_share", "harm_pai", "pei", "harm_pei", "test_count", "test_harm"]
    per_origin = per_origin[cols]
    summary = bootstrap_summary(per_origin, cfg.bootstrap, cfg.seed)
    curve_frame = pd.concat([pd.DataFrame({"method": m, "area_share": grid, "harm_share": np.mean(v, axis=0)})
                             for m, v in curves.items() if v], ignore_index=True)
    conf = asdict(cfg)
    conf["coverages"] = list(cfg.coverages)
    conf["methods"] = list(cfg.methods)
    conf["prospective_time_unit"] = "month" if monthly else "week"
    n_orig = int(per_origin["origin"].nunique())
    if n_orig < MIN_RELIABLE_ORIGINS:
        notes.append(f"only {n_orig} origin(s): the intervals are flagged unreliable (interval_reliable false; "
                     f"{MIN_RELIABLE_ORIGINS} or more origins are needed before an interval over origins means much)")
    return BacktestResult(per_origin=per_origin, summary=summary, curves=curve_frame, config=conf,
                          slices=sl.describe(), domain=domain.describe(), events_used=int((s_idx >= 0).sum()),
                          events_outside_domain=int((~inside).sum()), caveats=[*notes, *CAVEATS])
