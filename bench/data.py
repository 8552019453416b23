"""Benchmark inputs: real data.police.uk rows resampled (with replacement) to a target size, with fresh ids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
LEICS = ROOT.parent / "shared" / "data" / "crime" / "leicestershire_street_2019-12_to_2022-10.csv.gz"
OUT = ROOT / "bench" / "out"


def resampled_csv(n: int, seed: int = 7) -> Path:
    """A police.uk-format CSV of ``n`` rows drawn from the real Leicestershire file (located rows only)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"leics_resampled_{n}.csv"
    if path.exists():
        return path
    table = pacsv.read_csv(LEICS, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in ["Crime ID", "Month", "Longitude", "Latitude", "LSOA code", "Context"]}))
    table = table.filter(pc.and_(pc.invert(pc.is_null(table["Longitude"])), pc.greater(pc.utf8_length(table["Longitude"]), 0)))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, table.num_rows, n)
    sample = table.take(pa.array(idx))
    ids = pa.array([f"bench-{i:09d}" for i in range(n)])
    sample = sample.set_column(sample.schema.get_field_index("Crime ID"), "Crime ID", ids)
    pacsv.write_csv(sample, path)
    return path
