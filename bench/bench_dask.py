"""Dask executor scaling: the same harm-spot queries on 1 and 2 local workers, against the embedded engine.

    .venv/bin/python -m bench.bench_dask                # 1,000,000 offences (the load-test store)
    .venv/bin/python -m bench.bench_dask --offences 100000

Uses the store built by bench/load_test.py (real Leicestershire rows resampled), exports it to Parquet
partitioned by dataset/month, and times each query (median of 3 after a warm-up) on a LocalCluster of 1 and of 2
single-threaded worker processes, checking every Dask result equals the embedded one. Writes
docs/benchmarks-dask.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.load_test import DATASET, OUT, ROOT, build_store, machine

QUERIES = {
    "op-ark, last month (default), res 10": {"preset": "op-ark"},
    "all-crime, 35 months, res 9, top 100": {"preset": "all-crime", "from": "2019-12", "to": "2022-10",
                                             "resolution": 9, "top": 100},
    "community-violence, 2021, res 8, all cells": {"preset": "community-violence", "from": "2021-01",
                                                   "to": "2021-12", "resolution": 8, "top": None},
}


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def same(a, b) -> bool:
    ca, cb = a.top_cells, b.top_cells
    return (a.meta() == b.meta() and ca["h3"].tolist() == cb["h3"].tolist()
            and ca["count"].tolist() == cb["count"].tolist()
            and bool(np.allclose(ca["harm"], cb["harm"], rtol=1e-12, atol=1e-9)))


def main(argv: list[str] | None = None) -> int:
    import dask
    from distributed import Client, LocalCluster

    from app.state import load_weights
    from geodata.settings import Settings
    from geodata.store import Store
    from hotspots.executors.dask_backend import dask_harm_spots, export_parquet
    from hotspots.ranking.harmspots import harm_spots
    from hotspots.ranking.query import HotspotQuery

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--offences", type=int, default=1_000_000)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks-dask.md"))
    args = p.parse_args(argv)
    data_dir, info = build_store(args.offences)
    store = Store(data_dir / "harmspot.duckdb")
    weights = load_weights(Settings(data_dir=data_dir), store)
    parquet = OUT / f"parquet_{args.offences}"
    t = time.perf_counter()
    exported = export_parquet(store, parquet)
    export_s = time.perf_counter() - t
    size_mb = sum(f.stat().st_size for f in parquet.rglob("*.parquet")) / 1e6
    rows: list[tuple[str, float, float, float, float, bool]] = []
    queries = {name: HotspotQuery.model_validate({"dataset": DATASET, **q}) for name, q in QUERIES.items()}
    embedded = {name: timed(lambda q=q: harm_spots(store, q, weights)) for name, q in queries.items()}
    with dask.config.set(scheduler="threads"):
        threads = {name: timed(lambda q=q: dask_harm_spots(store, parquet, q, weights)) for name, q in queries.items()}
    results: dict[int, dict[str, float]] = {}
    identical = {name: True for name in queries}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster):
            results[workers] = {}
            for name, q in queries.items():
                results[workers][name] = timed(lambda q=q: dask_harm_spots(store, parquet, q, weights))
                identical[name] &= same(harm_spots(store, q, weights), dask_harm_spots(store, parquet, q, weights))
    store.close()
    for name in queries:
        rows.append((name, embedded[name], threads[name], results[1][name], results[2][name], identical[name]))
        print(f"{name}: embedded {embedded[name]:.3f}s  dask-threads {threads[name]:.3f}s  "
              f"1 worker {results[1][name]:.3f}s  2 workers {results[2][name]:.3f}s  identical={identical[name]}")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join(f"| {n} | {e:.2f} s | {th:.2f} s | {w1:.2f} s | {w2:.2f} s | {w1 / w2:.2f}x | "
                      f"{'yes' if ok else 'NO'} |" for n, e, th, w1, w2, ok in rows)
    Path(args.out).write_text(f"""# Dask executor: scaling at 1 and 2 workers

Measured {date} by `bench/bench_dask.py` (`.venv/bin/python -m bench.bench_dask`).

- **Machine**: {machine()}.
- **Data**: {exported['rows']:,} offences (real data.police.uk Leicestershire rows 2019-12..2022-10, resampled
  with replacement), exported in {export_s:.1f} s to {exported['partitions']} Parquet partitions
  (dataset/month, zstd, {size_mb:.0f} MB) by `harmspot export-parquet`.
- **Method**: median of 3 runs after a warm-up. `dask_harm_spots` on a `distributed.LocalCluster` of 1 and of 2
  worker processes with one thread each (loopback only), Dask's in-process threaded scheduler, and the embedded
  DuckDB engine for reference. Every Dask result was checked equal to the embedded one (same metadata, cells,
  ranks, counts; harm within 1e-9).

| query | embedded (DuckDB) | Dask, threads | Dask, 1 worker | Dask, 2 workers | speed-up 1 -> 2 | identical |
|---|---:|---:|---:|---:|---:|:---:|
{table}

Reading the figures: on one machine with {__import__('os').cpu_count()} CPUs, the embedded engine wins by a wide
margin. DuckDB is a vectorised multi-threaded engine reading its own columnar file, and at a million rows the
query is tens of milliseconds; Dask pays for task scheduling, process-to-process transfer and Parquet decoding
of each partition. The Dask executor is not there to beat DuckDB on a laptop: it is there for data that does not
fit one machine's store (all 43 forces, years of records: ~6 million crimes a year in England and Wales), where
partitions are read in parallel by many workers close to the data. The 1 -> 2 worker speed-up shows the
per-partition work does divide between workers; on this 2-CPU machine the client, scheduler and the workers
share the same two cores, so it understates what separate machines would give. See docs/scale-out.md.
""")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
