"""RTM engine: planted-risk recovery, irrelevant layers, numerics against statsmodels, validation, outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm

from rtm import RTMConfig, build_features, cells_geojson, cells_table, run_rtm, square_grid, synthetic
from rtm.enet import enet_path
from rtm.glm import aggregate, fit_count, fit_negbin, row_groups
from rtm.validate import auc, capture

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def planted():
    syn = synthetic.make(
        cells=12_000, seed=3, base_rate=0.6, months=12,
        layers={"bar": {"n": 150, "clusters": 20, "spread": 250}, "takeaway": {"n": 220, "clusters": 25, "spread": 300},
                "school": {"n": 90}, "church": {"n": 120, "clusters": 15, "spread": 400}},
        planted={"bar:proximity:100": 3.0, "takeaway:density:200": 2.0})
    seen = []
    res = run_rtm(syn.crimes, syn.layers, syn.grid, RTMConfig(bootstrap=8, test_months=3),
                  progress=lambda stage, f: seen.append((stage, f)))
    return syn, res, seen


def test_planted_factors_recovered(planted):
    syn, res, _ = planted
    got = {(r.factor, r.operationalisation, r.spatial_influence_m): r.rrv for r in res.factors}
    assert set(got) == {("bar", "proximity", 100.0), ("takeaway", "density", 200.0)}, got
    assert got[("bar", "proximity", 100.0)] == pytest.approx(3.0, rel=0.2)
    assert got[("takeaway", "density", 200.0)] == pytest.approx(2.0, rel=0.2)
    for r in res.factors:
        assert r.rrv_ci_low < r.rrv < r.rrv_ci_high and r.p < 1e-6


def test_irrelevant_layers_not_selected(planted):
    _, res, _ = planted
    factors = {r.factor for r in res.factors}
    assert "school" not in factors and "church" not in factors
    for fam, keys in res.model["selected_by_family"].items():
        assert not any(k.startswith(("school:", "church:")) for k in keys), fam
    assert res.stability["factor_frequency"]["bar"] >= 0.9
    assert res.stability["factor_frequency"].get("school", 0) <= 0.3


def test_outputs_and_progress(planted):
    syn, res, seen = planted
    stages = [s for s, _ in seen]
    assert stages[0] == "offences" and stages[-1] == "done"
    assert all(b >= a for (_, a), (_, b) in zip(seen, seen[1:]))
    d = res.to_dict()
    json.dumps(d)  # serialisable
    assert d["model"]["family"] in ("poisson", "negbin")
    assert set(d["model"]) >= {"intercept", "dispersion", "bic", "bic_by_family"}
    assert res.relative_risk.min() == pytest.approx(1.0)
    assert sum(c["pct_area"] for c in res.risk_classes) == pytest.approx(100.0)
    top = res.risk_classes[3]
    assert top["pct_train_offences"] > top["pct_area"]  # risky cells hold more than their share
    pp = res.priority_places
    assert pp and pp[0].rank == 1 and all(p.risk_class >= 2 for p in pp)
    assert [p.recent_harm for p in pp] == sorted((p.recent_harm for p in pp), reverse=True)
    assert "x the lowest-risk cell;" in pp[0].narrative and "offences in 12 months" in pp[0].narrative
    assert "(RRV " in pp[0].narrative
    v = res.validation["methods"]
    assert {"rtm", "prior_count", "prior_harm"} <= set(v)
    assert v["rtm"]["pai_5pct"] > 1 and v["rtm"]["auc"] > 0.5
    table = cells_table(res)
    assert len(table) == len(syn.grid) and table["cell"].str.len().eq(15).all()
    gj = cells_geojson(res, min_class=3, limit=5)
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 5
    ring = gj["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 7


def test_features_proximity_and_density_exact():
    from geodata.layers import PointLayer

    cx = np.array([0.0, 60.0, 120.0, 500.0]) + 570_000
    cy = np.full(4, 206_000.0)
    lay = PointLayer.from_xy("pub", "pub", np.array([570_000.0, 569_990.0]), np.array([206_000.0, 206_000.0]))
    fm = build_features(cx, cy, [lay], (50.0, 100.0, 150.0), ("proximity", "density"), density_sd=0.5)
    assert list(fm.column("pub:proximity:50")) == [1, 0, 0, 0]
    assert list(fm.column("pub:proximity:100")) == [1, 1, 0, 0]
    assert np.allclose(fm.nearest["pub"][:3], [0.0, 60.0, 120.0])
    assert list(fm.column("pub:density:100")) == [1, 0, 0, 0]  # mean + 0.5 SD threshold
    assert "pub:proximity:150" in [v.key for v in fm.variables]


def test_count_fits_match_statsmodels():
    """Fits on collapsed rows (statsmodels GLM with frequency weights; NB alpha by profile likelihood) equal
    statsmodels on one row per cell (Poisson GLM; discrete NegativeBinomial, alpha by joint ML)."""
    rng = np.random.default_rng(0)
    X = (rng.random((5000, 2)) < [0.2, 0.3]).astype(np.uint8)
    mu = 0.4 * np.exp(X @ [0.9, 0.4])
    y = rng.negative_binomial(1 / 0.7, 1 / (1 + 0.7 * mu))
    agg = aggregate(X, y)
    assert len(agg.y) < 100
    pf = fit_count(agg)
    ref = sm.GLM(y, sm.add_constant(X.astype(float)), family=sm.families.Poisson()).fit()
    assert np.allclose(pf.coef, ref.params, atol=1e-6) and pf.loglik == pytest.approx(ref.llf)
    nb = fit_negbin(agg)
    ref2 = sm.NegativeBinomial(y, sm.add_constant(X.astype(float))).fit(disp=0)
    assert np.allclose(nb.coef, ref2.params[:-1], atol=2e-3)
    assert nb.alpha == pytest.approx(ref2.params[-1], rel=0.01)
    assert nb.loglik >= ref2.llf - 1e-3


def test_enet_kkt():
    rng = np.random.default_rng(1)
    X = (rng.random((3000, 6)) < 0.3).astype(np.uint8)
    X[:, 1] = X[:, 0] | (rng.random(3000) < 0.05)  # nearly collinear pair, like nested distances
    y = rng.poisson(0.3 * np.exp(X @ [1.0, 0, 0.5, 0, 0, 0]))
    first, inv = row_groups(X)
    n, s = np.bincount(inv).astype(float), np.bincount(inv, weights=y)
    path = enet_path(X[first], n, s, alpha=0.5)
    for k in (4, 9, 14):
        lam, b = path.lambdas[k], path.coefs[k] * path.scale
        Xs = X[first] / path.scale
        mu = np.exp(path.intercepts[k] + Xs @ b)
        g = Xs.T @ (s - n * mu) / n.sum()
        act = b != 0
        assert np.allclose(g[act], lam * (0.5 * np.sign(b[act]) + 0.5 * b[act]), atol=1e-6)
        assert np.all(np.abs(g[~act]) <= lam * 0.5 + 1e-8)


def test_capture_handles_ties_and_auc():
    score = np.array([3, 2, 2, 1, 1, 1, 1, 1, 1, 1], float)
    counts = np.array([2, 1, 3, 0, 0, 0, 0, 0, 0, 4], float)
    area = np.ones(10)
    h = capture(score, counts, area, (0.1, 0.2, 0.3))
    assert h == pytest.approx([0.2, 0.2 + 0.5 * 0.4, 0.6])
    assert auc(np.array([1, 2, 3, 4.0]), np.array([0, 0, 1, 1])) == 1.0
    assert auc(np.ones(4), np.array([0, 1, 0, 1])) == 0.5


def test_square_grid_run():
    syn = synthetic.make(cells=3000, seed=5, base_rate=0.4, planted={"bar:proximity:150": 4.0},
                         layers={"bar": {"n": 60, "clusters": 10, "spread": 300}, "school": {"n": 30}})
    poly = synthetic.box_area(3000)
    g = square_grid(poly, median_block_length=200)
    assert g.cell_size == 100 and len(g) > 3000
    res = run_rtm(syn.crimes.drop(columns=["h3_10"]), syn.layers, g, RTMConfig(bootstrap=0))
    assert [r.factor for r in res.factors] == ["bar"]
    t = cells_table(res)
    assert t["cell"].str.startswith("sq100_").all()
    gj = cells_geojson(res, min_class=0, limit=3)
    assert len(gj["features"][0]["geometry"]["coordinates"][0]) == 5


@pytest.mark.skipif(not (SHARED / "crime").exists(), reason="../shared/data is absent (real data not mounted)")
def test_real_essex_violence_smoke():
    import geopandas as gpd
    import shapely

    from geodata.ingest import StudyArea, parse_files
    from geodata.layers import load_layer
    from rtm import h3_grid

    lsoa = gpd.read_file(SHARED / "boundaries" / "essex_lsoa2011.geojson")
    poly = shapely.make_valid(lsoa[lsoa["LAD_NAME"] == "Chelmsford"].geometry.union_all())
    area = StudyArea(bbox=tuple(poly.bounds), polygon=poly, name="Chelmsford")
    rows = parse_files([(SHARED / "crime" / "essex_street_2024-01_to_2024-04.csv.gz", None)], area).rows
    rows = rows[rows["category"] == "Violence and sexual offences"]
    poi = SHARED / "poi"
    layers = [load_layer(poi / "essex_osm_pubs.csv", "osm_pubs", "pub", area=area),
              load_layer(poi / "essex_railway_stations.csv", "stations", "railway station", area=area),
              load_layer(poi / "essex_fhrs_pubs_restaurants.csv", "fhrs_restaurants", "restaurant", area=area,
                         where={"business_type": "Restaurant"})]
    grid = h3_grid(area, 10)
    res = run_rtm(rows, layers, grid, RTMConfig(bootstrap=2, test_months=1), harm=None)
    assert res.outcome["training_offences"] > 500 and res.outcome["test_offences"] > 100
    assert res.periods["test_start"] == "2024-04-01"
    assert set(res.validation["methods"]) == {"rtm", "prior_count"}
    json.dumps(res.to_dict())
