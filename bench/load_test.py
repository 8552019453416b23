"""Load benchmark on loopback against a real `harmspot serve` (keyed mode): many planners, and reads during ingest.

    .venv/bin/pip install -e '.[bench]'                 # once: the test extra and aiohttp (the clients)
    .venv/bin/python -m bench.load_test                 # 50 clients x 30 s per scenario, 1,000,000 offences
    .venv/bin/python -m bench.load_test --quick         # 10 clients x 8 s, 100,000 offences (smoke)
    .venv/bin/python -m bench.load_test --before bench/out/load_before.json   # add a before column to the doc

Before and after in the same window of a shared machine (the "before" served from a checkout of the old commit):

    git worktree add ../serving-before 058eb64
    .venv/bin/python -m bench.load_test --server-from ../serving-before --json bench/out/load_before.json \
        --out /tmp/before.md
    .venv/bin/python -m bench.load_test --before bench/out/load_before.json

Scenarios, all in one run against one server process, so every figure is compared with baselines of the same run
(issue 14 targets; issue 13 item 5):

1. ``top50_http``: one client, distinct ``/hotspots`` op-ark top-50 queries (6-12 month windows) over real HTTP;
   after the server stops, the same queries in-process (``TestClient``) on the same store, for the HTTP overhead.
2. ``one_distinct``: one client, all-distinct ``/hotspots`` queries (preset x resolution x month window, never
   repeated in the run): the single-client rate every throughput ratio is against.
3. ``mix``: N clients repeating a 12-query mix (what planners ask again and again: the default map, its GeoJSON
   and CSV downloads, the OGC page the map loads, Gi*, spikes, tasking, a few filters). The 12 queries are asked
   once each first (cold, timed and reported), then the clients run.
   ``mix_wrk``: the same mix from ``wrk`` (Debian's C load generator, when installed: 2 threads, N keep-alive
   connections, the same requests and headers, ``--latency``), which needs a few percent of a core where the Python
   client needs about one of the two; both are reported.
4. ``distinct``: N clients on all-distinct ``/hotspots`` queries (no cache can help; must be no worse than before).
5. ``ingest``: 10 clients on distinct queries, a ``/health`` poller and a small ``POST /patrols`` every 0.5 s,
   first for a quiet window, then while a 1 M-row upload (``POST /datasets``) is ingested: reads' p99 and the
   longest gap with no completed read, in both windows.

The offences are real data.police.uk Leicestershire rows (../shared/data/crime) resampled with replacement to the
target size, with fresh record ids. Keys: a viewer key for reads, an analyst key for writes, so every request pays
for key verification and an audit row. The run works on a copy of the built store (the ingest changes it). Only
127.0.0.1 is contacted. Writes docs/benchmarks-load.md and bench/out/load_results.json.
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from bench.machine import cpu_ticks, machine, steal_pct
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
LEICS = ROOT.parent / "shared" / "data" / "crime" / "leicestershire_street_2019-12_to_2022-10.csv.gz"
WARDS = ROOT.parent / "shared" / "data" / "boundaries" / "leicestershire_wards2013.geojson"
OUT = ROOT / "bench" / "out"
HARMSPOT = Path(sys.executable).parent / "harmspot"
DATASET = "leics-resampled"
MONTHS = [f"{y}-{m:02d}" for y in range(2019, 2023) for m in range(1, 13)][11:11 + 35]  # 2019-12 .. 2022-10
SPOT = "HS-8a195cb7591ffff"  # a res-10 cell in Leicester: a valid spot id for the patrol log


# ------------------------------------------------------------------------------------------------- data
def resampled_csv(n: int, seed: int = 7, prefix: str = "load") -> Path:
    """A police.uk CSV of ``n`` located rows drawn with replacement from the real Leicestershire file."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{prefix}_leics_{n}.csv"
    if path.exists():
        return path
    table = pacsv.read_csv(LEICS, convert_options=pacsv.ConvertOptions(column_types={
        c: pa.string() for c in ["Crime ID", "Month", "Longitude", "Latitude", "LSOA code", "Context"]}))
    lon = table["Longitude"]
    table = table.filter(pc.and_(pc.is_valid(lon), pc.greater(pc.utf8_length(pc.fill_null(lon, "")), 0)))
    idx = np.random.default_rng(seed).integers(0, table.num_rows, n)
    sample = table.take(pa.array(idx))
    ids = pa.array([f"{prefix}-{i:09d}" for i in range(n)])
    sample = sample.set_column(sample.schema.get_field_index("Crime ID"), "Crime ID", ids)
    pacsv.write_csv(sample, path)
    return path


def upload_gz(n: int) -> Path:
    """The upload of the ingest scenario: ``n`` more resampled rows (other ids), gzipped under the upload limit."""
    path = OUT / f"upload_leics_{n}.csv.gz"
    if not path.exists():
        src = resampled_csv(n, seed=11, prefix="upload")
        with open(src, "rb") as fin, gzip.open(path, "wb", compresslevel=3) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        src.unlink()
    return path


def build_store(n: int) -> tuple[Path, dict]:
    """A store with ``n`` resampled offences (built once, reused; every run works on a copy)."""
    data_dir = OUT / f"load_store_{n}"
    marker = data_dir / "built.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if not info.get("areas"):
            info["areas"] = _load_areas(data_dir)
            marker.write_text(json.dumps(info))
        return data_dir, info
    env = {**os.environ, "HARMSPOT_DATA_DIR": str(data_dir), "HARMSPOT_LOAD_SAMPLE": "false"}
    t = time.perf_counter()
    out = subprocess.run([str(HARMSPOT), "ingest", str(resampled_csv(n)), "--dataset", DATASET], env=env,
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    info = {"stored": report["stored"], "ingest_s": round(time.perf_counter() - t, 1), "areas": _load_areas(data_dir)}
    marker.write_text(json.dumps(info))
    return data_dir, info


def _load_areas(data_dir: Path) -> list[str]:
    """The real Leicestershire wards (2013) and their districts, as patrol areas for /tasking and /spikes."""
    import geopandas as gpd

    from geodata.store import Store

    wards = gpd.read_file(WARDS)
    districts = wards.dissolve(by="LAD_NAME", as_index=False)[["LAD_CODE", "LAD_NAME", "geometry"]]
    store = Store(data_dir / "harmspot.duckdb")
    try:
        store.load_areas("wards", wards, name_field="WD13NM", id_field="WD13CD", district_field="LAD_NAME")
        store.load_areas("districts", districts, name_field="LAD_NAME", id_field="LAD_CODE", district_field="LAD_NAME")
    finally:
        store.close()
    return ["wards", "districts"]


# ---------------------------------------------------------------------------------------------- queries
MIX: list[tuple[str, dict]] = [  # what planners and their scripts ask again and again
    ("/collections/harm-spots/items", {"f": "json", "limit": 50}),      # the map's default view
    ("/hotspots", {"preset": "op-ark", "top": 50}),                     # the default tasking query
    ("/hotspots.geojson", {"preset": "op-ark", "top": 50}),             # the map's GeoJSON download
    ("/hotspots", {"preset": "op-ark", "top": 50, "format": "csv"}),    # the map's CSV download
    ("/hotspots", {"preset": "all-crime", "top": 100, "resolution": 9}),
    ("/hotspots", {"preset": "nte", "from": "2022-01", "to": "2022-06", "top": 50}),
    ("/hotspots", {"preset": "community-violence", "from": "2021-01", "to": "2021-12", "resolution": 8, "top": 200}),
    ("/hotspots", {"offences": "robbery,drugs", "from": "2020-06", "to": "2021-05", "top": 20}),
    ("/hotspots", {"preset": "all-crime", "bbox": "-1.2,52.6,-1.1,52.66", "from": "2022-01", "to": "2022-10",
                   "top": 50}),
    ("/hotspots", {"preset": "op-ark", "from": "2022-01", "to": "2022-10", "top": 50, "stats": "gistar"}),
    ("/spikes", {"preset": "all-crime", "resolution": 8}),
    ("/tasking", {"preset": "op-ark", "top": 20}),
]


class Distinct:
    """/hotspots queries never repeated within a run: preset x resolution x month window (1-12 months), shuffled.
    ``top50`` draws op-ark, res 10, top 50 with 6-12 month windows; ``any`` draws the rest of the space."""

    def __init__(self, seed: int = 3):
        rng = np.random.default_rng(seed)
        windows = [(i, j) for i in range(len(MONTHS)) for j in range(i, min(i + 12, len(MONTHS)))]
        top50 = [("op-ark", 10, i, j) for i, j in windows if j - i >= 5]
        rest = [(p, r, i, j) for p in ("op-ark", "all-crime", "nte", "community-violence") for r in (8, 9, 10)
                for i, j in windows if (p, r, i, j) not in set(top50)]
        self._top50 = iter([top50[k] for k in rng.permutation(len(top50))])
        self._any = iter([rest[k] for k in rng.permutation(len(rest))])

    def next(self, kind: str = "any") -> dict:
        p, r, i, j = next(self._top50 if kind == "top50" else self._any)
        return {"preset": p, "resolution": r, "from": MONTHS[i], "to": MONTHS[j], "top": 50, "dataset": DATASET}


# ---------------------------------------------------------------------------------------------- clients
class Run:
    """Latencies, completion times and errors of one scenario."""

    def __init__(self) -> None:
        self.lat: list[float] = []
        self.done_at: list[float] = []
        self.errors: list[str] = []

    def add(self, t0: float, status: int | None, text: str = "") -> None:
        now = time.perf_counter()
        self.lat.append(now - t0)
        self.done_at.append(now)
        if status != 200:
            self.errors.append(f"{status} {text[:200]}")

    def summary(self, elapsed: float) -> dict:
        ms = np.array(self.lat or [float("nan")]) * 1000
        return {"requests": len(self.lat), "errors": len(self.errors), "rps": round(len(self.lat) / elapsed, 2),
                "p50_ms": round(float(np.percentile(ms, 50)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1),
                "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(np.max(ms)), 1),
                "seconds": round(elapsed, 1), "first_errors": self.errors[:3]}


async def get(client, base: str, key: str, path: str, params: dict, run: Run) -> None:
    t0 = time.perf_counter()
    try:
        async with client.get(base + path, params=params,
                              headers={"X-API-Key": key, "Accept-Encoding": "gzip"}) as r:
            body = await r.read()  # the whole body, gunzipped (aiohttp's auto_decompress), as a planner's browser
            run.add(t0, r.status, "" if r.status == 200 else body.decode("utf-8", "replace"))
    except Exception as exc:  # timeouts, resets: counted as errors
        run.add(t0, None, f"{type(exc).__name__}: {exc}")


async def loop_until(deadline: float, step) -> None:
    while time.perf_counter() < deadline:  # bounded by the deadline
        await step()


def new_client(clients: int):
    """aiohttp (C HTTP parser): about a quarter of httpx's client CPU per request (0.5 against 2.1 ms in the
    mix), which matters when one Python process plays 50 planners on a 2-core machine beside the server."""
    import aiohttp

    # idle connections dropped after 4 s, before uvicorn's 5 s keep-alive closes them under a request in flight
    connector = aiohttp.TCPConnector(limit=clients + 4, keepalive_timeout=4)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def scenario_sequential(base: str, key: str, queries: list[tuple[str, dict]]) -> dict:
    run = Run()
    async with new_client(1) as client:
        t0 = time.perf_counter()
        for path, params in queries:
            await get(client, base, key, path, params, run)
        return run.summary(time.perf_counter() - t0)


async def scenario_one_distinct(base: str, key: str, distinct: Distinct, seconds: float) -> dict:
    run = Run()
    async with new_client(1) as client:
        t0 = time.perf_counter()
        await loop_until(t0 + seconds, lambda: get(client, base, key, "/hotspots", distinct.next(), run))
        return run.summary(time.perf_counter() - t0)


def mix_queries() -> list[tuple[str, dict]]:
    return [(p, {**q, "dataset": DATASET}) for p, q in MIX]


async def scenario_mix(base: str, key: str, clients: int, seconds: float) -> dict:
    """N clients repeating the mix (run after ``mix_cold`` has asked each query once)."""
    run = Run()
    queries = mix_queries()
    async with new_client(clients) as client:
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            rng = np.random.default_rng(i)
            await loop_until(t0 + seconds, lambda: get(client, base, key, *queries[int(rng.integers(len(queries)))],
                                                       run))
        await asyncio.gather(*(one(i) for i in range(clients)))
        return run.summary(time.perf_counter() - t0)


WRK = shutil.which("wrk")  # Debian's `wrk` (apt-get install wrk): a C load generator, for the mix_wrk scenario
WRK_LUA = """
local paths = {%s}
local headers = {["X-API-Key"] = "%s", ["Accept-Encoding"] = "gzip", ["Accept"] = "*/*"}
local counter = 0
function setup(thread) counter = counter + 1; thread:set("id", counter) end
function init(args) math.randomseed(id * 7919) end
request = function() return wrk.format("GET", paths[math.random(#paths)], headers) end
"""


def wrk_script(key: str, path: Path) -> Path:
    """The mix for wrk: the same 12 requests as the Python clients (same query strings, X-API-Key,
    Accept-Encoding: gzip, Accept), each connection drawing one at random per request."""
    import httpx

    urls = [str(httpx.URL(p, params=q)) for p, q in mix_queries()]  # httpx's own encoding of each query
    path.write_text(WRK_LUA % (", ".join(json.dumps(u) for u in urls), key))
    return path


def _wrk_ms(text: str) -> float:
    value = float(text.rstrip("usm"))
    return value / 1000 if text.endswith("us") else value * 1000 if text.endswith("s") and not text.endswith("ms") \
        else value


def scenario_mix_wrk(base: str, key: str, clients: int, seconds: float, work: Path) -> dict:
    """The mix from ``wrk`` (C, 2 threads, ``clients`` keep-alive connections, each asking again as soon as it is
    answered - the closed loop of the Python clients) instead of one Python process: the same requests, with a
    client that needs a few percent of a core instead of about one of the two (docs/benchmarks-load.md)."""
    import re

    import resource

    script = wrk_script(key, work / "mix.lua")
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([WRK, "-t2", f"-c{clients}", f"-d{int(seconds)}s", "--latency", "--timeout", "30s",
                          "-s", str(script), base], capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - t0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    socket_errors = sum(int(v) for v in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    latency_max = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)
    return {"requests": n, "errors": socket_errors + non2xx, "rps": float(re.search(r"Requests/sec:\s+(\S+)", out)
                                                                             .group(1)),
            "p50_ms": round(_wrk_ms(pct["50"]), 1), "p90_ms": round(_wrk_ms(pct["90"]), 1),
            "p99_ms": round(_wrk_ms(pct["99"]), 1), "max_ms": round(_wrk_ms(latency_max), 1),
            "seconds": round(elapsed, 1), "first_errors": [], "client": "wrk", "wrk_cpu_s": round(wrk_cpu, 2),
            "wrk_output": out}


async def scenario_distinct(base: str, key: str, distinct: Distinct, clients: int, seconds: float) -> dict:
    run = Run()
    async with new_client(clients) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop_until(t0 + seconds, lambda: get(client, base, key, "/hotspots", distinct.next(),
                                                                    run)) for _ in range(clients)))
        return run.summary(time.perf_counter() - t0)


def longest_gap(done_at: list[float], start: float, end: float) -> float:
    ts = np.array(sorted([start, *[t for t in done_at if start <= t <= end], end]))
    return float(np.diff(ts).max()) if len(ts) > 1 else end - start


async def scenario_ingest(base: str, key: str, analyst: str, distinct: Distinct, upload: Path,
                          quiet_s: float) -> dict:
    """10 readers, a /health poller and a small POST /patrols every 0.5 s: a quiet window, then one upload."""
    import httpx

    patrol = {"patrols": [{"spot_id": SPOT, "team": "bench", "start": "2022-10-01T20:00",
                           "end": "2022-10-01T20:30"}]}

    async def window(client, stop: asyncio.Event) -> dict:
        reads, health, writes = Run(), Run(), Run()

        async def reader() -> None:
            while not stop.is_set():
                await get(client, base, key, "/hotspots", distinct.next(), reads)

        async def poll_health() -> None:
            while not stop.is_set():
                await get(client, base, key, "/health", {}, health)
                await asyncio.sleep(0.1)

        async def post_patrols() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    async with client.post(base + "/patrols", json=patrol, headers={"X-API-Key": analyst}) as r:
                        writes.add(t, 200 if r.status == 201 else r.status, await r.text())
                except Exception as exc:
                    writes.add(t, None, f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

        tasks = [asyncio.create_task(reader()) for _ in range(10)]
        tasks += [asyncio.create_task(poll_health()), asyncio.create_task(post_patrols())]
        return {"tasks": tasks, "reads": reads, "health": health, "writes": writes}

    def measured(w: dict, start: float, end: float) -> dict:
        reads = w["reads"]
        out = reads.summary(end - start)
        out["longest_gap_ms"] = round(longest_gap(reads.done_at, start, end) * 1000, 1)
        out["health_max_ms"] = round(max(w["health"].lat or [float("nan")]) * 1000, 1)
        out["patrol_post_max_ms"] = round(max(w["writes"].lat or [float("nan")]) * 1000, 1)
        out["patrol_posts"] = len(w["writes"].lat)
        out["other_errors"] = w["health"].errors[:2] + w["writes"].errors[:2]
        return out

    async with new_client(16) as client:
        stop = asyncio.Event()
        w = await window(client, stop)
        t0 = time.perf_counter()
        await asyncio.sleep(quiet_s)
        stop.set()
        await asyncio.gather(*w["tasks"])
        quiet = measured(w, t0, time.perf_counter())

        stop = asyncio.Event()
        w = await window(client, stop)
        t0 = time.perf_counter()
        data = upload.read_bytes()
        async with httpx.AsyncClient(timeout=900) as up:
            r = await up.post(base + "/datasets", headers={"X-API-Key": analyst},
                              files={"files": (upload.name, data, "application/gzip")},
                              data={"dataset": "leics-upload"})
        t1 = time.perf_counter()
        stop.set()
        await asyncio.gather(*w["tasks"])
        during = measured(w, t0, t1)
        during["upload_status"] = r.status_code
        during["upload_s"] = round(t1 - t0, 1)
        during["upload_stored"] = r.json().get("stored") if r.status_code == 201 else r.text[:300]
        return {"quiet": quiet, "during_ingest": during}


IN_PROCESS = """
import json, logging, sys, time
from fastapi.testclient import TestClient
from app.main import create_app
from geodata.settings import Settings
data_dir, key, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
logging.disable(logging.INFO)
lat = []
with TestClient(create_app(Settings(data_dir=data_dir, load_sample=False))) as client:
    client.headers["X-API-Key"] = key
    client.get("/hotspots", params=queries[0])
    for q in queries:
        t = time.perf_counter()
        r = client.get("/hotspots", params=q)
        lat.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text[:300]
print(json.dumps(lat))
"""


def in_process_top50(data_dir: Path, key: str, queries: list[dict], code: Path = ROOT) -> dict:
    """The top50_http queries through the in-process client (``TestClient``, the same key) on the same store,
    server stopped, in a fresh process of the checkout ``code``."""
    out = subprocess.run([sys.executable, "-c", IN_PROCESS, str(data_dir), key, json.dumps(queries)], cwd=code,
                         env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True, text=True, check=True)
    ms = np.array(json.loads(out.stdout.strip().splitlines()[-1])) * 1000
    return {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p90_ms": round(float(np.percentile(ms, 90)), 1)}


# ------------------------------------------------------------------------------------------------- main
def start_server(env: dict, port: int, code: Path | None = None, cli: bool = False) -> subprocess.Popen:
    """``harmspot serve``; or, with ``code`` (another checkout, e.g. the commit before a change), that checkout's
    own ``harmspot serve`` (``cli``), or its app served by uvicorn with the pure-Python HTTP parser and asyncio
    loop it had before ``harmspot serve`` chose them (h11, no uvloop)."""
    import urllib.request

    log = open(Path(env["HARMSPOT_DATA_DIR"]) / "server.log", "wb")
    if code is None:
        cmd, cwd = [str(HARMSPOT), "serve", "--host", "127.0.0.1", "--port", str(port)], None
    elif cli:
        cmd = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))", "serve",
               "--host", "127.0.0.1", "--port", str(port)]
        cwd, env = str(code), {**env, "PYTHONPATH": str(code)}
    else:
        cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port",
               str(port), "--http", "h11", "--loop", "asyncio"]
        cwd, env = str(code), {**env, "PYTHONPATH": str(code)}
    server = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):  # up to 120 s for start-up
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return server
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"server exited: see {log.name}")
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("server did not start in 120 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def create_key(env: dict, role: str) -> str:
    out = subprocess.run([str(HARMSPOT), "keys", "create", "--role", role, "--name", f"load-{role}"], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["key"]


def run(args) -> dict:
    built, info = build_store(args.offences)
    upload = upload_gz(args.offences) if not args.no_ingest else None
    distinct = Distinct()
    top50 = [distinct.next("top50") for _ in range(args.top50)]
    results: dict = {"machine": machine(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "offences": info["stored"], "store_ingest_s": info["ingest_s"], "clients": args.clients,
                     "seconds": args.seconds, "commit": _commit(Path(args.server_from) if args.server_from else ROOT)}
    with tempfile.TemporaryDirectory(prefix="harmspot-load-") as tmp:
        data_dir = Path(tmp)
        shutil.copy(built / "harmspot.duckdb", data_dir / "harmspot.duckdb")
        env = {**os.environ, "HARMSPOT_DATA_DIR": str(data_dir), "HARMSPOT_LOAD_SAMPLE": "false"}
        viewer, analyst = create_key(env, "viewer"), create_key(env, "analyst")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(env, port, Path(args.server_from) if args.server_from else None, args.server_cli)
        try:
            steps = [
                ("top50_http", lambda: scenario_sequential(base, viewer, [("/hotspots", q) for q in top50])),
                ("one_distinct", lambda: scenario_one_distinct(base, viewer, distinct, args.one_seconds)),
                ("mix_cold", lambda: scenario_sequential(base, viewer, mix_queries())),
                ("mix", lambda: scenario_mix(base, viewer, args.clients, args.seconds)),
                *([("mix_wrk", lambda: scenario_mix_wrk(base, viewer, args.clients, args.seconds, data_dir))]
                  if WRK else []),
                ("distinct", lambda: scenario_distinct(base, viewer, distinct, args.clients, args.seconds)),
            ]
            if upload is not None:
                steps.append(("ingest", lambda: scenario_ingest(base, viewer, analyst, distinct, upload,
                                                                args.quiet_seconds)))
            for name, step in steps:
                print(f"scenario {name} ...", file=sys.stderr, flush=True)
                cpu0, mine0, wall0 = cpu_seconds(server.pid), time.process_time(), time.time()
                ticks0 = cpu_ticks()
                outcome = step()
                results[name] = asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome
                cpu = cpu_seconds(server.pid) - cpu0  # server CPU seconds: comparable on a busy machine
                n = results[name].get("requests") or results[name].get("during_ingest", {}).get("requests") or 1
                results[name].update(server_cpu_s=round(cpu, 2), server_cpu_ms_per_request=round(cpu * 1000 / n, 2),
                                     client_cpu_s=round(time.process_time() - mine0, 2),
                                     started=datetime.fromtimestamp(wall0).strftime("%H:%M:%S"),
                                     load_average=round(os.getloadavg()[0], 1))
                if (steal := steal_pct(ticks0, cpu_ticks())) is not None:
                    results[name]["steal_pct"] = steal
                print(json.dumps(results[name]), file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait(60)
        shutil.copy(data_dir / "server.log", OUT / "load_server.log")
        results["top50_in_process"] = in_process_top50(data_dir, viewer, top50,
                                                       Path(args.server_from) if args.server_from else ROOT)
    one = results["one_distinct"]["rps"]
    results["ratios"] = {"mix_vs_one_distinct": round(results["mix"]["rps"] / one, 2),
                         "distinct_vs_one_distinct": round(results["distinct"]["rps"] / one, 2),
                         # server CPU per request: what a request costs whatever else the machine runs
                         "cpu_one_distinct_vs_mix": round(results["one_distinct"]["server_cpu_ms_per_request"]
                                                          / max(results["mix"]["server_cpu_ms_per_request"], 1e-9), 1)}
    return results


def _commit(where: Path = ROOT) -> str:
    try:
        return subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def _row(label: str, r: dict) -> str:
    cpu = r.get("server_cpu_ms_per_request")
    return (f"| {label} | {r['requests']:,} | {r['errors']} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p90_ms']:.0f} "
            f"| {r['p99_ms']:.0f} | {r['max_ms']:.0f} | {'' if cpu is None else f'{cpu:.1f}'} | "
            f"{r.get('load_average', '')} | {r.get('steal_pct', '')} |")


HEAD = ["| scenario | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms | server CPU ms/request | "
        "load average | steal % |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]


def markdown(res: dict, before: dict | None) -> str:
    mark = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    mix, dist, one, t50, inproc = res["mix"], res["distinct"], res["one_distinct"], res["top50_http"], \
        res["top50_in_process"]
    cold = res.get("mix_cold") or mix.get("cold_pass")
    ratio = res["ratios"]["mix_vs_one_distinct"]
    lines = [
        "# Load: many planners on one service, and reads during an ingest",
        "",
        f"Measured {res['date']} by `bench/load_test.py` (`.venv/bin/python -m bench.load_test`) at commit "
        f"{res['commit']}.",
        "",
        f"- **Machine**: {res['machine']}. **Shared this round** with other developers' jobs, so absolute figures "
        "vary by tens of percent between runs; the ratios compare scenarios of the same run.",
        f"- **Data**: {res['offences']:,} offences: real data.police.uk Leicestershire rows (2019-12 to 2022-10) "
        "resampled with replacement, fresh record ids.",
        "- **Service**: `harmspot serve` (one uvicorn process, embedded DuckDB store), bound to 127.0.0.1, keyed "
        "mode (viewer key for reads, analyst key for writes; key check and audit row on every request).",
        f"- **Clients**: one asyncio process (aiohttp, keep-alive, `Accept-Encoding: gzip`) on the same "
        f"{os.cpu_count()} CPUs as the server; the mix also from `wrk` (`mix_wrk`: C, 2 threads, the same "
        "requests and connections, each asking again when answered). Latency is measured at the client and "
        "includes queueing. "
        "Server CPU per request (from /proc) is what a request costs whatever else the machine runs; the load "
        "average is the machine's at the end of the scenario; steal % is the share of all CPU time the VM's host "
        "gave to other guests during it (/proc/stat), so a high figure means the scenario ran on less CPU.",
        "",
        *HEAD,
        _row("1 client, distinct op-ark top-50 (`top50_http`)", t50),
        _row("1 client, all-distinct queries (`one_distinct`)", one),
        _row(f"{res['clients']} clients x {res['seconds']:.0f} s, 12-query mix, Python client (`mix`)", mix),
        *([_row(f"{res['clients']} clients x {res['seconds']:.0f} s, 12-query mix, wrk (`mix_wrk`)", res["mix_wrk"])]
          if "mix_wrk" in res else []),
        _row(f"{res['clients']} clients x {res['seconds']:.0f} s, all-distinct (`distinct`)", dist),
        "",
        f"The mix's 12 queries asked once each, cold, before the clients start: {cold['seconds']} s in "
        f"all (slowest {cold['max_ms']:.0f} ms). In-process (`TestClient`, same store, server stopped), "
        f"the `top50_http` queries take p50 {inproc['p50_ms']:.1f} ms: real HTTP adds "
        f"{t50['p50_ms'] - inproc['p50_ms']:.1f} ms.",
        "",
        "Targets (issue 14), this run:",
        f"- mix throughput >= 15x one client's distinct rate: {ratio:.1f}x ({mark(ratio >= 15)}; by server CPU "
        f"per request {res['ratios'].get('cpu_one_distinct_vs_mix', float('nan')):.0f}x); p99 "
        f"{mix['p99_ms']:.0f} ms <= 250 ms ({mark(mix['p99_ms'] <= 250)}); errors {mix['errors'] + dist['errors']} "
        f"({mark(mix['errors'] + dist['errors'] == 0)}).",
        *([f"- the same mix from wrk (a C client: {res['mix_wrk'].get('wrk_cpu_s', float('nan')):.1f} s of CPU in "
           f"{res['mix_wrk']['seconds']:.0f} s, against {mix.get('client_cpu_s', float('nan')):.1f} s for the Python "
           f"client): {res['mix_wrk']['rps']:.0f} req/s, p99 {res['mix_wrk']['p99_ms']:.0f} ms <= 250 ms "
           f"({mark(res['mix_wrk']['p99_ms'] <= 250)}); errors {res['mix_wrk']['errors']} "
           f"({mark(res['mix_wrk']['errors'] == 0)})."] if "mix_wrk" in res else []),
        f"- `/hotspots` top-50, distinct queries, real HTTP: p50 {t50['p50_ms']:.1f} ms <= 50 ms "
        f"({mark(t50['p50_ms'] <= 50)}).",
        f"- all-distinct at {res['clients']} clients no worse than before: {dist['rps']:.1f} req/s, "
        f"{res['ratios']['distinct_vs_one_distinct']:.2f}x one client"
        + (f" (before: {before['distinct']['rps']:.1f} req/s, {before['ratios']['distinct_vs_one_distinct']:.2f}x)"
           if before else "") + ".",
    ]
    # the single-client scenarios' load (50 clients load the machine themselves) and every scenario's steal
    loads = [r.get("load_average") for r in (t50, one) if r.get("load_average") is not None]
    steal = max((r.get("steal_pct") or 0.0 for r in (t50, one, mix, dist)), default=0.0)
    if (loads and max(loads) > (os.cpu_count() or 1)) or steal > 5:
        lines += [
            "",
            f"**This run shared the machine**: load average up to {max(loads or [0]):.1f} on {os.cpu_count()} CPUs "
            f"during the single-client scenarios, and up to {steal:.0f} % of CPU time taken by the VM's host. The "
            "server had less CPU than the machine reports, so latencies are higher than a quiet machine gives "
            "(compare the single-client top-50 with the foundation bench's in-process figure). Throughput ratios "
            "are the figures to compare; the latency targets need a quiet run.",
        ]
    if "ingest" in res:
        q, d = res["ingest"]["quiet"], res["ingest"]["during_ingest"]
        lines += [
            "",
            "## Reads during a 1 M-row ingest (issue 13 item 5)",
            "",
            f"10 clients on distinct `/hotspots` queries, `/health` every 0.1 s and a one-patrol `POST /patrols` every "
            f"0.5 s (analyst key): first {q['seconds']} s quiet, then during `POST /datasets` of "
            f"{res['offences']:,} more rows (gzip CSV; {d['upload_s']} s, status {d['upload_status']}, stored "
            f"{d['upload_stored']}).",
            "",
            "| window | reads | errors | reads/s | p50 ms | p99 ms | longest gap with no completed read | "
            "slowest /health | slowest POST /patrols |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(f"| {label} | {r['requests']:,} | {r['errors']} | {r['rps']:.1f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} | {r['longest_gap_ms']:.0f} ms | {r['health_max_ms']:.0f} ms | "
              f"{r['patrol_post_max_ms']:.0f} ms |" for label, r in (("quiet", q), ("during ingest", d))),
        ]
    if before:
        lines += ["", f"## Before (commit {before.get('commit', '?')}, {before['date']}, same bench, same machine)", "",
                  *HEAD,
                  _row("1 client, distinct op-ark top-50", before["top50_http"]),
                  _row("1 client, all-distinct", before["one_distinct"]),
                  _row(f"{before['clients']} clients, 12-query mix", before["mix"]),
                  _row(f"{before['clients']} clients, all-distinct", before["distinct"]),
                  "",
                  f"Mix throughput {before['ratios']['mix_vs_one_distinct']:.2f}x one client's distinct rate; "
                  f"in-process top-50 p50 {before['top50_in_process']['p50_ms']:.1f} ms."]
        if "ingest" in before:
            q, d = before["ingest"]["quiet"], before["ingest"]["during_ingest"]
            lines += ["", "| window (before) | reads | errors | reads/s | p50 ms | p99 ms | longest gap | "
                      "slowest /health | slowest POST /patrols |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
                      *(f"| {label} | {r['requests']:,} | {r['errors']} | {r['rps']:.1f} | {r['p50_ms']:.0f} | "
                        f"{r['p99_ms']:.0f} | {r['longest_gap_ms']:.0f} ms | {r['health_max_ms']:.0f} ms | "
                        f"{r['patrol_post_max_ms']:.0f} ms |" for label, r in (("quiet", q), ("during ingest", d)))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30, help="length of the mix and distinct scenarios")
    p.add_argument("--one-seconds", type=float, default=20, help="length of the one-client distinct scenario")
    p.add_argument("--quiet-seconds", type=float, default=10, help="quiet window before the ingest")
    p.add_argument("--top50", type=int, default=60, help="distinct top-50 queries over HTTP and in-process")
    p.add_argument("--offences", type=int, default=1_000_000)
    p.add_argument("--no-ingest", action="store_true", help="skip the ingest scenario")
    p.add_argument("--quick", action="store_true", help="10 clients x 8 s at 100,000 offences")
    p.add_argument("--before", help="results JSON of an earlier run, shown as the before column")
    p.add_argument("--server-cli", action="store_true", help="with --server-from: start that checkout's own "
                   "`harmspot serve` (httptools, uvloop) instead of uvicorn h11/asyncio")
    p.add_argument("--server-from", help="serve another checkout's app (e.g. a worktree of the commit before a "
                   "change) to measure the before figures in the same window as the after ones")
    p.add_argument("--json", default=str(OUT / "load_results.json"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks-load.md"))
    args = p.parse_args(argv)
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        p.error("the load clients need aiohttp: pip install -e '.[bench]' (or make bench)")
    if args.quick:
        args.clients, args.seconds, args.one_seconds, args.quiet_seconds, args.top50, args.offences = \
            10, 8, 5, 3, 15, 100_000
    if not LEICS.exists():
        print(f"needs the real Leicestershire file at {LEICS}", file=sys.stderr)
        return 2
    res = run(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))
    before = json.loads(Path(args.before).read_text()) if args.before else None
    Path(args.out).write_text(markdown(res, before))
    print(markdown(res, before))
    errors = res["mix"]["errors"] + res["distinct"]["errors"] + res.get("mix_wrk", {}).get("errors", 0)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())

