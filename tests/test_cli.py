"""The harmspot command: ingest prints the report as JSON; hotspots writes CSV/JSON/GeoJSON to stdout."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

from tests.conftest import SAMPLE


def run(args, data_dir):
    env = {**os.environ, "HARMSPOT_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_ingest_then_hotspots(tmp_path):
    r = run(["ingest", str(SAMPLE), "--dataset", "essex"], tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["read"] == 52_837 and rep["stored"] + rep["rejected"] + rep["duplicates"] == rep["read"]
    assert "missing coordinates" in rep["rejects_by_reason"]

    r = run(["hotspots", "--dataset", "essex", "--from", "2024-04", "--to", "2024-04", "--preset", "op-ark",
             "--resolution", "10", "--top", "7", "--format", "csv"], tmp_path)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 7 and rows[0]["rank"] == "1"

    r = run(["hotspots", "--dataset", "essex", "--top", "3", "--format", "geojson"], tmp_path)
    assert json.loads(r.stdout)["type"] == "FeatureCollection"

    r = run(["hotspots", "--dataset", "nope"], tmp_path)
    assert r.returncode == 2 and "unknown dataset" in r.stderr


def test_layer_add_and_rtm_run(tmp_path):
    """`harmspot layer add` stores a layer with its rejects; `harmspot rtm` runs the API's planner and executor in
    the foreground, stores the run and prints the factor table, validation and narratives."""
    assert run(["ingest", str(SAMPLE), "--dataset", "essex"], tmp_path).returncode == 0
    poi = SAMPLE.parent / "poi"
    r = run(["layer", "add", str(poi / "essex_osm_pubs.csv"), "--name", "pubs", "--type", "pub",
             "--dataset", "essex", "--licence", "ODbL 1.0"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["features"] > 100
    r = run(["layer", "add", str(poi / "essex_railway_stations.csv"), "--name", "stations",
             "--type", "railway station", "--dataset", "essex"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert run(["layer", "add", str(poi / "essex_osm_pubs.csv"), "--name", "pubs", "--type", "pub"],
               tmp_path).returncode == 2  # exists: --replace needed
    r = run(["layer", "add", str(poi / "essex_osm_pubs.csv"), "--name", "bad name", "--type", "pub"], tmp_path)
    assert r.returncode == 2 and "letters, digits" in r.stderr  # the API's name rule, from the same add_layer
    r = run(["rtm", "--dataset", "essex", "--resolution", "8", "--outcome", "harm", "--block-length", "150",
             "--test-months", "1", "--bootstrap", "0", "--quiet", "--format", "json"], tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["model"]["family"] == "tweedie" and res["config"]["block_length_m"] == 150.0
    assert res["grid"]["resolution"] == 8 and res["query"]["layers"] == ["pubs", "stations"]
    r = run(["rtm", "--dataset", "essex", "--resolution", "8", "--test-months", "1", "--bootstrap", "0",
             "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "factor | operationalisation" in r.stdout and "validation (test period)" in r.stdout
    r = run(["rtm", "--dataset", "essex", "--grid", "square"], tmp_path)
    assert r.returncode == 2 and "cell_size_m or block_length_m" in r.stderr
    r = run(["rtm", "--dataset", "essex", "--outcome", "days"], tmp_path)
    assert r.returncode == 2
