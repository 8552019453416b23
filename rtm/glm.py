"""Count-model numerics for RTM on *aggregated* data.

RTM variables are binary, so many cells share one row of the design matrix.  Poisson and negative-binomial
log-likelihoods are sums over cells, so cells with the same (row, count) can be collapsed into one row with a
frequency weight without changing any estimate (exact, not an approximation).  The elastic-net screen goes
further: for a Poisson model only the number of cells and the sum of counts per distinct row matter.

* :func:`enet_poisson_path` -- elastic-net penalised Poisson path by IRLS + covariance-update coordinate
  descent with strong rules and KKT checks (Friedman, Hastie & Tibshirani 2010, *J. Stat. Softw.* 33(1);
  Tibshirani et al. 2012, *JRSS-B* 74(2)), on standardised columns like glmnet.
* :func:`fit_count` -- Poisson (alpha = 0) or NB2 with fixed alpha by Fisher scoring; :func:`fit_negbin`
  profiles alpha by bounded Brent search over log(alpha).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

MU_CLIP = (1e-12, 1e12)


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
    alpha_se: float | None = None

    @property
    def k(self) -> int:
        return len(self.coef) + (1 if self.alpha > 0 else 0)

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + self.k * np.log(self.n)


def loglik(y: np.ndarray, mu: np.ndarray, w: np.ndarray, alpha: float) -> float:
    if alpha <= 0:
        return float(np.sum(w * (y * np.log(mu) - mu - gammaln(y + 1))))
    r = 1.0 / alpha
    return float(np.sum(w * (gammaln(y + r) - gammaln(r) - gammaln(y + 1) + r * np.log(r / (r + mu))
                             + y * np.log(mu / (r + mu)))))


def fit_count(agg: Agg, alpha: float = 0.0, start: np.ndarray | None = None, max_iter: int = 50,
              tol: float = 1e-9) -> CountFit:
    """Poisson (alpha=0) or NB2 with fixed alpha, by Fisher scoring (IRLS) on collapsed rows."""
    Z = np.column_stack([np.ones(len(agg.y)), agg.Z])
    y, w = agg.y, agg.w
    if start is None:
        beta = np.zeros(Z.shape[1])
        beta[0] = np.log(max(np.sum(w * y) / np.sum(w), 1e-8))
    else:
        beta = start.astype(float).copy()
    converged = False
    for _ in range(max_iter):
        mu = np.clip(np.exp(Z @ beta), *MU_CLIP)
        v = 1.0 + alpha * mu
        score = Z.T @ (w * (y - mu) / v)
        info = (Z * (w * mu / v)[:, None]).T @ Z
        try:
            step = np.linalg.solve(info + 1e-10 * np.eye(len(beta)), score)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(info, score, rcond=None)[0]
        # damp huge steps (quasi-separation: a variable whose cells have no offence)
        big = np.max(np.abs(step))
        if big > 5:
            step *= 5 / big
        beta += step
        if np.max(np.abs(step)) < tol * (1 + np.max(np.abs(beta))):
            converged = True
            break
    mu = np.clip(np.exp(Z @ beta), *MU_CLIP)
    v = 1.0 + alpha * mu
    info = (Z * (w * mu / v)[:, None]).T @ Z
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(info)
    return CountFit(coef=beta, alpha=alpha, loglik=loglik(y, mu, w, alpha), n=agg.n, cov=cov, converged=converged)


def fit_negbin(agg: Agg, start: CountFit | None = None, bounds=(-12.0, 4.0)) -> CountFit:
    """NB2 by profile likelihood: Brent search over log(alpha), beta by IRLS at each alpha."""
    base = start if start is not None else fit_count(agg, 0.0)
    cache: dict[float, CountFit] = {}

    def negll(theta: float) -> float:
        f = fit_count(agg, float(np.exp(theta)), start=base.coef, max_iter=30, tol=1e-8)
        cache[theta] = f
        return -f.loglik

    res = minimize_scalar(negll, bounds=bounds, method="bounded", options={"xatol": 1e-4})
    best = cache.get(res.x) or fit_count(agg, float(np.exp(res.x)), start=base.coef)
    best = fit_count(agg, best.alpha, start=best.coef)  # polish
    # SE of alpha from the curvature of the profile log-likelihood in log(alpha)
    h = 1e-3
    try:
        l0 = best.loglik
        lp = fit_count(agg, best.alpha * np.exp(h), start=best.coef).loglik
        lm = fit_count(agg, best.alpha * np.exp(-h), start=best.coef).loglik
        curv = -(lp - 2 * l0 + lm) / h ** 2
        best.alpha_se = float(best.alpha / np.sqrt(curv)) if curv > 0 else None
    except (FloatingPointError, ValueError):
        best.alpha_se = None
    return best


# ------------------------------------------------------------------------------------------ elastic net

@dataclass
class ENetPath:
    lambdas: np.ndarray
    intercepts: np.ndarray  # per lambda
    coefs: np.ndarray  # lambdas x p, on the ORIGINAL (unstandardised) scale
    scale: np.ndarray  # column SDs used for standardising


def _soft(u: float, t: float) -> float:
    return u - t if u > t else (u + t if u < -t else 0.0)


def _cd(G: np.ndarray, c: np.ndarray, theta: np.ndarray, lam: float, alpha: float, tol: float,
        max_sweeps: int) -> np.ndarray:
    """Coordinate descent on 1/2 t'Gt - c't + lam*sum_{j>=1}(alpha|t_j| + (1-alpha)/2 t_j^2)."""
    Gt = G @ theta
    l1 = lam * alpha
    l2 = lam * (1 - alpha)
    diag = np.diag(G).copy()
    m = len(theta)
    for _ in range(max_sweeps):
        dmax = 0.0
        # intercept (unpenalised)
        old = theta[0]
        new = old + (c[0] - Gt[0]) / diag[0]
        if new != old:
            Gt += G[:, 0] * (new - old)
            theta[0] = new
            dmax = max(dmax, abs(new - old))
        for j in range(1, m):
            old = theta[j]
            u = c[j] - Gt[j] + diag[j] * old
            new = _soft(u, l1) / (diag[j] + l2)
            if new != old:
                d = new - old
                Gt += G[:, j] * d
                theta[j] = new
                if abs(d) > dmax:
                    dmax = abs(d)
        if dmax < tol:
            break
        exact = _polish(G, c, theta, l1, l2)  # exact solve on the current active set and signs
        if exact is not None:
            return exact
    return theta


def _polish(G: np.ndarray, c: np.ndarray, theta: np.ndarray, l1: float, l2: float) -> np.ndarray | None:
    """Solve the KKT equations on the active set with the current signs; return it if it is optimal.

    Coordinate descent crawls when columns are nearly collinear (the same factor at 50 m steps); once it has
    found the active set and signs, one linear solve gives the exact optimum, which is accepted only if the
    signs hold and every inactive coordinate satisfies |gradient| <= l1."""
    act = np.flatnonzero(theta[1:] != 0) + 1
    idx = np.concatenate([[0], act])
    sg = np.sign(theta[act])
    M = G[np.ix_(idx, idx)] + np.diag(np.concatenate([[0.0], np.full(len(act), l2)]))
    rhs = c[idx] - np.concatenate([[0.0], l1 * sg])
    try:
        sol = np.linalg.solve(M, rhs)
    except np.linalg.LinAlgError:
        return None
    if np.any(np.sign(sol[1:]) != sg):
        return None
    full = np.zeros_like(theta)
    full[idx] = sol
    grad = c - G @ full
    inactive = np.ones(len(theta), dtype=bool)
    inactive[idx] = False
    if np.all(np.abs(grad[inactive]) <= l1 * (1 + 1e-7) + 1e-12):
        return full
    return None


def enet_poisson_path(X: np.ndarray, n: np.ndarray, s: np.ndarray, alpha: float = 0.5,
                      lambdas: np.ndarray | None = None, n_lambda: int = 15, lambda_ratio: float = 1e-2,
                      scale: np.ndarray | None = None, tol: float = 1e-6, max_irls: int = 25,
                      max_sweeps: int = 300, power: float = 1.0) -> ENetPath:
    """Elastic-net Poisson (or Tweedie, log link) path on collapsed rows.

    X: rows x p (binary), n: cells per row (exposure weight), s: sum of counts per row.  Objective (glmnet):
    -(1/N) sum[s*eta - n*exp(eta)] + lam * sum_j(alpha*|b_j*sd_j| + (1-alpha)/2 (b_j*sd_j)^2).
    power > 1: the Tweedie quasi-log-likelihood -(1/N) sum[s mu^(1-p)/(1-p) - n mu^(2-p)/(2-p)] replaces the
    Poisson one (s is then the summed harm per row); IRLS weights become n mu^(2-p), the gradient
    X'(s - n mu) mu^(1-p) (glmnet's and glum's Tweedie path, Yang, Qian & Zou 2018).
    """
    X = np.asarray(X, float)
    n = np.asarray(n, float)
    s = np.asarray(s, float)
    N = n.sum()
    p = X.shape[1]
    if scale is None:
        m = (n @ X) / N
        scale = np.sqrt(np.maximum(m * (1 - m), 1e-12))
    Xs = X / scale
    mu0 = max(s.sum() / N, 1e-12)
    b0 = np.log(mu0)
    pw = float(power)
    grad0 = Xs.T @ (s - n * mu0) * mu0 ** (1 - pw) / N
    if lambdas is None:
        lmax = np.max(np.abs(grad0)) / max(alpha, 1e-3) if p else 1.0
        lambdas = lmax * np.logspace(0, np.log10(lambda_ratio), n_lambda)
    lambdas = np.asarray(lambdas, float)
    beta = np.zeros(p)
    coefs = np.zeros((len(lambdas), p))
    icpt = np.zeros(len(lambdas))
    grad = grad0.copy()
    lam_prev = lambdas[0]
    for k, lam in enumerate(lambdas):
        # strong rule (Tibshirani et al. 2012) plus everything already active
        strong = (np.abs(grad) >= alpha * (2 * lam - lam_prev)) | (beta != 0)
        while True:
            S = np.flatnonzero(strong)
            Zs = np.empty((len(n), len(S) + 1))  # [1, Xs[:, S]], built once per strong set
            Zs[:, 0] = 1.0
            Zs[:, 1:] = Xs[:, S]
            XS = Zs[:, 1:]
            for _ in range(max_irls):
                eta = b0 + XS @ beta[S]
                mu = np.clip(np.exp(eta), *MU_CLIP)
                nm = n * mu
                w = nm * mu ** (1 - pw) / N if pw != 1.0 else nm / N
                z = eta + (s - nm) / np.maximum(nm, 1e-300)
                Zw = Zs * w[:, None]
                G = Zw.T @ Zs
                c = Zw.T @ z
                theta = np.concatenate([[b0], beta[S]])
                new = _cd(G, c, theta.copy(), lam, alpha, tol, max_sweeps)
                change = np.max(np.abs(new - theta))
                b0, beta[S] = new[0], new[1:]
                if change < tol * 10:
                    break
            eta = b0 + XS @ beta[S]
            mu = np.clip(np.exp(eta), *MU_CLIP)
            grad = Xs.T @ ((s - n * mu) * (mu ** (1 - pw) if pw != 1.0 else 1.0)) / N
            viol = ~strong & (np.abs(grad) > lam * alpha * (1 + 1e-6))
            if not viol.any():
                break
            strong |= viol
        coefs[k] = beta / scale
        icpt[k] = b0
        lam_prev = lam
    return ENetPath(lambdas=lambdas, intercepts=icpt, coefs=coefs, scale=scale)


def poisson_neg_loglik(X: np.ndarray, n: np.ndarray, s: np.ndarray, b0: float, b: np.ndarray,
                       power: float = 1.0) -> float:
    """-sum[s*eta - n*exp(eta)] (the Poisson log-likelihood without its model-free constant); for power > 1
    the Tweedie equivalent -sum[s mu^(1-p)/(1-p) - n mu^(2-p)/(2-p)] (half the deviance up to a constant,
    times phi)."""
    eta = np.clip(b0 + np.asarray(X, float) @ b, -30, 30)
    if power == 1.0:
        return float(-(s @ eta - n @ np.exp(eta)))
    p = power
    mu = np.exp(eta)
    return float(-(s @ mu ** (1 - p) / (1 - p) - n @ mu ** (2 - p) / (2 - p)))
