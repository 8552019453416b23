"""The GIS door as GIS clients use it: Debian 12's GDAL 3.6 (`ogr2ogr`, defaults) and QGIS 3.22 (its own OAPIF
provider, python3-qgis, offscreen) against the real service in a subprocess (bundled sample, loopback).

GDAL 3.6 opens every layer with `limit=10` and never reads the OpenAPI document; it follows the `next` links as
given, so the service's JSON next link asks for its own page size (1,000): a layer is exported in a handful of
requests. QGIS 3.22 shows a nested JSON value as NULL and cannot write it to a GeoPackage, so nested values
are plain text; boundaries are MultiPolygon throughout (one geometry type per layer, a valid GeoPackage).
Skipped, with the reason, when Debian's `ogr2ogr` or `python3-qgis` are not installed
(scripts/install-gis.sh, run by `make test`, installs them when root). Timings: bench/bench_gdal.py.
"""
from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests import live as live_process

ROOT = Path(__file__).resolve().parent.parent
OGR2OGR = "/usr/bin/ogr2ogr"
SYSTEM_PYTHON = "/usr/bin/python3"


def _get(url: str) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=120) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gis")
    server, _ = live_process.start(tmp / "data", tmp / "server.log")
    yield server.base, tmp
    live_process.stop(server.proc)


def _gdal_version() -> str | None:
    if not Path(OGR2OGR).exists():
        return None
    out = subprocess.run([OGR2OGR, "--version"], capture_output=True, text=True).stdout
    return out.split(",")[0].replace("GDAL ", "").strip() or None


def test_gdal_36_exports_every_collection_with_its_defaults(live):
    version = _gdal_version()
    if version is None:
        pytest.skip("Debian's ogr2ogr (gdal-bin) is not installed (scripts/install-gis.sh)")
    url, tmp = live
    collections = _get(f"{url}/collections")["collections"]
    assert len(collections) >= 8
    for c in collections:
        matched = _get(f"{url}/collections/{c['id']}/items?limit=1")["numberMatched"]
        out = tmp / f"{c['id']}.gpkg"
        run = subprocess.run([OGR2OGR, "-f", "GPKG", str(out), f"OAPIF:{url}/", c["id"]], capture_output=True,
                             text=True, timeout=600, env={**os.environ, "CPL_DEBUG": "ON"})
        assert run.returncode == 0, run.stderr[-2000:]
        pages = [u for u in re.findall(r"Fetch\(([^)]*)\)", run.stderr) if "/items" in u]
        # GDAL 3.6: limit=10 for the schema, limit=10 for the first page, then pages of 1,000 from the next links
        assert len(pages) <= 2 + math.ceil(max(matched - 10, 0) / 1000), (c["id"], pages)
        con = sqlite3.connect(out)
        try:
            table, description = con.execute("SELECT table_name, description FROM gpkg_contents").fetchone()
            geom_types = {r[0] for r in con.execute("SELECT geometry_type_name FROM gpkg_geometry_columns")}
            columns = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
            rows = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            assert rows == matched, (c["id"], rows, matched)
            assert len(geom_types) == 1 and geom_types <= {"POLYGON", "MULTIPOLYGON", "POINT"}, (c["id"], geom_types)
            if c["id"] in ("districts", "wards"):
                assert geom_types == {"MULTIPOLYGON"}
            if c["harmspot:kind"] == "cells" and c["id"] in ("harm-spots", "gistar"):
                # the ranking's period, preset and weights: in the layer description and on every feature
                assert "op-ark" in description and "2024-04-01 to 2024-04-30" in description, description
                assert "harmspot-open-2026" in description
                assert {"period", "preset", "weights_table"} <= set(columns)
                assert con.execute(f'SELECT DISTINCT period, preset, weights_table FROM "{table}"').fetchall() == [
                    ("2024-04-01/2024-04-30", "op-ark", "harmspot-open-2026")]
            if c["id"] == "harm-spots":
                nulls = con.execute(f'SELECT count(*) FROM "{table}" WHERE top_offences IS NULL').fetchone()[0]
                assert nulls == 0
                first = con.execute(f'SELECT top_offences FROM "{table}" ORDER BY rank LIMIT 1').fetchone()[0]
                assert re.match(r"^[A-Z][^;]+ \(\d+\)", first), first
        finally:
            con.close()


def _null_counts(url: str, collection: str, matched: int) -> dict[str, int]:
    """Per property, how many of the collection's features the service sends with a null value."""
    counts: dict[str, int] = {}
    for offset in range(0, max(matched, 1), 10000):
        page = _get(f"{url}/collections/{collection}/items?limit=10000&offset={offset}")
        for ft in page["features"]:
            for k, v in ft["properties"].items():
                counts[k] = counts.get(k, 0) + (v is None)
    return counts


def _qgis_available() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return "no /usr/bin/python3"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, text=True)
    return None if probe.returncode == 0 else "Debian's python3-qgis (QGIS 3.22) is not installed (scripts/install-gis.sh)"


def test_qgis_322_loads_every_collection_and_exports_harm_spots(live):
    why = _qgis_available()
    if why:
        pytest.skip(why)
    url, tmp = live
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp)})
    run = subprocess.run([SYSTEM_PYTHON, str(ROOT / "tests" / "qgis_probe.py"), f"{url}/", str(tmp)],
                         capture_output=True, text=True, timeout=900, env=env)
    assert run.stdout.strip(), run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in report, report["error"]
    assert report["qgis"].startswith("3.")
    collections = _get(f"{url}/collections")["collections"]
    assert set(report["layers"]) == {c["id"] for c in collections}
    for c in collections:
        layer = report["layers"][c["id"]]
        assert layer["valid"], c["id"]
        matched = _get(f"{url}/collections/{c['id']}/items?limit=1")["numberMatched"]
        assert layer["features"] == matched, (c["id"], layer["features"], matched)
        assert len(layer["geometry_types"]) == 1, (c["id"], layer["geometry_types"])
        # a NULL in QGIS only where the service itself sends null (gistar's patrol_rank for cells hot only through
        # their neighbours), never from a nested value QGIS 3.22 cannot read
        api_nulls = _null_counts(url, c["id"], matched)
        nulls = {k: n for k, n in layer["null_counts"].items() if n}
        assert nulls == {k: n for k, n in api_nulls.items() if n and k in layer["null_counts"]}, (c["id"], nulls)
    spots = report["layers"]["harm-spots"]
    assert spots["field_types"]["top_offences"].lower().startswith("str")
    assert re.match(r"^[A-Z][^;]+ \(\d+\)", spots["sample"]["top_offences"])
    assert "op-ark" in spots["abstract"] and "2024-04-01 to 2024-04-30" in spots["abstract"]
    assert spots["sample"]["period"] == "2024-04-01/2024-04-30"
    assert report["export"]["code"] == 0 and report["export"]["valid"], report["export"]
    assert report["export"]["features"] == spots["features"]
    for name in ("districts", "wards"):
        assert report["layers"][name]["geometry_types"] == ["MultiPolygon"]


def test_landing_and_collections_answer_head(live):
    url, _ = live
    for path in ("/", "/collections", "/collections/harm-spots", "/collections/harm-spots/items?limit=5",
                 "/collections/harm-spots/queryables", "/conformance"):
        req = urllib.request.Request(url + path, method="HEAD", headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200 and r.read() == b"", path
            assert r.headers["Content-Type"].startswith(("application/", "text/")), path
