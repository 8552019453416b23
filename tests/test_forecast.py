"""The forecast ranking (method=forecast): planted skill over prior harm, no leakage from after the look-back,
parts that add up, the same result on the Dask executor, every door, and hostile parameters against the real
service process."""
from __future__ import annotations

import gzip
import json

import h3
import numpy as np
import pandas as pd
import pytest

from geodata.harm import load_open_default
from geodata.ingest import parse_files
from geodata.store import Store
from hotspots.ranking.forecast import FORECAST_COLUMNS, decay, exposure_months, record_age_months
from hotspots.ranking.harmspots import harm_spots
from hotspots.ranking.query import HotspotQuery
from hotspots.stats.backtest import BacktestConfig, ratio_to_best, run_backtest
from hotspots.stats.gistar import domain_from_cells
from tests import live
from tests.conftest import SAMPLE

CENTRE = h3.latlng_to_cell(52.6369, -1.1398, 9)


# ------------------------------------------------------------------------------------------ planted skill
def planted(domain, months: pd.DatetimeIndex, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A stable hot set (2 % of the cells, ~4 offences of 50 days a month each: 2,400 days a year), one-off
    high-harm noise (one other cell a month gets a single 3,000-day offence, more than a hot cell's year) and a
    thin background of 1-day offences."""
    rng = np.random.default_rng(seed)
    n = len(domain)
    hot = rng.choice(n, size=max(1, n // 50), replace=False)
    others = np.setdiff1d(np.arange(n), hot)
    frames = []
    for t in months:
        frames.append(pd.DataFrame({"cell": np.repeat(domain.cells[hot], rng.poisson(4.0, len(hot))),
                                    "occurred_from": t, "harm": 50.0}))
        frames.append(pd.DataFrame({"cell": domain.cells[rng.choice(others, 1)], "occurred_from": t,
                                    "harm": 3000.0}))
        frames.append(pd.DataFrame({"cell": np.repeat(domain.cells, rng.poisson(0.05, n)), "occurred_from": t,
                                    "harm": 1.0}))
    ev = pd.concat(frames, ignore_index=True)
    ev["precision"] = "month"
    return ev, hot


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # prior harm captures nothing at some origins: ratio inf
def test_forecast_beats_prior_harm_on_a_stable_hot_set_with_one_off_noise():
    domain = domain_from_cells(np.array([h3.str_to_int(c) for c in h3.grid_disk(CENTRE, 12)], dtype=np.uint64))
    ev, hot = planted(domain, pd.date_range("2021-01-01", periods=24, freq="MS"))
    res = run_backtest(ev, domain, BacktestConfig(methods=("harm_spots", "prior_counts", "forecast"), bootstrap=500))
    s = res.summary.set_index(["method", "coverage"])
    # prior harm chases last year's one-off 3,000-day cells; the forecast keeps the stable hot set
    r = ratio_to_best(res.per_origin, baselines=("harm_spots",), n_boot=500).set_index("coverage")
    assert (r.loc[[0.01, 0.02], "ratio_lo"] > 2).all(), r
    assert r.loc[0.05, "ratio"] >= 1.0  # at 5 % both hold the hot set and the noise cells
    # and it gives up nothing against counting (the hot set is also the busiest): within 10 %
    for cov in (0.01, 0.02):
        assert s.loc[("forecast", cov), "harm_pai"] >= 0.9 * s.loc[("prior_counts", cov), "harm_pai"]
    assert s.loc[("forecast", 0.02), "n_origins"] == 12 and s.loc[("forecast", 0.02), "interval_reliable"]


# ----------------------------------------------------------------------------------------------- leakage
@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The bundled sample twice: every month (2024-01..04), and only the months before 2024-04."""
    from app.state import SAMPLE_DISTRICTS
    from geodata.ingest import StudyArea

    tmp = tmp_path_factory.mktemp("forecast")
    area = StudyArea.from_geojson(SAMPLE_DISTRICTS, "Essex districts")
    raw = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    early = tmp / "early.csv.gz"
    with gzip.open(early, "wt", encoding="utf-8", newline="") as f:
        raw[raw["Month"] < "2024-04"].to_csv(f, index=False)
    out = {}
    for name, path in (("full", SAMPLE), ("early", early)):
        store = Store(tmp / f"{name}.duckdb")
        store.ingest("e", parse_files([(str(path), None)], area), area)
        out[name] = store
    yield out
    for s in out.values():
        s.close()


@pytest.mark.parametrize("spec", [{"to": "2024-03"}, {"to": "2024-03", "from": "2024-02"},
                                  {"to": "2024-03", "preset": "all-crime", "resolution": 9},
                                  {"to": "2024-03", "area": None, "bbox": (0.4, 51.5, 0.8, 51.8)}])
def test_forecast_at_t_ignores_records_after_t(stores, spec):
    """The forecast for 2024-04 from records to 2024-03 is the same whether the store also holds 2024-04."""
    w = load_open_default()
    q = HotspotQuery.model_validate({"dataset": "e", "method": "forecast", "top": None, **spec})
    a, b = harm_spots(stores["full"], q, w), harm_spots(stores["early"], q, w)
    assert len(a.cells) > 100
    assert a.cells["h3"].tolist() == b.cells["h3"].tolist()
    for col in ["harm", "count", *FORECAST_COLUMNS]:
        np.testing.assert_allclose(a.cells[col].to_numpy(float), b.cells[col].to_numpy(float), rtol=1e-12)
    assert a.meta()["forecast"] == b.meta()["forecast"]
    assert a.meta()["forecast"]["forecast_period"] == {"from": "2024-04-01", "to": "2024-04-30"}
    # the early store's default look-back ends at its last full month: the same forecast
    if "from" not in spec:
        d = harm_spots(stores["early"], q.model_copy(update={"date_to": None}), w)
        assert d.cells["h3"].tolist() == b.cells["h3"].tolist()


def test_backtest_forecast_at_origin_ignores_later_months(stores, essex_parsed):
    parsed, _ = essex_parsed
    rows = parsed.rows.assign(cell=lambda r: r["h3_9"])
    rows["harm"] = 1.0 + 100.0 * (rows["category"] == "Violence and sexual offences")
    domain = domain_from_cells(np.unique(rows["cell"].to_numpy(np.uint64)))
    cfg = BacktestConfig(methods=("forecast", "prior_counts"), train_slices=1, bootstrap=10)
    full = run_backtest(rows, domain, cfg).per_origin
    early = run_backtest(rows[rows["occurred_from"] < pd.Timestamp("2024-04-01")], domain, cfg).per_origin
    assert sorted(early.origin.unique()) == ["2024-02", "2024-03"]
    a = full[full.origin.isin(early.origin.unique())].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, early.reset_index(drop=True))


# ------------------------------------------------------------------------------------------------- parts
def test_forecast_parts_add_up_and_rank_the_cells(stores):
    w = load_open_default()
    r = harm_spots(stores["full"], HotspotQuery(dataset="e", method="forecast", top=None), w)
    c, fc = r.cells, r.meta()["forecast"]
    lam = fc["parameters"]["records_weight"]
    np.testing.assert_allclose(c["forecast_harm"], (1 - lam) * c["forecast_own_harm"] + lam * c["forecast_records_harm"])
    np.testing.assert_allclose(c["forecast_records_harm"], c["forecast_records"] * fc["parameters"]["harm_per_record"],
                               rtol=1e-3)
    assert (np.diff(c["forecast_harm"].round(6).to_numpy()) <= 0).all() and c["rank"].tolist()[:3] == [1, 2, 3]
    assert r.method == "forecast" and r.meta()["rank_by"] == "forecast_harm"
    # every record counts in the all-record part (ASB and other types included); op-ark harm only in part 1
    per_month = stores["full"].query_df("SELECT occurred_from AS t, count(*) AS n FROM offences GROUP BY 1")
    wts = decay(record_age_months(per_month["t"], pd.Timestamp("2024-05-01")), 6.0)
    assert fc["parameters"]["exposure_months"] == pytest.approx(wts.sum(), abs=1e-4)
    assert fc["parameters"]["exposure_months"] == pytest.approx(
        exposure_months(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-05-01"), True, 6.0))
    assert c["forecast_records"].sum() == pytest.approx((per_month["n"] * wts).sum() / wts.sum())
    # observed harm and count are the look-back's (all four months of the op-ark selection)
    obs = harm_spots(stores["full"], HotspotQuery(dataset="e", **{"from": "2024-01", "to": "2024-04"}, top=None), w)
    assert c["harm"].sum() == pytest.approx(obs.total_harm) and c["count"].sum() == obs.total_count
    assert fc["look_back"] == {"from": "2024-01-01", "to": "2024-04-30",
                               "rule": "look-back over all history to the end of the last full month of data"}


def test_observed_is_the_default_and_unchanged(stores):
    w = load_open_default()
    a = harm_spots(stores["full"], HotspotQuery(dataset="e"), w)
    b = harm_spots(stores["full"], HotspotQuery(dataset="e", method="observed"), w)
    assert a.meta() == b.meta() and a.method == "observed" and "forecast" not in a.meta()
    assert a.cells["h3"].tolist() == b.cells["h3"].tolist()


def test_unknown_method_is_a_validation_error():
    with pytest.raises(ValueError, match="method is one of"):
        HotspotQuery(dataset="e", method="crystal-ball")


# -------------------------------------------------------------------------------------------------- doors
def test_every_format_carries_the_forecast(api):
    j = api.get("/hotspots", params={"method": "forecast", "top": 5})
    assert j.status_code == 200, j.text
    body = j.json()
    assert body["method"] == "forecast" and body["forecast"]["model"].startswith("expected harm next period")
    assert set(FORECAST_COLUMNS) <= set(body["cells"][0]) and len(body["cells"]) == 5
    assert "backtest_skill" in body["forecast"] and body["forecast"]["parameters"]["half_life_months"] == 6.0
    csv = api.get("/hotspots", params={"method": "forecast", "top": 5, "format": "csv"}).text
    assert all(c in csv.splitlines()[0].split(",") for c in FORECAST_COLUMNS)
    for url, params in (("/hotspots", {"format": "geojson"}), ("/hotspots.geojson", {})):
        g = api.get(url, params={"method": "forecast", "top": 5, **params}).json()
        assert g["metadata"]["method"] == "forecast" and "forecast_harm" in g["features"][0]["properties"]
    items = api.get("/collections/harm-spots/items", params={"method": "forecast", "limit": 5}).json()
    assert items["features"][0]["properties"]["forecast_harm"] > 0
    obs = api.get("/hotspots", params={"top": 5}).json()
    assert obs["method"] == "observed" and "forecast_harm" not in obs["cells"][0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forecast-live")
    srv, _ = live.start(tmp / "data", tmp / "server.log", keys={"analyst": "analyst"})
    yield srv
    live.stop(srv.proc)


ALL_DOORS = ("/hotspots", "/hotspots.geojson", "/tasking", "/collections/harm-spots/items")


@pytest.mark.parametrize("query,paths", [
    ("method=crystal-ball", ALL_DOORS), ("method=", ALL_DOORS), ("method=FORECAST", ALL_DOORS),
    ("method=" + "x" * 5000, ALL_DOORS), ("method=forecast&from=2024-04&to=2024-01", ALL_DOORS),
    ("method=forecast&to=2024-13", ALL_DOORS), ("method=forecast&resolution=12", ALL_DOORS[:3]),
    ("method=forecast&mode=public", ALL_DOORS[:2]),
])
def test_hostile_method_parameters_are_4xx_on_the_real_service(server, query, paths):
    for path in paths:
        r = server.get(f"{path}?{query}")
        assert 400 <= r.status < 500, (path, query, r.status, r.body[:300])
        err = json.loads(r.body)["error"]
        assert set(err) == {"code", "message", "details"} and err["message"]
    assert server.get("/health").status == 200


def test_forecast_outside_the_data_is_empty_not_an_error(server):
    r = server.get("/hotspots?method=forecast&to=1999-01")
    assert r.status == 200, r.body[:300]
    body = r.json()
    assert body["cells"] == [] and body["forecast"]["forecast_period"]["from"] == "1999-02-01"
    assert server.get("/health").status == 200


def test_backtest_and_service_compute_the_same_forecast(stores, essex_parsed):
    """The backtest's forecast score at an origin (cubes by month) and the service's forecast_harm for the month
    before it (records by day) are the same model: proportional cell by cell (the factor is horizon/exposure)."""
    from hotspots.ranking.forecast import DEFAULT_PARAMS
    from hotspots.stats.backtest import forecast_scores
    from hotspots.stats.timeslices import cube, make_slices

    parsed, _ = essex_parsed
    rows = parsed.rows
    w = load_open_default()
    days, _ = w.weigh(rows["ho_code"], rows["offence_group"], rows["category"])
    asb = rows["category"].str.contains("Anti-social", case=False).to_numpy()
    api = harm_spots(stores["full"], HotspotQuery(dataset="e", method="forecast", preset="all-crime", resolution=9,
                                                  to="2024-03", top=None), w).cells
    cells = np.unique(rows["h3_9"].to_numpy(np.uint64))
    idx = np.searchsorted(cells, rows["h3_9"].to_numpy(np.uint64))
    sl = make_slices(rows["occurred_from"], rows["precision"])
    s_idx = sl.assign(rows["occurred_from"])
    harm = cube(np.where(asb, -1, idx), s_idx, len(cells), len(sl), np.where(asb, 0.0, days))
    records = cube(idx, s_idx, len(cells), len(sl))
    origin = list(sl.labels()).index("2024-04")
    score = forecast_scores(harm, records, sl.starts, origin, DEFAULT_PARAMS)
    got = pd.Series(api["forecast_harm"].to_numpy(), index=api["cell"].to_numpy(np.uint64))
    want = pd.Series(score, index=cells)
    want = want[want > 0]
    assert set(got.index) == set(want.index)
    ratio = got.reindex(want.index) / want
    assert ratio.std() / ratio.mean() < 1e-9 and ratio.mean() > 0
