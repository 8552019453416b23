"""POST /patrols/gps against the real service process (`harmspot serve`, keyed mode, 1 MB upload limit,
1,000-ping cap): a good upload lands in the patrol log as GPS-derived; hostile uploads get a 4xx in the error
shape with a reason, never a 5xx, bounded memory, and nothing stored."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from tests import gps_tracks as gt
from tests import live

PACK_Q = "dataset=essex-sample&from=2024-03&to=2024-03&plan_from=2024-04-01&plan_days=14&spots_per_area=1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gps-live")
    srv, keys = live.start(tmp / "data", tmp / "server.log",
                           {"HARMSPOT_MAX_UPLOAD_MB": "1", "HARMSPOT_GPS_MAX_PINGS": "1000"},
                           keys={"analyst": "analyst", "viewer": "viewer"})
    srv.keys = keys
    saved = srv.post(f"/tasking?{PACK_Q}", b"", content_type=None)
    assert saved.status == 201, saved.body[:300]
    srv.pack = saved.json()
    yield srv
    live.stop(srv.proc)


def spot_track(pack: dict, unit: str = "Car 7", minutes: float = 15, interval: float = 30) -> str:
    """A unit parked at the pack's first spot for ``minutes``."""
    cell = pack["cells"][0]
    return gt.parked_track(cell["lon"], cell["lat"], minutes, pd.Timestamp("2024-04-03 21:00"), unit, interval)


def assert_error(r: live.Reply, status: int | tuple[int, ...]) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status in statuses, (r.status, r.body[:400])
    body = r.json()
    assert set(body["error"]) == {"code", "message", "details"} and body["error"]["message"], body
    return body["error"]


def counts(server) -> tuple[int, int]:
    log = server.get("/patrols").json()["patrols"]
    ups = server.get("/patrols/gps/uploads").json()["uploads"]
    return len(log), len(ups)


def multipart(name: str, data: bytes, field: str = "file") -> tuple[bytes, str]:
    boundary = "harmspotboundary7"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: text/csv\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_good_upload_lands_as_gps_visits(server):
    csv = spot_track(server.pack)
    lines = csv.splitlines()
    lines.insert(5, "Car 7,2024-04-03T21:01:60,0.5,51.5")  # second 60: not a real time
    lines.insert(8, "Car 7,2024-04-03T21:02:20,4.0,57.0")  # 700 km away between two good pings: teleport
    r = server.post("/patrols/gps", "\n".join(lines) + "\n")
    assert r.status == 201, r.body[:500]
    body = r.json()
    assert body["stored"] == 1 and body["visits"][0]["unit"] == "Car 7"
    assert 14 <= body["visits"][0]["minutes"] <= 16.5
    assert body["visits"][0]["spot_id"] == server.pack["cells"][0]["spot_id"]
    reasons = {x["line"]: x["reason"] for x in body["rejects"]}
    assert set(reasons) == {6, 9} and "teleport" in reasons[9] and "real" in reasons[6]
    assert body["privacy"]["pings_kept"] == 0
    log = server.get("/patrols?source=gps").json()["patrols"]
    assert len(log) == 1 and log[0]["team"] == "Car 7" and log[0]["source"] == "gps"
    comp = server.get(f"/patrols/compliance?pack_id={server.pack['pack_id']}").json()
    assert comp["summary"]["visits"] == 1
    # the same file again: recognised, not double counted
    again = server.post("/patrols/gps", "\n".join(lines) + "\n").json()
    assert again["stored"] == 0 and again["duplicates_skipped"] == 1
    # multipart works too (dry run: nothing stored)
    body_mp, ctype = multipart("pings.csv", spot_track(server.pack, unit="Car 8").encode())
    dry = server.post("/patrols/gps?dry_run=true", body_mp, content_type=ctype)
    assert dry.status == 200 and dry.json()["visits_found"] == 1 and dry.json()["stored"] == 0


def test_keys_are_required(server):
    csv = spot_track(server.pack, unit="Car 9")
    assert_error(server.post("/patrols/gps", csv, key=None), 401)
    assert_error(server.post("/patrols/gps", csv, key=server.keys["viewer"]), 403)


HOSTILE = [
    ("binary", b"\x00\x01\x02garbage\xff\xfe\x00", "text/csv", 422),
    ("utf16-garbage", b"\xff\xfe\x00\x00garbage", "text/csv", 422),
    ("not-utf8", b"unit,timestamp,lon,lat\n\xc3\x28,2024-04-03T21:00,0.5,51.5\n", "text/csv", 422),
    ("empty", b"", "text/csv", 422),
    ("header-only", b"unit,timestamp,lon,lat\n", "text/csv", 422),
    ("wrong-columns", b"foo,bar\n1,2\n", "text/csv", 422),
    ("unclosed-quote", b'unit,timestamp,lon,lat\n"Car,2024-04-03T21:00,0.5,51.5\n', "text/csv", 422),
    ("ragged", b"unit,timestamp,lon,lat\nCar,2024-04-03T21:00,0.5,51.5,9,9,9\n", "text/csv", 422),
    ("all-rows-bad", b"unit,timestamp,lon,lat\nCar,soon,x,y\n,2024-04-03T21:00,1e309,nan\n", "text/csv", 422),
    ("too-many-pings", b"unit,timestamp,lon,lat\n" + b"".join(
        f"Car,2024-04-03T21:{i // 60:02d}:{i % 60:02d},0.5,51.5\n".encode() for i in range(1001)), "text/csv", 422),
    ("json-body", json.dumps({"pings": []}).encode(), "application/json", 415),
    ("no-content-type", b"unit,timestamp,lon,lat\n", None, 415),
    ("over-limit", b"unit,timestamp,lon,lat\n" + b"Car,2024-04-03T21:00:00,0.5,51.5\n" * 40_000, "text/csv", 413),
    ("over-limit-chunked", b"unit,timestamp,lon,lat\n" + b"Car,2024-04-03T21:00:00,0.5,51.5\n" * 40_000, "text/csv",
     413),
]


@pytest.mark.parametrize("name,data,ctype,status", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_bodies(server, name, data, ctype, status):
    before = counts(server)
    rss = live.rss_mb(server.proc.pid)
    err = assert_error(server.post("/patrols/gps", data, content_type=ctype, chunked=name.endswith("chunked")), status)
    if name == "all-rows-bad":
        lines = {d["line"] for d in err["details"]}
        assert lines == {2, 3}, err
    if name == "too-many-pings":
        assert "split the file" in err["message"]
    assert counts(server) == before  # nothing stored half-way
    assert live.rss_mb(server.proc.pid) - rss < 300  # bounded memory


@pytest.mark.parametrize("query,status", [
    ("pack_id=999999", 404), ("buffer_rings=99", 422), ("min_minutes=-5", 422), ("gap_factor=nan", 422),
    ("max_gap_minutes=inf", 422), ("sample_seconds=0", 422), ("pack_id=abc", 422), ("dataset=nope", 404),
])
def test_hostile_parameters(server, query, status):
    before = counts(server)
    assert_error(server.post(f"/patrols/gps?{query}", spot_track(server.pack, unit="Car 10")), status)
    assert counts(server) == before


def test_multipart_without_file_part_and_formula_units(server):
    body, ctype = multipart("x.csv", b"unit,timestamp,lon,lat\n", field="other")
    assert_error(server.post("/patrols/gps", body, content_type=ctype), 422)
    csv = spot_track(server.pack, unit='=HYPERLINK("http://evil","x")')
    r = server.post("/patrols/gps", csv)
    assert r.status == 201 and r.json()["stored"] == 1
    out = server.get("/patrols?source=gps&format=csv").body.decode()
    assert "\n=HYPERLINK" not in out and ",=HYPERLINK" not in out  # neutralised for spreadsheets
    long_unit = spot_track(server.pack, unit="U" * 5000)
    r = server.post("/patrols/gps", long_unit)
    assert_error(r, 422)  # every row rejected: unit longer than 100 characters
