"""Emerging hot spot analysis (ESRI's Emerging Hot Spot Analysis classes) on consecutive time slices.

For each slice, Gi* (binary k-ring weights, self included) is computed over every domain cell, two-sided, with
Benjamini-Hochberg FDR within the slice; a bin is a *hot* (*cold*) bin when q <= q_level and z > 0 (z < 0).
A Mann-Kendall trend test on each cell's series of Gi* z-scores gives the intensity trend. Each cell then gets
one ESRI pattern (ArcGIS Pro "How Emerging Hot Spot Analysis works"):

=============== =====================================================================================
new             hot in the final slice, never hot before
consecutive     a single uninterrupted run of >= 2 hot bins ending in the final slice, never hot before
                the run, < 90 % of slices hot
intensifying    hot in >= 90 % of slices including the final one, z trend significantly increasing
persistent      hot in >= 90 % of slices including the final one, no significant z trend
diminishing     hot in >= 90 % of slices including the final one, z trend significantly decreasing
sporadic        hot in the final slice, < 90 % hot, on-and-off hot before, never cold
oscillating     hot in the final slice, < 90 % hot, cold in at least one earlier slice
historical      hot in >= 90 % of slices but not in the final slice
no_pattern      none of the above
=============== =====================================================================================

Cold patterns (``new_cold`` ...) are the mirror image. Where ESRI's prose leaves overlaps, this module uses the
precedence documented in docs/statistics.md (oscillating before new/consecutive/sporadic; historical for a
>= 90 % location whose final slice is not hot).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from geodata.cells import unique_cells
from geodata.store import DataCannotAnswer
from hotspots.stats.gistar import Domain, apply_transform, bh_qvalues, domain_from_hull, gistar_z, neighbour_matrix
from hotspots.stats.timeslices import Slices, cube, make_slices

HOT_PATTERNS = ("new", "consecutive", "intensifying", "persistent", "diminishing", "sporadic", "oscillating",
                "historical")
PATTERNS = (*HOT_PATTERNS, *(f"{p}_cold" for p in HOT_PATTERNS), "no_pattern")

CAVEATS = [
    "Gi* is computed per slice (spatial neighbours only); ESRI also offers a space-time neighbourhood "
    "(previous slices as neighbours), which is not used here.",
    "Fewer than 10 slices make the Mann-Kendall trend and the 90 % rule unstable (ESRI recommends >= 10).",
    "Month-only data (police.uk) are sliced by calendar month; snapped locations apply as for Gi*.",
    "Per-slice FDR controls false hot bins within each slice, not across the whole space-time cube.",
]


# ------------------------------------------------------------------------------------------------ trend test


def mann_kendall(x: np.ndarray, chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised Mann-Kendall test on each row of ``x`` (n, T): S, z (continuity-corrected, tie-corrected
    variance), two-sided p and Kendall's tau (tau-a = S / (T(T-1)/2)), as in pymannkendall.original_test."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    n, t = x.shape
    i, j = np.triu_indices(t, 1)
    s = np.empty(n)
    for lo in range(0, n, chunk):
        blk = x[lo:lo + chunk]
        s[lo:lo + chunk] = np.sign(blk[:, j] - blk[:, i]).sum(axis=1)
    # tie correction: sum over tie groups of g(g-1)(2g+5)
    xs = np.sort(x, axis=1)
    new_run = np.ones_like(xs, dtype=bool)
    new_run[:, 1:] = xs[:, 1:] != xs[:, :-1]
    run_id = np.cumsum(new_run.ravel()) - 1
    sizes = np.bincount(run_id).astype(float)
    run_row = np.flatnonzero(new_run.ravel()) // t
    ties = np.bincount(run_row, weights=sizes * (sizes - 1) * (2 * sizes + 5), minlength=n)
    var = (t * (t - 1) * (2 * t + 5) - ties) / 18.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, (s - 1) / np.sqrt(var), np.where(s < 0, (s + 1) / np.sqrt(var), 0.0))
    z = np.where(np.isfinite(z), z, 0.0)
    p = 2 * stats.norm.sf(np.abs(z))
    tau = s / (t * (t - 1) / 2) if t > 1 else np.zeros(n)
    return s, z, p, tau


# ---------------------------------------------------------------------------------------------- classification


def _trailing_run(b: np.ndarray) -> np.ndarray:
    """Length of the run of True at the end of each row."""
    t = b.shape[1]
    rev = ~b[:, ::-1]
    has_false = rev.any(axis=1)
    return np.where(has_false, rev.argmax(axis=1), t)


def _patterns_one_side(hot: np.ndarray, cold: np.ndarray, up: np.ndarray, down: np.ndarray,
                       threshold: float = 0.9) -> np.ndarray:
    n, t = hot.shape
    out = np.full(n, "", dtype=object)
    if t == 0:
        return out
    final = hot[:, -1]
    share = hot.sum(axis=1) / t
    run = _trailing_run(hot)
    before_run = np.arange(t)[None, :] < (t - run)[:, None]
    prior_hot = (hot & before_run).any(axis=1)
    prior_cold = (cold & before_run).any(axis=1)
    most = share >= threshold
    out[most & final & up] = "intensifying"
    out[most & final & down] = "diminishing"
    out[most & final & ~up & ~down] = "persistent"
    out[most & ~final] = "historical"
    few = final & ~most
    out[few & prior_cold] = "oscillating"
    rest = few & ~prior_cold
    out[rest & ~prior_hot & (run == 1)] = "new"
    out[rest & ~prior_hot & (run >= 2)] = "consecutive"
    out[rest & prior_hot] = "sporadic"
    return out


def classify_emerging(hot: np.ndarray, cold: np.ndarray, trend_z: np.ndarray, trend_p: np.ndarray,
                      trend_alpha: float = 0.05, threshold: float = 0.9) -> np.ndarray:
    """ESRI pattern per row from (n, T) boolean hot/cold bins and the Mann-Kendall trend of the Gi* z series."""
    hot = np.atleast_2d(np.asarray(hot, dtype=bool))
    cold = np.atleast_2d(np.asarray(cold, dtype=bool))
    sig = np.asarray(trend_p) <= trend_alpha
    up = sig & (np.asarray(trend_z) > 0)
    down = sig & (np.asarray(trend_z) < 0)
    hot_pat = _patterns_one_side(hot, cold, up, down, threshold)
    # cold side: mirror image (an intensifying cold spot has z trending down)
    cold_pat = _patterns_one_side(cold, hot, down, up, threshold)
    out = np.where(hot_pat != "", hot_pat, np.where(cold_pat != "", np.char.add(cold_pat.astype(str), "_cold"),
                                                    "no_pattern"))
    return out.astype(object)


# ---------------------------------------------------------------------------------------------------- engine


MAX_CUBE_CELLS = 60_000_000  # cells x slices held dense (about 0.5 GB per float64 copy)


@dataclass
class EmergingResult:
    """``cells`` columns: cell, pattern, trend_z, trend_p, tau (Mann-Kendall on the Gi* z series), n_hot, n_cold,
    share_hot, final_z, final_q, total (value summed over all slices). ``z``: (cells x slices) Gi* z matrix."""

    cells: pd.DataFrame
    slices: dict
    slice_labels: list[str]
    domain: dict
    k: int
    q_level: float
    trend_alpha: float
    value: str
    transform_note: str
    z: np.ndarray = field(repr=False, default=None)
    caveats: list[str] = field(default_factory=lambda: list(CAVEATS))

    def summary(self) -> dict:
        return {"slices": self.slices, "domain": self.domain, "k": self.k, "q_level": self.q_level,
                "trend_alpha": self.trend_alpha, "value": self.value, "transform_note": self.transform_note,
                "patterns": {str(a): int(b) for a, b in self.cells["pattern"].value_counts().items()},
                "caveats": self.caveats}


def emerging_from_cube(values: np.ndarray, domain: Domain, *, k: int = 1, q_level: float = 0.05,
                       trend_alpha: float = 0.05, weights: sp.csr_matrix | None = None,
                       threshold: float = 0.9) -> tuple[pd.DataFrame, np.ndarray]:
    """Patterns (frame as in :class:`EmergingResult`) and the Gi* z matrix from a (domain cells x slices) cube
    of values (already transformed if wanted)."""
    values = np.asarray(values, dtype=float)
    n, t = values.shape
    if n != len(domain):
        raise ValueError("cube rows must match the domain cells")
    w = weights if weights is not None else neighbour_matrix(domain.cells, k)
    _, z = gistar_z(values, w)
    p = 2 * stats.norm.sf(np.abs(z))
    q = np.column_stack([bh_qvalues(p[:, s]) for s in range(t)]) if t else p
    sig = q <= q_level
    hot, cold = sig & (z > 0), sig & (z < 0)
    _, tz, tp, tau = mann_kendall(z)
    pattern = classify_emerging(hot, cold, tz, tp, trend_alpha, threshold)
    return pd.DataFrame({"cell": domain.cells, "pattern": pattern, "trend_z": tz, "trend_p": tp, "tau": tau,
                         "n_hot": hot.sum(axis=1), "n_cold": cold.sum(axis=1), "share_hot": hot.mean(axis=1),
                         "final_z": z[:, -1], "final_q": q[:, -1], "total": values.sum(axis=1)}), z


def emerging_hotspots(events: pd.DataFrame, domain: Domain | None = None, *, cell_col: str = "cell",
                      time_col: str = "occurred_from", value_col: str | None = None,
                      precision_col: str | None = "precision", slice: str | int | None = None,
                      n_slices: int | None = None, end=None, start=None, k: int = 1, q_level: float = 0.05,
                      trend_alpha: float = 0.05, transform: str | None = None,
                      weights: sp.csr_matrix | None = None) -> EmergingResult:
    """Emerging hot spots from events (one row per offence: cell at the domain's resolution, time, optional value
    such as harm days; counts when ``value_col`` is None). Slices: 1 month for month-only data, else 14 days
    (``slice`` e.g. '14D', '7D', '1M'); the last slice ends at ``end`` (default: the end of the data)."""
    cells = events[cell_col].to_numpy(dtype=np.uint64)
    if domain is None:
        domain = domain_from_hull(unique_cells(cells))
    precision = events[precision_col] if precision_col and precision_col in events else None
    sl: Slices = make_slices(events[time_col], precision, slice, end=end, n=n_slices, start=start)
    if len(sl) < 2:
        raise DataCannotAnswer("emerging hot spots need at least two complete slices in the data")
    if len(domain) * len(sl) > MAX_CUBE_CELLS:  # the cube and its z-scores are dense (cells x slices float64)
        raise DataCannotAnswer(f"{len(domain):,} cells x {len(sl):,} slices is more than {MAX_CUBE_CELLS:,} "
                               "cell-slices: use a longer slice, a shorter period, a coarser resolution or an area")
    s_idx = sl.assign(events[time_col])
    u_idx, inside = domain.index_of(cells)
    u_idx = np.where(inside, u_idx, -1)
    vals = None if value_col is None else events[value_col].to_numpy(dtype=float)
    values = cube(u_idx, s_idx, len(domain), len(sl), vals)
    values, _, tnote = apply_transform(values, transform) if transform != "cap" else _cap_cube(values)
    frame, z = emerging_from_cube(values, domain, k=k, q_level=q_level, trend_alpha=trend_alpha, weights=weights)
    caveats = list(CAVEATS)
    if len(sl) < 10:
        caveats.insert(0, f"Only {len(sl)} slices: patterns are indicative only (ESRI recommends at least 10).")
    return EmergingResult(cells=frame, slices=sl.describe(), slice_labels=sl.labels(), domain=domain.describe(),
                          k=k, q_level=q_level, trend_alpha=trend_alpha, value=value_col or "count",
                          transform_note=tnote, z=z, caveats=caveats)


def _cap_cube(values: np.ndarray, quantile: float = 0.99) -> tuple[np.ndarray, str, str]:
    nz = values[values > 0]
    limit = float(np.quantile(nz, quantile)) if len(nz) else 0.0
    return np.minimum(values, limit), "cap", f"cell-slice values capped at the {quantile:.0%} quantile ({limit:g})"
