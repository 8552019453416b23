"""The HTTP door on the bundled sample: formats, RFC 7946 GeoJSON, uploads, rejects, errors."""
from __future__ import annotations

import csv
import io
import json

import pytest

from tests.conftest import SAMPLE


def _ring_area(ring):
    return sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(ring, ring[1:])) / 2


def test_health_and_sample_loaded(api):
    r = api.get("/health")
    assert r.status_code == 200 and r.json()["offences"] > 50_000
    ds = api.get("/datasets").json()["datasets"]
    assert ds[0]["name"] == "essex-sample" and ds[0]["time_precision"] == ["month"]


def test_hotspots_json_contract(api):
    body = api.get("/hotspots", params={"dataset": "essex-sample", "from": "2024-03", "to": "2024-04", "top": 10}).json()
    for key in ("weights_table", "time_precision", "not_applied", "concentration", "cells"):
        assert key in body
    assert body["from"] == "2024-03-01" and body["to"] == "2024-04-30"
    cells = body["cells"]
    assert len(cells) == 10
    for c in cells:
        assert {"h3", "rank", "harm", "count", "harm_share", "area_km2"} <= c.keys()
        assert isinstance(c["h3"], str) and len(c["h3"]) == 15
    assert [c["harm"] for c in cells] == sorted((c["harm"] for c in cells), reverse=True)


def test_csv_matches_json(api):
    params = {"dataset": "essex-sample", "top": 5}
    js = api.get("/hotspots", params=params).json()["cells"]
    r = api.get("/hotspots", params={**params, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["h3"] for row in rows] == [c["h3"] for c in js]
    assert [float(row["harm"]) for row in rows] == pytest.approx([c["harm"] for c in js])


def test_geojson_rfc7946(api):
    r = api.get("/hotspots.geojson", params={"top": 50, "resolution": 9})
    assert r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and "crs" not in fc
    assert len(fc["features"]) == 50
    for f in fc["features"]:
        ring = f["geometry"]["coordinates"][0]
        assert f["geometry"]["type"] == "Polygon"
        assert ring[0] == ring[-1] and len(ring) == 7  # closed hexagon
        assert _ring_area(ring) > 0  # counter-clockwise (right-hand rule)
        for lon, lat in ring:  # lon before lat: Essex is lon 0..1.3, lat 51.4..52.1
            assert -0.1 < lon < 1.4 and 51.4 < lat < 52.2
    same = api.get("/hotspots", params={"top": 50, "resolution": 9, "format": "geojson"}).json()
    assert same["features"] == fc["features"]


def test_upload_report_rejects_and_idempotence(api):
    data = SAMPLE.read_bytes()
    r = api.post("/datasets", data={"dataset": "up"}, files={"files": ("essex.csv.gz", data)})
    assert r.status_code == 201, r.text
    rep = r.json()
    assert rep["stored"] + rep["rejected"] + rep["duplicates"] == rep["read"] == 52_837
    again = api.post("/datasets", data={"dataset": "up"}, files={"files": ("essex.csv.gz", data)}).json()
    assert again["stored"] == 0 and again["duplicates"] == rep["stored"]
    rej = api.get("/datasets/up/rejects").json()
    assert rej["rejected"] == rep["rejected"] and rej["rows"][0]["line"] >= 2
    rej_csv = api.get("/datasets/up/rejects", params={"format": "csv"}).text
    assert rej_csv.splitlines()[0] == "batch_id,file,line,reason,raw"


def test_bad_upload_is_422_and_stores_nothing(api):
    before = api.get("/health").json()["offences"]
    r = api.post("/datasets", data={"dataset": "bad"}, files={"files": ("x.csv", b"a,b\n1,2\n")})
    assert r.status_code == 422 and "missing" in r.json()["error"]["message"]
    assert api.get("/health").json()["offences"] == before


@pytest.mark.parametrize("params, fragment", [
    ({"resolution": 15}, "resolution"),
    ({"top": 10**9}, "top"),
    ({"from": "2024-05", "to": "2024-01"}, "after"),
    ({"bbox": "0,91,1,92"}, "out of range"),
    ({"from": "2024-02-30"}, "not a real date"),
    ({"preset": "nope"}, "preset"),
    ({"dataset": "missing"}, "unknown dataset"),
])
def test_bad_parameters_are_clear_4xx(api, params, fragment):
    r = api.get("/hotspots", params=params)
    assert 400 <= r.status_code < 500
    assert fragment in r.json()["error"]["message"]


def test_presets_and_weights_listed(api):
    names = [p["name"] for p in api.get("/presets").json()["presets"]]
    assert names == ["op-ark", "community-violence", "near-miss", "nte", "all-crime"]
    w = api.get("/harm-weights").json()
    assert w["default"] == "harmspot-open-2026"


def test_map_page_is_offline(api):
    r = api.get("/", headers={"accept": "text/html"})
    assert r.status_code == 200 and "leaflet" in r.text.lower()
    assert "http://" not in r.text and "https://" not in r.text  # no CDN, no tile server
    js = api.get("/static/vendor/leaflet/leaflet.js")
    assert js.status_code == 200 and len(js.content) > 100_000


def test_upload_too_large_is_413(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from geodata.settings import Settings

    with TestClient(create_app(Settings(data_dir=tmp_path, max_upload_mb=1, load_sample=False))) as c:
        r = c.post("/datasets", data={"dataset": "big"}, files={"files": ("big.csv", b"x" * (2 * 1024 * 1024))})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_bbox_across_the_antimeridian_or_upside_down(api):
    """minLon > maxLon is a box across the antimeridian (RFC 7946 5.2): the cells of its two halves; minLat >
    maxLat holds no point: 200 with no cells, and the domain rule says why (schemathesis: a schema-valid bbox
    must not be refused)."""
    base = {"dataset": "essex-sample", "from": "2024-01", "to": "2024-04", "preset": "all-crime", "top": 100_000}

    def cells(bbox):
        r = api.get("/hotspots", params={**base, "bbox": bbox})
        assert r.status_code == 200, r.text
        return {c["h3"] for c in r.json()["cells"]}, r.json()

    crossing, _ = cells("0.7,51.4,0.6,51.7")
    east, _ = cells("0.7,51.4,180,51.7")
    west, _ = cells("-180,51.4,0.6,51.7")
    middle, _ = cells("0.61,51.4,0.69,51.7")
    assert crossing and crossing == east | west and middle and not crossing & (middle - east - west)
    empty, body = cells("0.6,51.7,0.7,51.4")
    assert empty == set() and "upside down" in json.dumps(body)
