"""Spike finder: units (H3 cells or areas such as wards/districts) whose most recent window has more offences
than their own trailing baseline predicts, with Benjamini-Hochberg FDR across the units tested.

Windows (defaults): month-only data (police.uk) -> the last month against the previous 12 months; dated data ->
the last 28 days against the previous 12 weeks (84 days). ``recent`` may be 14-28 days (or more) for dated data.

Tests (one-sided, "more than expected"):

* ``method="poisson"`` (default): the exact conditional test for two Poisson counts (Przyborowski & Wilenski
  1940): given n = recent + baseline offences, recent ~ Binomial(n, R / (R + B)) under "same rate", where R and B
  are the window lengths. It accounts for the baseline itself being a noisy estimate, and copes with a zero
  baseline.
* ``method="negbin"``: expected = baseline rate x R, with extra-Poisson variation: a negative binomial whose
  dispersion alpha (var = mu + alpha mu^2 per bin) is pooled across units by the method of moments from the
  baseline bins (weeks, or months for month-only data). Baseline rates are floored at 0.5 offences per baseline
  window so a unit with no history is not infinitely surprising.

Harm (CCHI days) is reported alongside (observed and expected) but not tested: harm is not a count and a single
serious offence would dominate any harm-based test.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hotspots.stats.gistar import bh_qvalues
from hotspots.stats.timeslices import coarsest_precision, parse_slice

CAVEATS = [
    "A spike is relative to the unit's own recent past: seasonal peaks (e.g. summer, the night-time economy in "
    "December) are flagged unless the baseline covers the same season.",
    "Small counts: a unit with a handful of offences can only reach significance with a large ratio; "
    "min_observed guards against flagging 1-2 offence 'spikes'.",
    "police.uk data are month-only and location-snapped; recording changes (e.g. a crime-recording audit) can "
    "look like a spike.",
]


@dataclass
class SpikeResult:
    """``units`` columns: unit, observed, expected, ratio (observed / expected; inf when expected is 0),
    baseline (count in the baseline window), p, q, spike (q <= q_level and observed >= min_observed), and, when a
    harm column was given, harm_observed, harm_expected."""

    units: pd.DataFrame
    method: str
    recent: dict
    baseline: dict
    q_level: float
    min_observed: int
    dispersion: float | None
    n_tested: int
    caveats: list[str] = field(default_factory=lambda: list(CAVEATS))

    @property
    def spikes(self) -> pd.DataFrame:
        return self.units[self.units["spike"]]

    def summary(self) -> dict:
        return {"method": self.method, "recent": self.recent, "baseline": self.baseline, "q_level": self.q_level,
                "min_observed": self.min_observed, "dispersion": self.dispersion, "n_tested": self.n_tested,
                "n_spikes": int(self.units["spike"].sum()), "caveats": self.caveats}


def window_start(unit: str, length: int, end: pd.Timestamp) -> pd.Timestamp:
    return (end.to_period("M") - length).to_timestamp() if unit == "month" else end - pd.Timedelta(days=length)


def find_spikes(events: pd.DataFrame, *, unit_col: str = "cell", time_col: str = "occurred_from",
                precision_col: str | None = "precision", harm_col: str | None = None,
                recent: str | int | None = None, baseline: str | int | None = None, end=None,
                method: str = "poisson", q_level: float = 0.05, min_observed: int = 3) -> SpikeResult:
    """Flag units whose recent window exceeds their trailing baseline.

    ``events``: one row per offence with a unit id (cell or area code), a time and its precision.
    ``recent``/``baseline``: '28D', '14D', '12W', '1M', '12M' (defaults: 1M/12M month-only, 28D/12W dated).
    ``end``: exclusive end of the recent window (default: end of the data: the next month start for month-only
    data, the day after the last event otherwise).
    """
    if method not in ("poisson", "negbin"):
        raise ValueError("method must be 'poisson' or 'negbin'")
    prec = coarsest_precision(events[precision_col] if precision_col and precision_col in events else None)
    r_unit, r_len = parse_slice(recent if recent is not None else ("1M" if prec == "month" else "28D"), prec)
    b_unit, b_len = parse_slice(baseline if baseline is not None else ("12M" if prec == "month" else "12W"), prec)
    if r_unit != b_unit:
        raise ValueError("recent and baseline windows must use the same unit (days/weeks or months)")
    t = pd.to_datetime(events[time_col])
    if end is None:
        end = (t.max().to_period("M") + 1).to_timestamp() if r_unit == "month" else \
            t.max().normalize() + pd.Timedelta(days=1)
    end = pd.Timestamp(end)
    r_start = window_start(r_unit, r_len, end)
    b_start = window_start(b_unit, b_len, r_start)
    in_recent = ((t >= r_start) & (t < end)).to_numpy()
    in_base = ((t >= b_start) & (t < r_start)).to_numpy()
    if in_base.sum() == 0:
        raise ValueError(f"no offences in the baseline window {b_start.date()}..{r_start.date()}")
    keep = in_recent | in_base
    units, inv = np.unique(events[unit_col].to_numpy()[keep], return_inverse=True)
    rec = in_recent[keep]
    n_u = len(units)
    observed = np.bincount(inv[rec], minlength=n_u).astype(float)
    base = np.bincount(inv[~rec], minlength=n_u).astype(float)
    ratio_len = r_len / b_len
    expected = base * ratio_len
    dispersion = None
    if method == "poisson":
        n = observed + base
        share = r_len / (r_len + b_len)
        p = np.where(observed > 0, stats.binom.sf(observed - 1, n, share), 1.0)
    else:
        # baseline bins: months for month-only data, else weeks (days when the windows are not whole weeks)
        bin_days = 7 if (r_unit == "day" and b_len % 7 == 0 and r_len % 7 == 0) else 1
        n_bins = b_len if r_unit == "month" else b_len // bin_days
        r_bins = r_len if r_unit == "month" else r_len / bin_days
        tb = t[keep][~rec]
        if r_unit == "month":
            bidx = ((tb.dt.year - b_start.year) * 12 + (tb.dt.month - b_start.month)).to_numpy()
        else:
            bidx = ((tb - b_start).dt.days // bin_days).to_numpy()
        bins = np.bincount(inv[~rec] * n_bins + bidx, minlength=n_u * n_bins).reshape(n_u, n_bins)
        mu = np.maximum(base, 0.5) / n_bins
        used = base > 0
        var = bins[used].var(axis=1, ddof=1) if n_bins > 1 else np.zeros(used.sum())
        alpha = float(max(0.0, (var - mu[used]).sum() / (mu[used] ** 2).sum())) if used.any() else 0.0
        dispersion = alpha
        mean_r = mu * r_bins
        expected = np.where(base > 0, expected, mean_r)
        if alpha > 1e-9:
            size = r_bins / alpha
            p = stats.nbinom.sf(observed - 1, size, size / (size + mean_r))
        else:
            p = stats.poisson.sf(observed - 1, mean_r)
        p = np.where(observed > 0, p, 1.0)
    q = bh_qvalues(p)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(expected > 0, observed / expected, np.where(observed > 0, np.inf, np.nan))
    frame = pd.DataFrame({"unit": units, "observed": observed.astype(int), "expected": expected, "ratio": ratio,
                          "baseline": base.astype(int), "p": p, "q": q,
                          "spike": (q <= q_level) & (observed >= min_observed)})
    if harm_col is not None:
        h = events[harm_col].to_numpy(dtype=float)[keep]
        frame["harm_observed"] = np.bincount(inv[rec], weights=h[rec], minlength=n_u)
        frame["harm_expected"] = np.bincount(inv[~rec], weights=h[~rec], minlength=n_u) * ratio_len
    frame = frame.sort_values(["spike", "q", "ratio"], ascending=[False, True, False], ignore_index=True)
    fmt = (lambda a, b: {"start": str(a.date()), "end": str(b.date()), "length": r_len if a >= r_start else b_len,
                         "unit": r_unit})
    return SpikeResult(units=frame, method=method, recent=fmt(r_start, end), baseline=fmt(b_start, r_start),
                       q_level=q_level, min_observed=min_observed, dispersion=dispersion, n_tested=n_u)
