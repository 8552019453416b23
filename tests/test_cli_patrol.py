"""The patrol-planning commands: `harmspot patrols gps|compliance` (and, below, report and map export) on a
store made like `make serve` makes it (the bundled Essex sample and its districts)."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import date

import pandas as pd
import pytest

from tests import gps_tracks as gt


def run(args, data_dir):
    env = {**os.environ, "HARMSPOT_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    """A store with the sample and one saved pack (plan 2024-04-01, 14 days, one spot per district)."""
    from app.state import load_sample
    from geodata.harm import load_open_default
    from geodata.store import Store
    from hotspots.patrol import tasking
    from hotspots.ranking.query import HotspotQuery

    d = tmp_path_factory.mktemp("cli-patrol")
    store = Store(d / "harmspot.duckdb")
    try:
        weights = load_open_default()
        store.save_weights(weights)
        load_sample(store)
        q = HotspotQuery.model_validate({"dataset": "essex-sample", "from": "2024-03", "to": "2024-03"})
        pack = tasking.build_pack(store, q, weights, tasking.TaskingParams(spots_per_area=1,
                                                                           plan_from=date(2024, 4, 1)))
        tasking.save_pack(store, pack)
        first = pack.spots.iloc[0]
    finally:
        store.close()
    return d, first


def test_patrols_gps_then_compliance(sample_dir, tmp_path):
    d, first = sample_dir
    pings = tmp_path / "pings.csv"
    pings.write_text(gt.parked_track(first["lon"], first["lat"], 17, pd.Timestamp("2024-04-09 19:00"), "Van 3"))
    r = run(["patrols", "gps", str(pings), "--dry-run"], d)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["visits_found"] == 1 and json.loads(r.stdout)["stored"] == 0
    r = run(["patrols", "gps", str(pings), "--min-minutes", "15"], d)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["stored"] == 1 and out["visits"][0]["spot_id"] == first["spot_id"]
    r = run(["patrols", "compliance", "--by", "team"], d)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert r.returncode == 0 and rows[0]["team"] == "Van 3" and rows[0]["week"] == "2024-04-08"
    assert rows[0]["dosed_visits"] == "1" and rows[0]["gps_visits"] == "1"
    png = tmp_path / "c.png"
    r = run(["patrols", "compliance", "--format", "png", "--out", str(png)], d)
    assert r.returncode == 0 and png.read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    r = run(["patrols", "gps", str(bad)], d)
    assert r.returncode == 2 and "lacks" in r.stderr


def test_report_command(sample_dir, tmp_path):
    d, _ = sample_dir
    r = run(["report", "--dataset", "essex-sample", "--by", "month", "--preset", "op-ark"], d)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {row["period"] for row in rows} == {"2024-01", "2024-02", "2024-03", "2024-04"}
    page = tmp_path / "r.html"
    assert run(["report", "--dataset", "essex-sample", "--format", "html", "--out", str(page)], d).returncode == 0
    assert "Harm trend" in page.read_text()
    r = run(["report", "--dataset", "essex-sample", "--area-layer", "parishes"], d)
    assert r.returncode == 2 and "no area layer" in r.stderr


def test_map_export_command(sample_dir, tmp_path):
    """`harmspot map export`: one offline HTML map of a period (the sample's districts outlined); errors exit 2."""
    d, _ = sample_dir
    out = tmp_path / "pack.html"
    r = run(["map", "export", "--dataset", "essex-sample", "--from", "2024-03", "--to", "2024-03", "--top", "25",
             "--out", str(out)], d)
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert page.count('"popup": "') == 25 and "2024-03-01 to 2024-03-31" in page
    assert page.count('class="hs-marking') == 2 and "hs-district" in page and "<script src=" not in page
    r = run(["map", "export", "--dataset", "essex-sample", "--keydate", "nope/2024-01-01", "--out", str(out)], d)
    assert r.returncode == 2 and "unknown key-date set" in r.stderr
