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
