import h3
import numpy as np
import pandas as pd
import pytest

from hotspots.stats.emerging import PATTERNS, classify_emerging, emerging_hotspots, mann_kendall
from hotspots.stats.gistar import domain_from_cells
from hotspots.stats.timeslices import make_slices

T = 12


def series(hot_at=(), cold_at=()):
    hot = np.zeros(T, dtype=bool)
    cold = np.zeros(T, dtype=bool)
    hot[list(hot_at)] = True
    cold[list(cold_at)] = True
    return hot, cold


ALL = list(range(T))
CASES = {
    # name: (hot slices, cold slices, trend z sign: +1 up, -1 down, 0 none)
    "new": (([T - 1]), (), 0),
    "consecutive": ((T - 3, T - 2, T - 1), (), 0),
    "intensifying": (ALL, (), +1),
    "persistent": (ALL, (), 0),
    "diminishing": (ALL, (), -1),
    "sporadic": ((2, 5, 6, T - 1), (), 0),
    "oscillating": ((6, T - 1), (2,), 0),
    "historical": (ALL[:-1], (), 0),
    "no_pattern": ((4, 5), (), 0),
    "new_cold": ((), [T - 1], 0),
    "persistent_cold": ((), ALL, 0),
    "oscillating_cold": ((3,), (7, T - 1), 0),
    "intensifying_cold": ((), ALL, -1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_pattern_from_a_constructed_series(name):
    hot_at, cold_at, trend = CASES[name]
    hot, cold = series(hot_at, cold_at)
    tz = np.array([3.0 * trend])
    tp = np.array([0.001 if trend else 0.6])
    assert classify_emerging(hot[None], cold[None], tz, tp)[0] == name


def test_ninety_percent_rule_boundary():
    # 10 of 12 hot (83 %) including the final one, hot before the final run: sporadic, not persistent
    hot, cold = series([0, 1, 2, 3, 4, 6, 7, 8, 9, 11])
    assert classify_emerging(hot[None], cold[None], [0.0], [0.9])[0] == "sporadic"
    # 11 of 12 (92 %) including the final one: persistent
    hot, cold = series([0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11])
    assert classify_emerging(hot[None], cold[None], [0.0], [0.9])[0] == "persistent"


def test_mann_kendall_matches_pymannkendall():
    pmk = pytest.importorskip("pymannkendall")
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=(20, 15)) + np.linspace(0, 1, 15) * rng.normal(size=(20, 1)), 1)  # with ties
    s, z, p, tau = mann_kendall(x)
    for i in range(len(x)):
        ref = pmk.original_test(x[i])
        assert s[i] == ref.s and np.isclose(z[i], ref.z) and np.isclose(p[i], ref.p) and np.isclose(tau[i], ref.Tau)


def _events(cells_counts: list[tuple[np.ndarray, np.ndarray]], months: pd.DatetimeIndex) -> pd.DataFrame:
    rows = []
    for m, (cells, counts) in zip(months, cells_counts):
        rows.append(pd.DataFrame({"cell": np.repeat(cells, counts), "occurred_from": m}))
    out = pd.concat(rows, ignore_index=True)
    out["precision"] = "month"
    return out


def test_end_to_end_new_and_persistent_clusters():
    centre = h3.latlng_to_cell(52.6369, -1.1398, 9)
    dom = domain_from_cells(np.array([h3.str_to_int(c) for c in h3.grid_disk(centre, 15)], dtype=np.uint64))
    ring = h3.grid_ring(centre, 9)
    a, b = ring[0], ring[len(ring) // 2]
    ia, _ = dom.index_of(np.array([h3.str_to_int(c) for c in h3.grid_disk(a, 1)], dtype=np.uint64))
    ib, _ = dom.index_of(np.array([h3.str_to_int(c) for c in h3.grid_disk(b, 1)], dtype=np.uint64))
    months = pd.date_range("2021-01-01", periods=T, freq="MS")
    rng = np.random.default_rng(4)
    slices = []
    for t in range(T):
        counts = rng.poisson(0.5, len(dom))
        counts[ia] += 8  # persistent cluster
        if t == T - 1:
            counts[ib] += 8  # appears in the final month only
        slices.append((dom.cells, counts))
    res = emerging_hotspots(_events(slices, months), dom)
    assert res.slices["unit"] == "month" and len(res.slice_labels) == T and res.slice_labels[-1] == "2021-12"
    by_cell = res.cells.set_index("cell")["pattern"]
    assert by_cell[h3.str_to_int(a)] in ("persistent", "intensifying", "diminishing")
    assert (by_cell.iloc[ia] == "persistent").mean() >= 0.7
    assert by_cell[h3.str_to_int(b)] == "new"
    assert set(res.cells["pattern"]) <= set(PATTERNS)
    assert res.z.shape == (len(dom), T)


def test_slices_month_only_and_biweekly():
    t = pd.Series(pd.to_datetime(["2022-01-01", "2022-03-01"]))
    sl = make_slices(t, "month")
    assert sl.labels() == ["2022-01", "2022-02", "2022-03"]
    with pytest.raises(ValueError):
        make_slices(t, "month", "14D")  # never invent days for month-only data
    d = pd.Series(pd.to_datetime(["2024-01-01 10:00", "2024-02-11 09:00"]))
    sl = make_slices(d, "minute")
    assert sl.unit == "day" and sl.length == 14 and len(sl) == 3
    assert str(sl.ends[-1].date()) == "2024-02-12"
    assert list(sl.assign(d)) == [0, 2]
