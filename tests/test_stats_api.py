"""The statistics doors end to end on the bundled sample: /hotspots?stats=gistar, /hotspots/emerging, /spikes,
/evaluation, the OGC gistar collection and `harmspot backtest`."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from tests.test_cli import run


@pytest.fixture(scope="module")
def gi_body(api):
    r = api.get("/hotspots", params={"dataset": "essex-sample", "stats": "gistar", "top": 20, "resolution": 9})
    assert r.status_code == 200, r.text
    return r.json()


def test_hotspots_gistar_columns_and_meta(gi_body):
    cells = gi_body["cells"]
    assert len(cells) == 20
    for c in cells:
        assert {"gi_z", "gi_p", "gi_q", "gi_class"} <= set(c)
        assert c["gi_class"] in {"hot_99", "hot_95", "hot_90", "not_significant", "outside_domain"}
    assert cells[0]["gi_class"].startswith("hot_") and cells[0]["gi_q"] <= 0.05
    g = gi_body["gistar"]
    assert g["value"] == "harm" and g["inference"] == "analytic" and g["tail"] == "hot" and g["k"] == 1
    assert g["domain"]["source"] == "polygon" and g["domain"]["resolution"] == 9
    assert g["domain"]["cells"] > 10 * gi_body["cells_with_offences"]  # zero cells of the study area included
    assert g["assumptions"] and g["caveats"] and g["classes"]["hot_99"] >= 1


def test_hotspots_gistar_z_equals_the_engine(api, gi_body):
    """The top cell's z is exactly what gistar() gives on the same offences and study-area domain."""
    from geodata.cells import from_hex, parents
    from geodata.store import DATASET_LAYER
    from hotspots.stats.gistar import Domain, gistar
    from hotspots.ranking.harmspots import offence_rows
    from hotspots.ranking.query import HotspotQuery

    state = api.app.state.harmspot
    q = HotspotQuery.model_validate({"dataset": gi_body["dataset"], "resolution": 9})
    rows, _ = offence_rows(state.store, q, state.default_weights)
    area = state.store.query_df("SELECT h3_10 FROM area_cells WHERE layer = ? AND feature_id = ?",
                                [DATASET_LAYER, q.dataset])["h3_10"].to_numpy(np.uint64)
    res = gistar(rows["cell"].to_numpy(np.uint64), rows["harm"].to_numpy(float), Domain(parents(area, 9), 9, "polygon"))
    top = gi_body["cells"][0]
    z = res.cells.set_index("cell").loc[int(from_hex([top["h3"]])[0]), "z"]
    assert math.isclose(top["gi_z"], round(float(z), 6), abs_tol=1e-6)


def test_hotspots_gistar_csv_count_and_errors(api):
    r = api.get("/hotspots", params={"dataset": "essex-sample", "stats": "gistar", "gi_value": "count", "transform": "log", "top": 5,
                                     "resolution": 9, "format": "csv"})
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 5 and rows[0]["gi_class"]
    assert "gi_z" not in api.get("/hotspots", params={"dataset": "essex-sample", "top": 1}).json()["cells"][0]  # off by default
    assert api.get("/hotspots", params={"dataset": "essex-sample", "stats": "gistar", "mode": "public"}).status_code == 403
    assert api.get("/hotspots", params={"dataset": "essex-sample", "stats": "nope"}).status_code == 422


def test_emerging(api):
    r = api.get("/hotspots/emerging", params={"dataset": "essex-sample", "resolution": 9, "top": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    s = body["summary"]
    assert s["slices"]["unit"] == "month" and s["slices"]["slices"] == 4
    assert sum(s["patterns"].values()) == s["domain"]["cells"]
    assert any("slices" in c for c in s["caveats"])  # fewer than 10 slices: indicative only
    assert 0 < len(body["cells"]) <= 10 and all(c["pattern"] != "no_pattern" for c in body["cells"])
    gj = api.get("/hotspots/emerging", params={"dataset": "essex-sample", "resolution": 9, "top": 3, "format": "geojson"}).json()
    assert gj["type"] == "FeatureCollection" and gj["features"][0]["properties"]["pattern"]
    bad = api.get("/hotspots/emerging", params={"dataset": "essex-sample", "slice": "14D"})
    assert bad.status_code == 409 and "month-only" in bad.json()["error"]["message"]  # the data cannot answer it


def test_spikes_cells_and_areas(api):
    body = api.get("/spikes", params={"dataset": "essex-sample", "all": "true", "top": 5}).json()
    s = body["summary"]
    assert s["recent"] == {"start": "2024-04-01", "end": "2024-05-01", "length": 1, "unit": "month"}
    assert s["baseline"]["length"] == 3 and any("baseline shortened" in c for c in s["caveats"])
    c = body["cells"][0]
    assert {"h3", "observed", "expected", "ratio", "p", "q", "spike", "harm_observed"} <= set(c)
    wards = api.get("/spikes", params={"dataset": "essex-sample", "unit": "wards", "all": "true", "top": 3}).json()
    assert len(wards["units"]) == 3 and wards["units"][0]["name"] and wards["summary"]["n_tested"] > 100
    gj = api.get("/spikes", params={"dataset": "essex-sample", "unit": "districts", "all": "true", "format": "geojson"}).json()
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 14
    assert gj["features"][0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert api.get("/spikes", params={"dataset": "essex-sample", "unit": "nope"}).status_code == 404


def test_evaluation(api):
    params = {"resolution": 9, "train_slices": 2, "bootstrap": 200, "methods": "harm_spots,prior_counts,kde"}
    r = api.get("/evaluation", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["origins"] == 2 and body["slices"]["unit"] == "month"
    assert len(body["summary"]) == 3 * 3  # methods x coverages
    row = body["summary"][0]
    assert {"method", "coverage", "hit_rate", "pai", "harm_pai", "pei", "pai_lo", "pai_hi"} <= set(row)
    assert 0 < row["hit_rate"] <= 1 and row["pai"] > 1
    assert len(body["per_origin"]) == 2 * 9 and "| method |" in body["table_markdown"]
    png = api.get("/evaluation", params={**params, "format": "png"})
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert body["intervals_reliable"] is False and all(r["interval_reliable"] is False for r in body["summary"])
    assert any("unreliable" in c for c in body["caveats"])
    # 4 months of data: explicit 12 training months cannot run; the default takes the longest window they allow
    too_long = api.get("/evaluation", params={"dataset": "essex-sample", "resolution": 9, "train_slices": 12})
    assert too_long.status_code == 409 and "need at least 13" in too_long.json()["error"]["message"]
    default = api.get("/evaluation", params={"dataset": "essex-sample", "resolution": 9, "bootstrap": 100})
    assert default.status_code == 200, default.text
    d = default.json()
    assert d["config"]["train_slices"] == 3 and d["origins"] == 1 and d["intervals_reliable"] is False
    assert any("training window shortened to 3" in c and "longest window the data allow" in c for c in d["caveats"])
    assert {r["method"] for r in d["summary"]} >= {"forecast", "prior_counts", "harm_spots", "kde", "prospective"}
    assert {r["coverage"] for r in d["forecast_vs_best_baseline"]} == {0.01, 0.02, 0.05}
    assert api.get("/evaluation", params={"dataset": "essex-sample", "methods": "magic", "train_slices": 2}).status_code == 422


def test_evaluation_formats_share_one_backtest(api, monkeypatch):
    """json, csv, png and per_origin=false of one query and config are one backtest per store state."""
    import app.routes.stats as routes

    calls = []
    real = routes.backtest_for_query
    monkeypatch.setattr(routes, "backtest_for_query", lambda *a, **k: calls.append(1) or real(*a, **k))
    params = {"resolution": 9, "train_slices": 2, "bootstrap": 77, "methods": "harm_spots,gistar"}
    bodies = [api.get("/evaluation", params={**params, **extra}) for extra in
              ({}, {"format": "csv"}, {"format": "png"}, {"per_origin": "false"})]
    assert [b.status_code for b in bodies] == [200] * 4
    assert len(calls) == 1
    assert bodies[0].json()["summary"] == bodies[3].json()["summary"] and "per_origin" not in bodies[3].json()


def test_ogc_gistar_collection(api):
    ids = [c["id"] for c in api.get("/collections").json()["collections"]]
    assert "gistar" in ids
    fc = api.get("/collections/gistar/items", params={"dataset": "essex-sample", "resolution": 9, "limit": 5}).json()
    assert fc["numberMatched"] >= len(fc["features"]) > 0
    assert fc["features"][0]["properties"]["gi_class"].startswith("hot_")


def test_openapi_documents_the_doors(api):
    paths = api.get("/openapi.json").json()["paths"]
    for p in ("/hotspots/emerging", "/spikes", "/evaluation"):
        op = paths[p]["get"]
        assert op["summary"] and op["description"]
        assert all(par.get("description") for par in op["parameters"]), p
    assert any(par["name"] == "stats" for par in paths["/hotspots"]["get"]["parameters"])


def test_cli_backtest(tmp_path):
    from tests.conftest import SAMPLE

    assert run(["ingest", str(SAMPLE), "--dataset", "essex"], tmp_path).returncode == 0
    png = tmp_path / "capture.png"
    r = run(["backtest", "--dataset", "essex", "--resolution", "9", "--train-slices", "2", "--bootstrap", "100",
             "--methods", "harm_spots,prior_counts", "--png", str(png)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "| harm_spots | 1% |" in r.stdout and png.read_bytes()[:4] == b"\x89PNG"
    r = run(["backtest", "--dataset", "essex", "--resolution", "9", "--train-slices", "2", "--bootstrap", "100",
             "--methods", "harm_spots", "--format", "json", "--quiet"], tmp_path)
    assert r.returncode == 0 and '"summary"' in r.stdout
    r = run(["backtest", "--dataset", "essex", "--train-slices", "12"], tmp_path)
    assert r.returncode == 2 and "need at least" in r.stderr


def test_emerging_lists_only_cells_with_offences_of_their_own(api):
    r = api.get("/hotspots/emerging", params={"top": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cells"] and all(c["offences"] > 0 for c in body["cells"])
    assert {"offences", "harm", "pattern", "total"} <= set(body["cells"][0])
    assert body["value"] == "count" and "the default" in body["value_note"]
    assert body["cells_with_a_pattern_but_no_offences"] >= 0 and "own" in body["listing_rule"]
    harm = api.get("/hotspots/emerging", params={"top": 5, "value": "harm"}).json()
    assert harm["value"] == "harm" and "value=count is the default" in harm["value_note"]


def test_gistar_collection_never_ranks_a_cell_without_harm(api):
    coll = api.get("/collections/gistar").json()
    assert "q <= 0.10" in coll["description"] and "neighbourhood_hot" in coll["description"]
    doc = api.get("/collections/gistar/items", params={"limit": 10000}).json()
    props = [f["properties"] for f in doc["features"]]
    ranked = [p for p in props if p["patrol_rank"] is not None]
    nb = [p for p in props if p["gi_class"] == "neighbourhood_hot"]
    assert ranked and all(p["raw"] > 0 and p["gi_class"].startswith("hot_") for p in ranked)
    assert [p["patrol_rank"] for p in ranked] == list(range(1, len(ranked) + 1))
    assert all(p["patrol_rank"] is None and p["raw"] == 0 for p in nb)
    assert props[:len(ranked)] == ranked  # candidates first, then the neighbourhood-only cells
    g = doc["metadata"]["gistar"]
    assert g["class_q_levels"]["hot_90"] == 0.10 and max(p["gi_q"] for p in props) <= 0.10
    assert g["n_patrol_candidates"] == len(ranked) or len(props) == 10000
    assert "no harm in the cell" in g["class_labels"]["neighbourhood_hot"]
