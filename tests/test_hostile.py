"""Hostile input: oversized uploads, malformed files, wrong encodings, formula injection, absurd parameters.
Every one is a clear 4xx in the error shape, never a 5xx."""
from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from geodata.settings import Settings

HEADER = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,"
          "Last outcome category,Context\n")
GOOD = "hx1,2024-03,Essex Police,Essex Police,0.7101,51.5401,On or near High Street,E01,Southend 001A,Robbery,,\n"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("hostile"), max_upload_mb=1))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def upload(client, name: str, data: bytes, dataset: str = "hostile"):
    return client.post("/datasets", files={"files": (name, data)}, data={"dataset": dataset})


def assert_error(r, status: int | tuple[int, ...] = 422):
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body["error"]) == {"code", "message", "details"} and body["error"]["message"]


def test_upload_over_limit_is_413(client):
    r = upload(client, "big.csv", (HEADER + GOOD * 20_000).encode())  # ~2 MB > 1 MB
    assert_error(r, 413)
    assert r.json()["error"]["code"] == "payload_too_large"
    # a lying Content-Length does not get past the streaming count either
    body = b"x" * (1024 * 1024 + 10)
    r = client.post("/datasets", content=body, headers={"content-type": "multipart/form-data; boundary=zz"})
    assert_error(r, 413)


@pytest.mark.parametrize("name,data", [
    ("binary.csv", b"\x00\x01\x02garbage\xff\xfe\x00"),
    ("unclosed.csv", b'a,b\n"unclosed,1\n2,3\n'),
    ("empty.csv", b""),
    ("header-only-wrong.csv", b"foo,bar\n1,2\n"),
    ("notjson.geojson", b"{not json"),
    ("list.geojson", b"[1, 2, 3]"),
    ("notfc.geojson", b'{"type": "Feature"}'),
    ("badparquet.parquet", b"PAR1garbagePAR1"),
    ("trunc.parquet", b"PAR1"),
    ("badzip.zip", b"PK\x03\x04garbage"),
    ("badgz.csv.gz", b"\x1f\x8bgarbage"),
])
def test_malformed_files_are_422(client, name, data):
    assert_error(upload(client, name, data))


def test_hostile_geojson_features_are_rejected_rows_not_errors(client):
    doc = {"type": "FeatureCollection", "features": [
        None, 5, [1, 2], {"type": "Feature", "properties": [1], "geometry": "x"},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": ["x", None]}, "properties": None},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 1], [0, 0]]]},
         "properties": {"category": "Robbery", "date": "2024-03"}}]}
    r = upload(client, "hostile.geojson", json.dumps(doc).encode(), "geo-hostile")
    assert r.status_code in (201, 422), r.text
    if r.status_code == 201:
        assert r.json()["stored"] == 0 and r.json()["rejected"] == 6


def test_parquet_with_wrong_types_is_handled(client):
    table = pa.table({"longitude": ["a", "b"], "latitude": [None, None], "category": [1, 2]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    r = upload(client, "types.parquet", buf.getvalue(), "pq-hostile")
    assert r.status_code in (201, 422), r.text
    if r.status_code == 422:
        assert_error(r)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252", "utf-16"])
def test_encodings(client, encoding):
    text = HEADER + GOOD.replace("High Street", "Caf\u00e9 Street").replace("hx1", f"enc-{encoding}")
    r = upload(client, f"{encoding}.csv", text.encode(encoding), f"enc-{encoding}")
    assert r.status_code == 201, r.text
    assert r.json()["stored"] == 1


def test_formula_injection_escaped_in_csv_exports(client):
    rows = [
        'inj1,2024-03,a,b,0.7101,51.5401,"=HYPERLINK(""http://evil.example"",""x"")",E01,n,Robbery,,',
        "inj2,2024-03,a,b,,,=cmd|' /C calc'!A0,E01,n,Robbery,,",
        "inj3,2024-03,a,b,0.71,51.54,+SUM(1),E01,n,Robbery,,",
        "@inj4,2024-03,a,b,,,@SUM(1),E01,n,Robbery,,",
        "-inj5,2099-99,a,b,0.7,51.55,-2+3,E01,n,-2+3,,",
        "\tinj6,2024-03,a,b,,,x,E01,n,Robbery,,",
    ]
    r = upload(client, "=evil.csv", (HEADER + "\n".join(rows) + "\n").encode(), "inject")
    assert r.status_code == 201, r.text
    assert r.json()["rejected"] >= 4
    rej = client.get("/datasets/inject/rejects", params={"format": "csv"})
    assert rej.status_code == 200
    cells = [c for row in csv.reader(io.StringIO(rej.text)) for c in row]
    assert cells, rej.text
    for c in cells:
        assert not c.startswith(("=", "+", "-", "@", "\t", "\r")), c
    assert any(c.startswith("'=") for c in cells)  # the file name '=evil.csv' and raw rows are quoted
    hot = client.get("/hotspots", params={"dataset": "inject", "from": "2024-03", "to": "2024-03",
                                          "preset": "all-crime", "format": "csv"})
    assert hot.status_code == 200
    for row in csv.reader(io.StringIO(hot.text)):
        for c in row:
            assert not c.startswith(("=", "+", "@", "\t", "\r")), c


@pytest.mark.parametrize("params", [
    {"resolution": 15}, {"resolution": -1}, {"resolution": "abc"},
    {"top": 10**9}, {"top": 0}, {"top": -5},
    {"from": "2024-04", "to": "2024-03"}, {"from": "2024-13"}, {"from": "9999-12", "to": "9999-12"},
    {"from": "0001-01"}, {"from": "2024-02-30"}, {"from": "yesterday"},
    {"bbox": "1,2,3"}, {"bbox": "a,b,c,d"}, {"bbox": "nan,nan,nan,nan"},
    {"bbox": "inf,50,1,51"}, {"bbox": "0,-95,1,50"},
    {"days": "1-1000000000"}, {"hours": "0-99999999999999999999"}, {"hours": "99"}, {"days": "x"},
    {"preset": "zzz"}, {"offences": "zzz"}, {"rank_by": "random"}, {"format": "xlsx"}, {"mode": "secret"},
    {"include_asb": "maybe"}, {"dataset": "nope"}, {"weights": "nope"}, {"area": "nope"},
    {"dataset": "x" * 5000}, {"area": "districts:" + "'; DROP TABLE offences; --"},
])
def test_absurd_parameters_are_4xx(client, params):
    r = client.get("/hotspots", params=params)
    assert_error(r, (400, 404, 422))


@pytest.mark.parametrize("bbox", ["170,50,-170,60", "0,60,1,50"])
def test_boxes_across_the_antimeridian_or_upside_down_select_nothing_here(client, bbox):
    """RFC 7946 / OGC read a box with minLon > maxLon as crossing the antimeridian, and one with minLat > maxLat
    selects nothing (geodata.cells.bbox_parts): a well-formed request, answered 200 with no cells of this data."""
    r = client.get("/hotspots", params={"bbox": bbox})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["cells"] == []


def test_absurd_parameters_elsewhere(client):
    assert_error(client.get("/datasets/nope/rejects"), 404)
    assert_error(client.get("/datasets/essex-sample/rejects", params={"limit": 10**12}), 422)
    assert_error(client.get("/datasets/essex-sample/rejects", params={"offset": -1}), 422)
    assert_error(client.get("/areas/nope.geojson"), 404)
    assert_error(client.post("/datasets", files={"files": ("a.csv", HEADER.encode())},
                             data={"dataset": "../../etc/passwd"}), 422)
    assert_error(client.post("/datasets", files={"files": ("a.csv", HEADER.encode())},
                             data={"dataset": "ok", "mapping": "[1,2]"}), 422)
    assert_error(client.post("/harm-weights", files={"file": ("w.csv", b"\x00\x01junk")}, data={"name": "junk"}), 422)
    r = client.get("/hotspots.geojson", params={"resolution": 15})
    assert_error(r, 422)
    assert client.get("/health").json()["status"] == "ok"  # still standing
