"""Collapsed design rows and the count GLMs of RTM (Poisson, NB2), fitted by statsmodels.

RTM variables are binary, so many cells share one row of the design matrix.  Poisson and negative-binomial
log-likelihoods are sums over cells, so cells with the same (row, count) can be collapsed into one row with a
frequency weight without changing any estimate (exact, not an approximation): :func:`aggregate` and
:func:`row_groups` do the collapsing, statsmodels' ``GLM(freq_weights=...)`` the fits.

* :func:`fit_count` -- Poisson (alpha = 0) or NB2 with fixed alpha: ``statsmodels.api.GLM`` (IRLS), its
  log-likelihood and Fisher-information covariance.
* :func:`fit_negbin` -- NB2 with alpha by profile likelihood: bounded Brent search over log(alpha), a GLM fit
  at each alpha; :func:`negbin_alpha_se` its standard error.  (statsmodels' ``discrete.NegativeBinomial``
  estimates alpha jointly but takes no frequency weights, so it would need one row per cell; the tests check
  that both give the same estimates.)

The elastic-net screen is in :mod:`rtm.enet` (glum).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from scipy.optimize import minimize_scalar


# ------------------------------------------------------------------------------------------ aggregation

def row_groups(X: np.ndarray, *extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first index of each distinct row, inverse) for the rows of binary X plus extra small-int key columns."""
    parts = [np.packbits(X.astype(bool, copy=False), axis=1)] if X.shape[1] else []
    for e in extra:
        e = np.asarray(e, dtype=np.int64)
        parts.append(e.astype(">i8").view(np.uint8).reshape(len(e), 8))
    if not parts:
        return np.zeros(1, dtype=np.int64), np.zeros(len(X), dtype=np.int64)
    packed = np.ascontiguousarray(np.concatenate(parts, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()


@dataclass
class Agg:
    """Collapsed data: distinct design rows Z (without intercept), counts y, frequency weights w."""

    Z: np.ndarray
    y: np.ndarray
    w: np.ndarray
    n: float  # total weight (number of cells, or bootstrap total)


def aggregate(X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> Agg:
    """Collapse cells with identical (row of X, y)."""
    w = np.ones(len(y)) if w is None else np.asarray(w, float)
    first, inv = row_groups(X, y)
    wg = np.bincount(inv, weights=w, minlength=len(first))
    keep = wg > 0
    return Agg(Z=X[first][keep].astype(float), y=np.asarray(y, float)[first][keep], w=wg[keep], n=float(w.sum()))


# ------------------------------------------------------------------------------------------ count GLMs

@dataclass
class CountFit:
    coef: np.ndarray  # [intercept, betas...]
    alpha: float  # NB2 dispersion (0 = Poisson)
    loglik: float
    n: float
    cov: np.ndarray | None = None  # covariance of coef (conditional on alpha)
    converged: bool = True

    @property
    def k(self) -> int:
        return len(self.coef) + (1 if self.alpha > 0 else 0)

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + self.k * np.log(self.n)


def design(agg: Agg) -> np.ndarray:
    """[1, Z]: the collapsed rows with an intercept column."""
    return np.column_stack([np.ones(len(agg.y)), agg.Z])


def fit_glm(y: np.ndarray, Z: np.ndarray, family, start: np.ndarray | None = None, **weights):
    """``statsmodels.api.GLM(y, Z, family, **weights).fit()`` with its numerical warnings silenced.

    Stepwise selection tries many candidate models, some of them quasi-separated (a variable whose cells have
    no offence: the fit drives its coefficient towards -inf) or saturated on their few distinct rows;
    statsmodels warns about both.  Such a model is judged by its likelihood like any other (a protective
    coefficient is not admissible by default anyway), so the warnings carry nothing for the caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return sm.GLM(y, Z, family=family, **weights).fit(start_params=start, scale=1.0)


def fit_count(agg: Agg, alpha: float = 0.0, start: np.ndarray | None = None) -> CountFit:
    """Poisson (alpha=0) or NB2 with fixed alpha on collapsed rows (statsmodels GLM, frequency weights)."""
    family = sm.families.Poisson() if alpha <= 0 else sm.families.NegativeBinomial(alpha=alpha)
    res = fit_glm(agg.y, design(agg), family, start, freq_weights=agg.w)
    return CountFit(coef=np.asarray(res.params), alpha=alpha, loglik=float(res.llf), n=agg.n,
                    cov=np.asarray(res.cov_params()), converged=bool(res.converged))


def fit_negbin(agg: Agg, start: np.ndarray | None = None, near: float | None = None,
               bounds=(-12.0, 4.0)) -> CountFit:
    """NB2 by profile likelihood: bounded Brent search over log(alpha), coefficients by a GLM fit at each alpha.

    Each fit starts from the previous one's coefficients (``start`` for the first; the search's successive
    alphas are close).  ``near``: an alpha close to the answer (the current model's in stepwise selection); the
    search then runs in log(near) +- 1 first and widens to ``bounds`` only if the optimum sits on that
    bracket's edge, as :func:`rtm.tweedie.profile_phi` does for phi."""
    fits: dict[float, CountFit] = {}
    last = [start]

    def negll(theta: float) -> float:
        f = fit_count(agg, float(np.exp(theta)), start=last[0])
        fits[theta] = f
        last[0] = f.coef
        return -f.loglik

    def search(lo: float, hi: float) -> tuple[float, CountFit]:
        theta = float(minimize_scalar(negll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4}).x)
        return theta, fits.get(theta) or fit_count(agg, float(np.exp(theta)), start=last[0])

    if near is not None and near > 0:
        lo, hi = np.log(near) - 1.0, np.log(near) + 1.0
        theta, best = search(lo, hi)
        if lo + 1e-3 < theta < hi - 1e-3:
            return best
    return search(*bounds)[1]


def negbin_alpha_se(agg: Agg, fit: CountFit, h: float = 1e-3) -> float | None:
    """SE of the NB2 alpha from the curvature of the profile log-likelihood in log(alpha) (delta method)."""
    lp = fit_count(agg, fit.alpha * np.exp(h), start=fit.coef).loglik
    lm = fit_count(agg, fit.alpha * np.exp(-h), start=fit.coef).loglik
    curv = -(lp - 2 * fit.loglik + lm) / h ** 2
    return float(fit.alpha / np.sqrt(curv)) if np.isfinite(curv) and curv > 0 else None
