"""Foundation benchmark: ingest throughput and /hotspots latency at 100 k and 1 M offences.

Each measurement runs in its own subprocess (so peak RSS is that step's own) on real Leicestershire rows
resampled to size, against baselines timed in the same run:
- the floor: a bare ``pyarrow.csv.read_csv`` of the same file;
- a naive ingest: pandas read_csv + geopandas projection + a per-row h3-py loop (all resolutions) + store write;
- a naive query: pandas filter + weight map + group-by over the same rows held in memory.
The ``/hotspots`` figure is the engine's: op-ark top-50 queries with distinct 6-12 month windows (the load
benchmark's ``top50`` draw, bench.load_test.Distinct), none repeated, so the result cache (app/cache.py) cannot
answer any of them; the naive query runs the first NAIVE_REPEATS of the same windows. One query repeated after its
warm-up is timed as well and reported as the cache-hit figure.
Run: ``python -m bench`` (writes docs/benchmarks.md).
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import cpu_ticks, steal_pct

SIZES = (100_000, 1_000_000)
QUERY_REPEATS = 30  # distinct queries timed (and repeats of the cached one)
NAIVE_REPEATS = 5
CACHED = {"from": "2021-01", "to": "2021-12", "preset": "op-ark", "top": 50}  # the repeated (cache-hit) query


def distinct_queries(n: int = QUERY_REPEATS) -> list[dict]:
    """``n`` op-ark top-50 res-10 queries with distinct 6-12 month windows in 2019-12..2022-10, in a fixed order."""
    from bench.load_test import Distinct

    d = Distinct()
    return [{**d.next("top50"), "dataset": "bench"} for _ in range(n)]


def _p50_p90(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return 1000 * statistics.median(times), 1000 * times[int(0.9 * len(times)) - 1]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_floor(path: str) -> dict:
    import pyarrow.csv as pacsv

    t = time.perf_counter()
    table = pacsv.read_csv(path)
    return {"seconds": time.perf_counter() - t, "rows": table.num_rows, "rss_mb": _rss_mb()}


def step_ingest(path: str, store_path: str) -> dict:
    from geodata.harm import load_open_default
    from geodata.ingest import parse_files
    from geodata.store import Store

    t = time.perf_counter()
    parsed = parse_files([(path, None)])
    t_parse = time.perf_counter() - t
    store = Store(store_path)
    store.save_weights(load_open_default())
    t2 = time.perf_counter()
    report = store.ingest("bench", parsed)
    t_store = time.perf_counter() - t2
    store.close()
    total = time.perf_counter() - t
    return {"seconds": total, "parse_seconds": t_parse, "store_seconds": t_store, "rows": report.read,
            "stored": report.stored, "rss_mb": _rss_mb()}


def step_naive_ingest(path: str, store_path: str) -> dict:
    import duckdb
    import geopandas as gpd
    import h3
    import pandas as pd

    t = time.perf_counter()
    df = pd.read_csv(path, dtype={"Crime ID": str})
    df = df.dropna(subset=["Longitude", "Latitude"])
    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df.Longitude, df.Latitude), crs=4326).to_crs(27700)
    df["x"], df["y"] = gdf.geometry.x, gdf.geometry.y
    cells = [h3.latlng_to_cell(la, lo, 11) for la, lo in zip(df.Latitude, df.Longitude)]
    df["h3_11"] = cells
    for r in (7, 8, 9, 10):
        df[f"h3_{r}"] = [h3.cell_to_parent(c, r) for c in cells]
    con = duckdb.connect(store_path)
    con.register("df", df.drop(columns=["geometry"], errors="ignore"))
    con.execute("CREATE TABLE offences AS SELECT * FROM df")
    con.close()
    return {"seconds": time.perf_counter() - t, "rows": len(df), "rss_mb": _rss_mb()}


def step_query(store_path: str) -> dict:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from geodata.settings import Settings

    settings = Settings(data_dir=Path(store_path).parent, load_sample=False, audit=False)
    distinct, cached = [], []
    with TestClient(create_app(settings)) as client:
        def timed(params: dict) -> float:
            t = time.perf_counter()
            r = client.get("/hotspots", params=params)
            dt = time.perf_counter() - t
            assert r.status_code == 200, r.text
            return dt

        cache_query = {"dataset": "bench", **CACHED}
        timed(cache_query)  # warm-up: the store, the plan's look-ups, and the cached query's result
        queries = distinct_queries()
        for q in queries:
            distinct.append(timed(q))
        for _ in range(QUERY_REPEATS):
            cached.append(timed(cache_query))
        cells = len(client.get("/hotspots", params=queries[-1]).json()["cells"])
    p50, p90 = _p50_p90(distinct)
    hit50, hit90 = _p50_p90(cached)
    return {"p50_ms": p50, "p90_ms": p90, "queries": len(queries), "cache_hit_p50_ms": hit50,
            "cache_hit_p90_ms": hit90, "cells": cells, "rss_mb": _rss_mb()}


def step_naive_query(path: str) -> dict:
    import h3
    import pandas as pd

    from geodata.harm import load_open_default

    df = pd.read_csv(path, dtype={"Crime ID": str}).dropna(subset=["Longitude", "Latitude"])
    df["h3_10"] = [h3.latlng_to_cell(la, lo, 10) for la, lo in zip(df.Latitude, df.Longitude)]
    weights = load_open_default().by_category
    times = []
    for q in distinct_queries(NAIVE_REPEATS):  # the engine's first windows
        t = time.perf_counter()
        sel = df[(df.Month >= q["from"]) & (df.Month <= q["to"])
                 & df["Crime type"].isin(["Violence and sexual offences", "Robbery", "Drugs"])]
        harm = sel["Crime type"].map(weights)
        top = harm.groupby(sel["h3_10"]).agg(["sum", "count"]).sort_values("sum", ascending=False).head(50)
        _ = [h3.cell_to_boundary(c) for c in top.index]
        times.append(time.perf_counter() - t)
    return {"p50_ms": 1000 * statistics.median(times), "rss_mb": _rss_mb()}


STEPS = {"floor": step_floor, "ingest": step_ingest, "naive_ingest": step_naive_ingest, "query": step_query,
         "naive_query": step_naive_query}


def run_step(name: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.bench_core", name, *args], capture_output=True, text=True,
                         timeout=1800, cwd=Path(__file__).resolve().parent.parent)
    if out.returncode != 0:
        raise RuntimeError(f"bench step {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    from bench.data import resampled_csv

    results: dict = {}
    for n in SIZES:
        path = str(resampled_csv(n))
        with tempfile.TemporaryDirectory() as tmp:
            store = str(Path(tmp) / "harmspot.duckdb")
            naive_store = str(Path(tmp) / "naive.duckdb")
            res = {"floor": run_step("floor", path), "ingest": run_step("ingest", path, store),
                   "naive_ingest": run_step("naive_ingest", path, naive_store)}
            ticks = cpu_ticks()
            res["query"] = run_step("query", store)
            res["query"]["steal_pct"] = steal_pct(ticks, cpu_ticks())
            res["naive_query"] = run_step("naive_query", path)
        results[n] = res
        print(f"{n:>9,}: {json.dumps(res)}", file=sys.stderr)
    return results


def markdown(results: dict) -> str:
    lines = ["| offences | floor: pyarrow read | harmspot ingest | naive ingest | harmspot / naive | "
             "harmspot / floor | peak RSS ingest |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in results.items():
        rate = lambda s: r["ingest"]["rows"] / s  # noqa: E731
        lines.append(
            f"| {n:,} | {rate(r['floor']['seconds']):,.0f} rows/s | {rate(r['ingest']['seconds']):,.0f} rows/s "
            f"({r['ingest']['parse_seconds']:.2f} s parse+validate+H3, {r['ingest']['store_seconds']:.2f} s store) | "
            f"{rate(r['naive_ingest']['seconds']):,.0f} rows/s | "
            f"{r['naive_ingest']['seconds'] / r['ingest']['seconds']:.1f}x faster | "
            f"{r['ingest']['seconds'] / r['floor']['seconds']:.1f}x the floor's time | {r['ingest']['rss_mb']:,.0f} MB |")
    lines += ["", "| offences | `/hotspots` top-50 p50, distinct queries (HTTP, in-process) | p90 | "
              "naive pandas group-by p50 | naive / harmspot | cache hit p50 (one query repeated) | peak RSS query | "
              "CPU time taken by the VM's host during the query step (steal) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in results.items():
        steal = r["query"].get("steal_pct")
        lines.append(f"| {n:,} | {r['query']['p50_ms']:.1f} ms | {r['query']['p90_ms']:.1f} ms | "
                     f"{r['naive_query']['p50_ms']:.1f} ms | {r['naive_query']['p50_ms'] / r['query']['p50_ms']:.1f}x | "
                     f"{r['query']['cache_hit_p50_ms']:.1f} ms | {r['query']['rss_mb']:,.0f} MB | "
                     f"{'' if steal is None else f'{steal:.1f} %'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    print(json.dumps(STEPS[name](*args)))
