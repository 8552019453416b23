import h3
import numpy as np
import pandas as pd
import pytest

from geodata.cells import cell_centres, lonlat_to_bng
from hotspots.stats.backtest import (BacktestConfig, bowers_matrix, capture_curve, kernel_pairs, quartic_matrix,
                                     ranking, run_backtest, select_and_score)
from hotspots.stats.gistar import domain_from_cells, neighbour_matrix

CENTRE = h3.latlng_to_cell(52.6369, -1.1398, 9)


@pytest.fixture(scope="module")
def domain():
    return domain_from_cells(np.array([h3.str_to_int(c) for c in h3.grid_disk(CENTRE, 12)], dtype=np.uint64))


def synthetic(domain, times: pd.DatetimeIndex, precision: str, seed=0) -> pd.DataFrame:
    """Stable hot cells (2 % of the domain take ~60 % of offences) plus uniform background."""
    rng = np.random.default_rng(seed)
    n = len(domain)
    hot = np.random.default_rng(99).choice(n, size=max(1, n // 50), replace=False)
    rate = np.full(n, 0.05)
    rate[hot] = 4.0
    frames = []
    for t in times:
        k = rng.poisson(rate)
        cells = np.repeat(domain.cells, k)
        frames.append(pd.DataFrame({"cell": cells, "occurred_from": t}))
    ev = pd.concat(frames, ignore_index=True)
    lat, lon = cell_centres(ev.cell.to_numpy())
    ev["x"], ev["y"] = lonlat_to_bng(lon, lat)
    ev["precision"] = precision
    ev["harm"] = rng.choice([1.0, 10.0, 365.0], size=len(ev), p=[0.6, 0.35, 0.05])
    return ev


def test_monthly_backtest_finds_stable_hot_cells(domain, tmp_path):
    months = pd.date_range("2021-01-01", periods=16, freq="MS")
    ev = synthetic(domain, months, "month")
    calls = []
    res = run_backtest(ev, domain, BacktestConfig(bootstrap=200), progress=lambda d, t, m: calls.append((d, t)))
    assert res.slices["unit"] == "month" and res.per_origin.origin.nunique() == 4  # 16 months - 12 training
    assert calls and calls[-1][0] == calls[-1][1] == 4
    s = res.summary.set_index(["method", "coverage"])
    assert set(s.index.get_level_values(0)) == {"harm_spots", "prior_counts", "prior_period_harm", "gistar", "kde",
                                               "prospective", "forecast"}
    # the hot cells are 2 % of the area: at 2 % coverage counts-based selection is near perfect
    assert s.loc[("prior_counts", 0.02), "pei"] > 0.95
    assert s.loc[("harm_spots", 0.02), "pai"] > 20
    for m in ("hit_rate", "pai", "harm_pai", "pei"):
        assert (s[m + "_lo"] <= s[m] + 1e-12).all() and (s[m] <= s[m + "_hi"] + 1e-12).all()
    assert ((res.per_origin.area_share >= res.per_origin.coverage - 1e-9)).all()
    png = res.plot_capture(tmp_path / "capture.png")
    assert png.stat().st_size > 10_000
    oracle = res.curves[res.curves.method == "oracle"]
    assert np.isclose(oracle.harm_share.iloc[-1], 1.0)
    assert "| harm_spots | 1% |" in res.table()


def test_biweekly_slices_for_dated_data(domain):
    days = pd.date_range("2024-01-01", periods=28 * 7, freq="D") + pd.Timedelta(hours=21)
    ev = synthetic(domain, days[::7], "minute", seed=3)  # one batch a week
    res = run_backtest(ev, domain, BacktestConfig(bootstrap=100, train_slices=6,
                                                  methods=("harm_spots", "prospective", "kde_300m")))
    assert res.slices["unit"] == "day" and res.slices["length"] == 14
    assert res.config["prospective_time_unit"] == "week"
    # 28 weeks of data from 2024-01-01 to 2024-07-08: 13 whole 14-day slices ending 2024-07-09
    assert res.slices["slices"] == 13 and res.slices["last_end"] == "2024-07-09"
    assert res.per_origin.origin.nunique() == 13 - 6
    assert res.summary.set_index(["method", "coverage"]).loc[("prospective", 0.02), "pei"] > 0.8


def test_select_and_score_by_hand():
    score = np.array([5.0, 4.0, 0.0, 0.0, 1.0])
    area = np.ones(5)
    tb = np.arange(5)
    count = np.array([2.0, 0.0, 3.0, 0.0, 1.0])
    harm = np.array([10.0, 0.0, 0.0, 0.0, 30.0])
    best_c = np.cumsum(np.sort(count)[::-1])
    best_h = np.cumsum(np.sort(harm)[::-1])
    r = select_and_score(score, area, tb, count, harm, (0.2, 0.6), best_c, best_h)
    assert r[0]["cells"] == 1 and np.isclose(r[0]["hit_rate"], 2 / 6) and np.isclose(r[0]["pai"], (2 / 6) / 0.2)
    assert np.isclose(r[0]["pei"], 2 / 3) and np.isclose(r[0]["harm_pai"], 0.25 / 0.2)
    assert r[1]["cells"] == 3 and np.isclose(r[1]["hit_rate"], 0.5) and np.isclose(r[1]["harm_pei"], 1.0)


def test_kernels():
    cells = np.array([[0.0, 0.0], [1000.0, 0.0]])
    pts = np.array([[0.0, 0.0], [100.0, 0.0], [399.0, 0.0]])
    k = quartic_matrix(cells, pts, 400.0).toarray()
    c = 3 / (np.pi * 400**2)
    assert np.allclose(k[0], [c, c * (1 - (100 / 400) ** 2) ** 2, c * (1 - (399 / 400) ** 2) ** 2])
    assert (k[1] == 0).all()
    b = bowers_matrix(cells, pts, 400.0, 25.0).toarray()
    assert np.allclose(b[0], [1.0, 1 / 5, 1 / 16])  # d = 0, 4, 15 whole 25 m steps


def test_ranking_is_lexsort_of_score_then_tiebreak():
    """The one-sort ranking (zeros placed, not sorted) is exactly lexsort((tiebreak, -score)): zero-inflated,
    negative (Gi* z), tied, -0.0 and NaN scores."""
    rng = np.random.default_rng(5)
    for trial in range(200):
        n = int(rng.integers(1, 2000))
        tb = rng.permutation(n)
        kind = trial % 5
        if kind == 0:
            sc = rng.poisson(0.1, n).astype(float)
        elif kind == 1:
            sc = rng.normal(size=n)
        elif kind == 2:
            sc = np.where(rng.random(n) < 0.7, 0.0, rng.normal(size=n))
            sc[rng.random(n) < 0.1] = -0.0
        elif kind == 3:
            sc = np.zeros(n)
        else:
            sc = np.round(rng.normal(size=n), 1)
            sc[rng.random(n) < 0.05] = np.nan
        expected = np.lexsort((tb, -sc))
        assert np.array_equal(ranking(sc, tb), expected)
        assert np.array_equal(ranking(sc, tb, np.argsort(tb)), expected), trial


def test_shared_pairs_and_ranking_give_the_same_numbers(domain):
    """What run_backtest shares (one set of cell-point pairs per radius, one ranking per score) changes nothing."""
    ev = synthetic(domain, pd.date_range("2021-01-01", periods=5, freq="MS"), "month", seed=2)
    cxy, pts = domain.centres_bng, np.unique(np.round(ev[["x", "y"]].to_numpy(float), 1), axis=0)
    pairs = kernel_pairs(cxy, pts, 400.0)
    assert (quartic_matrix(cxy, pts, 400.0, pairs=pairs) != quartic_matrix(cxy, pts, 400.0)).nnz == 0
    assert (bowers_matrix(cxy, pts, 400.0, 25.0, pairs=pairs) != bowers_matrix(cxy, pts, 400.0, 25.0)).nnz == 0
    rng = np.random.default_rng(0)
    score, tb = rng.poisson(0.3, len(domain)).astype(float), rng.permutation(len(domain))
    count, harm = rng.poisson(0.2, len(domain)).astype(float), rng.gamma(0.3, 20, len(domain))
    best_c, best_h = np.cumsum(np.sort(count)[::-1]), np.cumsum(np.sort(harm)[::-1])
    order = ranking(score, tb, np.argsort(tb))
    assert select_and_score(score, domain.area_km2, tb, count, harm, (0.01, 0.05), best_c, best_h, order) == \
        select_and_score(score, domain.area_km2, tb, count, harm, (0.01, 0.05), best_c, best_h)
    grid = np.linspace(0, 1, 11)
    assert np.array_equal(capture_curve(score, domain.area_km2, tb, harm, grid, order),
                          capture_curve(score, domain.area_km2, tb, harm, grid))
    cfg = BacktestConfig(bootstrap=50, train_slices=3, methods=("harm_spots", "gistar", "kde", "prospective"))
    given = run_backtest(ev, domain, cfg, weights=neighbour_matrix(domain.cells, 1))
    pd.testing.assert_frame_equal(given.per_origin, run_backtest(ev, domain, cfg).per_origin)


def test_domain_keeps_its_areas_and_centres(domain, monkeypatch):
    """Computed once per domain (the doors keep domains), read-only, and the values of the plain functions; the
    areas in chunks (h3ronpy holds the GIL) are the areas in one call."""
    import pyarrow as pa
    from h3ronpy import cells_area_km2

    import geodata.cells as gc

    fresh = domain_from_cells(domain.cells)
    assert fresh.area_km2 is fresh.area_km2 and not fresh.area_km2.flags.writeable
    whole = np.asarray(pa.array(cells_area_km2(pa.array(domain.cells, type=pa.uint64()))), dtype=float)
    assert np.array_equal(fresh.area_km2, whole)
    monkeypatch.setattr(gc, "AREA_CHUNK", 7)
    assert np.array_equal(gc.cell_area_km2(domain.cells), whole)
    lat, lon = cell_centres(domain.cells)
    assert np.array_equal(fresh.centres_bng, np.column_stack(lonlat_to_bng(lon, lat)))
    assert not fresh.centres_bng.flags.writeable
