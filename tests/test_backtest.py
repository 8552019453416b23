import h3
import numpy as np
import pandas as pd
import pytest

from geodata.cells import cell_centres, lonlat_to_bng
from hotspots.stats.backtest import (BacktestConfig, bowers_matrix, quartic_matrix, run_backtest, select_and_score)
from hotspots.stats.gistar import domain_from_cells

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
