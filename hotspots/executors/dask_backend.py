"""A second executor of the same :class:`HotspotQuery`: dask.dataframe over partitioned Parquet.

The embedded engine (hotspots.ranking.harmspots) filters and groups offences inside DuckDB. For national data (every
force, years of records) the same query runs here on a Dask cluster instead:

1. :func:`export_parquet` writes the store's offences as a hive-partitioned Parquet dataset,
   ``<dir>/dataset=<name>/month=<YYYY-MM>/*.parquet`` (DuckDB ``COPY ... PARTITION_BY``, streamed, no pandas
   frame of the whole table). Forces can equally write their own partitions in this layout.
2. :func:`dask_harm_spots` reads only the partitions the query needs (``dd.read_parquet`` with partition
   filters on dataset and month, and only the needed columns), applies the same filter as the SQL of the
   embedded engine partition by partition, reduces to per-cell partial sums, and combines them with a Dask
   group-by. Small tables (weights, offence keys, area cells) come from the store.
3. The per-cell aggregates go through :func:`hotspots.ranking.harmspots.assemble_result`, the same code the
   embedded engine uses, so concentration, caveats and ranking exist once; results are identical
   (tests/test_dask.py).

Never ``from_pandas``/``from_geopandas`` on a big frame: the data stays in Parquet until a worker reads its
partition. See docs/scale-out.md for the plan on a real cluster.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geodata.harm import WeightsTable
from geodata.store import Store
from hotspots.ranking.harmspots import (HotspotResult, area_filter, offence_selection, assemble_result, rank_cells,
                                resolve_period)
from hotspots.ranking.presets import select_keys
from hotspots.ranking.query import HotspotQuery

ROBBERY_GROUPS = ("robbery", "robbery_personal", "robbery_business")
FLAG_COLUMNS = ["n", "no_public", "no_domestic", "no_age", "no_knife", "no_nte"]


def export_parquet(store: Store, out_dir: Path | str, datasets: list[str] | None = None) -> dict:
    """Write offences as ``out_dir/dataset=<name>/month=<YYYY-MM>/`` Parquet; returns rows and partitions."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    where, params = "", []
    if datasets:
        for name in datasets:
            store.require_dataset(name)
        where, params = f"WHERE dataset IN ({','.join('?' * len(datasets))})", list(datasets)
    cur = store.cursor()
    try:
        n = cur.execute(f"SELECT count(*) FROM offences {where}", params).fetchall()[0][0]
        path = str(out).replace("'", "''")
        cur.execute(f"""COPY (SELECT *, strftime(occurred_from, '%Y-%m') AS month FROM offences {where})
                        TO '{path}' (FORMAT PARQUET, PARTITION_BY (dataset, month), COMPRESSION zstd)""", params)
    finally:
        cur.close()
    parts = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("dataset=*/month=*/*.parquet"))
    return {"rows": int(n), "partitions": len(set(parts)), "path": str(out)}


@dataclass(frozen=True)
class FilterSpec:
    """The embedded engine's WHERE clause as plain values (picklable, shipped to every worker)."""

    start: pd.Timestamp
    end: pd.Timestamp
    keys: np.ndarray  # offence keys selected
    days: np.ndarray  # weight (CCHI days) per selected key, aligned with keys
    exact: np.ndarray  # exact (HO code) flag per selected key
    resolution: int
    require_public_place: bool = False
    exclude_domestic: bool = False
    victim_age_range: tuple[int, int] | None = None
    robbery_keys: np.ndarray | None = None  # robbery keys needing a weapon flag
    nte: bool = False
    dow: tuple[int, ...] | None = None
    hours: tuple[int, ...] | None = None
    bbox: tuple[float, float, float, float] | None = None
    area_cells: np.ndarray | None = None  # res-10 cells of the area

    def columns(self) -> list[str]:
        cols = ["offence_key", "occurred_from", "occurred_to", "precision", "dow", "hour", "public_place",
                "domestic", "victim_age", "knife", "nte", f"h3_{self.resolution}"]
        if self.bbox:
            cols += ["lon", "lat"]
        if self.area_cells is not None and self.resolution != 10:
            cols.append("h3_10")
        return cols


def _flag(s: pd.Series) -> pd.Series:
    return s.astype("boolean")


def _mask(df: pd.DataFrame, spec: FilterSpec) -> np.ndarray:
    """Exactly the SQL of harm_spots, with SQL NULL logic spelled out (coalesce -> fillna)."""
    m = np.array((df["occurred_from"] >= spec.start) & (df["occurred_to"] <= spec.end), dtype=bool)  # writable
    m &= np.isin(df["offence_key"].to_numpy(), spec.keys)
    if spec.require_public_place:
        m &= _flag(df["public_place"]).fillna(True).to_numpy(bool)
    if spec.exclude_domestic:
        m &= ~_flag(df["domestic"]).fillna(False).to_numpy(bool)
    age = pd.to_numeric(df["victim_age"], errors="coerce")
    if spec.victim_age_range is not None:
        lo, hi = spec.victim_age_range
        m &= (age.isna() | ((age >= lo) & (age <= hi))).to_numpy(bool)
    if spec.robbery_keys is not None and len(spec.robbery_keys):
        knife = _flag(df["knife"]).fillna(False).to_numpy(bool)
        m &= ~np.isin(df["offence_key"].to_numpy(), spec.robbery_keys) | knife
    dow = pd.to_numeric(df["dow"], errors="coerce")
    hour = pd.to_numeric(df["hour"], errors="coerce")
    if spec.nte:
        nte = _flag(df["nte"])
        window = hour.isna() | (dow.isin([4, 5]) & (hour >= 20)) | (dow.isin([5, 6]) & (hour < 6))
        m &= (nte.fillna(False) | (nte.isna() & window)).to_numpy(bool)
    if spec.dow:
        m &= dow.isin(spec.dow).to_numpy(bool)
    if spec.hours:
        m &= hour.isin(spec.hours).to_numpy(bool)
    if spec.bbox:
        x0, y0, x1, y1 = spec.bbox
        lon, lat = df["lon"].to_numpy(float), df["lat"].to_numpy(float)
        m &= (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)
    if spec.area_cells is not None:
        m &= np.isin(df["h3_10"].to_numpy(np.uint64), spec.area_cells)
    return m


def _weights(keys: np.ndarray, spec: FilterSpec) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(spec.keys)
    pos = order[np.searchsorted(spec.keys[order], keys)]
    return spec.days[pos], spec.exact[pos]


_AGG_META = pd.DataFrame({"cell": pd.Series(dtype="uint64"), "harm": pd.Series(dtype="float64"),
                          "count": pd.Series(dtype="int64"), "exact_harm": pd.Series(dtype="float64")})
_FLAG_META = pd.DataFrame({"precision": pd.Series(dtype="object"),
                           **{c: pd.Series(dtype="int64") for c in FLAG_COLUMNS}})
_LABEL_META = pd.DataFrame({"cell": pd.Series(dtype="uint64"), "offence_key": pd.Series(dtype="int64"),
                            "harm": pd.Series(dtype="float64"), "count": pd.Series(dtype="int64")})


def _partial_cells(df: pd.DataFrame, spec: FilterSpec) -> pd.DataFrame:
    """One partition -> per-cell partial sums of harm, count and exact harm."""
    sel = df.loc[_mask(df, spec)]
    if sel.empty:
        return _AGG_META.copy()
    days, exact = _weights(sel["offence_key"].to_numpy(), spec)
    part = pd.DataFrame({"cell": sel[f"h3_{spec.resolution}"].to_numpy(np.uint64), "harm": days,
                         "count": np.ones(len(sel), dtype=np.int64), "exact_harm": np.where(exact, days, 0.0)})
    return part.groupby("cell", as_index=False, sort=False).sum()


def _partial_flags(df: pd.DataFrame, spec: FilterSpec) -> pd.DataFrame:
    sel = df.loc[_mask(df, spec)]
    if sel.empty:
        return _FLAG_META.copy()
    flags = pd.DataFrame({
        "precision": sel["precision"].astype(object).to_numpy(), "n": 1,
        "no_public": sel["public_place"].isna().to_numpy(np.int64),
        "no_domestic": sel["domestic"].isna().to_numpy(np.int64),
        "no_age": sel["victim_age"].isna().to_numpy(np.int64),
        "no_knife": sel["knife"].isna().to_numpy(np.int64),
        "no_nte": (sel["nte"].isna() & sel["hour"].isna()).to_numpy(np.int64)})
    return flags.groupby("precision", as_index=False, sort=False, dropna=False).sum()


def _partial_labels(df: pd.DataFrame, spec: FilterSpec, top: np.ndarray) -> pd.DataFrame:
    col = f"h3_{spec.resolution}"
    m = _mask(df, spec) & np.isin(df[col].to_numpy(np.uint64), top)
    sel = df.loc[m]
    if sel.empty:
        return _LABEL_META.copy()
    days, _ = _weights(sel["offence_key"].to_numpy(), spec)
    part = pd.DataFrame({"cell": sel[col].to_numpy(np.uint64), "offence_key": sel["offence_key"].to_numpy(np.int64),
                         "harm": days, "count": np.ones(len(sel), dtype=np.int64)})
    return part.groupby(["cell", "offence_key"], as_index=False, sort=False).sum()


def _read(parquet_dir: Path, dataset: str, columns: list[str], months: tuple[str, str] | None = None):
    import dask.dataframe as dd

    root = Path(parquet_dir) / f"dataset={dataset}"
    if not root.exists():
        from geodata.store import StoreError

        raise StoreError(f"dataset '{dataset}' is not in the Parquet export at {parquet_dir} "
                         "(run harmspot export-parquet)")
    filters = [("month", ">=", months[0]), ("month", "<=", months[1])] if months else None
    return dd.read_parquet(str(root), columns=columns, filters=filters, dataset={"partitioning": "hive"})


def dask_harm_spots(store: Store, parquet_dir: Path | str, q: HotspotQuery,
                    default_weights: WeightsTable) -> HotspotResult:
    """``harm_spots`` on Dask: same query, same result, offences read from partitioned Parquet.

    Runs on the active ``distributed.Client`` if there is one, else Dask's local threaded scheduler."""
    import dask

    store.require_dataset(q.dataset)
    parquet_dir = Path(parquet_dir)
    table = store.weights_table(q.weights) if q.weights else default_weights

    # period: the dataset's last record end and whether it is month-only, computed on the cluster
    meta = _read(parquet_dir, q.dataset, ["occurred_to", "precision"])
    last, not_month = dask.compute(meta["occurred_to"].max(),
                                   ((meta["precision"] != "month") & ~meta["precision"].isna()).sum())
    start, end, rule = resolve_period(q, last, int(not_month) == 0)

    preset, groups, cats = offence_selection(q)
    keys = store.key_weights(table)
    chosen = keys[select_keys(keys, groups, cats, q.include_asb)]
    _, _, domain_layer, domain_label, domain_ids = area_filter(store, q)
    area_cells = None
    if q.area:
        ph = ",".join("?" * len(domain_ids))
        area_cells = store.query_df(f"SELECT DISTINCT h3_10 FROM area_cells WHERE layer = ? AND feature_id IN ({ph})",
                                    [domain_layer, *domain_ids])["h3_10"].to_numpy(np.uint64)
    rob = None
    if preset is not None and preset.robbery_needs_weapon:
        rob = chosen.loc[chosen["offence_group"].isin(list(ROBBERY_GROUPS)), "offence_key"].to_numpy(np.int64)
    spec = FilterSpec(
        start=pd.Timestamp(start), end=pd.Timestamp(end), keys=chosen["offence_key"].to_numpy(np.int64),
        days=chosen["days"].to_numpy(float), exact=chosen["exact"].to_numpy(bool), resolution=q.resolution,
        require_public_place=bool(preset and preset.require_public_place),
        exclude_domestic=bool(preset and preset.exclude_domestic),
        victim_age_range=tuple(int(v) for v in preset.victim_age_range) if preset and preset.victim_age_range else None,
        robbery_keys=rob, nte=bool(preset and preset.nte), dow=tuple(q.days) if q.days else None,
        hours=tuple(q.hours) if q.hours else None, bbox=q.bbox, area_cells=area_cells)

    # months that can hold records in [start, end): prune partitions before any file is opened
    last_month = (pd.Timestamp(end) - pd.Timedelta(microseconds=1)).strftime("%Y-%m")
    ddf = _read(parquet_dir, q.dataset, spec.columns(), (pd.Timestamp(start).strftime("%Y-%m"), last_month))
    cells = ddf.map_partitions(_partial_cells, spec, meta=_AGG_META)
    flags = ddf.map_partitions(_partial_flags, spec, meta=_FLAG_META)
    agg, flag_frame = dask.compute(cells.groupby("cell").sum(split_out=1),
                                   flags.groupby("precision", dropna=False).sum(split_out=1))
    agg = rank_cells(agg.reset_index()[["cell", "harm", "count", "exact_harm"]], q.rank_by)
    flag_frame = flag_frame.reset_index()

    top_n = len(agg) if q.top is None else min(q.top, len(agg))
    top = agg["cell"].to_numpy(np.uint64)[:top_n]
    by_key = ddf.map_partitions(_partial_labels, spec, top, meta=_LABEL_META).groupby(["cell", "offence_key"]).sum()
    by_key = by_key.compute().reset_index()
    labels = _label(store, by_key)
    return assemble_result(store, q, table, start, end, rule, preset, chosen, agg, flag_frame, labels,
                           (domain_layer, domain_ids, domain_label))


def _label(store: Store, by_key: pd.DataFrame) -> pd.DataFrame:
    """(cell, offence key) sums -> (cell, offence label) sums; label = offence group, else police.uk category."""
    if by_key.empty:
        return pd.DataFrame({"cell": pd.Series(dtype="uint64"), "offence": pd.Series(dtype="object"),
                             "harm": pd.Series(dtype="float64"), "count": pd.Series(dtype="int64")})
    keys = store.query_df("SELECT offence_key, coalesce(offence_group, category) AS offence FROM offence_keys")
    merged = by_key.merge(keys, on="offence_key", how="left")
    return merged.groupby(["cell", "offence"], as_index=False)[["harm", "count"]].sum()
