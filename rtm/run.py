"""RTM entry point: :func:`run_rtm` takes offences, layers and a grid and returns an :class:`RTMResult`."""
from __future__ import annotations

import time
import warnings as warnings_
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from rtm.features import (DEFAULT_BLOCK_MULTIPLES, DEFAULT_DISTANCES, DENSITY_SD, OPERATIONALISATIONS, FeatureMatrix,
                          Variable, build_features)
from rtm.glm import aggregate, design, negbin_alpha_se
from rtm.grid import Grid, square_ids
from rtm.model import block_ids, row_aggregate, screen, spatial_folds, stepwise
from rtm.tweedie import Positive, fit_beta, fit_tweedie, profile_power
from rtm.validate import validate

OUTCOMES = ("count", "harm")
PROVISIONAL_POWER = 1.5  # Tweedie power for screening and the first selection when it is not fixed
COUNT_FAMILIES = ("poisson", "negbin")

Progress = Callable[[str, float], None]
CLASS_LABELS = ("at or below mean", "above mean", "mean + 1 SD", "mean + 2 SD")


@dataclass
class RTMConfig:
    """Every default is documented with its source in docs/rtm.md."""

    distances: Sequence[float] | None = None  # metres; default DEFAULT_DISTANCES, or block multiples (below)
    block_length_m: float | None = None  # median street-block length: distances become multiples of it
    distances_blocks: Sequence[float] = DEFAULT_BLOCK_MULTIPLES  # used when block_length_m is given
    outcome: str = "count"  # "count": offences per cell (Poisson / NB); "harm": harm per cell (Tweedie)
    tweedie_power: float | None = None  # harm outcome: fixed power 1 < p < 2; None = profile likelihood
    operationalisations: Sequence[str] = OPERATIONALISATIONS
    density_sd: float = DENSITY_SD
    enet_alpha: float = 0.5  # elastic-net mixing (0 ridge .. 1 lasso)
    n_lambda: int = 15
    lambda_ratio: float = 1e-2
    lambda_rule: str = "min"  # "min" | "1se"
    folds: int = 5
    block_m: float = 2000.0  # CV and bootstrap block size, metres
    families: Sequence[str] = COUNT_FAMILIES  # count outcome; the harm outcome is always Tweedie
    allow_protective: bool = False
    max_candidates: int | None = 60
    bootstrap: int = 20
    seed: int = 0
    train_start: str | None = None  # 'YYYY-MM' or date; default: earliest offence
    train_end: str | None = None  # first day NOT in training; default: hold out the last test_months months
    test_end: str | None = None  # first day not in the test period; default: after the latest offence
    test_months: int = 3
    recent_months: int = 12  # window of "recent harm" for priority places, ending at the latest offence
    priority_min_class: int = 2  # priority places need risk above mean + 1 SD ...
    priority_top: int = 25  # ... and recent harm; this many are returned, ranked
    offence_label: str = "offences"

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        if self.tweedie_power is not None and not (1.0 < self.tweedie_power < 2.0):
            raise ValueError("tweedie_power must lie strictly between 1 and 2")
        if self.block_length_m is not None and self.block_length_m <= 0:
            raise ValueError("block_length_m must be positive")

    def resolved_distances(self) -> tuple[float, ...]:
        """Metres: the given distances, else block multiples x block length, else 50 m steps to 400 m."""
        if self.distances is not None:
            return tuple(sorted({float(d) for d in self.distances}))
        if self.block_length_m:
            return tuple(sorted({round(float(m) * self.block_length_m, 3) for m in self.distances_blocks}))
        return DEFAULT_DISTANCES

    def resolved_families(self) -> tuple[str, ...]:
        return ("tweedie",) if self.outcome == "harm" else tuple(self.families)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["distances"] = [float(v) for v in self.resolved_distances()]
        d["distances_blocks"] = [float(v) for v in self.distances_blocks]
        d["operationalisations"] = list(self.operationalisations)
        d["families"] = list(self.resolved_families())
        return d


@dataclass
class FactorRow:
    factor: str
    type: str
    operationalisation: str
    spatial_influence_m: float
    spatial_influence_blocks: float | None  # when distances were set in street-block lengths
    coefficient: float
    se: float
    z: float
    p: float
    rrv: float
    rrv_ci_low: float
    rrv_ci_high: float
    cells: int  # cells where the variable is present
    bootstrap_selected: float | None = None  # share of bootstrap resamples selecting this factor (any op/dist)
    bootstrap_same: float | None = None  # ... with the same operationalisation and distance


@dataclass
class PriorityPlace:
    rank: int
    cell: str
    lon: float
    lat: float
    relative_risk: float
    risk_class: int
    recent_offences: int
    recent_harm: float
    factors: list[str]
    narrative: str


@dataclass
class RTMResult:
    config: dict
    grid: dict
    layers: list[dict]
    outcome: dict
    periods: dict
    model: dict  # family, intercept, dispersion, BIC (both families), n, log-likelihood
    factors: list[FactorRow]
    screening: dict
    selection: dict
    risk_classes: list[dict]
    priority_places: list[PriorityPlace]
    validation: dict
    stability: dict
    timings: dict
    warnings: list[str] = field(default_factory=list)
    # per-cell arrays (not in to_dict; see cells_table / cells_geojson)
    cell_grid: Grid | None = field(default=None, repr=False)
    relative_risk: np.ndarray | None = field(default=None, repr=False)
    risk_class: np.ndarray | None = field(default=None, repr=False)
    train_counts: np.ndarray | None = field(default=None, repr=False)
    test_counts: np.ndarray | None = field(default=None, repr=False)
    present: np.ndarray | None = field(default=None, repr=False)  # cells x selected factors (uint8)

    def to_dict(self) -> dict:
        return _jsonable({k: getattr(self, k) for k in (
            "config", "grid", "layers", "outcome", "periods", "model", "factors", "screening", "selection",
            "risk_classes", "priority_places", "validation", "stability", "timings", "warnings")})

    def factor_table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(f) for f in self.factors])


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "__dataclass_fields__"):
        return _jsonable(asdict(v))
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if np.isfinite(f) else None
    if isinstance(v, (pd.Timestamp,)):
        return v.isoformat()
    return v


def _month_start(v) -> pd.Timestamp:
    return pd.Timestamp(v).to_period("M").to_timestamp()


def _crime_cells(grid: Grid, crimes: pd.DataFrame) -> np.ndarray:
    col = f"h3_{grid.resolution}"
    if grid.kind == "h3" and col in crimes.columns:
        return grid.index_of(crimes[col].to_numpy(dtype=np.uint64))
    if {"x", "y"} <= set(crimes.columns):
        return grid.locate(x=crimes["x"].to_numpy(float), y=crimes["y"].to_numpy(float),
                           lon=crimes["lon"].to_numpy(float) if "lon" in crimes else None,
                           lat=crimes["lat"].to_numpy(float) if "lat" in crimes else None)
    if {"lon", "lat"} <= set(crimes.columns):
        return grid.locate(lon=crimes["lon"].to_numpy(float), lat=crimes["lat"].to_numpy(float))
    raise ValueError("crimes need x/y (BNG) or lon/lat columns")


def _periods(dates: pd.Series, cfg: RTMConfig) -> dict:
    first, last = dates.min(), dates.max()
    train_start = pd.Timestamp(cfg.train_start) if cfg.train_start else _month_start(first)
    test_end = pd.Timestamp(cfg.test_end) if cfg.test_end else _month_start(last) + pd.DateOffset(months=1)
    if cfg.train_end:
        train_end = pd.Timestamp(cfg.train_end)
    else:
        train_end = test_end - pd.DateOffset(months=cfg.test_months)
        if train_end <= train_start:
            train_end = test_end  # too short to hold anything out: train on everything, no validation
    recent_start = max(test_end - pd.DateOffset(months=cfg.recent_months), _month_start(first))
    return {"train_start": train_start, "train_end": train_end, "test_start": train_end, "test_end": test_end,
            "recent_start": recent_start, "recent_end": test_end}


def _noop(stage: str, fraction: float) -> None:
    return None


def _estimate_power(X: np.ndarray, y: np.ndarray, pos: Positive, best, power: float, info: dict, reselect):
    """Profile the Tweedie power on the model ``best`` selected at ``power``; if the estimate differs by more
    than 0.05, ``reselect(p)`` runs the selection again at it, else the same variables are refitted at it (phi
    and BIC at the estimated power).  Returns (selection result, power) and records the steps in ``info``."""
    sel = best.selected
    agg = row_aggregate(X[:, sel], y)
    p_hat, _ = profile_power(pos, agg.w, agg.w * agg.y, lambda p: np.asarray(fit_beta(agg, p).mu))
    p_hat = round(p_hat, 4)
    info["estimate_on_selected_model"] = p_hat
    if abs(p_hat - power) > 0.05:
        best = reselect(p_hat)
        info["reselected_at"] = p_hat
    else:
        best.fit = fit_tweedie(agg, pos, p_hat, phi_near=best.fit.phi)
    info["final"] = p_hat
    return best, p_hat


def _final_fit(X: np.ndarray, y: np.ndarray, family: str, fit, power: float):
    """The factor table's fit: statsmodels GLM on the collapsed rows at the selected dispersion (NB alpha,
    Tweedie ML phi), and the same GLM on one row per cell as a check that the collapsing is exact.

    Returns (collapsed-row result, Pearson chi2 per df over cells, check dict).  For the Tweedie the Pearson
    figure is the moment estimate of phi (compare the ML ``tweedie_phi``); the covariance at the ML phi is the
    Fisher-information one, phi (Z'WZ)^-1."""
    if family == "tweedie":
        agg, weights = row_aggregate(X, y), "var_weights"
        fam, scale = sm.families.Tweedie(var_power=power, eql=False), fit.phi
    else:
        agg, weights = aggregate(X, y), "freq_weights"
        fam = sm.families.Poisson() if family == "poisson" else sm.families.NegativeBinomial(alpha=fit.alpha)
        scale = 1.0
    with warnings_.catch_warnings():  # a model saturated on its distinct rows fits the row means exactly:
        warnings_.simplefilter("ignore")  # statsmodels then warns of "separation" and a 0-df scale, unused here
        glm = sm.GLM(agg.y, design(agg), family=fam, **{weights: agg.w}).fit(scale=scale)
        cells = sm.GLM(y, np.column_stack([np.ones(len(y)), X.astype(float)]), family=fam).fit(scale=scale)
    pearson = float(cells.pearson_chi2 / max(len(y) - len(cells.params), 1))
    check = {"per_cell_fit": "statsmodels GLM on one row per cell",
             "max_abs_coef_diff": float(np.max(np.abs(np.asarray(glm.params) - np.asarray(cells.params)))),
             "llf": float(cells.llf)}
    return glm, pearson, check


def run_rtm(crimes: pd.DataFrame, layers: Sequence, grid: Grid, config: RTMConfig | None = None, *,
            harm: str | None = "harm", date: str = "occurred_from", progress: Progress | None = None,
            extra_scores: dict[str, np.ndarray] | None = None, blas_threads: int | None = 1) -> RTMResult:
    """Run a Risk Terrain Model (see :func:`_run` for the arguments).

    blas_threads: BLAS and OpenMP threads during the run (default 1: the model works on many small matrices,
    where threading costs more than it gains -- measured 3x slower with 2 BLAS threads on this machine, and
    glum's OpenMP loops were ~30x slower per fit with 2 threads on the shared 2-core machine; None = leave).
    """
    if blas_threads is None:
        return _run(crimes, layers, grid, config, harm=harm, date=date, progress=progress,
                    extra_scores=extra_scores)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads):  # every loaded BLAS and OpenMP runtime (glum's included)
        return _run(crimes, layers, grid, config, harm=harm, date=date, progress=progress,
                    extra_scores=extra_scores)


def _run(crimes: pd.DataFrame, layers: Sequence, grid: Grid, config: RTMConfig | None = None, *,
         harm: str | None = "harm", date: str = "occurred_from", progress: Progress | None = None,
         extra_scores: dict[str, np.ndarray] | None = None) -> RTMResult:
    """Run a Risk Terrain Model.

    crimes: one row per offence with ``x``/``y`` (BNG) or ``lon``/``lat`` (or ``h3_<res>`` for an H3 grid)
    and a date column (``occurred_from``); optional ``harm`` column (CCHI days) used for priority places and
    the harm-weighted prior-hotspot comparison.  layers: :class:`geodata.layers.PointLayer` objects (any object
    with name, type, plural, x, y).  grid: :func:`rtm.grid.h3_grid` or :func:`rtm.grid.square_grid`.
    progress(stage, fraction) is called as the run advances (fraction 0..1 over the whole run).
    extra_scores: name -> per-cell score (aligned with grid) to compare in validation (e.g. harm spots).
    """
    cfg = config or RTMConfig()
    prog = progress or _noop
    timings: dict[str, float] = {}
    warnings: list[str] = []
    t0 = time.perf_counter()

    def mark(stage: str, t: float) -> float:
        now = time.perf_counter()
        timings[stage] = round(now - t, 3)
        return now

    # ---------------------------------------------------------------- offences to cells
    prog("offences", 0.0)
    t = time.perf_counter()
    if date not in crimes.columns:
        raise ValueError(f"crimes need a {date!r} column")
    dates = pd.to_datetime(crimes[date])
    idx = _crime_cells(grid, crimes)
    inside = idx >= 0
    per = _periods(dates[inside], cfg) if inside.any() else None
    if per is None:
        raise ValueError("no offence falls inside the grid")
    d = dates.to_numpy()
    tr = inside & (d >= per["train_start"].to_datetime64()) & (d < per["train_end"].to_datetime64())
    te = inside & (d >= per["test_start"].to_datetime64()) & (d < per["test_end"].to_datetime64())
    rc = inside & (d >= per["recent_start"].to_datetime64()) & (d < per["recent_end"].to_datetime64())
    n = len(grid)
    y = np.bincount(idx[tr], minlength=n).astype(float)  # offences per cell (training)
    y_test = np.bincount(idx[te], minlength=n).astype(float)
    hw = (crimes[harm].to_numpy(float) if harm and harm in crimes.columns else None)
    if cfg.outcome == "harm" and hw is not None and (np.isnan(hw[inside]).any() or (hw[inside] < 0).any()):
        raise ValueError(f"the {harm!r} column has missing or negative values")
    recent_n = np.bincount(idx[rc], minlength=n)
    recent_h = np.bincount(idx[rc], weights=hw[rc], minlength=n) if hw is not None else recent_n.astype(float)
    prior_h = np.bincount(idx[tr], weights=hw[tr], minlength=n) if hw is not None else None
    test_h = np.bincount(idx[te], weights=hw[te], minlength=n) if hw is not None else None
    if y.sum() == 0:
        raise ValueError("no offence in the training period inside the grid")
    if te.sum() == 0:
        warnings.append("no offences after the training period: validation skipped")
    harm_outcome = cfg.outcome == "harm"
    if harm_outcome:
        if prior_h is None:
            raise ValueError(f"outcome 'harm' needs a harm column ({harm!r}) on the offences")
        if prior_h.sum() <= 0:
            raise ValueError("outcome 'harm': the training offences carry no harm (every weight is 0)")
    y_model = prior_h if harm_outcome else y  # the modelled outcome per cell
    t = mark("offences", t)

    # ---------------------------------------------------------------- features
    prog("features", 0.05)
    fm: FeatureMatrix = build_features(grid.x, grid.y, layers, cfg.resolved_distances(), cfg.operationalisations,
                                       cfg.density_sd, block_length=cfg.block_length_m)
    variables = fm.variables
    factors = [v.factor for v in variables]
    dmax = max(cfg.resolved_distances())
    for lay in layers:
        buf = getattr(lay, "buffer_m", None)
        if buf is not None and buf < dmax:
            warnings.append(f"layer '{lay.name}' keeps features only {buf:g} m outside the study area, less than "
                            f"the largest distance tested ({dmax:g} m): cells near the edge may miss features "
                            "beyond it (reload the layer with a larger buffer_m)")
    t = mark("features", t)
    if not variables:
        raise ValueError("no layer yields a usable variable (every variable is constant over the grid)")

    # ---------------------------------------------------------------- screening
    prog("screening", 0.15)
    folds = spatial_folds(grid.x, grid.y, cfg.folds, cfg.block_m, cfg.seed)
    screen_args = dict(alpha=cfg.enet_alpha, n_lambda=cfg.n_lambda, lambda_ratio=cfg.lambda_ratio,
                       rule=cfg.lambda_rule, allow_protective=cfg.allow_protective, max_candidates=cfg.max_candidates)
    power_info: dict | None = None
    power = 1.0
    if harm_outcome:
        pos = Positive.of(y_model)
        if cfg.tweedie_power is not None:
            power = float(cfg.tweedie_power)
            power_info = {"initial": power, "method": "fixed by the request"}
        else:
            # screen and select at the midpoint p = 1.5 (screening is inclusive and barely moves with p), then
            # estimate p by profile likelihood on the selected model and, if it moved, select again at it
            power = PROVISIONAL_POWER
            power_info = {"initial": power, "method": "profile likelihood (Dunn & Smyth density) over p in "
                          "[1.05, 1.95] on the model selected at p = 1.5; selection rerun at the estimate if it "
                          "differs by more than 0.05"}
    scr = screen(fm.X, y_model, folds, **screen_args, power=power)
    t = mark("screening", t)

    # ---------------------------------------------------------------- stepwise per family
    prog("selection", 0.45)
    steps = {}
    families = cfg.resolved_families()
    for i, fam in enumerate(families):
        steps[fam] = stepwise(fm.X, y_model, scr.selected, factors, family=fam,
                              allow_protective=cfg.allow_protective, power=power)
        prog("selection", 0.45 + 0.2 * (i + 1) / len(families))
    family = min(steps, key=lambda f: steps[f].fit.bic)
    best = steps[family]
    sel = best.selected
    if harm_outcome and cfg.tweedie_power is None:
        best, power = _estimate_power(fm.X, y_model, pos, best, power, power_info,
                                      lambda p: stepwise(fm.X, y_model, scr.selected, factors, family="tweedie",
                                                         allow_protective=cfg.allow_protective, power=p))
        steps, sel = {"tweedie": best}, best.selected
    t = mark("selection", t)

    # ---------------------------------------------------------------- final fit (statsmodels) and factor table
    prog("model", 0.65)
    glm, pearson, check = _final_fit(fm.X[:, sel], y_model if family == "tweedie" else y, family, best.fit,
                                     power)
    coef = np.asarray(glm.params)
    se = np.asarray(glm.bse)
    zq = stats.norm.ppf(0.975)
    rows: list[FactorRow] = []
    for k, j in enumerate(sel, start=1):
        v = variables[j]
        rows.append(FactorRow(factor=v.factor, type=v.type, operationalisation=v.kind,
                              spatial_influence_m=v.distance, spatial_influence_blocks=v.blocks, coefficient=float(coef[k]), se=float(se[k]),
                              z=float(coef[k] / se[k]), p=float(2 * stats.norm.sf(abs(coef[k] / se[k]))),
                              rrv=float(np.exp(coef[k])), rrv_ci_low=float(np.exp(coef[k] - zq * se[k])),
                              rrv_ci_high=float(np.exp(coef[k] + zq * se[k])), cells=int(fm.X[:, j].sum())))
    rows.sort(key=lambda r: -r.rrv)
    dispersion = {"negbin_alpha": float(best.fit.alpha) if family == "negbin" else None,
                  "negbin_alpha_se": (negbin_alpha_se(aggregate(fm.X[:, sel], y), best.fit) if family == "negbin"
                                      else None),
                  "pearson_chi2_per_df": pearson}
    if family == "tweedie":
        dispersion.update({"tweedie_phi": float(best.fit.phi), "tweedie_power": float(power),
                           "tweedie_power_estimation": power_info})
    model = {
        "family": family,
        "outcome": cfg.outcome,
        "intercept": float(coef[0]), "intercept_se": float(se[0]),
        "dispersion": dispersion,
        "bic": float(best.fit.bic), "log_likelihood": float(best.fit.loglik), "cells": int(n),
        "training_offences": int(y.sum()),
        "training_harm": float(prior_h.sum()) if prior_h is not None else None,
        "bic_by_family": {f: float(s.fit.bic) for f, s in steps.items()},
        "selected_by_family": {f: [variables[j].key for j in s.selected] for f, s in steps.items()},
        "statsmodels_check": check,
    }
    t = mark("model", t)

    # ---------------------------------------------------------------- risk surface
    prog("scores", 0.7)
    present = fm.X[:, sel]
    lin = present.astype(float) @ coef[1:] if sel else np.zeros(n)
    rel = np.exp(lin - lin.min())
    mean, sd = rel.mean(), rel.std()
    cls = np.zeros(n, dtype=np.int8)
    cls[rel > mean] = 1
    cls[rel > mean + sd] = 2
    cls[rel > mean + 2 * sd] = 3
    area = grid.area_m2
    classes = []
    for c in range(4):
        m = cls == c
        row = {"class": c, "label": CLASS_LABELS[c], "cells": int(m.sum()),
               "pct_area": float(100 * area[m].sum() / area.sum()),
               "pct_train_offences": float(100 * y[m].sum() / max(y.sum(), 1)),
               "pct_test_offences": float(100 * y_test[m].sum() / y_test.sum()) if y_test.sum() else None,
               "min_relative_risk": float(rel[m].min()) if m.any() else None}
        if prior_h is not None:
            row["pct_train_harm"] = float(100 * prior_h[m].sum() / prior_h.sum()) if prior_h.sum() else None
            row["pct_test_harm"] = float(100 * test_h[m].sum() / test_h.sum()) if test_h.sum() else None
        classes.append(row)
    # priority places: high risk and recent harm, ranked by recent harm then risk
    rrv_by_pos = {k: float(np.exp(coef[k + 1])) for k in range(len(sel))}
    cand = np.flatnonzero((cls >= cfg.priority_min_class) & (recent_n > 0))
    order = cand[np.lexsort((-rel[cand], -recent_h[cand]))][: cfg.priority_top]
    months = max(1, round((per["recent_end"] - per["recent_start"]).days / 30.44))
    rel_word = "expected harm " if harm_outcome else ""
    ids = grid.id_strings() if len(order) else []
    places = []
    for rank, c in enumerate(order, start=1):
        here = [k for k in range(len(sel)) if present[c, k]]
        here.sort(key=lambda k: -rrv_by_pos[k])
        phrases = [f"{variables[sel[k]].phrase()} (RRV {rrv_by_pos[k]:.1f})" for k in here]
        harm_txt = f", {recent_h[c]:.0f} harm-days" if hw is not None else ""
        narrative = (f"{' and '.join(phrases) or 'no selected risk factor'}: {rel_word}{rel[c]:.1f}x the lowest-risk cell; "
                     f"{int(recent_n[c])} {cfg.offence_label} in {months} months{harm_txt}")
        places.append(PriorityPlace(rank=rank, cell=ids[c], lon=float(grid.lon[c]), lat=float(grid.lat[c]),
                                    relative_risk=float(rel[c]), risk_class=int(cls[c]),
                                    recent_offences=int(recent_n[c]), recent_harm=float(recent_h[c]),
                                    factors=[variables[sel[k]].key for k in here], narrative=narrative))
    t = mark("scores", t)

    # ---------------------------------------------------------------- validation
    prog("validation", 0.75)
    scores = {"rtm": rel, "prior_count": y}
    if prior_h is not None:
        scores["prior_harm"] = prior_h
    if extra_scores:
        scores.update({k: np.asarray(v, float) for k, v in extra_scores.items()})
    validation = validate(scores, y_test, area) if y_test.sum() else {}
    if validation and test_h is not None and test_h.sum() > 0:
        # the same scores judged on test-period harm: harm capture and harm-PAI (AUC: cells with any harm)
        validation["harm_weighted"] = validate(scores, test_h, area)
        validation["harm_weighted"]["test_harm"] = float(test_h.sum())
    t = mark("validation", t)

    # ---------------------------------------------------------------- bootstrap stability (block bootstrap)
    prog("bootstrap", 0.8)
    stability: dict = {"resamples": int(cfg.bootstrap), "method": "spatial block bootstrap of cells "
                       f"({cfg.block_m:g} m blocks); stepwise selection ({family}) rerun on the screened candidates"}
    if cfg.bootstrap > 0:
        rng = np.random.default_rng(cfg.seed + 1)
        blocks = block_ids(grid.x, grid.y, cfg.block_m)
        nb = blocks.max() + 1
        fac_hits: dict[str, int] = {}
        var_hits: dict[str, int] = {}
        sizes = []
        for b in range(cfg.bootstrap):
            mult = np.bincount(rng.integers(0, nb, nb), minlength=nb)
            wts = mult[blocks].astype(float)
            r = stepwise(fm.X, y_model, scr.selected, factors, family=family, w=wts,
                         allow_protective=cfg.allow_protective, power=power)
            sizes.append(len(r.selected))
            for j in r.selected:
                fac_hits[variables[j].factor] = fac_hits.get(variables[j].factor, 0) + 1
                var_hits[variables[j].key] = var_hits.get(variables[j].key, 0) + 1
            prog("bootstrap", 0.8 + 0.19 * (b + 1) / cfg.bootstrap)
        B = float(cfg.bootstrap)
        stability["factor_frequency"] = {k: v / B for k, v in sorted(fac_hits.items(), key=lambda kv: -kv[1])}
        stability["variable_frequency"] = {k: v / B for k, v in sorted(var_hits.items(), key=lambda kv: -kv[1])}
        stability["mean_model_size"] = float(np.mean(sizes))
        for row in rows:
            row.bootstrap_selected = fac_hits.get(row.factor, 0) / B
            key = Variable(row.factor, row.operationalisation, row.spatial_influence_m).key
            row.bootstrap_same = var_hits.get(key, 0) / B
    t = mark("bootstrap", t)
    timings["total"] = round(time.perf_counter() - t0, 3)
    prog("done", 1.0)

    n_out = int((~inside).sum())
    if n_out:
        warnings.append(f"{n_out} offences fall outside the grid and were not used")
    return RTMResult(
        config=cfg.to_dict(), grid=grid.describe(),
        layers=[(lay.summary() if hasattr(lay, "summary") else {"name": lay.name, "features": len(lay.x)})
                for lay in layers],
        outcome={"kind": cfg.outcome,
                 "description": ("harm per cell (sum of harm weights of the training offences), Tweedie model"
                                 if harm_outcome else "offences per cell in training, Poisson or negative binomial"),
                 "training_harm": float(prior_h.sum()) if prior_h is not None else None,
                 "test_harm": float(test_h.sum()) if test_h is not None else None,
                 "training_offences": int(y.sum()), "test_offences": int(y_test.sum()),
                 "recent_offences": int(recent_n.sum()), "outside_grid": n_out,
                 "harm_column": harm if hw is not None else None,
                 "cells_with_training_offences": int((y > 0).sum())},
        periods={k: v.date().isoformat() for k, v in per.items()},
        model=model, factors=rows, screening=scr.to_dict(),
        selection={"family": family, "history": steps[family].history,
                   "candidates": [variables[j].key for j in scr.selected],
                   "variables_built": len(variables), "variables_constant": fm.dropped},
        risk_classes=classes, priority_places=places, validation=validation, stability=stability,
        timings=timings, warnings=warnings, cell_grid=grid, relative_risk=rel, risk_class=cls, train_counts=y,
        test_counts=y_test, present=present)


def cells_table(result: RTMResult, min_class: int = 0) -> pd.DataFrame:
    """Per-cell table for GeoJSON/CSV renderers: cell (H3 hex or square id), lon/lat of the centre,
    relative_risk, risk_class (0-3), risk_label, training and test counts."""
    g = result.cell_grid
    m = result.risk_class >= min_class
    idx = np.flatnonzero(m)
    ids = np.asarray(g.id_strings(), dtype=object)[idx] if len(idx) else np.array([], dtype=object)
    return pd.DataFrame({"cell": ids, "lon": g.lon[idx], "lat": g.lat[idx],
                         "relative_risk": result.relative_risk[idx], "risk_class": result.risk_class[idx],
                         "risk_label": np.asarray(CLASS_LABELS, dtype=object)[result.risk_class[idx]],
                         "train_offences": result.train_counts[idx].astype(int),
                         "test_offences": result.test_counts[idx].astype(int)})


def cells_geojson(result: RTMResult, min_class: int = 1, limit: int | None = 50_000) -> dict:
    """RFC 7946 FeatureCollection of cell polygons with relative_risk and risk_class (classes >= min_class)."""
    table = cells_table(result, min_class)
    order = np.argsort(-table["relative_risk"].to_numpy(), kind="stable")
    if limit is not None:
        order = order[:limit]
    table = table.iloc[order]
    idx = result.cell_grid.index_of(_ids_back(result.cell_grid, table["cell"].tolist()))
    rings = result.cell_grid.boundaries_lonlat(idx)
    feats = [{"type": "Feature", "id": c, "geometry": {"type": "Polygon", "coordinates": [ring]},
              "properties": {"cell": c, "relative_risk": round(float(r), 4), "risk_class": int(k),
                             "risk_label": lab}}
             for c, r, k, lab, ring in zip(table["cell"], table["relative_risk"], table["risk_class"],
                                           table["risk_label"], rings)]
    return {"type": "FeatureCollection", "features": feats}


def _ids_back(grid: Grid, ids: list[str]) -> np.ndarray:
    if grid.kind == "h3":
        from geodata.cells import from_hex

        return from_hex(ids)
    return square_ids(ids, grid.ncols)
