"""Benchmark: the map page's weight and its time to first render with 5,000 hexagons, in headless Chromium.

    .venv/bin/python bench/bench_map.py

Starts the real service (`harmspot serve` subprocess, tests.live.start, fresh store with the bundled sample) on a
free loopback port, measures the bytes the page loads (raw and as gzip would send them), the items request for
5,000 cells, the time from navigation start to the hexagons drawn on the canvas (cold and warm), and how long
zooms and pans take with 5,000 hexagons on the map.  Prints the figures and writes docs/benchmarks-map.md (machine, date).
"""
from __future__ import annotations

import gzip
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from tests import live  # noqa: E402

QUERY = {"preset": "all-crime", "resolution": 11, "top": 5000, "from": "2024-01", "to": "2024-04"}
STATIC = ["/map", "/static/map.js", "/static/map.css", "/static/vendor/leaflet/leaflet.js",
          "/static/vendor/leaflet/leaflet.css"]
RUNS = 5



def fetch(url: str) -> tuple[bytes, float]:
    t = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=120) as r:
        body = r.read()
    return body, time.perf_counter() - t


def chromium_version() -> str:
    import subprocess

    try:
        return subprocess.run([live.CHROMIUM, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except OSError:
        return "unknown"


def driver(cache: bool):
    d = live.chromium(1400, 900, page_load_timeout=None)
    if not cache:
        d.execute_cdp_cmd("Network.enable", {})
        d.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    return d


def first_render(d, url: str, expect: int) -> dict:
    d.get(url)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = d.execute_script("return document.body.dataset.query && !document.body.dataset.loading "
                                "&& performance.getEntriesByName('harmspot-rendered').length > 0")
        if done:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("map did not render")
    cells = int(d.execute_script("return document.body.dataset.cells"))
    assert cells == expect, (cells, expect)
    return d.execute_script("""
        var nav = performance.getEntriesByType('navigation')[0];
        var mark = performance.getEntriesByName('harmspot-rendered')[0];
        var items = performance.getEntriesByType('resource').filter(function (e) {
            return e.name.indexOf('/collections/harm-spots/items') >= 0; });
        var last = items[items.length - 1];
        return {ttfr: mark.startTime, dom: nav.domContentLoadedEventEnd,
                items: last ? last.responseEnd - last.requestStart : null,
                transferred: performance.getEntriesByType('resource').reduce(function (a, e) {
                    return a + (e.transferSize || 0); }, nav.transferSize || 0)};""")


INTERACT = """
var done = arguments[arguments.length - 1], m = window.harmspot.map, times = [];
function frame() { return new Promise(function (r) { requestAnimationFrame(function () { requestAnimationFrame(r); }); }); }
var ops = [function () { m.zoomIn(1, {animate: false}); }, function () { m.zoomOut(1, {animate: false}); },
           function () { m.panBy([300, 150], {animate: false}); }, function () { m.panBy([-300, -150], {animate: false}); }];
var i = 0;
function next() {
  if (i >= 20) { done(times); return; }
  var t = performance.now(); ops[i % ops.length](); i++;
  frame().then(function () { times.push(performance.now() - t); next(); });
}
next();
"""


def main() -> int:
    if not live.have_browser():
        print("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-map-"))
    srv, _ = live.start(tmp / "data", tmp / "server.log", {"HARMSPOT_LOAD_SAMPLE": "true"})
    base = srv.base
    try:
        weights = []
        for path in STATIC:
            body, _ = fetch(base + path)
            weights.append((path, len(body), len(gzip.compress(body, 9))))
        items_url = f"{base}/collections/harm-spots/items?{urlencode({**QUERY, 'limit': 5000, 'f': 'json'})}"
        body, _ = fetch(items_url)  # warm the store
        server = []
        for _ in range(RUNS):
            body, dt = fetch(items_url)
            server.append(dt)
        data_raw, data_gz = len(body), len(gzip.compress(body, 6))
        _, geojson_t = fetch(f"{base}/hotspots.geojson?{urlencode(QUERY)}")

        page = f"{base}/map?{urlencode(QUERY)}"
        cold_driver = driver(cache=False)
        try:
            cold = [first_render(cold_driver, page, 5000) for _ in range(RUNS)]
        finally:
            cold_driver.quit()
        warm_driver = driver(cache=True)
        try:
            first_render(warm_driver, page, 5000)
            warm = [first_render(warm_driver, page, 5000) for _ in range(RUNS)]
            interact = warm_driver.execute_async_script(INTERACT)
            default = [first_render(warm_driver, f"{base}/map", 200) for _ in range(RUNS)]
        finally:
            warm_driver.quit()
    finally:
        live.stop(srv.proc)

    med = statistics.median
    static_raw = sum(w[1] for w in weights)
    static_gz = sum(w[2] for w in weights)
    lines = [
        "# Map benchmark: page weight and time to first render",
        "",
        f"- run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, `bench/bench_map.py`",
        f"- machine: {machine()}",
        f"- browser: {chromium_version()} headless (--disable-gpu: software canvas), window 1400x900",
        f"- data: bundled Essex sample; query `{urlencode(QUERY)}` = 5,000 H3 res-11 hexagons",
        "- the service sends no compression (no GZip middleware): raw bytes are what goes over the wire today; "
        "gzip figures show what a reverse proxy with compression would send",
        "",
        "## Page weight",
        "",
        "| resource | bytes | gzip |",
        "|---|---:|---:|",
        *[f"| `{p}` | {r:,} | {g:,} |" for p, r, g in weights],
        f"| **page (code)** | **{static_raw:,}** | **{static_gz:,}** |",
        f"| data: 5,000 hexagons (`/collections/harm-spots/items`, GeoJSON) | {data_raw:,} | {data_gz:,} |",
        f"| **total for 5,000 hexagons** | **{static_raw + data_raw:,}** | **{static_gz + data_gz:,}** |",
        "",
        f"Bytes per hexagon (GeoJSON with properties and top offences): {data_raw / 5000:,.0f} raw, "
        f"{data_gz / 5000:,.0f} gzip.",
        "",
        f"## Time (median of {RUNS}; min-max)",
        "",
        "| measure | median ms | range ms |",
        "|---|---:|---:|",
    ]

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {med(values):,.0f} | {min(values):,.0f}-{max(values):,.0f} |"

    lines += [
        row("server: items request, 5,000 cells (urllib, warm store)", [s * 1000 for s in server]),
        row("server: `/hotspots.geojson` same query (one run)", [geojson_t * 1000]),
        row("**time to first render, 5,000 hexagons, cold cache** (navigation start -> drawn)", [c["ttfr"] for c in cold]),
        row("of which: items request in the browser (cold runs)", [c["items"] for c in cold if c["items"]]),
        row("time to first render, 5,000 hexagons, warm cache", [w["ttfr"] for w in warm]),
        row("time to first render, default view (200 hexagons), warm cache", [d["ttfr"] for d in default]),
        row("zoom or pan with 5,000 hexagons (20 operations, to the 2nd frame)", interact),
        "",
        "Time to first render runs from the navigation start to the `harmspot-rendered` performance mark, set in the",
        "animation frame after the hexagons are added to the canvas layer (map.js); it includes loading the page,",
        "`/map/config`, `/datasets`, `/presets`, `/collections`, the district boundaries and the 5,000-cell items",
        "request. Most of it is the server computing the query; the browser side (parse, add 5,000 polygons to the",
        "canvas, draw) is the remainder.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (ROOT / "docs" / "benchmarks-map.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
