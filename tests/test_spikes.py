import numpy as np
import pandas as pd
import pytest

from hotspots.stats.spikes import find_spikes


def monthly(counts: np.ndarray, start="2021-01-01") -> pd.DataFrame:
    """counts: (units, months) -> one row per offence, month precision."""
    months = pd.date_range(start, periods=counts.shape[1], freq="MS")
    u, m = np.nonzero(counts)
    reps = counts[u, m]
    return pd.DataFrame({"cell": np.repeat(u, reps).astype(np.uint64) + 600, "occurred_from": np.repeat(months[m], reps),
                         "precision": "month", "harm": 2.0})


@pytest.mark.parametrize("method", ["poisson", "negbin"])
def test_finds_a_planted_spike_month_only(method):
    rng = np.random.default_rng(1)
    counts = rng.poisson(3.0, (300, 13))
    counts[17, -1] = 18
    res = find_spikes(monthly(counts), method=method, harm_col="harm")
    assert res.recent == {"start": "2022-01-01", "end": "2022-02-01", "length": 1, "unit": "month"}
    assert res.baseline["start"] == "2021-01-01" and res.baseline["length"] == 12
    assert list(res.spikes["unit"]) == [617]
    top = res.units.iloc[0]
    assert top.observed == 18 and np.isclose(top.expected, counts[17, :12].sum() / 12) and top.q < 0.05
    assert np.isclose(top.ratio, top.observed / top.expected) and np.isclose(top.harm_observed, 36.0)


@pytest.mark.parametrize("method", ["poisson", "negbin"])
def test_stable_series_has_no_spikes(method):
    for seed in range(3):
        counts = np.random.default_rng(seed).poisson(3.0, (300, 13))
        res = find_spikes(monthly(counts), method=method)
        assert res.spikes.empty and res.n_tested == 300


def test_dated_data_28_days_against_12_weeks_and_areas():
    rng = np.random.default_rng(5)
    days = pd.date_range("2024-01-01", periods=112, freq="D")  # 16 weeks
    rows = []
    for ward, rate in (("E05000001", 1.0), ("E05000002", 1.0), ("E05000003", 0.5)):
        n = rng.poisson(rate, len(days))
        if ward == "E05000003":
            n[-28:] += rng.poisson(1.5, 28)  # recent surge
        rows.append(pd.DataFrame({"ward": ward, "occurred_from": np.repeat(days, n) + pd.Timedelta(hours=13)}))
    ev = pd.concat(rows, ignore_index=True)
    ev["precision"] = "minute"
    res = find_spikes(ev, unit_col="ward")
    assert res.recent["length"] == 28 and res.baseline["length"] == 84
    assert res.recent["end"] == "2024-04-22"
    assert list(res.spikes["unit"]) == ["E05000003"]
    res14 = find_spikes(ev, unit_col="ward", recent="14D")
    assert res14.recent["length"] == 14


def test_zero_baseline_and_min_observed():
    counts = np.zeros((50, 13), dtype=int)
    counts[:, :12] = 2
    counts[3, -1] = 2  # two offences, never seen before: small p but below min_observed=3
    counts[3, :12] = 0
    res = find_spikes(monthly(counts))
    row = res.units.set_index("unit").loc[603]
    assert row.expected == 0 and np.isinf(row.ratio) and not row.spike


def test_spikes_method_parameter_is_its_own(api):
    """/spikes' `method` is the test (poisson or negbin); the hotspot query's `method` (observed/forecast) is not
    taken there, so both names no longer collide (every value was refused by one of the two before)."""
    for m in ("poisson", "negbin"):
        r = api.get("/spikes", params={"method": m, "from": "2024-03"})
        assert r.status_code == 200, r.text
    assert api.get("/spikes", params={"method": "forecast"}).status_code == 422
    params = [p for p in api.get("/openapi.json").json()["paths"]["/spikes"]["get"]["parameters"] if p["name"] == "method"]
    assert len(params) == 1 and params[0]["schema"]["enum"] == ["poisson", "negbin"]
