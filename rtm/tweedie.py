"""Tweedie (compound Poisson-gamma, 1 < p < 2) log-linear models for a harm-weighted RTM outcome.

Harm per cell (CCHI days summed over offences) is zero in most cells and a positive, skewed amount elsewhere:
not a count, so Poisson/NB likelihoods do not apply, but the Tweedie family with 1 < p < 2 does (a Poisson
number of gamma-distributed amounts; Jørgensen 1997; Dunn & Smyth 2005).  Variance = phi * mu^p.

RTM variables are binary, so cells share design rows.  With a log link the estimating equations and the
mean-dependent part of the log-likelihood need only, per distinct row g, the number of cells ``n_g`` and the
summed outcome ``s_g``:

    loglik = sum_{y_i > 0} c(y_i; phi, p)  +  (1/phi) * sum_g [ s_g mu_g^(1-p)/(1-p) - n_g mu_g^(2-p)/(2-p) ]

where c(y; phi, p) is the model-free term of the density (the Dunn & Smyth 2005 series).  It is taken from
statsmodels' exact density, ``statsmodels.genmod.families.Tweedie(eql=False).loglike_obs`` (which sums the
series with ``scipy.special.log_wright_bessel``), less its mean-dependent part.  c does not depend on the model,
so at fixed (phi, p) competing models are compared through the group sums alone; phi is then profiled by
maximum likelihood for the final comparison.  Coefficients are statsmodels GLM Tweedie fits on the collapsed
rows (row means with ``var_weights`` = cells: the per-cell estimating equations).  statsmodels estimates phi by
moments only (Pearson or deviance) and the power by a moment condition, so the maximum-likelihood profiles of
phi and p (bounded Brent searches) are ours.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from statsmodels.genmod.families import Tweedie

from rtm.glm import Agg, CountFit, design, fit_glm

POWER_BOUNDS = (1.05, 1.95)


@dataclass
class Positive:
    """The positive outcome values with their summed frequency weights: all the density's series term needs.

    Equal values are merged (harm per cell is a sum of a few category weights, so values repeat), and the
    series term is cached per (phi, p): stepwise selection evaluates many models at one phi."""

    y: np.ndarray
    w: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, y: np.ndarray, w: np.ndarray | None = None) -> "Positive":
        y = np.asarray(y, float)
        w = np.ones(len(y)) if w is None else np.asarray(w, float)
        m = (y > 0) & (w > 0)
        vals, inv = np.unique(y[m], return_inverse=True)
        return cls(y=vals, w=np.bincount(inv.ravel(), weights=w[m], minlength=len(vals)))


def series_term(pos: Positive, phi: float, power: float) -> float:
    """sum over positive cells of w * c(y; phi, p), the model-free term of the Tweedie log-density.

    statsmodels' exact log-density at mean mu is c(y) + (y mu^(1-p)/(1-p) - mu^(2-p)/(2-p)) / phi; it is
    evaluated at mu = y, where the second part is y^(2-p) / (phi (1-p)(2-p)), and that part is subtracted."""
    if len(pos.y) == 0:
        return 0.0
    key = (float(phi), float(power))
    hit = pos._cache.get(key)
    if hit is not None:
        return hit
    p = power
    logdens = Tweedie(var_power=p, eql=False).loglike_obs(pos.y, pos.y, scale=phi)
    out = float(pos.w @ (logdens - pos.y ** (2 - p) / (phi * (1 - p) * (2 - p))))
    if len(pos._cache) > 256:
        pos._cache.clear()
    pos._cache[key] = out
    return out


def mean_term(n: np.ndarray, s: np.ndarray, mu: np.ndarray, power: float) -> float:
    """sum_g [s_g mu_g^(1-p)/(1-p) - n_g mu_g^(2-p)/(2-p)]  (to be divided by phi)."""
    p = power
    return float(np.sum(s * mu ** (1 - p) / (1 - p) - n * mu ** (2 - p) / (2 - p)))


def loglik(pos: Positive, n: np.ndarray, s: np.ndarray, mu: np.ndarray, phi: float, power: float) -> float:
    return series_term(pos, phi, power) + mean_term(n, s, mu, power) / phi


def profile_phi(pos: Positive, mt: float, power: float, bounds=(-12.0, 16.0),
                near: float | None = None) -> tuple[float, float]:
    """(phi, loglik) maximising series_term(phi) + mt/phi over log(phi) (bounded Brent, to 1e-5 in log phi).

    ``near``: a phi close to the answer (the current model's); the search then starts in log(near) +- 1 and
    widens to ``bounds`` only if the optimum sits on that bracket's edge."""
    def neg(t: float) -> float:
        return -(series_term(pos, float(np.exp(t)), power) + mt / float(np.exp(t)))

    if near is not None and near > 0:
        lo, hi = np.log(near) - 1.0, np.log(near) + 1.0
        res = minimize_scalar(neg, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
        if lo + 1e-3 < res.x < hi - 1e-3:
            return float(np.exp(res.x)), float(-res.fun)
    res = minimize_scalar(neg, bounds=bounds, method="bounded", options={"xatol": 1e-5})
    return float(np.exp(res.x)), float(-res.fun)


@dataclass
class TweedieFit(CountFit):
    """A Tweedie log-linear fit.  ``alpha`` (the NB field of CountFit) is 0; ``phi`` the dispersion."""

    phi: float = 1.0
    power: float = 1.5

    @property
    def k(self) -> int:
        return len(self.coef) + 1  # + phi (the power is chosen once for all models compared)


def fit_beta(agg: Agg, power: float, start: np.ndarray | None = None):
    """statsmodels GLM Tweedie(p) fit on collapsed rows (agg.y = mean outcome per row, var_weights = cells).

    Returns the statsmodels result, fitted at scale 1: its coefficients do not depend on phi and its
    ``normalized_cov_params`` times phi is the Fisher-information covariance."""
    return fit_glm(agg.y, design(agg), Tweedie(var_power=power, eql=False), start, var_weights=agg.w)


def fit_tweedie(agg: Agg, pos: Positive, power: float, phi: float | None = None,
                start: np.ndarray | None = None, phi_near: float | None = None) -> TweedieFit:
    """Tweedie fit: coefficients by statsmodels; phi by profile likelihood (or held at ``phi``)."""
    res = fit_beta(agg, power, start)
    mt = mean_term(agg.w, agg.w * agg.y, np.asarray(res.mu), power)
    if phi is None:
        phi, ll = profile_phi(pos, mt, power, near=phi_near)
    else:
        ll = series_term(pos, phi, power) + mt / phi
    return TweedieFit(coef=np.asarray(res.params), alpha=0.0, loglik=ll, n=agg.n,
                      cov=np.asarray(res.normalized_cov_params) * phi, converged=bool(res.converged), phi=phi,
                      power=power)


def profile_power(pos: Positive, n: np.ndarray, s: np.ndarray, mu_of, bounds=POWER_BOUNDS) -> tuple[float, float]:
    """(p, loglik) maximising the profile likelihood over the power; ``mu_of(p)`` gives fitted means at p."""
    def neg(p: float) -> float:
        mu = mu_of(p)
        return -profile_phi(pos, mean_term(n, s, mu, p), p)[1]

    res = minimize_scalar(neg, bounds=bounds, method="bounded", options={"xatol": 5e-3})
    return float(res.x), float(-res.fun)


def simulate(rng: np.random.Generator, mu: np.ndarray, phi: float, power: float) -> np.ndarray:
    """Draws from Tweedie(mu, phi, p): N ~ Poisson(lambda), Y = sum of N Gamma(shape, scale) amounts."""
    p = power
    lam = mu ** (2 - p) / (phi * (2 - p))
    shape = (2 - p) / (p - 1)
    scale = phi * (p - 1) * mu ** (p - 1)
    k = rng.poisson(lam)
    out = np.zeros(len(mu))
    m = k > 0
    out[m] = rng.gamma(shape * k[m], scale[m])
    return out
