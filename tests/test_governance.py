"""Weekly compliance for governance, on GPS-derived visits: the per-area and per-team arithmetic checked by hand,
the chart, and the door (CSV, PNG, JSON) on a real saved pack."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from geodata.store import Store
from hotspots.patrol import governance, gps, patrols
from tests import gps_tracks as gt

# plan Mon 2024-05-06 .. Sun 2024-05-19: two whole ISO weeks; one planned visit per spot per week
PACK = {"pack_id": 11, "dataset": "test", "plan_from": "2024-05-06", "plan_to": "2024-05-19",
        "visits_per_day": 1 / 7, "visit_minutes": 15}
OTHER = "HS-8a195cb62cc7fff"  # a cell not in the pack


@pytest.fixture()
def logged(tmp_path):
    """GPS visits (the street track: A and C, 1.5 km apart, in areas West and East) and two hand-entered rows."""
    store = Store(tmp_path / "g.duckdb")
    spots = gt.spots_frame()
    day = lambda d: pd.Timestamp(f"2024-05-{d:02d} 10:00")  # noqa: E731
    uploads = [("Alpha", day(8), gt.street_track()),               # A 20 min, C 20 min: both dosed
               ("Bravo", day(9), gt.street_track(stay_a=12)),      # A ~12.7 min: a visit, not a dose; C dosed
               ("Alpha", day(14), gt.street_track(stay_c=11))]     # A dosed; C ~11.7 min: not a dose
    for unit, start, track in uploads:
        up = gps.record_gps(store, gt.to_csv(track.pings(30, unit=unit, start=start)), PACK, spots)
        assert up.stored == 2
    patrols.record(store, [{"spot_id": spots["spot_id"][1], "team": "Charlie", "start": "2024-05-15T20:00",
                            "end": "2024-05-15T20:15"},                     # B, 15 min by hand: dosed
                           {"spot_id": OTHER, "team": "Charlie", "start": "2024-05-16T20:00",
                            "end": "2024-05-16T20:30"},                     # not a pack spot
                           {"spot_id": spots["spot_id"][0], "team": "Alpha", "start": "2024-05-21T10:00",
                            "end": "2024-05-21T10:30"}])                    # after the plan: not counted
    yield store, spots
    store.close()


def test_weekly_by_area_arithmetic(logged):
    store, spots = logged
    table, meta = governance.weekly(store, PACK, spots, "area")
    t = table.set_index(["week", "area_name"])
    log = patrols.patrols(store)
    gps_min = log[log["source"] == "gps"].assign(spot=lambda d: d["spot_id"].map(
        dict(zip(spots["spot_id"], "ABCD"))), week=lambda d: d["start_at"].dt.strftime("%Y-%m-%d"))
    minutes = lambda spot, days: float(gps_min[(gps_min["spot"] == spot) & gps_min["start_at"].dt.day.isin(days)]  # noqa
                                       ["minutes"].sum())
    w1, w2 = "2024-05-06", "2024-05-13"
    west1 = t.loc[(w1, "West")]
    assert west1["spots"] == 2 and west1["plan_days"] == 7 and west1["planned_visits"] == pytest.approx(2)
    assert west1["visits"] == 2 and west1["gps_visits"] == 2 and west1["dosed_visits"] == 1
    assert west1["visits_pct"] == pytest.approx(100)
    assert west1["capped_visits_pct"] == pytest.approx(50)  # A's second visit cannot cover B's shortfall
    assert west1["spots_visited"] == 1 and west1["spots_dosed"] == 1 and west1["spots_dosed_share"] == 0.5
    assert west1["spots_fully_dosed"] == 1
    assert west1["planned_minutes"] == pytest.approx(30)
    assert west1["minutes"] == pytest.approx(minutes("A", [8, 9]), abs=0.01)
    assert west1["minutes_pct"] == pytest.approx(100 * minutes("A", [8, 9]) / 30, abs=0.05)
    east1 = t.loc[(w1, "East")]
    assert (east1["visits"], east1["dosed_visits"], east1["spots_dosed"], east1["spots_dosed_share"]) == (2, 2, 1, 0.5)
    west2, east2 = t.loc[(w2, "West")], t.loc[(w2, "East")]
    assert (west2["visits"], west2["gps_visits"], west2["dosed_visits"], west2["spots_dosed"]) == (2, 1, 2, 2)
    assert west2["spots_dosed_share"] == 1.0 and west2["capped_visits_pct"] == pytest.approx(100)
    assert (east2["visits"], east2["dosed_visits"], east2["spots_visited"], east2["spots_dosed"]) == (1, 0, 1, 0)
    all1, all2 = t.loc[(w1, governance.ALL_AREAS)], t.loc[(w2, governance.ALL_AREAS)]
    assert (all1["spots"], all1["visits"], all1["dosed_visits"], all1["spots_dosed"]) == (4, 4, 3, 2)
    assert all1["spots_dosed_share"] == 0.5 and all2["spots_dosed_share"] == 0.5
    assert all2["capped_visits_pct"] == pytest.approx(100 * 3 / 4)
    assert meta["summary"]["visits"] == 7  # the existing per-spot compliance agrees on the total
    assert meta["sources"] == {"gps": 6, "manual": 2}  # in the plan period (the 21st is outside)


def test_weekly_by_team_and_dose_setting(logged):
    store, spots = logged
    table, meta = governance.weekly(store, PACK, spots, "team")
    t = table.set_index(["week", "team"])
    a1, b1 = t.loc[("2024-05-06", "Alpha")], t.loc[("2024-05-06", "Bravo")]
    assert (a1["visits"], a1["dosed_visits"], a1["dosed_share"], a1["share_of_week"]) == (2, 2, 1.0, 0.5)
    assert (b1["visits"], b1["dosed_visits"], b1["dosed_share"], b1["areas"]) == (2, 1, 0.5, "East; West")
    a2, c2 = t.loc[("2024-05-13", "Alpha")], t.loc[("2024-05-13", "Charlie")]
    assert (a2["visits"], a2["dosed_visits"], a2["gps_visits"]) == (2, 1, 2)
    assert (c2["visits"], c2["gps_visits"], c2["dosed_visits"], c2["unplanned_visits"]) == (1, 0, 1, 1)
    assert c2["share_of_week"] == pytest.approx(1 / 3)
    assert "not per team" in meta["rules"]["plan"]
    # a 12-minute dose makes Bravo's 12.7-minute visit count
    strict, _ = governance.weekly(store, PACK, spots, "team", dose_minutes=12)
    assert strict.set_index(["week", "team"]).loc[("2024-05-06", "Bravo"), "dosed_visits"] == 2


def test_chart_is_a_small_png(logged, tmp_path):
    store, spots = logged
    for by in ("area", "team"):
        table, meta = governance.weekly(store, PACK, spots, by)
        png = governance.chart_png(table, meta)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 200_000
        (tmp_path / f"compliance-{by}.png").write_bytes(png)
        import matplotlib.image as mpimg

        assert mpimg.imread(io.BytesIO(png)).shape[:2] == (360, 960)


def test_weekly_door(tmp_path):
    """On the bundled sample: save a pack, upload a GPS track parked at its first spot, read the tables."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from geodata.settings import Settings

    with TestClient(create_app(Settings(data_dir=tmp_path))) as api:
        q = "dataset=essex-sample&from=2024-03&to=2024-03&plan_from=2024-04-01&plan_days=14&spots_per_area=1"
        pack = api.post(f"/tasking?{q}").json()
        first = pack["cells"][0]
        csv = gt.parked_track(first["lon"], first["lat"], 16, pd.Timestamp("2024-04-02 22:00"), "Car 1")
        assert api.post("/patrols/gps", content=csv, headers={"content-type": "text/csv"}).status_code == 201
        body = api.get(f"/patrols/compliance/weekly?pack_id={pack['pack_id']}").json()
        total = [r for r in body["rows"] if r["area_name"] == governance.ALL_AREAS and r["week"] == "2024-04-01"][0]
        assert total["visits"] == total["gps_visits"] == 1 and total["spots_dosed"] == 1
        assert total["spots"] == len(pack["cells"]) and total["spots_dosed_share"] == pytest.approx(1 / len(pack["cells"]), abs=1e-5)
        csv_out = api.get(f"/patrols/compliance/weekly?pack_id={pack['pack_id']}&by=team&format=csv")
        assert csv_out.status_code == 200 and csv_out.text.splitlines()[0].startswith("week,team,visits")
        assert "Car 1" in csv_out.text
        png = api.get(f"/patrols/compliance/weekly?pack_id={pack['pack_id']}&format=png")
        assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
        assert api.get("/patrols/compliance/weekly?pack_id=999").status_code == 404
        assert api.get("/patrols/compliance/weekly?by=nobody").status_code == 422
