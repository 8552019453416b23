"""The RTM doors end to end on the bundled sample: POI layers (store-backed, uploads with rejects), RTM runs as
background jobs (progress, result, risk surface, priority places), OGC collections, failures, restarts."""
from __future__ import annotations

import csv
import io
import time

import duckdb
import pytest
from fastapi.testclient import TestClient

from app.routes.rtm import RTMRunRequest

RUN = {"area": "districts:Chelmsford", "test_months": 1, "bootstrap": 2,
       "layers": ["osm_pubs", "fhrs_pubs", "fhrs_restaurants", "rail_stations"]}
BUS_STOPS = ("name,longitude,latitude\n"
             "Stop A,0.4700,51.7350\n"
             "Stop B,abc,51.7360\n"          # line 3: longitude is not a number
             "Stop C,0.4800,51.7300\n"
             "Stop D,,\n")                   # line 5: missing coordinates


def _client(data_dir) -> TestClient:
    from app.main import create_app
    from geodata.settings import Settings

    return TestClient(create_app(Settings(data_dir=data_dir)))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with _client(tmp_path_factory.mktemp("rtm_api")) as c:
        yield c


def wait_for(client: TestClient, run_id: str, timeout: float = 60.0) -> tuple[dict, list[tuple[str, float]]]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/rtm/runs/{run_id}").json()
        seen.append((body["status"], body["fraction"]))
        if body["status"] in ("done", "failed"):
            return body, seen
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s: {seen[-3:]}")


@pytest.fixture(scope="module")
def done_run(client):
    r = client.post("/rtm/runs", json=RUN)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/rtm/runs/{r.json()['id']}" and r.json()["status"] == "queued"
    body, seen = wait_for(client, r.json()["id"])
    assert body["status"] == "done", body["error"]
    return body, seen


def _ccw_closed(ring: list[list[float]]) -> bool:
    area = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(ring, ring[1:]))
    return ring[0] == ring[-1] and len(ring) >= 4 and area > 0


# ------------------------------------------------------------------------------------------ roles
def test_role_rules_cover_the_rtm_doors():
    from app.security import required_role

    assert required_role("POST", "/layers") == "analyst"
    assert required_role("POST", "/rtm/runs") == "analyst"
    assert required_role("GET", "/layers") == "viewer"
    assert required_role("GET", "/rtm/runs/abc/cells.geojson") == "viewer"


# ------------------------------------------------------------------------------------------ layers
def test_sample_layers_loaded_with_attribution(client):
    layers = {lay["name"]: lay for lay in client.get("/layers").json()["layers"]}
    assert {"osm_pubs", "rail_stations", "fhrs_pubs", "fhrs_restaurants"} <= set(layers)
    assert "OpenStreetMap" in layers["osm_pubs"]["attribution"] and layers["osm_pubs"]["licence"] == "ODbL 1.0"
    assert "Open Government Licence" in layers["fhrs_pubs"]["attribution"]
    assert layers["osm_pubs"]["features"] == 335 and layers["rail_stations"]["type"] == "railway station"
    one = client.get("/layers/fhrs_pubs").json()
    assert one["rejected"] == 1 and one["rejects"][0]["line"] == 296
    assert "missing coordinates" in one["rejects"][0]["reason"] and "raw" not in one["rejects"][0]


def test_upload_layer_rejects_bad_rows_with_line_and_reason(client):
    files = {"file": ("bus_stops.csv", BUS_STOPS.encode(), "text/csv")}
    form = {"name": "bus_stops", "type": "bus stop", "licence": "OGL v3.0", "attribution": "test fixture",
            "dataset": "essex-sample"}
    r = client.post("/layers", files=files, data=form)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["features"] == 2 and body["read"] == 4 and body["rejected"] == 2 and body["plural"] == "bus stops"
    assert [x["line"] for x in body["rejects"]] == [3, 5]
    assert "longitude is not a number" in body["rejects"][0]["reason"] and "abc" in body["rejects"][0]["raw"]
    assert "missing coordinates" in body["rejects"][1]["reason"]
    assert body["study_area"] and body["buffer_m"] == 400

    assert "bus_stops" in [lay["name"] for lay in client.get("/layers").json()["layers"]]
    fc = client.get("/layers/bus_stops.geojson")
    assert fc.headers["content-type"].startswith("application/geo+json")
    fc = fc.json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 2
    assert fc["features"][0]["geometry"] == {"type": "Point", "coordinates": [0.47, 51.735]}
    assert fc["features"][0]["properties"]["name"] == "Stop A" and fc["metadata"]["attribution"] == "test fixture"

    again = client.post("/layers", files=files, data=form)
    assert again.status_code == 409
    replaced = client.post("/layers", files={"file": ("s.csv", b"name,lon,lat\nX,0.47,51.73\n", "text/csv")},
                           data={**form, "replace": "true"})
    assert replaced.status_code == 201 and replaced.json()["features"] == 1 and replaced.json()["rejected"] == 0
    bad = client.post("/layers", files={"file": ("s.csv", b"a,b\n1,2\n", "text/csv")}, data={**form, "name": "x"})
    assert bad.status_code == 422 and "no coordinate columns" in bad.json()["error"]["message"]
    assert client.post("/layers", files=files, data={**form, "name": "bad name!"}).status_code == 422
    assert client.get("/layers/nope").status_code == 404
    assert client.get("/layers/nope.geojson").status_code == 404


# ------------------------------------------------------------------------------------------ runs
def test_run_progress_and_result(done_run):
    body, seen = done_run
    assert body["fraction"] == 1.0 and body["stage"] == "done" and body["finished_at"]
    fractions = [f for _, f in seen if f is not None]
    assert fractions == sorted(fractions)  # progress only moves forward
    res = body["result"]
    assert res["query"]["area"] == "districts:Chelmsford" and res["query"]["resolution"] == 10
    assert res["grid"]["cells"] > 10_000 and res["periods"]["test_start"] == "2024-04-01"
    assert res["factors"], "the sample selects at least one factor"
    for f in res["factors"]:
        assert {"factor", "operationalisation", "spatial_influence_m", "coefficient", "se", "p", "rrv",
                "rrv_ci_low", "rrv_ci_high", "bootstrap_selected"} <= set(f)
        assert f["rrv_ci_low"] < f["rrv"] < f["rrv_ci_high"] and f["rrv"] > 1
        assert f["operationalisation"] in ("proximity", "density") and f["factor"] in RUN["layers"]
    assert res["model"]["family"] in ("poisson", "negbin") and res["model"]["bic"] > 0
    assert [c["class"] for c in res["risk_classes"]] == [0, 1, 2, 3]
    assert res["validation"]["methods"]["rtm"]["auc"] > 0.5 and "prior_harm" in res["validation"]["methods"] and res["stability"]["resamples"] == 2
    assert {lay["name"] for lay in res["layers"]} == set(RUN["layers"])
    assert all(lay["attribution"] for lay in res["layers"])
    assert res["priority_places"] and "x the lowest-risk cell" in res["priority_places"][0]["narrative"]


def test_risk_surface_geojson(client, done_run):
    run_id = done_run[0]["id"]
    r = client.get(f"/rtm/runs/{run_id}/cells.geojson")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and fc["features"] and fc["numberMatched"] == len(fc["features"])
    assert "crs" not in fc and fc["metadata"]["run"] == run_id
    risks = [f["properties"]["relative_risk"] for f in fc["features"]]
    assert risks == sorted(risks, reverse=True)
    for f in fc["features"][:200]:
        assert f["geometry"]["type"] == "Polygon" and _ccw_closed(f["geometry"]["coordinates"][0])
        p = f["properties"]
        assert p["risk_class"] >= 1 and f["id"] == p["h3"] and "lowest-risk cell" in p["narrative"]
    top = fc["features"][0]["properties"]
    assert "RRV" in top["narrative"] and top["risk_label"] == "mean + 2 SD"
    high = client.get(f"/rtm/runs/{run_id}/cells.geojson", params={"min_class": 3}).json()
    assert 0 < len(high["features"]) < len(fc["features"])
    assert all(f["properties"]["risk_class"] == 3 for f in high["features"])
    everything = client.get(f"/rtm/runs/{run_id}/cells.geojson", params={"min_class": 0, "limit": 1}).json()
    assert everything["numberMatched"] == done_run[0]["result"]["grid"]["cells"]  # every cell is stored


def test_priority_places_formats(client, done_run):
    run_id = done_run[0]["id"]
    js = client.get(f"/rtm/runs/{run_id}/priority-places").json()
    places = js["priority_places"]
    assert places and [p["rank"] for p in places] == list(range(1, len(places) + 1))
    assert all(p["risk_class"] >= 2 and p["recent_offences"] > 0 and p["narrative"] for p in places)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/rtm/runs/{run_id}/priority-places",
                                                      params={"format": "csv"}).text)))
    assert [r["h3"] for r in rows] == [p["h3"] for p in places] and rows[0]["narrative"] == places[0]["narrative"]
    fc = client.get(f"/rtm/runs/{run_id}/priority-places", params={"format": "geojson"}).json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == len(places)
    assert all(_ccw_closed(f["geometry"]["coordinates"][0]) for f in fc["features"])


def test_ogc_collections(client, done_run):
    ids = [c["id"] for c in client.get("/collections").json()["collections"]]
    assert {"rtm-risk", "priority-places", "poi-osm_pubs", "poi-rail_stations"} <= set(ids)
    risk = client.get("/collections/rtm-risk/items", params={"limit": 5}).json()
    assert len(risk["features"]) == 5 and risk["numberMatched"] > 5 and risk["features"][0]["properties"]["narrative"]
    one = risk["features"][0]["id"]
    assert client.get(f"/collections/rtm-risk/items/{one}").json()["properties"]["h3"] == one
    pp = client.get("/collections/priority-places/items", params={"f": "csv"})
    assert pp.status_code == 200 and "narrative" in pp.text.splitlines()[0]
    pubs = client.get("/collections/poi-osm_pubs/items", params={"limit": 3}).json()
    assert pubs["numberMatched"] == 335 and pubs["features"][0]["geometry"]["type"] == "Point"
    assert "OpenStreetMap" in pubs["metadata"]["attribution"]
    doc = client.get("/collections/poi-osm_pubs").json()
    assert "OpenStreetMap" in doc["harmspot:style"]["attribution"]


def test_run_list(client, done_run):
    runs = client.get("/rtm/runs").json()["runs"]
    mine = [r for r in runs if r["id"] == done_run[0]["id"]][0]
    assert mine["status"] == "done" and "result" not in mine and mine["links"]["cells"].endswith("cells.geojson")


# ------------------------------------------------------------------------------------------ failures
def test_bad_requests_are_422_and_create_no_run(client):
    before = len(client.get("/rtm/runs").json()["runs"])
    cases = [
        ({**RUN, "layers": ["no_such_layer"]}, 404, "unknown layer"),  # a name that is not stored, as datasets
        ({**RUN, "area": "districts:Atlantis"}, 404, "unknown area"),
        ({**RUN, "weights": "no-such-table"}, 404, "unknown weights table"),
        ({**RUN, "preset": "nope"}, 422, "unknown preset"),
        ({**RUN, "offences": ["jaywalking"]}, 422, "unknown offence"),
        ({**RUN, "from": "2024-03", "to": "2024-01"}, 422, "not before"),
        ({**RUN, "to": "2024-02", "test_from": "2024-04"}, 422, "day after"),
        ({**RUN, "from": "March"}, 422, "YYYY-MM"),
        ({**RUN, "bootstrapp": 3}, 422, ""),  # a typo is refused, not ignored
        ({**RUN, "distances": [0]}, 422, "greater than or equal to 1"),
        ({**RUN, "layers": ["osm_pubs", "osm_pubs"]}, 422, "each layer once"),
        ({"resolution": 11}, 409, "choose an area"),  # the stored study area is too large at res 11
        ({**RUN, "from": "2030-01"}, 409, "hold no data"),  # training would start after the last record
    ]
    for body, status, words in cases:
        r = client.post("/rtm/runs", json=body)
        assert r.status_code == status, (body, r.text)
        assert words.lower() in r.json()["error"]["message"].lower(), (body, r.json())
    assert client.post("/rtm/runs", json={**RUN, "dataset": "nope"}).status_code == 404
    assert len(client.get("/rtm/runs").json()["runs"]) == before


def test_a_store_without_layers_cannot_answer_a_run(loaded):
    """A valid run on a store with no environmental layers: the stored data cannot answer it (409), not a bad
    request."""
    from app.rtm_jobs import plan_run
    from geodata.harm import load_open_default
    from geodata.store import DataCannotAnswer

    with pytest.raises(DataCannotAnswer, match="no environmental layers"):
        body = RTMRunRequest.model_validate({"dataset": "essex"}).model_dump(by_alias=True)
        plan_run(loaded, load_open_default(), body)


def test_failing_run_reports_failed_cleanly(client):
    r = client.post("/rtm/runs", json={**RUN, "from": "2023-01", "to": "2023-06"})  # no offences in training
    assert r.status_code == 202
    body, _ = wait_for(client, r.json()["id"])
    assert body["status"] == "failed" and body["result"] is None
    assert "no offence in the training period" in body["error"]
    cells = client.get(f"/rtm/runs/{body['id']}/cells.geojson")
    assert cells.status_code == 409 and cells.json()["error"]["code"] == "run_failed"
    store = client.app.state.harmspot.store
    assert store.scalar("SELECT count(*) FROM rtm_cells WHERE run_id = ?", [body["id"]]) == 0  # nothing written
    assert client.get("/rtm/runs/nope").status_code == 404
    assert client.get("/rtm/runs/nope/priority-places").status_code == 404


# ------------------------------------------------------------------------------------------ restarts
def test_runs_persist_across_restart(tmp_path):
    with _client(tmp_path) as c:
        run_id = c.post("/rtm/runs", json={**RUN, "distances": [200, 400], "bootstrap": 0}).json()["id"]
        body, _ = wait_for(c, run_id)
        assert body["status"] == "done", body["error"]
        first = c.get(f"/rtm/runs/{run_id}/cells.geojson", params={"limit": 50}).json()
        long_id = c.post("/rtm/runs", json={**RUN, "bootstrap": 100}).json()["id"]
        while c.get(f"/rtm/runs/{long_id}").json()["status"] == "queued":
            time.sleep(0.05)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 15  # shutdown cancels the running run at its next progress report
    con = duckdb.connect(str(tmp_path / "harmspot.duckdb"))  # as if the service had died mid-run
    con.execute("INSERT INTO rtm_runs (id, status, stage, fraction, error, created_at, started_at, finished_at, "
                "dataset, request, result) VALUES ('stale', 'running', 'screening', 0.3, NULL, now(), now(), NULL, "
                "'essex-sample', '{}', NULL)")
    con.close()
    with _client(tmp_path) as c:
        again = c.get(f"/rtm/runs/{run_id}").json()
        assert again["status"] == "done" and again["result"]["factors"] == body["result"]["factors"]
        assert c.get(f"/rtm/runs/{run_id}/cells.geojson", params={"limit": 50}).json()["features"] == first["features"]
        stale = c.get("/rtm/runs/stale").json()
        assert stale["status"] == "failed" and stale["error"].startswith("interrupted")
        cancelled = c.get(f"/rtm/runs/{long_id}").json()
        assert cancelled["status"] == "failed" and cancelled["error"].startswith("cancelled")
        assert c.app.state.harmspot.store.scalar("SELECT count(*) FROM rtm_cells WHERE run_id = ?", [long_id]) == 0
        assert "rtm-risk" in [x["id"] for x in c.get("/collections").json()["collections"]]


def test_harm_outcome_square_grid_in_block_lengths(client):
    """A harm-weighted (Tweedie) run on a square grid of half-block cells, distances in block lengths."""
    body = {**RUN, "outcome": "harm", "grid": "square", "block_length_m": 160, "distances_blocks": [0.5, 1, 2]}
    r = client.post("/rtm/runs", json=body)
    assert r.status_code == 202, r.text
    run, _ = wait_for(client, r.json()["id"])
    assert run["status"] == "done", run["error"]
    res = run["result"]
    assert res["grid"]["kind"] == "square" and res["grid"]["cell_size_m"] == 80.0
    assert res["config"]["distances"] == [80.0, 160.0, 320.0] and res["config"]["outcome"] == "harm"
    assert res["model"]["family"] == "tweedie" and 1 < res["model"]["dispersion"]["tweedie_power"] < 2
    assert res["outcome"]["kind"] == "harm" and res["outcome"]["training_harm"] > 0
    for f in res["factors"]:
        assert f["spatial_influence_blocks"] == f["spatial_influence_m"] / 160
    assert "harm_weighted" in res["validation"]
    fc = client.get(f"/rtm/runs/{run['id']}/cells.geojson", params={"min_class": 0, "limit": 5}).json()
    feat = fc["features"][0]
    assert feat["id"].startswith("sq80_") and feat["properties"]["h3"] is None
    ring = feat["geometry"]["coordinates"][0]
    assert len(ring) == 5 and _ccw_closed(ring)
    if res["factors"]:
        assert "block" in feat["properties"]["narrative"] or "no selected" in feat["properties"]["narrative"]
        assert "expected harm" in feat["properties"]["narrative"]
    one = client.get(f"/rtm/runs/{run['id']}/cells.geojson", params={"min_class": 0}).json()["numberMatched"]
    assert one == res["grid"]["cells"]
    places = client.get(f"/rtm/runs/{run['id']}/priority-places", params={"format": "geojson"}).json()
    for p in places["features"]:
        assert p["id"].startswith("sq80_") and len(p["geometry"]["coordinates"][0]) == 5


@pytest.mark.parametrize("extra,message", [
    ({"grid": "square"}, "cell_size_m or block_length_m"),
    ({"cell_size_m": 100}, "for grid=square"),
    ({"distances_blocks": [1, 2]}, "needs block_length_m"),
    ({"tweedie_power": 1.5}, "for outcome=harm"),
])
def test_harm_and_block_options_refused_clearly(client, extra, message):
    r = client.post("/rtm/runs", json={**RUN, **extra})
    assert r.status_code == 422 and message in r.text, r.text


def test_run_body_schema_states_the_option_rules(client):
    """The body's schema (allOf of anyOf clauses: OpenAPI 3.0 has no if/then) allows exactly the option
    combinations the planner takes: every combination of grid, cell_size_m, block_length_m and distances_blocks,
    and of outcome and tweedie_power, is valid in the served document if and only if plan_run accepts it (so
    schemathesis generates only bodies the service takes, and a refused one is refused by the document too)."""
    import itertools

    from openapi_schema_validator import OAS30Validator

    from app.rtm_jobs import PlanError, plan_run

    doc = client.get("/openapi.json").json()
    body_ref = doc["paths"]["/rtm/runs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = {**doc["components"]["schemas"][body_ref.rsplit("/", 1)[1]], "components": doc["components"]}
    valid = OAS30Validator(schema).is_valid
    state = client.app.state.harmspot
    absent = object()
    base = {"area": "districts:Chelmsford"}
    groups = [{"grid": [absent, "h3", "square"], "cell_size_m": [absent, None, 100],
               "block_length_m": [absent, None, 200], "distances_blocks": [absent, None, [1, 2]]},
              {"outcome": [absent, "count", "harm"], "tweedie_power": [absent, None, 1.5]},
              {"layers": [absent, None, ["osm_pubs", "rail_stations"], ["osm_pubs", "osm_pubs"]]}]
    checked = 0
    for group in groups:
        for values in itertools.product(*group.values()):
            body = {**base, **{k: v for k, v in zip(group, values) if v is not absent}}
            model = RTMRunRequest.model_validate(body)  # every field's own bounds hold: only the rules differ
            try:
                plan_run(state.store, state.default_weights, model.model_dump(by_alias=True))
                accepted = True
            except PlanError:
                accepted = False
            assert valid(body) == accepted, (body, accepted)
            checked += 1
    assert checked == 81 + 9 + 4


def test_harm_options_validated_by_the_model(client):
    for extra in ({"outcome": "days"}, {"outcome": "harm", "tweedie_power": 2.0}, {"block_length_m": 5},
                  {"block_length_m": 100, "distances_blocks": [0]}):
        assert client.post("/rtm/runs", json={**RUN, **extra}).status_code == 422, extra
