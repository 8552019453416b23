"""Key dates: windows at month and day precision, the shipped roadmap set, user sets, analogue forecast."""
from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from geodata.cells import cell_centres
from geodata.harm import load_open_default
from geodata.store import Store
from hotspots.patrol import keydates as kd
from hotspots.ranking.query import HotspotQuery
from patrol_data import CENTRE, LEICS, ingest_rows, leics_store

import h3


# ------------------------------------------------------------------------------------------ windows
def test_month_windows_exclude_the_straddling_month():
    w = kd.key_date_windows(date(2021, 5, 17), "month")
    assert (w.before.start, w.before.end_exclusive) == (date(2021, 4, 1), date(2021, 5, 1))
    assert (w.after.start, w.after.end_exclusive) == (date(2021, 6, 1), date(2021, 7, 1))
    assert w.straddle_month == "2021-05" and "left out of both windows" in w.rule
    assert w.before.query_bounds() == ("2021-04", "2021-04") and w.after.query_bounds() == ("2021-06", "2021-06")


def test_month_window_on_the_first_and_majority_rule():
    w = kd.key_date_windows(date(2020, 12, 1), "month", window_days=56)  # two months
    assert w.straddle_month is None
    assert (w.before.start, w.before.end_exclusive) == (date(2020, 10, 1), date(2020, 12, 1))
    assert (w.after.start, w.after.end_exclusive) == (date(2020, 12, 1), date(2021, 2, 1))
    # 2020-07-04: 3 days before, 28 from it -> July goes to the after window
    m = kd.key_date_windows(date(2020, 7, 4), "month", month_rule="majority")
    assert m.after.start == date(2020, 7, 1) and m.before.end_exclusive == date(2020, 7, 1)
    # 2021-03-29: 28 days before, 3 from it -> March goes to the before window
    m = kd.key_date_windows(date(2021, 3, 29), "month", month_rule="majority")
    assert m.before.end_exclusive == date(2021, 4, 1) and m.after.start == date(2021, 4, 1)


def test_day_windows():
    w = kd.key_date_windows(date(2021, 7, 19), "day", window_days=14)
    assert (w.before.start, w.before.end_exclusive) == (date(2021, 7, 5), date(2021, 7, 19))
    assert (w.after.start, w.after.end_exclusive) == (date(2021, 7, 19), date(2021, 8, 2))
    assert w.after.query_bounds() == ("2021-07-19", "2021-08-01")


def test_shipped_set_and_analogues():
    s = kd.shipped_set("england-2020-21")
    assert [k.date.isoformat() for k in s.dates] == ["2020-07-04", "2020-12-02", "2021-03-08", "2021-03-29",
                                                      "2021-04-12", "2021-05-17", "2021-07-19"]
    assert s.analogue_of(s.get(date(2021, 5, 17))).date == date(2020, 7, 4)
    assert s.analogue_of(s.get(date(2020, 7, 4))) is None
    with pytest.raises(kd.KeyDateError):
        s.get(date(2021, 5, 18))


# ------------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def leics(tmp_path_factory):
    store = leics_store(tmp_path_factory, "keydates")
    yield store, load_open_default()
    store.close()


def test_month_precision_counts_match_the_months(leics):
    store, w = leics
    s = kd.shipped_set("england-2020-21")
    res = kd.key_date_hotspots(store, HotspotQuery(dataset=LEICS), w, s, date(2021, 5, 17), top=10)
    meta = res.meta()
    assert meta["precision"] == "month" and meta["before"]["months"] == ["2021-04"]
    assert meta["after"]["months"] == ["2021-06"] and meta["analogue_after"]["months"] == ["2020-08"]
    # op-ark preset on police.uk = violence and sexual offences + robbery + drugs; count straight from the store
    n = lambda m: int(store.scalar(  # noqa: E731
        """SELECT count(*) FROM offences o JOIN offence_keys k USING (offence_key) WHERE dataset = ?
           AND strftime(occurred_from, '%Y-%m') = ? AND k.category IN
           ('Violence and sexual offences', 'Robbery', 'Drugs')""", [LEICS, m]))
    assert meta["summary"]["count_before"] == n("2021-04")
    assert meta["summary"]["count_after"] == n("2021-06")
    assert res.cells["rank"].tolist()[:3] == [1, 2, 3] and res.cells["harm_after"].is_monotonic_decreasing
    assert len(res.forecast) == 10 and res.forecast["forecast_harm_per_day"].is_monotonic_decreasing
    check = meta["forecast_check"]
    assert 0 < check["captured_by_forecast"] <= check["captured_by_observed_top"]
    assert any("month-only" in c for c in meta["caveats"])


def test_future_key_date_forecasts_from_latest_data(leics):
    store, w = leics
    s = kd.make_set("events", "test", [{"date": "2021-08-14", "label": "Caribbean carnival", "kind": "carnival"},
                                       {"date": "2022-12-10", "label": "Carnival (future)", "kind": "carnival"}])
    res = kd.key_date_hotspots(store, HotspotQuery(dataset=LEICS), w, s, date(2022, 12, 10))
    meta = res.meta()
    assert meta["summary"]["harm_after"] is None and res.cells["harm_after"].sum() == 0
    assert meta["recent"]["months"] == ["2022-10"]  # last month of data
    assert meta["analogue"]["date"] == "2021-08-14" and len(res.forecast) > 0


# ------------------------------------------------------------------------------------------ day precision
def test_day_precision_windows_on_dated_data(tmp_path):
    store = Store(tmp_path / "d.duckdb")
    w = load_open_default()
    store.save_weights(w)
    cell = h3.latlng_to_cell(*CENTRE, 10)
    lat, lon = cell_centres(np.array([h3.str_to_int(cell)], dtype=np.uint64))
    days = pd.date_range("2021-06-20", "2021-08-20", freq="D")
    # one robbery a day before 2021-07-19, three a day from it
    per_day = np.where(days < pd.Timestamp("2021-07-19"), 1, 3)
    when = np.repeat(days, per_day)
    rows = pd.DataFrame({"record_id": [f"d{i}" for i in range(len(when))], "occurred": when.strftime("%Y-%m-%d"),
                         "longitude": lon[0], "latitude": lat[0], "category": "Robbery", "location": "High Street"})
    ingest_rows(store, "dated", rows)
    s = kd.shipped_set("england-2020-21")
    res = kd.key_date_hotspots(store, HotspotQuery(dataset="dated", preset="all-crime"), w, s, date(2021, 7, 19),
                               window_days=14)
    meta = res.meta()
    store.close()
    assert meta["precision"] == "day" and meta["straddle_month"] is None
    assert meta["before"]["from"] == "2021-07-05" and meta["before"]["to"] == "2021-07-18"
    assert meta["after"]["from"] == "2021-07-19" and meta["after"]["to"] == "2021-08-01"
    assert meta["summary"]["count_before"] == 14 and meta["summary"]["count_after"] == 42
    assert meta["summary"]["change_pct"] == pytest.approx(200.0)


def test_user_sets_are_stored_whole(tmp_path):
    store = Store(tmp_path / "u.duckdb")
    s = kd.make_set("leicester-events", "city events", [
        {"date": "2021-10-04", "label": "Diwali lights switch-on", "kind": "festival"},
        {"date": "2022-10-23", "label": "Diwali lights switch-on", "kind": "festival"}])
    kd.save_set(store, s)
    got = kd.get_set(store, "leicester-events")
    assert got.analogue_of(got.get(date(2022, 10, 23))).date == date(2021, 10, 4)
    assert {x.name for x in kd.list_sets(store)} == {"england-2020-21", "leicester-events"}
    with pytest.raises(kd.KeyDateError, match="already exists"):
        kd.save_set(store, s)
    with pytest.raises(kd.KeyDateError, match="shipped"):
        kd.save_set(store, kd.make_set("england-2020-21", "", [{"date": "2021-01-01", "label": "x"}]))
    with pytest.raises(kd.KeyDateError, match="earlier"):
        kd.make_set("bad", "", [{"date": "2021-01-01", "label": "x", "analogue": "2021-02-01"}])
    store.close()
