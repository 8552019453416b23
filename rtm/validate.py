"""Forecast validation on a later period: hit rate, PAI at fixed area shares, AUC -- ties handled exactly."""
from __future__ import annotations

import numpy as np

AREA_SHARES = (0.01, 0.02, 0.05)


def capture(score: np.ndarray, counts: np.ndarray, area: np.ndarray, shares=AREA_SHARES) -> list[float]:
    """Share of offences in the highest-scoring ``share`` of the area, for each share.

    Cells with equal scores are one block: where a share cuts through a block, the block contributes in
    proportion to the area taken (the expected capture under a random order within ties).  Without this a
    tied score (e.g. prior counts of 0, or RTM cells with the same factors) would be flattered or penalised
    by an arbitrary sort order.
    """
    score = np.asarray(score, float)
    uniq, inv = np.unique(-score, return_inverse=True)  # ascending -score = descending score
    a = np.bincount(inv, weights=area, minlength=len(uniq))
    c = np.bincount(inv, weights=counts, minlength=len(uniq))
    ca = np.concatenate([[0.0], np.cumsum(a)])
    cc = np.concatenate([[0.0], np.cumsum(c)])
    total_a, total_c = ca[-1], cc[-1]
    out = []
    for s in shares:
        target = s * total_a
        g = int(np.searchsorted(ca, target, side="left")) - 1
        g = min(max(g, 0), len(a) - 1)
        frac = (target - ca[g]) / a[g] if a[g] > 0 else 0.0
        out.append(float((cc[g] + frac * c[g]) / total_c) if total_c > 0 else float("nan"))
    return out


def auc(score: np.ndarray, counts: np.ndarray) -> float | None:
    """Cell-level ROC AUC: does the score rank cells with >= 1 test offence above cells without (ties = 1/2)."""
    label = np.asarray(counts) > 0
    if label.all() or not label.any():
        return None
    from scipy.stats import rankdata

    r = rankdata(score)
    n1 = label.sum()
    n0 = len(label) - n1
    return float((r[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def validate(scores: dict[str, np.ndarray], test_counts: np.ndarray, area: np.ndarray, shares=AREA_SHARES) -> dict:
    out = {"test_offences": int(test_counts.sum()), "area_shares": list(shares), "methods": {}}
    for name, sc in scores.items():
        hits = capture(sc, test_counts, area, shares)
        out["methods"][name] = {
            **{f"hit_rate_{round(s * 100)}pct": h for s, h in zip(shares, hits)},
            **{f"pai_{round(s * 100)}pct": (h / s if h == h else None) for s, h in zip(shares, hits)},
            "auc": auc(sc, test_counts),
        }
    return out
