"""National scale: ingest and `/hotspots` at 1 M, 10 M and 60 M offences, and the 60 M query on Dask.

    nice .venv/bin/python -m bench.bench_national                      # 1 M, 10 M, 60 M (about an hour)
    .venv/bin/python -m bench.bench_national --sizes 1000000,10000000  # a shorter run

Data: the real data.police.uk rows in ../shared/data/crime (Leicestershire 2019-22 and Essex 2024, located rows)
resampled with replacement: fresh Crime IDs (anti-social behaviour rows keep their empty id, so they get content
ids as downloads do), months spread evenly over ten years (2015-01..2024-12) in month order, as a decade of monthly
downloads concatenated, and each row moved with its whole
force's point cloud to one of 43 force-sized areas laid over England and Wales (so there are ~43x the distinct
map points of one force, as in national data). Files are written in chunks of 2 M rows (CSV, as downloaded) into
a temporary folder and deleted after the ingest.

Each ingest is ONE batch (all files, one transaction) through ``parse_stream`` + ``Store.ingest``, the path of
`harmspot ingest` and `POST /datasets`, in its own subprocess: time and peak RSS (``ru_maxrss`` of that process).
The query step opens the store in another subprocess and times `GET /hotspots` (top 50 cells, one month, the
default preset) through the FastAPI app with the in-process test client (no HTTP socket), 12 distinct months
after a warm-up so no result cache can answer; its peak RSS is that process's. At the largest size the store is
exported to Parquet and the same query runs on the Dask executor on 1 and 2 local worker processes.
Ratios are against the 1 M run of the same invocation. Writes docs/benchmarks-national.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CRIME = ROOT.parent / "shared" / "data" / "crime"
SOURCES = ["leicestershire_street_2019-12_to_2022-10.csv.gz", "essex_street_2024-01_to_2024-04.csv.gz"]
SIZES = (1_000_000, 10_000_000, 60_000_000)
FILE_ROWS = 2_000_000
DATASET = "national"
MONTHS = [f"{y}-{m:02d}" for y in range(2015, 2025) for m in range(1, 13)]
QUERY_MONTHS = [f"2019-{m:02d}" for m in range(1, 13)]


def _centres() -> np.ndarray:
    """43 force-area centres on a 7 x 7 grid over England and Wales (the first 43, west to east)."""
    lon = np.linspace(-4.0, 0.9, 7)
    lat = np.linspace(50.6, 55.0, 7)
    grid = np.array([(x, y) for y in lat for x in lon])
    return grid[:43]


def generate(n: int, out: Path, seed: int = 11) -> list[Path]:
    """``n`` resampled rows as police.uk CSV files of FILE_ROWS rows each."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    tables = []
    for name in SOURCES:
        t = pacsv.read_csv(CRIME / name, convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in ["Crime ID", "Month", "Longitude", "Latitude", "LSOA code",
                                                   "Context", "Last outcome category"]}))
        t = t.filter(pc.greater(pc.utf8_length(pc.fill_null(t["Longitude"], "")), 0))
        lon = pc.cast(t["Longitude"], pa.float64()).to_numpy()
        lat = pc.cast(t["Latitude"], pa.float64()).to_numpy()
        tables.append((t, lon, lat, np.median(lon), np.median(lat)))
    rng = np.random.default_rng(seed)
    centres = _centres()
    files = []
    done = 0
    out.mkdir(parents=True, exist_ok=True)
    while done < n:
        m = min(FILE_ROWS, n - done)
        src = rng.integers(0, len(tables), m)
        force = rng.integers(0, len(centres), m)
        parts = []
        for k, (t, lon, lat, clon, clat) in enumerate(tables):
            sel = np.flatnonzero(src == k)
            if not len(sel):
                continue
            idx = rng.integers(0, t.num_rows, len(sel))
            part = t.take(pa.array(idx))
            f = force[sel]
            new_lon = np.round(lon[idx] - clon + centres[f, 0], 6)
            new_lat = np.round(lat[idx] - clat + centres[f, 1], 6)
            ids = part["Crime ID"]
            has_id = pc.greater(pc.utf8_length(pc.fill_null(ids, "")), 0).to_numpy(zero_copy_only=False)
            fresh = np.char.add(f"n{seed}-", (done + sel).astype(str))
            ids = pa.array(np.where(has_id, fresh, ""), pa.string())
            forces = pa.array(np.char.add("Force ", f.astype(str)), pa.string())
            # a decade of monthly downloads, concatenated in month order: row i of n falls in month i*120/n
            month_idx = ((done + sel) * len(MONTHS)) // n
            month = pa.array(np.asarray(MONTHS, dtype=object)[month_idx], pa.string())
            part = (part.set_column(part.schema.get_field_index("Crime ID"), "Crime ID", ids)
                    .set_column(part.schema.get_field_index("Month"), "Month", month)
                    .set_column(part.schema.get_field_index("Longitude"), "Longitude",
                                pa.array(np.char.mod("%.6f", new_lon)))
                    .set_column(part.schema.get_field_index("Latitude"), "Latitude",
                                pa.array(np.char.mod("%.6f", new_lat)))
                    .set_column(part.schema.get_field_index("Reported by"), "Reported by", forces)
                    .set_column(part.schema.get_field_index("Falls within"), "Falls within", forces))
            parts.append(part)
        path = out / f"national-{done // FILE_ROWS:03d}.csv"
        pacsv.write_csv(pa.concat_tables(parts), path)
        files.append(path)
        done += m
    return files


# ---------------------------------------------------------------- steps, each in its own subprocess

def step_ingest(store_dir: str, files: list[str]) -> dict:
    from geodata.harm import load_open_default
    from geodata.ingest import parse_stream
    from geodata.settings import Settings

    phases = {"dedup_s": 0.0, "cells_s": 0.0, "insert_s": 0.0, "areas_s": 0.0}

    def timed(key, fn):
        def run(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                phases[key] += time.perf_counter() - t0
        return run

    # phase timings (the parse/validate share is the rest): wrap the store's own steps
    import geodata.store as gs

    gs._drop_duplicates = timed("dedup_s", gs._drop_duplicates)
    gs._insert_chunk = timed("insert_s", gs._insert_chunk)
    gs.Store._refresh_dataset_cells = timed("cells_s", gs.Store._refresh_dataset_cells)
    gs.derive_auto_areas = timed("areas_s", gs.derive_auto_areas)  # the post-ingest step (read at Store())
    settings = Settings(data_dir=Path(store_dir), max_inflated_mb=1 << 20, max_batch_rows=10**9)
    store = settings.open_store()
    store.save_weights(load_open_default())
    t = time.perf_counter()
    report = store.ingest(DATASET, parse_stream([(f, None) for f in files], limits=settings.ingest_limits()))
    seconds = time.perf_counter() - t
    store.close()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": seconds, "read": report.read, "stored": report.stored, "rejected": report.rejected,
            "duplicates": report.duplicates, "rss_mb": _rss_mb(), "cpu_s": cpu.ru_utime + cpu.ru_stime,
            **phases}


def step_query(store_dir: str) -> dict:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from geodata.settings import Settings

    settings = Settings(data_dir=Path(store_dir), load_sample=False, audit=False)
    times, cpu = [], []
    with TestClient(create_app(settings)) as client:
        warm = client.get("/hotspots", params={"dataset": DATASET, "from": "2018-06", "to": "2018-06", "top": 50})
        assert warm.status_code == 200, warm.text[:300]
        for month in QUERY_MONTHS:
            t, c = time.perf_counter(), time.process_time()
            r = client.get("/hotspots", params={"dataset": DATASET, "from": month, "to": month, "top": 50})
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            assert r.status_code == 200 and len(r.json()["cells"]) == 50, r.text[:300]
    return {"p50_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times),
            "cpu_p50_ms": 1000 * statistics.median(cpu), "rss_mb": _rss_mb()}


def step_dask(store_dir: str, parquet: str) -> dict:
    from distributed import Client, LocalCluster

    from app.state import load_weights
    from geodata.settings import Settings
    from hotspots.executors.dask_backend import dask_harm_spots, export_parquet
    from hotspots.ranking.harmspots import harm_spots
    from hotspots.ranking.query import HotspotQuery

    settings = Settings(data_dir=Path(store_dir))
    store = settings.open_store()
    weights = load_weights(settings, store)
    t = time.perf_counter()
    exported = export_parquet(store, Path(parquet))
    export_s = time.perf_counter() - t
    q = HotspotQuery.model_validate({"dataset": DATASET, "from": "2019-06", "to": "2019-06", "top": 50})
    embedded = harm_spots(store, q, weights)
    out = {"export_s": export_s, "partitions": exported["partitions"], "rows": exported["rows"]}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster):
            dask_harm_spots(store, Path(parquet), q, weights)  # warm-up
            times = []
            for _ in range(3):
                t = time.perf_counter()
                got = dask_harm_spots(store, Path(parquet), q, weights)
                times.append(time.perf_counter() - t)
            out[f"w{workers}_s"] = statistics.median(times)
            out[f"w{workers}_identical"] = (got.top_cells["h3"].tolist() == embedded.top_cells["h3"].tolist()
                                            and got.top_cells["count"].tolist() == embedded.top_cells["count"].tolist())
    store.close()
    out["rss_mb"] = _rss_mb()
    return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(step: str, *args: str) -> dict:
    """One step in a fresh interpreter; its JSON result on the last stdout line."""
    done = subprocess.run([sys.executable, "-m", "bench.bench_national", "--step", step, *args], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"step {step} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(n: int, work: Path, dask: bool, keep: bool = False) -> dict:
    data = work / f"csv_{n}"
    store_dir = work / f"store_{n}"
    t = time.perf_counter()
    files = generate(n, data)
    gen_s = time.perf_counter() - t
    csv_gb = sum(f.stat().st_size for f in files) / 1e9
    print(f"[{n:,}] generated {len(files)} files, {csv_gb:.1f} GB in {gen_s:.0f} s", file=sys.stderr, flush=True)
    ingest = _run("ingest", str(store_dir), *map(str, files))
    shutil.rmtree(data)
    print(f"[{n:,}] ingest {ingest}", file=sys.stderr, flush=True)
    store_gb = sum(f.stat().st_size for f in store_dir.iterdir() if f.is_file()) / 1e9
    query = _run("query", str(store_dir))
    print(f"[{n:,}] query {query}", file=sys.stderr, flush=True)
    result = {"n": n, "csv_gb": csv_gb, "store_gb": store_gb, "ingest": ingest, "query": query}
    if dask:
        parquet = work / f"parquet_{n}"
        result["dask"] = _run("dask", str(store_dir), str(parquet))
        print(f"[{n:,}] dask {result['dask']}", file=sys.stderr, flush=True)
        shutil.rmtree(parquet, ignore_errors=True)
    if not keep:
        shutil.rmtree(store_dir)
    return result


def markdown(results: list[dict], machine_text: str, date: str, shared_note: str) -> str:
    base = results[0]
    rate0 = base["ingest"]["read"] / base["ingest"]["seconds"]
    cpu0 = base["ingest"]["read"] / base["ingest"]["cpu_s"]
    q0 = base["query"]["p50_ms"]
    c0 = base["query"]["cpu_p50_ms"]
    rows, phases = [], []
    for r in results:
        g = r["ingest"]
        rate, cpu_rate = g["read"] / g["seconds"], g["read"] / g["cpu_s"]
        rows.append(f"| {r['n']:,} | {r['csv_gb']:.1f} GB | {g['seconds']:.0f} s | {rate:,.0f} rows/s "
                    f"({rate / rate0:.2f}x) | {cpu_rate:,.0f} rows/CPU-s ({cpu_rate / cpu0:.2f}x) | "
                    f"{g['rss_mb']:,.0f} MB | {r['store_gb']:.1f} GB | "
                    f"{r['query']['p50_ms']:.0f} ms ({r['query']['p50_ms'] / q0:.1f}x) | "
                    f"{r['query']['cpu_p50_ms']:.0f} ms ({r['query']['cpu_p50_ms'] / c0:.1f}x) | {r['query']['rss_mb']:,.0f} MB |")
        areas = g.get("areas_s", 0.0)
        rest = g["seconds"] - g["insert_s"] - g["dedup_s"] - g["cells_s"] - areas
        phases.append(f"| {r['n']:,} | {rest:.0f} s | {g['insert_s']:.0f} s | {g['dedup_s']:.1f} s | "
                      f"{g['cells_s']:.1f} s | {areas:.1f} s | {g['stored']:,} | {g['rejected']:,} | {g['duplicates']:,} |")
    top = results[-1]
    rate_top = top["ingest"]["read"] / top["ingest"]["seconds"]
    mark = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines = [
        "Measured by `bench/bench_national.py` (`nice .venv/bin/python -m bench.bench_national`).",
        "",
        f"- **Machine**: {machine_text}. {shared_note}",
        f"- **Date**: {date}.",
        "- **Data**: real data.police.uk rows (Leicestershire 2019-22, Essex 2024) resampled: fresh Crime IDs, "
        "months spread evenly over 2015-01..2024-12 in month order (a decade of monthly files), each row moved with its force's point cloud to one of 43 "
        "force-sized areas over England and Wales; CSV as downloaded, 2 M rows per file; one batch per size.",
        "- **Ingest**: `parse_stream` + `Store.ingest` (the path of `harmspot ingest` and `POST /datasets`), one "
        "transaction, in its own process; peak RSS is that process's `ru_maxrss`.",
        "- **Query**: `GET /hotspots?from=M&to=M&top=50` (default preset, res 10), in-process FastAPI test client "
        "(no socket), median of 12 distinct months after a warm-up, in a fresh process on the stored file; wall "
        "clock and the process's CPU time (all threads; robust to other jobs on a shared machine).",
        "",
        "| offences | CSV | ingest | rate (vs 1 M) | rate per CPU second (vs 1 M) | ingest peak RSS | store | "
        "`/hotspots` p50 (vs 1 M) | `/hotspots` CPU time p50 (vs 1 M) | query peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Where the ingest time goes (wall clock): reading, validating and indexing the chunks; appending them to "
        "the transaction; the de-duplication (one GROUP BY on a hash of the record id over the batch); the "
        "study-area cells (convex hull of the data polyfilled at res 10: ~16 M cells for this national hull, a "
        "fixed cost of the area, not of the rows); the automatic areas (post-ingest: districts and LSOAs from the "
        "records, geodata/auto_areas.py; a cost of the area covered plus one GROUP BY over the records).",
        "",
        "| offences | read + validate + H3 | insert | de-duplicate | study-area cells | automatic areas | stored | rejected | duplicates |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *phases,
        "",
    ]
    if "dask" in top:
        d = top["dask"]
        lines += [
            f"Dask executor at {top['n']:,} offences over the exported Parquet ({d['partitions']} partitions, export "
            f"{d['export_s']:.0f} s), the same one-month top-50 query, median of 3 after a warm-up: "
            f"1 worker {d['w1_s']:.2f} s, 2 workers {d['w2_s']:.2f} s, speed-up {d['w1_s'] / d['w2_s']:.2f}x; "
            f"top cells identical to the embedded engine: {d['w1_identical'] and d['w2_identical']}.",
            "",
        ]
    lines += [
        f"Targets (issue 14, stated for 60 M; checked here at the largest size run, {top['n']:,}): `/hotspots` <= 10x its 1 M time: "
        f"{top['query']['p50_ms'] / q0:.1f}x wall clock ({mark(top['query']['p50_ms'] <= 10 * q0)}), "
        f"{top['query']['cpu_p50_ms'] / c0:.1f}x CPU time ({mark(top['query']['cpu_p50_ms'] <= 10 * c0)}); ingest rate >= 80 % of "
        f"the 1 M rate: {rate_top / rate0:.0%} wall clock ({mark(rate_top >= 0.8 * rate0)}), "
        f"{top['ingest']['read'] / top['ingest']['cpu_s'] / cpu0:.0%} per CPU second "
        f"({mark(top['ingest']['read'] / top['ingest']['cpu_s'] >= 0.8 * cpu0)}); peak RSS <= 2 GB for any ingest: "
        f"{max(r['ingest']['rss_mb'] for r in results):,.0f} MB "
        f"({mark(max(r['ingest']['rss_mb'] for r in results) <= 2048)}); <= 4 GB during the {top['n']:,} query: "
        f"{top['query']['rss_mb']:,.0f} MB ({mark(top['query']['rss_mb'] <= 4096)}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--no-dask", action="store_true")
    p.add_argument("--work", default=None, help="folder for the generated data and stores (default: a temp dir)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks-national.md"))
    p.add_argument("--keep", action="store_true", help="keep each size's store in --work (to profile it)")
    p.add_argument("rest", nargs="*")
    args = p.parse_args(argv)
    if args.step:
        fn = {"ingest": lambda: step_ingest(args.rest[0], args.rest[1:]),
              "query": lambda: step_query(args.rest[0]),
              "dask": lambda: step_dask(args.rest[0], args.rest[1])}[args.step]
        print(json.dumps(fn()))
        return 0
    from bench.machine import machine

    sizes = [int(float(s)) for s in args.sizes.split(",")]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="harmspot-national-"))
    results = []
    try:
        for i, n in enumerate(sizes):
            results.append(measure(n, work, dask=(i == len(sizes) - 1 and not args.no_dask), keep=args.keep))
            (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
            (ROOT / "bench" / "out" / "national.json").write_text(json.dumps(results, indent=1))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    note = (f"The machine was shared with other developers' jobs (load average {load:.1f} on "
            f"{os.cpu_count()} CPUs at the end), so absolute times vary; the ratios are within this run.")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = markdown(results, machine(), date, note)
    Path(args.out).write_text("# National scale: 1 M to 60 M offences\n\n" + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
