"""Benchmark: the map page's weight and its time to first render with 5,000 hexagons, in headless Chromium.

    .venv/bin/python bench/bench_map.py                                   # writes docs/benchmarks-map.md
    .venv/bin/python bench/bench_map.py --cells 500 --runs 2 --out /tmp/map.md   # a quick check

Starts the real service (`harmspot serve` subprocess, tests.live.start, fresh store with the bundled sample) on a
free loopback port and measures:

* the bytes the page loads: raw, as the service sends them to a client that accepts gzip (its Content-Encoding,
  ETag and Cache-Control as answered), and gzipped here for comparison;
* the items request for 5,000 cells on distinct month windows of the sample (each asked once, so no answer comes
  from the result cache of app/cache.py: the figure is the engine's), and, labelled as such, the same query asked
  again (a result-cache hit) and revalidated with its ETag (a 304);
* the time from navigation start to the hexagons drawn on the canvas: for a query never asked before (browser
  cache off, the server computes), for one asked before (browser cache off, the items answer a result-cache hit),
  and with the browser cache on; and how long zooms and pans take with 5,000 hexagons on the map.

The sample has four months, so ten windows: the first-view runs get what the items runs and the GeoJSON run
leave (four of them at the default five runs); each row gives its number of runs. Prints the page and writes it.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from tests import live  # noqa: E402

MONTHS = ["2024-01", "2024-02", "2024-03", "2024-04"]  # the bundled Essex sample
BASE_QUERY = {"preset": "all-crime", "resolution": 11}
STATIC = ["/map", "/static/vendor/leaflet/leaflet.css", "/static/map.css", "/static/keydates.css",  # map.html's
          "/static/vendor/leaflet/leaflet.js", "/static/keydates.js", "/static/map.js", "/static/mappack.js"]
RUNS = 5
CELLS = 5000
DEFAULT_VIEW = 200  # hexagons the map shows with no query (map.js)
GZIP = {"Accept-Encoding": "gzip"}


def windows(seed: int = 3) -> list[dict]:
    """Every month window of the sample (from <= to), in a fixed shuffled order: each is asked once, so none is
    a result-cache hit (as bench.load_test.Distinct draws its windows)."""
    spans = [(i, j) for i in range(len(MONTHS)) for j in range(i, len(MONTHS))]
    order = np.random.default_rng(seed).permutation(len(spans))
    return [{"from": MONTHS[spans[k][0]], "to": MONTHS[spans[k][1]]} for k in order]


@dataclass
class Reply:
    body: bytes
    seconds: float
    status: int
    headers: Message  # case-insensitive


def fetch(url: str, headers: dict | None = None) -> Reply:
    """GET ``url`` (urllib sends no Accept-Encoding unless given: the raw body); the body as it came over the wire."""
    req = urllib.request.Request(url, headers={"Accept": "application/json", **(headers or {})})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            body, status, got = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:  # a 304 is raised as an error by urllib
        body, status, got = e.read(), e.code, e.headers
    return Reply(body, time.perf_counter() - t, status, got)


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
                items_bytes: last ? last.transferSize : null,
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


@dataclass
class Weight:
    path: str
    raw: int
    sent: int          # the body the service sent to a client with Accept-Encoding: gzip
    encoding: str      # its Content-Encoding ("none" when sent as it is)
    gzipped: int       # gzip -6 of the raw body, here, for comparison
    validators: str    # which of ETag and Last-Modified the answer carries
    cache_control: str


def weigh(base: str, path: str) -> Weight:
    """``path`` fetched raw and with ``Accept-Encoding: gzip``; named without its query string."""
    raw, sent = fetch(base + path), fetch(base + path, GZIP)
    enc = sent.headers.get("Content-Encoding", "none")
    validators = ", ".join(h for h in ("ETag", "Last-Modified") if h in sent.headers) or "none"
    return Weight(path.split("?")[0], len(raw.body), len(sent.body), enc, len(gzip.compress(raw.body, 6)),
                  validators, sent.headers.get("Cache-Control", "none"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=RUNS, help="runs per measure (default %(default)s)")
    ap.add_argument("--cells", type=int, default=CELLS, help="hexagons of the timed query (default %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-map.md", help="page written")
    args = ap.parse_args(argv)
    runs, cells = args.runs, args.cells
    if not live.have_browser():
        print("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
        return 1
    pool = windows()
    if len(pool) < runs + 2:
        ap.error(f"--runs {runs}: the sample has {len(pool)} month windows, at most {len(pool) - 2} runs")
    engine_windows, geojson_window, first_windows = pool[:runs], pool[runs], pool[runs + 1:runs + 1 + runs]
    query = {**BASE_QUERY, "top": cells}
    page_query = {**query, "from": MONTHS[0], "to": MONTHS[-1]}  # the page the repeated-view runs load

    def items_url(window: dict) -> str:
        return f"{base}/collections/harm-spots/items?{urlencode({**query, **window, 'limit': cells, 'f': 'json'})}"

    tmp = Path(tempfile.mkdtemp(prefix="bench-map-"))
    srv, _ = live.start(tmp / "data", tmp / "server.log", {"HARMSPOT_LOAD_SAMPLE": "true"})
    base = srv.base
    try:
        weights = [weigh(base, path) for path in STATIC]
        fetch(f"{base}/hotspots?{urlencode({**BASE_QUERY, 'resolution': 10, 'top': 10})}")  # warm the store
        engine = [fetch(items_url(w), GZIP) for w in engine_windows]  # each window once: the engine's figure
        assert all(r.status == 200 for r in engine), [r.status for r in engine]
        again_url = items_url(engine_windows[0])
        hits = [fetch(again_url, GZIP) for _ in range(runs)]            # asked before: result-cache hits
        etag = hits[0].headers["ETag"]
        revalidated = [fetch(again_url, {**GZIP, "If-None-Match": etag}) for _ in range(runs)]
        assert all(r.status == 304 for r in revalidated), [r.status for r in revalidated]
        data = weigh(base, again_url.removeprefix(base))
        geojson = fetch(f"{base}/hotspots.geojson?{urlencode({**query, **geojson_window})}", GZIP)

        cold_driver = driver(cache=False)
        try:
            first = [first_render(cold_driver, f"{base}/map?{urlencode({**query, **w})}", cells) for w in first_windows]
            first_render(cold_driver, f"{base}/map?{urlencode(page_query)}", cells)  # asks it once
            cold = [first_render(cold_driver, f"{base}/map?{urlencode(page_query)}", cells) for _ in range(runs)]
        finally:
            cold_driver.quit()
        warm_driver = driver(cache=True)
        try:
            first_render(warm_driver, f"{base}/map?{urlencode(page_query)}", cells)
            warm = [first_render(warm_driver, f"{base}/map?{urlencode(page_query)}", cells) for _ in range(runs)]
            interact = warm_driver.execute_async_script(INTERACT)
            default = [first_render(warm_driver, f"{base}/map", DEFAULT_VIEW) for _ in range(runs)]
        finally:
            warm_driver.quit()
    finally:
        live.stop(srv.proc)
        shutil.rmtree(tmp, ignore_errors=True)

    text = page(weights, data, cells, runs, query, {
        "engine": engine, "hits": hits, "revalidated": revalidated, "geojson": geojson,
        "first": first, "cold": cold, "warm": warm, "interact": interact, "default": default})
    print(text)
    args.out.write_text(text)
    return 0


def page(weights: list[Weight], data: Weight, cells: int, runs: int, query: dict, t: dict) -> str:
    med = statistics.median
    code = {k: sum(getattr(w, k) for w in weights) for k in ("raw", "sent", "gzipped")}
    zipped = [w.path for w in weights + [data] if w.encoding == "gzip"]
    plain = [w.path for w in weights + [data] if w.encoding != "gzip"]
    n_cells = f"{cells:,}"
    month_range = f"{MONTHS[0]}..{MONTHS[-1]}"
    lines = [
        "# Map benchmark: page weight and time to first render",
        "",
        f"- run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, `bench/bench_map.py`",
        f"- machine: {machine()}",
        f"- browser: {chromium_version()} headless (--disable-gpu: software canvas), window 1400x900",
        f"- data: bundled Essex sample ({month_range}); query `{urlencode(query)}` = {n_cells} H3 res-11 hexagons, "
        "on the sample's month windows",
        "- compression, as the service answered a client sending `Accept-Encoding: gzip`: gzipped "
        f"{', '.join(f'`{p}`' for p in zipped) or 'nothing'}; sent as they are "
        f"{', '.join(f'`{p}`' for p in plain) or 'nothing'} (app/cache.py compresses JSON, GeoJSON, CSV, HTML "
        "and plain text of 1 KB or more, a cached answer such as the items page once, when it is cached; "
        "app/assets.py compresses each static text file once per file version, at gzip -9). The *sent* column is "
        "what goes over the wire; *gzip -6* is this benchmark's own compression of the raw body, for comparison",
        "- revalidation: the items answer's ETag names the server process, the store version and the query; with "
        f"`Cache-Control: {data.cache_control}` a browser keeps the answer and asks again with `If-None-Match`, and "
        "the service answers 304 from memory, without computing (the rows below). The validators and "
        "Cache-Control of every resource are in the table",
        "",
        "## Page weight",
        "",
        "| resource | bytes | sent | Content-Encoding | gzip -6 | validators | Cache-Control |",
        "|---|---:|---:|---|---:|---|---|",
        *[f"| `{w.path}` | {w.raw:,} | {w.sent:,} | {w.encoding} | {w.gzipped:,} | {w.validators} | "
          f"{w.cache_control} |" for w in weights],
        f"| **page (code)** | **{code['raw']:,}** | **{code['sent']:,}** | | **{code['gzipped']:,}** | | |",
        f"| data: {n_cells} hexagons (`/collections/harm-spots/items`, GeoJSON) | {data.raw:,} | {data.sent:,} | "
        f"{data.encoding} | {data.gzipped:,} | {data.validators} | {data.cache_control} |",
        f"| **total for {n_cells} hexagons** | **{code['raw'] + data.raw:,}** | **{code['sent'] + data.sent:,}** | | "
        f"**{code['gzipped'] + data.gzipped:,}** | | |",
        "",
        f"Bytes per hexagon (GeoJSON with properties and top offences): {data.raw / cells:,.0f} raw, "
        f"{data.sent / cells:,.0f} sent. In the browser (cache off, first views) the page and its data took "
        f"{med([r['transferred'] for r in t['first']]):,.0f} bytes over the wire (resource timing transferSize, "
        "headers included).",
        "",
        "## Time (median; min-max)",
        "",
        "| measure | runs | median ms | range ms |",
        "|---|---:|---:|---:|",
    ]

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {len(values)} | {med(values):,.0f} | {min(values):,.0f}-{max(values):,.0f} |"

    ms = lambda replies: [r.seconds * 1000 for r in replies]  # noqa: E731
    first_items = [r["items"] for r in t["first"] if r["items"]]
    lines += [
        row(f"**server: items request, {n_cells} cells, distinct month windows** (each asked once: the engine; "
            "urllib, gzip)", ms(t["engine"])),
        row("server: the same items request asked again (result-cache hit, not the engine)", ms(t["hits"])),
        row("server: the same items request revalidated with its ETag (304, no body)", ms(t["revalidated"])),
        row("server: `/hotspots.geojson`, a window not asked before (one run)", ms([t["geojson"]])),
        row(f"**time to first render, {n_cells} hexagons, first view** (browser cache off, query not asked "
            "before; navigation start -> drawn)", [r["ttfr"] for r in t["first"]]),
        row("of which: items request in the browser (first views)", first_items),
        row(f"time to first render, {n_cells} hexagons, browser cache off, query asked before (items answer a "
            "result-cache hit)", [r["ttfr"] for r in t["cold"]]),
        row(f"time to first render, {n_cells} hexagons, browser cache on", 
            [r["ttfr"] for r in t["warm"]]),
        row(f"time to first render, default view ({DEFAULT_VIEW} hexagons), browser cache on",
            [r["ttfr"] for r in t["default"]]),
        row(f"zoom or pan with {n_cells} hexagons (20 operations, to the 2nd frame)", t["interact"]),
        "",
        "Time to first render runs from the navigation start to the `harmspot-rendered` performance mark, set in the",
        "animation frame after the hexagons are added to the canvas layer (map.js); it includes loading the page,",
        "`/map/config`, `/datasets`, `/presets`, `/collections`, the district boundaries and the items request.",
        "On a first view the server computes the query (the items request row of the first views); a query asked",
        "before is answered from the result cache, so what remains is the page, the transfer and the browser side",
        "(parse, add the polygons to the canvas, draw).",
        f"With the browser cache on, the items request moved {med([r['items_bytes'] or 0 for r in t['warm']]):,.0f} "
        f"bytes (median transferSize; the answer itself is {data.sent:,} bytes sent): the browser revalidates it "
        "with its ETag.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
