"""RTM model selection: elastic-net screening with spatially blocked CV, then bidirectional stepwise by BIC.

The numerics are libraries' (glum's elastic-net path, statsmodels' GLMs: :mod:`rtm.enet`, :mod:`rtm.glm`,
:mod:`rtm.tweedie`); this module holds the RTM method around them: the folds, the CV choice of lambda, the
stepwise moves and the exact row collapsing (:class:`_Data`) that lets every fit see distinct design rows only."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rtm.enet import enet_path, neg_loglik
from rtm.glm import Agg, CountFit, fit_count, fit_negbin, row_groups
from rtm.tweedie import Positive, fit_tweedie

FAMILIES = ("poisson", "negbin", "tweedie")


def spatial_folds(x: np.ndarray, y: np.ndarray, k: int = 5, block_m: float = 2000.0, seed: int = 0) -> np.ndarray:
    """Fold per cell: square blocks of block_m metres, blocks shuffled and dealt to k folds.

    Blocked CV (Roberts et al. 2017, *Ecography* 40:913) keeps neighbouring, autocorrelated cells in the same
    fold so held-out error is not flattered by near-duplicates of training cells.
    """
    bx = np.floor(np.asarray(x) / block_m).astype(np.int64)
    by = np.floor(np.asarray(y) / block_m).astype(np.int64)
    _, block = np.unique(bx * 1_000_003 + by, return_inverse=True)
    nb = block.max() + 1
    rng = np.random.default_rng(seed)
    fold_of_block = rng.permutation(nb) % k
    return fold_of_block[block.ravel()]


def block_ids(x: np.ndarray, y: np.ndarray, block_m: float) -> np.ndarray:
    bx = np.floor(np.asarray(x) / block_m).astype(np.int64)
    by = np.floor(np.asarray(y) / block_m).astype(np.int64)
    return np.unique(bx * 1_000_003 + by, return_inverse=True)[1].ravel()


@dataclass
class ScreenResult:
    lambdas: np.ndarray
    cv_loss: np.ndarray  # mean held-out Poisson deviance/2 per cell (up to a constant), per lambda
    cv_se: np.ndarray
    chosen: int
    coef: np.ndarray  # at the chosen lambda (original scale), per variable
    intercept: float  # at the chosen lambda
    selected: np.ndarray  # variable indices kept for the stepwise stage
    alpha: float
    rule: str
    folds: int
    power: float = 1.0

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "folds": self.folds, "rule": self.rule,
                "lambda": float(self.lambdas[self.chosen]), "lambda_index": int(self.chosen),
                "lambdas": [float(v) for v in self.lambdas], "cv_loss": [float(v) for v in self.cv_loss],
                "candidates_kept": int(len(self.selected)), "power": self.power,
                "likelihood": "Poisson" if self.power == 1.0 else f"Tweedie quasi-likelihood, power {self.power:.3f}"}


def screen(X: np.ndarray, y: np.ndarray, folds: np.ndarray, alpha: float = 0.5, n_lambda: int = 15,
           lambda_ratio: float = 1e-2, rule: str = "min", allow_protective: bool = False,
           max_candidates: int | None = 60, power: float = 1.0) -> ScreenResult:
    """Elastic-net Poisson path (glum); pick lambda by k-fold (spatially blocked) CV; keep the variables with
    non-zero (unless ``allow_protective``, positive) coefficients.

    Cells are collapsed to distinct (design row, fold) pairs with their cell count and summed outcome, so each
    fold's training and held-out sets are unions of those rows.  Every fold is fitted on the full path's
    lambdas and standardisation; the CV loss is the held-out negative log-likelihood per cell.

    power > 1 screens a continuous outcome (harm) with the Tweedie quasi-likelihood of that power instead."""
    k = int(folds.max()) + 1
    first, inv = row_groups(X, folds)
    n = np.bincount(inv).astype(float)
    s = np.bincount(inv, weights=y)
    Xg = X[first].astype(float)
    fg = folds[first]
    full = enet_path(Xg, n, s, alpha=alpha, n_lambda=n_lambda, lambda_ratio=lambda_ratio, power=power)
    losses = np.zeros((k, len(full.lambdas)))
    ncell = np.zeros(k)
    for f in range(k):
        tr, te = fg != f, fg == f
        if not te.any() or not tr.any():
            continue
        path = enet_path(Xg[tr], n[tr], s[tr], alpha=alpha, lambdas=full.lambdas, scale=full.scale,
                                 power=power)
        ncell[f] = n[te].sum()
        for i in range(len(full.lambdas)):
            losses[f, i] = neg_loglik(Xg[te], n[te], s[te], path.intercepts[i], path.coefs[i], power)
    used = ncell > 0
    per_cell = losses[used] / ncell[used, None]
    cv = losses[used].sum(axis=0) / ncell[used].sum()
    se = per_cell.std(axis=0, ddof=1) / np.sqrt(used.sum()) if used.sum() > 1 else np.zeros(len(cv))
    best = int(np.argmin(cv))
    if rule == "1se":
        ok = np.flatnonzero(cv <= cv[best] + se[best])
        best = int(ok.min())  # largest lambda within one SE
    coef = full.coefs[best]
    keep = (coef != 0) if allow_protective else (coef > 0)
    sel = np.flatnonzero(keep)
    if max_candidates is not None and len(sel) > max_candidates:
        sel = sel[np.argsort(-np.abs(coef[sel] * full.scale[sel]))[:max_candidates]]
        sel.sort()
    return ScreenResult(lambdas=full.lambdas, cv_loss=cv, cv_se=se, chosen=best, coef=coef,
                        intercept=float(full.intercepts[best]), selected=sel,
                        alpha=alpha, rule=rule, folds=k, power=float(power))


@dataclass
class StepResult:
    family: str
    selected: list[int]
    fit: CountFit
    history: list[dict] = field(default_factory=list)


class _Data:
    """Cells x variables with outcome and weights; builds collapsed data for any subset quickly.

    Counts (Poisson/NB) collapse cells with the same (row, count).  A Tweedie outcome (``by_row``) collapses
    cells with the same row only, into (cells, mean outcome): the estimating equations and the model-dependent
    part of the likelihood need nothing else (rtm/tweedie.py)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, by_row: bool = False):
        self.X = X
        self.y = np.asarray(y, float)
        self.w = np.ones(len(y)) if w is None else np.asarray(w, float)
        self.n = float(self.w.sum())
        self.by_row = by_row
        self.wy = self.w * self.y

    def base(self, S: list[int]):
        first, inv = row_groups(self.X[:, S]) if self.by_row else row_groups(self.X[:, S], self.y)
        return first, inv

    def _collapse(self, group: np.ndarray, groups: int, rows, design) -> Agg:
        """Weights (and, by row, mean outcome) per non-empty group; ``rows(k)`` gives a cell of each group k
        (its count, for count data) and ``design(k)`` its design row."""
        wg = np.bincount(group, weights=self.w, minlength=groups)
        k = np.flatnonzero(wg)
        if self.by_row:
            y = np.bincount(group, weights=self.wy, minlength=groups)[k] / wg[k]
        else:
            y = self.y[rows(k)]
        return Agg(Z=design(k), y=y, w=wg[k], n=self.n)

    def agg(self, S: list[int]) -> Agg:
        first, inv = self.base(S)
        return self._collapse(inv, len(first), lambda k: first[k], lambda k: self.X[first[k]][:, S].astype(float))

    def extend(self, S: list[int], base, j: int) -> Agg:
        """The collapsed data of S + [j], from S's grouping: each group splits by the value of variable j."""
        first, inv = base
        return self._collapse(inv * 2 + self.X[:, j], 2 * len(first), lambda k: first[k // 2],
                              lambda k: np.column_stack([self.X[first[k // 2]][:, S].astype(float),
                                                         (k % 2).astype(float)]))


def row_aggregate(X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> Agg:
    """Cells collapsed by design row only: Agg with w = cells per row and y = mean outcome (Tweedie data)."""
    return _Data(X, y, w, by_row=True).agg(list(range(X.shape[1])))


def _fit_family(agg: Agg, family: str, fixed: float | None = None, full: bool = True, *,
                pos: Positive | None = None, power: float = 1.5, start: np.ndarray | None = None) -> CountFit:
    """Fit one family; ``fixed`` holds the dispersion (NB alpha, Tweedie phi) unless ``full``, when it is only
    the starting point of the dispersion's search; ``start``: starting coefficients."""
    if family == "poisson":
        return fit_count(agg, 0.0, start=start)
    if family == "tweedie":
        if full or fixed is None:
            return fit_tweedie(agg, pos, power, phi_near=fixed, start=start)
        return fit_tweedie(agg, pos, power, phi=fixed, start=start)
    if full or fixed is None:
        return fit_negbin(agg, start=start, near=fixed)
    return fit_count(agg, fixed, start=start)


def _warm_start(S: list[int], fit: CountFit, new: list[int]) -> np.ndarray:
    """Starting coefficients for the model ``new`` from the fit of model ``S``: the same intercept and
    coefficients for the variables they share, 0 for a variable entering (the GLM's IRLS then needs a few
    iterations instead of starting from scratch for every candidate move)."""
    coef = dict(zip(S, fit.coef[1:]))
    return np.array([fit.coef[0]] + [coef.get(v, 0.0) for v in new])


def stepwise(X: np.ndarray, y: np.ndarray, candidates: np.ndarray, factors: list[str], family: str = "poisson",
             w: np.ndarray | None = None, allow_protective: bool = False, max_steps: int = 40,
             top_moves: int = 3, power: float = 1.5) -> StepResult:
    """Bidirectional stepwise selection by BIC with at most one variable per factor.

    Moves: add a variable of a factor not yet in the model, drop a variable, or swap a variable for another
    operationalisation/distance of the same factor.  Unless ``allow_protective``, a model with a negative
    coefficient is not admissible (RTMDx keeps risk factors only).  For the negative binomial, candidate moves
    are ranked with alpha held at the current model's value and the best ``top_moves`` are refitted with alpha
    re-estimated; only fully refitted BICs are compared with the current model.  The Tweedie family (a
    continuous harm outcome, power ``power``) is handled like the NB, with phi in the place of alpha.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")
    tweedie = family == "tweedie"
    data = _Data(X, y, w, by_row=tweedie)
    pos = Positive.of(y, w) if tweedie else None
    candidates = [int(c) for c in candidates]
    S: list[int] = []

    def _fit(agg: Agg, family: str, fixed: float | None = None, full: bool = True,
             start: np.ndarray | None = None) -> CountFit:
        return _fit_family(agg, family, fixed, full, pos=pos, power=power, start=start)

    cur = _fit(data.agg(S), family)
    history = [{"step": 0, "move": "start", "bic": cur.bic}]

    def admissible(f: CountFit) -> bool:
        return allow_protective or bool(np.all(f.coef[1:] > 0))

    for step in range(1, max_steps + 1):
        moves: list[tuple[float, list[int], str, CountFit]] = []
        fixed_alpha = cur.alpha if family == "negbin" else (cur.phi if tweedie else None)
        in_factors = {factors[s]: s for s in S}
        base = data.base(S)
        for j in candidates:
            if j in S or factors[j] in in_factors:
                continue
            f = _fit(data.extend(S, base, j), family, fixed_alpha, False, _warm_start(S, cur, S + [j]))
            if admissible(f):
                moves.append((f.bic, S + [j], f"add {j}", f))
        for s in S:
            rest = [t for t in S if t != s]
            f = _fit(data.agg(rest), family, fixed_alpha, False, _warm_start(S, cur, rest))
            if admissible(f):
                moves.append((f.bic, rest, f"drop {s}", f))
            base_r = data.base(rest)
            for j in candidates:
                if j != s and factors[j] == factors[s]:
                    f = _fit(data.extend(rest, base_r, j), family, fixed_alpha, False,
                             _warm_start(S, cur, rest + [j]))
                    if admissible(f):
                        moves.append((f.bic, rest + [j], f"swap {s}->{j}", f))
        if not moves:
            break
        moves.sort(key=lambda m: m[0])
        best = None
        for bic, newS, label, f in moves[: (1 if family == "poisson" else top_moves)]:
            if family != "poisson":
                # full refit, from the candidate's coefficients and near its dispersion
                f = _fit(data.agg(newS), family, fixed_alpha, start=f.coef)
                if not admissible(f):
                    continue
            if best is None or f.bic < best[3].bic:
                best = (f.bic, newS, label, f)
        if best is None or best[3].bic >= cur.bic - 1e-6:
            break
        S, cur = best[1], best[3]
        history.append({"step": step, "move": best[2], "bic": cur.bic})
    return StepResult(family=family, selected=S, fit=cur, history=history)
