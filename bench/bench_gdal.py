"""GIS clients on the OGC door: `ogr2ogr` of every collection to a GeoPackage, bundled sample, real service.

`python -m bench.bench_gdal` writes docs/benchmarks-gdal.md. Two clients, each against a fresh service (cold
result cache, as a GIS user meets it after a restart or a new upload):

* Debian 12's GDAL 3.6 (`/usr/bin/ogr2ogr`, gdal-bin), with its defaults (it opens a layer with `limit=10` and
  follows the `next` links) - the issue 14 target is each collection <= 3 s cold (it was 141 s for gistar). The
  baseline in the same run is the same export with `-oo PAGE_SIZE=1000` (what a client that knew the page size
  would ask), warm like the second defaults export, so the ratio shows what the default paging costs over an
  ideal one with the result cache out of the picture.
* the newest GDAL available here, the one inside the pyogrio wheel (3.12): `pyogrio.read_dataframe` of the
  OAPIF layer then `write_dataframe` to GPKG (pyogrio ships no ogr2ogr binary), in a subprocess.

Every figure is wall clock on a machine that may be shared (load average reported); the lead re-runs it in a
quiet window.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks-gdal.md"
OGR2OGR = "/usr/bin/ogr2ogr"
TARGET_S = 3.0
NEWEST = """
import sys, time, pyogrio
url, layer, out = sys.argv[1:4]
t = time.perf_counter()
df = pyogrio.read_dataframe(f"OAPIF:{url}/", layer=layer)
pyogrio.write_dataframe(df, out, driver="GPKG", layer=layer)
print(time.perf_counter() - t, len(df), pyogrio.__gdal_version_string__)
"""


class Service:
    def __init__(self, tmp: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HARMSPOT_DATA_DIR": str(tmp), "PYTHONPATH": str(ROOT)}
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = tmp / "server.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host",
                                      "127.0.0.1", "--port", str(self.port), "--log-level", "warning"], cwd=ROOT,
                                     env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        deadline = time.time() + 180
        while time.time() < deadline and self.proc.poll() is None:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"service did not start: {self.log.read_text(errors='replace')[-1500:]}")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=300) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _ogr2ogr(url: str, layer: str, out: Path, *extra: str) -> tuple[float, int]:
    out.unlink(missing_ok=True)
    t = time.perf_counter()
    run = subprocess.run([OGR2OGR, "-f", "GPKG", str(out), f"OAPIF:{url}/", layer, *extra], capture_output=True,
                         text=True, env={**os.environ, "CPL_DEBUG": "ON"}, timeout=1800)
    seconds = time.perf_counter() - t
    if run.returncode:
        raise RuntimeError(f"ogr2ogr {layer}: {run.stderr[-500:]}")
    return seconds, len([u for u in re.findall(r"Fetch\(([^)]*)\)", run.stderr) if "/items" in u])


def debian_gdal(tmp: Path) -> dict:
    if not Path(OGR2OGR).exists():
        return {"skipped": "Debian gdal-bin not installed (scripts/install-gis.sh)"}
    version = subprocess.run([OGR2OGR, "--version"], capture_output=True, text=True).stdout.strip()
    svc = Service(tmp / "debian")
    rows = []
    try:
        for c in svc.get("/collections")["collections"]:
            n = svc.get(f"/collections/{c['id']}/items?limit=1")["numberMatched"]
            # the listing above computed nothing for items; the first export meets a cold result cache for them
            cold, requests = _ogr2ogr(svc.url, c["id"], tmp / f"{c['id']}.gpkg")
            warm, _ = _ogr2ogr(svc.url, c["id"], tmp / f"{c['id']}.gpkg")
            # PAGE_SIZE=1000 asks for other pages (limit=1000 from offset 0): once to fill the cache, then timed,
            # so the ratio compares two warm exports
            _ogr2ogr(svc.url, c["id"], tmp / f"{c['id']}.gpkg", "-oo", "PAGE_SIZE=1000")
            ideal, ideal_requests = _ogr2ogr(svc.url, c["id"], tmp / f"{c['id']}.gpkg", "-oo", "PAGE_SIZE=1000")
            rows.append({"id": c["id"], "features": n, "cold_s": cold, "requests": requests, "warm_s": warm,
                         "page1000_s": ideal, "page1000_requests": ideal_requests})
    finally:
        svc.stop()
    return {"version": version, "rows": rows}


def newest_gdal(tmp: Path) -> dict:
    svc = Service(tmp / "newest")
    rows, version = [], None
    try:
        for c in svc.get("/collections")["collections"]:
            out = tmp / f"{c['id']}-newest.gpkg"
            t = time.perf_counter()
            run = subprocess.run([sys.executable, "-c", NEWEST, svc.url, c["id"], str(out)], capture_output=True,
                                 text=True, timeout=1800)
            if run.returncode:
                raise RuntimeError(f"pyogrio {c['id']}: {run.stderr[-500:]}")
            inner, n, version = run.stdout.split()
            rows.append({"id": c["id"], "features": int(n), "cold_s": float(inner),
                         "process_s": time.perf_counter() - t})
    finally:
        svc.stop()
    return {"version": f"GDAL {version} (pyogrio wheel)", "rows": rows}


def markdown(debian: dict, newest: dict) -> str:
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()
    lines = ["## GIS clients: `ogr2ogr` of every OGC collection (bundled sample)", "",
             f"Machine: {machine()}. Date: {now}. Load average at the end: {load[0]:.1f} / {load[1]:.1f} / "
             f"{load[2]:.1f} (the machine is shared; figures are wall clock). Written by `python -m bench.bench_gdal`.",
             ""]
    if "skipped" in debian:
        lines += [f"Debian GDAL: skipped ({debian['skipped']}).", ""]
    else:
        met = all(r["cold_s"] <= TARGET_S for r in debian["rows"])
        lines += [f"**{debian['version']}** (Debian 12 `gdal-bin`), defaults: target each <= {TARGET_S:.0f} s "
                  f"(cold: the first export after the service started) - {'met' if met else 'NOT met'} in this run. Baseline: "
                  f"`-oo PAGE_SIZE=1000`, same run, both warm (results cached).", "",
                  "| collection | features | cold, defaults (s) | requests | warm, defaults (s) | warm, PAGE_SIZE=1000 (s) "
                  "| defaults / PAGE_SIZE=1000 |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in debian["rows"]:
            lines.append(f"| {r['id']} | {r['features']:,} | {r['cold_s']:.2f} | {r['requests']} | {r['warm_s']:.2f} | "
                         f"{r['page1000_s']:.2f} | {r['warm_s'] / max(r['page1000_s'], 1e-9):.2f}x |")
        lines.append("")
    lines += [f"**{newest['version']}**: `read_dataframe` + `write_dataframe` (GPKG), cold, in a subprocess.", "",
              "| collection | features | read + write (s) | with process start (s) |", "|---|---:|---:|---:|"]
    for r in newest["rows"]:
        lines.append(f"| {r['id']} | {r['features']:,} | {r['cold_s']:.2f} | {r['process_s']:.2f} |")
    lines += ["", "Before issue 14 (same sample, independent run): GDAL 3.6 defaults took 141 s for gistar (449 "
              "requests of 10 features, each recomputing Gi*) and 20.6 s for harm-spots.", ""]
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-gdal-") as tmp:
        debian = debian_gdal(Path(tmp))
        newest = newest_gdal(Path(tmp))
    text = markdown(debian, newest)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
