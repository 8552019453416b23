"""GPS-measured dosage: constructed tracks with known stays at 30 s, 2 min and 5 min ping intervals, row
rejects, the patrol-log round trip, ping retention, and hostile input against the real service process."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from geodata.cells import lonlat_to_bng
from geodata.store import Store
from hotspots.patrol import gps, patrols
from tests import gps_tracks as gt

INTERVALS = [30, 120, 300]


def detect(frame: pd.DataFrame, **kw) -> gps.Detection:
    params = gps.GpsParams(**kw)
    table = gps.parse_pings(gt.to_csv(frame), params)
    assert table.rejects.empty, table.rejects
    return gps.detect_visits(table.pings, gt.spots_frame(), params)


def by_spot(det: gps.Detection) -> dict[str, float]:
    names = {f"HS-{c}": k for k, c in gt.spot_cells().items()}
    return {names[s]: m for s, m in zip(det.visits["spot_id"], det.visits["minutes"])}


@pytest.mark.parametrize("interval", INTERVALS)
def test_known_stays_count_and_drive_through_does_not(interval):
    """A (20 min) and C (20 min, its middle ping missing) are visits; B (driven through at 30 km/h) and D (a
    4-minute stop) are not. Minutes are the interpolated time inside the spot (cell + 1 ring, ~400 m across:
    the 20 minutes plus ~50 s of driving in and out), within one ping interval."""
    track = gt.street_track()
    missing = track.ping_index_at(interval, track.middle_of("C"))
    det = detect(track.pings(interval, drop=(missing,)))
    got = by_spot(det)
    assert set(got) == {"A", "C"}, det.runs
    inside_true = 20 + 400 / gt.SPEED / 60  # stay + time driving across the buffered spot
    for spot in ("A", "C"):
        assert abs(got[spot] - inside_true) <= interval / 60 + 0.5, (spot, got[spot])
    # the drive-through and the short stop were seen as stays in the spot, and dropped as too short
    short = det.runs[det.runs["minutes"] < 10]
    assert len(short) == 2 and (short["minutes"] < 5).all()
    assert det.stats["gaps_not_bridged"] == 0 and det.stats["legs_bridged"] == det.stats["pings"] - 1
    # visit times: local wall clock, inside the true stay +- one interval
    start_a = gt.START + pd.Timedelta(seconds=track.stays["A"][0])
    va = det.visits.iloc[0]
    assert abs((va["start_at"] - start_a).total_seconds()) <= interval + 60


@pytest.mark.parametrize("interval", INTERVALS)
def test_missing_ping_is_bridged_only_within_the_gap_rule(interval):
    """An 18-minute stay at C split by one missing ping counts (gap = 2 intervals <= 2.5); with gap_factor 1.5
    (and no joining of stays across a short exit) the gap is not bridged, the stay breaks into two halves
    under 10 minutes and C is not a visit."""
    track = gt.street_track(stay_c=18)
    missing = track.ping_index_at(interval, track.middle_of("C"))
    frame = track.pings(interval, drop=(missing,))
    assert "C" in by_spot(detect(frame))
    strict = by_spot(detect(frame, gap_factor=1.5, max_exit_minutes=0))
    assert "C" not in strict and "A" in strict


def test_long_gap_is_unknown_time():
    """Five pings missing (3 minutes at 30 s) in the middle of a 16-minute stay: the gap is beyond 2.5 x the
    interval, so it is not interpolated and neither half reaches 10 minutes."""
    track = gt.street_track(stay_c=16)
    mid = track.ping_index_at(30, track.middle_of("C"))
    got = by_spot(detect(track.pings(30, drop=tuple(range(mid - 2, mid + 3)))))
    assert "C" not in got and "A" in got
    assert "C" in by_spot(detect(track.pings(30)))  # the same stay without the gap counts


def test_five_minute_pings_at_any_phase_are_conservative():
    """At 5-minute pings a 20-minute stay holds only 4 or 5 pings. Whatever the phase of the pings against the
    arrival, the interpolated time inside the spot is within one interval of the truth and never above it:
    linear interpolation assumes steady motion between pings, while a unit arriving drives, then stops, so the
    ends of a stay are under-counted rather than inflated (docs/patrol-planning.md)."""
    track = gt.street_track()
    truth = 20 + 400 / gt.SPEED / 60
    for phase in (0, 60, 150, 240):
        t = np.arange(phase, track.times[-1], 300)
        frame = pd.DataFrame({"unit": "U", "timestamp": (gt.START + pd.to_timedelta(t, unit="s"))
                              .strftime("%Y-%m-%dT%H:%M:%S"), "lon": np.interp(t, track.times, track.lon),
                              "lat": np.interp(t, track.times, track.lat)})
        got = by_spot(detect(frame))
        assert set(got) == {"A", "C"}, (phase, got)
        assert all(truth - 5 <= m <= truth + 0.5 for m in got.values()), (phase, got)


def test_two_units_and_bng_and_offsets_agree():
    """Two units interleaved in one file; one given in British National Grid (EPSG:27700), the other with UTC
    offsets: each gets its own visits, identical to the plain lon/lat local-time track."""
    track = gt.street_track()
    plain = by_spot(detect(track.pings(120, unit="U1")))
    f1 = track.pings(120, unit="U1", seed=1)
    x, y = lonlat_to_bng(f1["lon"].to_numpy(), f1["lat"].to_numpy())
    bng = pd.DataFrame({"unit": "U1", "timestamp": f1["timestamp"], "easting": x.round(2), "northing": y.round(2)})
    t = gps.parse_pings(bng.to_csv(index=False))
    assert t.coordinates == "bng" and t.rejects.empty
    assert by_spot(gps.detect_visits(t.pings, gt.spots_frame())) == pytest.approx(plain, abs=0.2)
    f2 = track.pings(120, unit="U2", seed=1)
    f2["timestamp"] = (pd.to_datetime(f2["timestamp"]).dt.tz_localize("Europe/London").dt.tz_convert("UTC")
                       .dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    both = pd.concat([f1, f2]).sort_values("t", kind="stable")
    det = detect(both)
    assert det.visits.groupby("unit").size().to_dict() == {"U1": 2, "U2": 2}
    assert (det.visits.groupby("spot_id")["start_at"].nunique() == 1).all()  # same local times from both forms


def test_row_rejects_with_reasons_and_teleports():
    track = gt.street_track()
    frame = gt.to_csv(track.pings(30)).splitlines()
    header, rows = frame[0], frame[1:]
    mid = track.ping_index_at(30, track.middle_of("A"))
    lon, lat = gt.point(50_000)  # 50 km east: a teleport in the middle of the stay at A
    ts = rows[mid].split(",")[1]
    rows[mid] = f"Alpha 1,{ts},{lon:.6f},{lat:.6f}"
    bad = [
        "Alpha 1,,-1.1,52.6",                          # missing timestamp
        "Alpha 1,yesterday,-1.1,52.6",                 # not ISO 8601
        "Alpha 1,2024-05-08,-1.1,52.6",                # a date without a time
        "Alpha 1,2024-13-01T10:00,-1.1,52.6",          # month 13
        "Alpha 1,2024-10-27T01:30,-1.1,52.6",          # repeated hour (clocks go back)
        "Alpha 1,2024-03-31T01:30,-1.1,52.6",          # skipped hour (clocks go forward)
        ",2024-05-08T12:00,-1.1,52.6",                 # no unit
        "Alpha 1,2024-05-08T12:01,abc,52.6",           # lon not a number
        "Alpha 1,2024-05-08T12:02,-1.1,95",            # lat out of range
        "Alpha 1,2024-05-08T12:03,inf,52.6",           # infinite
        "Alpha 1,2099-01-01T10:00,-1.1,52.6",          # in the future
        rows[5],                                       # duplicate of a good ping
        "Alpha 1,9999-01-01T10:00,-1.1,52.6",          # beyond any clock
    ]
    text = "\n".join([header, *rows, *bad]) + "\n"
    table = gps.parse_pings(text)
    first_bad = len(rows) + 2
    reasons = table.rejects.groupby("line")["reason"].first().to_dict()
    assert set(reasons) == set(range(first_bad, first_bad + len(bad))) | {mid + 2}, reasons
    assert "teleport" in reasons[mid + 2] and "km/h" in reasons[mid + 2]
    assert reasons[first_bad] == "missing"
    assert "ISO 8601" in reasons[first_bad + 1]
    assert "without a time" in reasons[first_bad + 2]
    assert "not a real" in reasons[first_bad + 3]
    assert "clock change" in reasons[first_bad + 4] and "clock change" in reasons[first_bad + 5]
    assert "future" in reasons[first_bad + 10]
    assert "duplicate" in reasons[first_bad + 11] and "line 7" in reasons[first_bad + 11]
    assert "year outside" in reasons[first_bad + 12]
    fields = table.rejects.set_index("line")["field"].to_dict()
    assert fields[first_bad + 6] == "unit" and fields[first_bad + 7] == "lon" and fields[first_bad + 8] == "lat"
    # the rest is used, and the stay at A still counts
    assert len(table.pings) == len(rows) - 1
    assert set(by_spot(gps.detect_visits(table.pings, gt.spots_frame()))) == {"A", "C"}


def test_accuracy_column():
    track = gt.street_track()
    frame = track.pings(30).assign(accuracy_m=8.0)
    frame.loc[frame.index[3], "accuracy_m"] = 450.0
    frame.loc[frame.index[4], "accuracy_m"] = -1.0
    table = gps.parse_pings(gt.to_csv(frame))
    got = table.rejects.set_index("line")["reason"].to_dict()
    assert "450 m is worse than the 100 m limit" in got[5] and got[6] == "negative"


def test_whole_file_errors():
    for text, match in [("", "empty"), ("a,b\n1,2\n", "lacks"), ("unit,timestamp,lon\nx,2024-05-08T10:00,1\n", "lacks"),
                        (b"\xff\xfe\x00\x00garbage", "NUL|UTF"), (b"unit,timestamp,lon,lat\n\xc3\x28,1,2,3\n", "UTF-8"),
                        ('unit,timestamp,lon,lat\n"a,b\n', "CSV")]:
        with pytest.raises(gps.GpsError, match=match):
            gps.parse_pings(text)
    with pytest.raises(gps.GpsError, match="more than"):
        gps.parse_pings("unit,timestamp,lon,lat\n" + "u,2024-05-08T10:00,-1.1,52.6\n" * 11, max_pings=10)


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "gps.duckdb")
    yield s
    s.close()


def _pack():
    header = {"pack_id": 7, "plan_from": "2024-05-06", "plan_to": "2024-05-19", "visits_per_day": 2.0,
              "visit_minutes": 15}
    return header, gt.spots_frame()


def test_record_into_the_patrol_log_once_and_without_pings(store):
    track = gt.street_track()
    csv = gt.to_csv(track.pings(120))
    header, spots = _pack()
    up = gps.record_gps(store, csv, header, spots)
    assert up.stored == 2 and up.pings_kept == 0
    log = patrols.patrols(store)
    assert log["source"].tolist() == ["gps", "gps"] and set(log["team"]) == {"Alpha 1"}
    assert log["note"].str.startswith("GPS-derived").all()
    assert store.scalar("SELECT count(*) FROM gps_pings") == 0  # retention 0: no ping ever written
    again = gps.record_gps(store, csv, header, spots)
    assert again.stored == 0 and again.duplicates == 2 and len(patrols.patrols(store)) == 2
    dry = gps.record_gps(store, gt.to_csv(track.pings(30, unit="Bravo")), header, spots, dry_run=True)
    assert dry.stored == 0 and dry.to_dict()["visits_found"] == 2 and len(patrols.patrols(store)) == 2
    body = up.to_dict()
    assert body["privacy"]["pings_kept"] == 0 and "not stored" in body["privacy"]["rule"]
    json.dumps(body)  # plain JSON types only
    # hand-entered rows keep working beside GPS rows, marked manual
    patrols.record(store, [{"spot_id": spots["spot_id"][0], "team": "Hand", "start": "2024-05-09T10:00",
                            "end": "2024-05-09T10:15"}])
    assert patrols.patrols(store, source="manual")["team"].tolist() == ["Hand"]


def test_ping_retention_purges(store):
    header, spots = _pack()
    up = gps.record_gps(store, gt.to_csv(gt.street_track().pings(120)), header, spots, retention_days=7)
    assert up.pings_kept == store.scalar("SELECT count(*) FROM gps_pings") > 0
    assert gps.purge_expired_pings(store, 7, now=pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=6)) == 0
    assert gps.purge_expired_pings(store, 7, now=pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=8)) == up.pings_kept
    assert store.scalar("SELECT count(*) FROM gps_pings") == 0
    gps.record_gps(store, gt.to_csv(gt.street_track().pings(120, unit="B")), header, spots, retention_days=7)
    assert gps.purge_expired_pings(store, 0) > 0  # retention lowered to 0: everything goes at once
    assert len(gps.uploads(store)) == 2


def test_detection_at_scale_with_bounded_samples():
    """100 units x four one-hour tracks at 30 s (~47,000 pings) in one call; the interpolation step grows so
    that no more than ``max_samples`` points are made, and every stay is still found."""
    track = gt.street_track()
    frames = [track.pings(30, unit=f"U{i:03d}", seed=i, start=gt.START + pd.Timedelta(minutes=i))
              for i in range(100)]
    long = pd.concat([f.assign(timestamp=(pd.to_datetime(f["timestamp"]) + pd.Timedelta(hours=h))
                               .dt.strftime("%Y-%m-%dT%H:%M:%S")) for f in frames for h in range(0, 8, 2)])
    table = gps.parse_pings(gt.to_csv(long))
    det = gps.detect_visits(table.pings, gt.spots_frame(), gps.GpsParams(max_samples=200_000))
    assert len(table.pings) == len(long) and det.stats["samples"] <= 200_000 + len(long)
    assert det.stats["sample_seconds"] > 5  # raised to stay within the bound
    assert det.visits.groupby("unit").size().eq(8).all()  # A and C in each of four 2-hour repeats
