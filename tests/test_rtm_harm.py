"""RTM harm-weighted outcome (Tweedie) and distances in street-block lengths.

The Tweedie numerics are checked against statsmodels (density, coefficients, standard errors); the planted test
puts a factor that makes offences more *harmful* but not more *frequent*: the harm model must find it with the
right harm RRV, the count model must not."""
from __future__ import annotations

import json

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.genmod.families import Tweedie

from rtm import RTMConfig, run_rtm, synthetic
from rtm.enet import enet_path
from rtm.glm import row_groups
from rtm.model import row_aggregate
from rtm.tweedie import Positive, fit_beta, fit_tweedie, loglik, profile_power, simulate

LAYERS = {"bar": {"n": 150, "clusters": 20, "spread": 250}, "takeaway": {"n": 220, "clusters": 25, "spread": 300},
          "school": {"n": 90}, "station": {"n": 120}, "church": {"n": 120, "clusters": 15, "spread": 400}}


@pytest.mark.parametrize("power,phi", [(1.2, 3.0), (1.5, 40.0), (1.8, 200.0)])
def test_tweedie_loglik_equals_statsmodels(power, phi):
    rng = np.random.default_rng(7)
    X = (rng.random((4000, 2)) < [0.25, 0.4]).astype(np.uint8)
    mu = 12.0 * np.exp(X @ [1.0, 0.5])
    y = simulate(rng, mu, phi, power)
    assert (y == 0).any() and (y > 0).any()
    first, inv = row_groups(X)
    n, s = np.bincount(inv).astype(float), np.bincount(inv, weights=y)
    ours = loglik(Positive.of(y), n, s, mu[first], phi, power)
    ref = Tweedie(var_power=power, eql=False).loglike_obs(y, mu, scale=phi).sum()
    assert ours == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("power,phi,mu", [(1.2, 3.0, 12.0), (1.5, 40.0, 30.0), (1.8, 2.0, 5.0)])
def test_tweedie_density_is_a_distribution(power, phi, mu):
    """The density our log-likelihood uses (statsmodels' series term plus the mean part) is a proper
    compound Poisson-gamma law, independently of statsmodels: P(Y = 0) = exp(-lambda) with
    lambda = mu^(2-p) / (phi (2-p)), the density over y > 0 carries the rest of the mass, and its mean is mu."""
    from scipy.integrate import quad

    def density(y: float) -> float:
        return float(np.exp(loglik(Positive.of(np.array([y])), np.ones(1), np.array([y]), np.array([mu]), phi,
                                   power)))

    p0 = np.exp(-mu ** (2 - power) / (phi * (2 - power)))
    assert loglik(Positive.of(np.zeros(1)), np.ones(1), np.zeros(1), np.array([mu]), phi, power) == \
        pytest.approx(np.log(p0), rel=1e-12)
    mass = quad(density, 0, np.inf, limit=400)[0]
    mean = quad(lambda y: y * density(y), 0, np.inf, limit=400)[0]
    assert p0 + mass == pytest.approx(1.0, abs=1e-6)
    assert mean == pytest.approx(mu, rel=1e-5)


def test_tweedie_fit_equals_statsmodels_and_recovers_power():
    rng = np.random.default_rng(1)
    X = (rng.random((20_000, 2)) < 0.2).astype(np.uint8)
    y = simulate(rng, 20.0 * np.exp(X @ np.log([3.0, 2.0])), phi=80.0, power=1.6)
    agg = row_aggregate(X, y)
    assert len(agg.y) == 4  # four distinct rows: the fit needs only (cells, summed harm) per row
    pos = Positive.of(y)
    fit = fit_tweedie(agg, pos, 1.6)
    ref = sm.GLM(y, sm.add_constant(X.astype(float)), family=Tweedie(var_power=1.6, eql=False)).fit(scale=fit.phi)
    assert np.allclose(fit.coef, ref.params, atol=1e-7)
    assert np.allclose(np.sqrt(np.diag(fit.cov)), ref.bse, rtol=1e-6)
    # phi is the ML estimate: the per-cell statsmodels log-likelihood is lower at nearby phi
    ll = lambda f: Tweedie(var_power=1.6, eql=False).loglike_obs(y, ref.mu, scale=f).sum()  # noqa: E731
    assert fit.loglik == pytest.approx(ll(fit.phi), rel=1e-9)
    assert ll(fit.phi) > ll(fit.phi * 1.05) and ll(fit.phi) > ll(fit.phi / 1.05)
    p, _ = profile_power(pos, agg.w, agg.w * agg.y, lambda q: np.asarray(fit_beta(agg, q).mu))
    assert p == pytest.approx(1.6, abs=0.03)


def test_tweedie_enet_path_kkt():
    rng = np.random.default_rng(2)
    X = (rng.random((3000, 5)) < 0.3).astype(np.uint8)
    X[:, 1] = X[:, 0] | (rng.random(3000) < 0.05)
    y = simulate(rng, 8.0 * np.exp(X @ [1.0, 0, 0.5, 0, 0]), phi=10.0, power=1.5)
    first, inv = row_groups(X)
    n, s = np.bincount(inv).astype(float), np.bincount(inv, weights=y)
    path = enet_path(X[first], n, s, alpha=0.5, power=1.5)
    for k in (3, 8, 14):
        lam, b = path.lambdas[k], path.coefs[k] * path.scale
        Xs = X[first] / path.scale
        mu = np.exp(path.intercepts[k] + Xs @ b)
        g = Xs.T @ ((s - n * mu) * mu ** -0.5) / n.sum()
        act = b != 0
        # KKT to the IRLS convergence tolerance (relative 1e-5 on the coefficients)
        assert np.allclose(g[act], lam * (0.5 * np.sign(b[act]) + 0.5 * b[act]), rtol=1e-4, atol=1e-6)
        assert np.all(np.abs(g[~act]) <= lam * 0.5 * (1 + 1e-4))
    assert path.coefs[-1][0] > 0 and path.coefs[-1][2] > 0


@pytest.fixture(scope="module")
def severity():
    syn = synthetic.make(cells=12_000, seed=5, base_rate=0.8, months=12, layers=LAYERS,
                         planted={"bar:proximity:100": 3.0}, severity={"station:proximity:150": 4.0}, harm_shape=2.0)
    harm = run_rtm(syn.crimes, syn.layers, syn.grid, RTMConfig(bootstrap=4, test_months=3, outcome="harm"))
    count = run_rtm(syn.crimes, syn.layers, syn.grid, RTMConfig(bootstrap=0, test_months=3))
    return syn, harm, count


def test_harm_outcome_recovers_frequency_and_severity_factors(severity):
    _, res, _ = severity
    got = {(r.factor, r.operationalisation, r.spatial_influence_m): r for r in res.factors}
    assert set(got) == {("bar", "proximity", 100.0), ("station", "proximity", 150.0)}, got
    # expected harm per cell = rate x severity: bar 3 x 1, station 1 x 4
    assert got[("bar", "proximity", 100.0)].rrv == pytest.approx(3.0, rel=0.2)
    assert got[("station", "proximity", 150.0)].rrv == pytest.approx(4.0, rel=0.2)
    assert res.model["family"] == "tweedie" and res.model["outcome"] == "harm"
    disp = res.model["dispersion"]
    assert 1.0 < disp["tweedie_power"] < 2.0 and disp["tweedie_phi"] > 0
    assert disp["tweedie_power_estimation"]["method"].startswith("profile likelihood")
    assert res.screening["power"] == disp["tweedie_power_estimation"]["initial"] == 1.5
    assert disp["tweedie_power"] == disp["tweedie_power_estimation"]["final"]
    assert res.model["statsmodels_check"]["max_abs_coef_diff"] < 1e-6
    assert not ({"school", "church", "takeaway"} & {r.factor for r in res.factors})
    assert res.stability["factor_frequency"]["station"] >= 0.75


def test_count_outcome_does_not_see_the_severity_factor(severity):
    _, harm, count = severity
    assert "station" not in {r.factor for r in count.factors}
    assert "bar" in {r.factor for r in count.factors}
    # judged on test-period harm, the harm model ranks places better than the count model
    h = harm.validation["harm_weighted"]["methods"]["rtm"]["pai_5pct"]
    c = count.validation["harm_weighted"]["methods"]["rtm"]["pai_5pct"]
    assert h > c


def test_harm_outcome_outputs(severity):
    _, res, _ = severity
    d = res.to_dict()
    json.dumps(d)
    assert d["outcome"]["kind"] == "harm" and d["outcome"]["training_harm"] > 0
    assert d["config"]["families"] == ["tweedie"]
    assert all("pct_train_harm" in c for c in d["risk_classes"])
    assert sum(c["pct_train_harm"] for c in d["risk_classes"]) == pytest.approx(100.0)
    assert "expected harm" in res.priority_places[0].narrative


def test_harm_outcome_needs_harm_and_fixed_power_is_used(severity):
    syn, _, _ = severity
    with pytest.raises(ValueError, match="harm column"):
        run_rtm(syn.crimes, syn.layers, syn.grid, RTMConfig(outcome="harm", bootstrap=0), harm=None)
    with pytest.raises(ValueError, match="between 1 and 2"):
        RTMConfig(outcome="harm", tweedie_power=2.5)
    with pytest.raises(ValueError, match="outcome"):
        RTMConfig(outcome="days")
    bad = syn.crimes.copy()
    bad.loc[bad.index[0], "harm"] = -1.0
    with pytest.raises(ValueError, match="negative"):
        run_rtm(bad, syn.layers, syn.grid, RTMConfig(outcome="harm", bootstrap=0))
    res = run_rtm(syn.crimes, syn.layers[:2], syn.grid, RTMConfig(outcome="harm", tweedie_power=1.4, bootstrap=0))
    assert res.model["dispersion"]["tweedie_power"] == 1.4 and res.screening["power"] == 1.4


def test_distances_in_block_lengths():
    """Block length 120 m: distances 60, 120, ... 360 m; a factor planted at 1 block is found at 1 block."""
    syn = synthetic.make(cells=8000, seed=11, base_rate=0.6, months=12,
                         layers={"bar": {"n": 150, "clusters": 20, "spread": 250}, "school": {"n": 90}},
                         planted={"bar:proximity:120": 3.0})
    cfg = RTMConfig(block_length_m=120.0, bootstrap=0)
    assert cfg.resolved_distances() == (60.0, 120.0, 180.0, 240.0, 300.0, 360.0)
    res = run_rtm(syn.crimes, syn.layers, syn.grid, cfg)
    [row] = res.factors
    assert (row.factor, row.operationalisation, row.spatial_influence_m) == ("bar", "proximity", 120.0)
    assert row.spatial_influence_blocks == 1.0
    assert row.rrv == pytest.approx(3.0, rel=0.2)
    assert "within 120 m (1 block) of a bar" in res.priority_places[0].narrative
    assert res.config["block_length_m"] == 120.0 and res.config["distances"][-1] == 360.0
    # explicit metres win over block multiples; custom multiples are honoured
    assert RTMConfig(block_length_m=100.0, distances=(50, 75)).resolved_distances() == (50.0, 75.0)
    assert RTMConfig(block_length_m=100.0, distances_blocks=(1, 2)).resolved_distances() == (100.0, 200.0)
    assert RTMConfig().resolved_distances()[-1] == 400.0


@pytest.mark.parametrize("power", [1.0, 1.5])
def test_enet_path_equals_glum_on_every_cell(power):
    """The screening path (glum on collapsed rows, our standardisation and lambda grid) equals glum fitted on
    one row per cell with its own standardisation: the collapsing is exact and the penalty is glmnet's.  (That
    the path is optimal at all is checked independently of glum by the KKT tests, here and in test_rtm.py.)"""
    import warnings

    from glum import GeneralizedLinearRegressor, TweedieDistribution

    rng = np.random.default_rng(2)
    X = (rng.random((3000, 5)) < 0.3).astype(np.uint8)
    X[:, 1] = X[:, 0] | (rng.random(3000) < 0.05)
    mu = 8.0 * np.exp(X @ [1.0, 0, 0.5, 0, 0])
    y = rng.poisson(mu).astype(float) if power == 1.0 else simulate(rng, mu, phi=10.0, power=power)
    first, inv = row_groups(X)
    n, s = np.bincount(inv).astype(float), np.bincount(inv, weights=y)
    path = enet_path(X[first], n, s, alpha=0.5, power=power)
    family = "poisson" if power == 1.0 else TweedieDistribution(power)
    for k in (3, 8, 14):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # glum's line-search notices near its optimum
            ref = GeneralizedLinearRegressor(family=family, link="log", alpha=path.lambdas[k], l1_ratio=0.5,
                                             scale_predictors=True, gradient_tol=1e-10).fit(X.astype(float), y)
        assert np.allclose(path.coefs[k], ref.coef_, atol=5e-5), (k, path.coefs[k], ref.coef_)
        assert path.intercepts[k] == pytest.approx(ref.intercept_, abs=5e-5)
        assert np.array_equal(path.coefs[k] == 0, np.abs(ref.coef_) < 1e-8)
