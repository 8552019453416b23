"""Patrol log: validation with line numbers, all-or-nothing uploads, and compliance arithmetic."""
from __future__ import annotations

import pandas as pd
import pytest

from geodata.store import Store
from hotspots import patrols

A = "HS-8a195cb62cc7fff"
B = "HS-8a195cb75a27fff"
C = "HS-8a19434db2dffff"  # not in the pack


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "p.duckdb")
    yield s
    s.close()


def _pack() -> tuple[dict, pd.DataFrame]:
    # plan 2024-05-08 (Wed) .. 2024-05-21 (Tue): 5 days in week of 05-06, 7 in 05-13, 2 in 05-20
    header = {"pack_id": 1, "plan_from": "2024-05-08", "plan_to": "2024-05-21", "visits_per_day": 2.0,
              "visit_minutes": 15}
    spots = pd.DataFrame({"spot_id": [A, B], "h3": [A[3:], B[3:]], "area_name": ["X", "Y"], "rank": [1, 2],
                          "lat": [52.6, 52.61], "lon": [-1.1, -1.11]})
    return header, spots


def test_csv_upload_and_compliance_arithmetic(store):
    csv = "spot_id,team,start,end\n"
    # spot A: week 05-06 -> 4 visits of 15 min; week 05-13 -> 14 visits of 20 min; week 05-20 -> none
    for d in (8, 9, 10, 11):
        csv += f"{A},Alpha,2024-05-{d:02d}T10:00,2024-05-{d:02d}T10:15\n"
    for i in range(14):
        d = 13 + i // 2
        csv += f"{A},Bravo,2024-05-{d:02d}T{10 + 6 * (i % 2):02d}:00,2024-05-{d:02d}T{10 + 6 * (i % 2):02d}:20\n"
    csv += f"{B},Alpha,2024-05-20 23:50,2024-05-21 00:20\n"  # crosses midnight: counts on its start day
    csv += f"{C},Alpha,2024-05-09T10:00,2024-05-09T10:15\n"  # unplanned spot
    csv += f"{A},Alpha,2024-05-30T10:00,2024-05-30T10:15\n"  # outside the plan period
    up = patrols.record(store, patrols.parse_csv(csv))
    assert up.stored == 21 and up.minutes == pytest.approx(4 * 15 + 14 * 20 + 30 + 15 + 15)
    header, spots = _pack()
    comp = patrols.compliance(store, header, spots)
    w = comp.weeks.set_index(["spot_id", "week"])
    assert w.loc[(A, "2024-05-06"), "plan_days"] == 5 and w.loc[(A, "2024-05-06"), "planned_visits"] == 10
    assert w.loc[(A, "2024-05-06"), "visits"] == 4 and w.loc[(A, "2024-05-06"), "visits_pct"] == pytest.approx(40.0)
    assert w.loc[(A, "2024-05-06"), "planned_minutes"] == 150
    assert w.loc[(A, "2024-05-13"), "visits"] == 14 and w.loc[(A, "2024-05-13"), "visits_pct"] == pytest.approx(100.0)
    assert w.loc[(A, "2024-05-13"), "minutes"] == 280 and w.loc[(A, "2024-05-13"), "minutes_pct"] == pytest.approx(
        280 / 210 * 100)
    assert w.loc[(A, "2024-05-20"), "plan_days"] == 2 and w.loc[(A, "2024-05-20"), "visits"] == 0
    assert w.loc[(B, "2024-05-20"), "visits"] == 1 and w.loc[(B, "2024-05-20"), "minutes"] == 30
    s = comp.summary
    planned = 2 * 2 * 14  # two spots, two visits a day, 14 days
    assert s["planned_visits"] == planned and s["visits"] == 4 + 14 + 1
    assert s["visits_pct"] == pytest.approx(round(100 * 19 / planned, 2))
    # capped: A's week 05-13 over-delivery cannot offset anything; here it is exactly on plan
    assert s["overall_capped_pct"] == pytest.approx(round(100 * (4 + 14 + 0 + 0 + 0 + 1) / planned, 2))
    assert s["spot_weeks_unvisited"] == 3 + 0  # A 05-20, B 05-06, B 05-13
    assert len(comp.unplanned) == 1 and comp.unplanned["spot_id"].iloc[0] == C


def test_bad_rows_reject_the_whole_upload_with_line_numbers(store):
    csv = ("spot,team,start_time,end_time\n"
           f"{A},Alpha,2024-05-08T10:00,2024-05-08T10:15\n"
           "HS-nothex,Alpha,2024-05-08T10:00,2024-05-08T10:15\n"
           f"{A},,2024-05-08T10:00,2024-05-08T09:00\n"
           f"{A},Alpha,2024-05-08,2024-05-08T10:15\n"
           f"{A},Alpha,2024-05-08T08:00,2024-05-09T10:15\n")
    with pytest.raises(patrols.PatrolError) as err:
        patrols.record(store, patrols.parse_csv(csv))
    got = {(e["line"], e["field"]) for e in err.value.errors}
    assert got == {(3, "spot_id"), (4, "team"), (4, "end"), (5, "start"), (6, "end")}
    assert patrols.patrols(store).empty  # nothing half-written


def test_json_rows_timezones_and_missing_columns(store):
    up = patrols.record(store, [{"spot_id": A[3:], "team": "T", "start": "2024-07-01T09:00:00+00:00",
                                 "end": "2024-07-01T09:15:00+00:00"}])
    row = patrols.patrols(store).iloc[0]
    assert up.stored == 1 and row["spot_id"] == A  # bare hex normalised to the spot id
    assert pd.Timestamp(row["start_at"]) == pd.Timestamp("2024-07-01 10:00")  # UTC -> Europe/London (BST)
    with pytest.raises(patrols.PatrolError, match="lacks"):
        patrols.parse_csv("spot_id,team,start\nx,y,z\n")
