"""Patrol log: validation with line numbers, all-or-nothing uploads, and compliance arithmetic."""
from __future__ import annotations

import pandas as pd
import pytest

from geodata.store import Store
from hotspots.patrol import patrols as patrols

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


def test_api_plan_log_comply_evaluate(api):
    """The doors end to end on the bundled Essex sample (month-only data.police.uk, 14 districts)."""
    base = "dataset=essex-sample&from=2024-03&to=2024-03&plan_from=2024-04-01&plan_days=14&spots_per_area=2"
    r = api.get(f"/tasking?{base}&format=csv")
    assert r.status_code == 200 and r.text.startswith("spot_id,status,area_id")
    sheet = api.get(f"/tasking?{base}&format=html")
    assert sheet.status_code == 200 and sheet.text.count('class="page"') >= 10 and "<svg" in sheet.text
    saved = api.post(f"/tasking?{base}")
    assert saved.status_code == 201
    pack = saved.json()
    spots = [c["spot_id"] for c in pack["cells"]]
    csv = "spot_id,team,start,end\n" + "".join(
        f"{s},Team {i % 3},2024-04-{d:02d}T{9 + i % 8:02d}:00,2024-04-{d:02d}T{9 + i % 8:02d}:15\n"
        for i, s in enumerate(spots) for d in range(1, 8))
    up = api.post("/patrols", content=csv, headers={"content-type": "text/csv"})
    assert up.status_code == 201 and up.json()["stored"] == 7 * len(spots)
    bad = api.post("/patrols", json={"patrols": [{"spot_id": "nope", "team": "A", "start": "2024-04-01T10:00",
                                                  "end": "2024-04-01T09:00"}]})
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["error"]["details"]} == {"spot_id", "end"}
    comp = api.get(f"/patrols/compliance?pack_id={pack['pack_id']}").json()
    # 7 visits in week 1 against 2/day x 7 days; nothing in week 2
    assert comp["summary"]["visits_pct"] == pytest.approx(100 * 7 / 28)
    assert comp["summary"]["spot_weeks_unvisited"] == len(spots)
    geo = api.get(f"/patrols/compliance?pack_id={pack['pack_id']}&format=geojson").json()
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 2 * len(spots)
    ev = api.get("/evaluation/patrols?dataset=essex-sample&after_from=2024-04&after_to=2024-04"
                 "&before_from=2024-03&before_to=2024-03").json()
    assert ev["treated_spots"] == len(spots) and "did" in ev["difference_in_differences"]["harm"]
    assert ev["window_48h"]["supported"] is False and "month-only" in ev["window_48h"]["statement"]
    kd = api.post("/keydates", json={"name": "essex-test", "dates": [
        {"date": "2024-02-01", "label": "A", "kind": "x"}, {"date": "2024-03-15", "label": "B", "kind": "x"}]})
    assert kd.status_code == 201
    page = api.get("/keydates/essex-test/2024-03-15/hotspots?dataset=essex-sample&format=html")
    assert page.status_code == 200 and "left out of both windows" in page.text
    js = api.get("/keydates/essex-test/2024-03-15/hotspots?dataset=essex-sample").json()
    assert js["before"]["months"] == ["2024-02"] and js["after"]["months"] == ["2024-04"]
    assert js["analogue"]["date"] == "2024-02-01"
    assert api.get("/keydates/essex-test/2024-03-16/hotspots?dataset=essex-sample").status_code == 404


def test_patrol_log_window_takes_dates_only(api):
    """?to=0 was read as a Unix time (1970-01-01) and answered 200 (schemathesis: schema-violating request
    accepted); the window takes YYYY-MM-DD only, as declared (format: date)."""
    assert api.get("/patrols", params={"to": "0"}).status_code == 422
    assert api.get("/patrols", params={"from": "2024-04-01", "to": "2024-04-30"}).status_code == 200
    doc = api.get("/openapi.json").json()["paths"]["/patrols"]["get"]
    assert {p["name"]: p["schema"].get("format") for p in doc["parameters"]}["to"] == "date"
    assert "text/csv" in doc["responses"]["200"]["content"]
