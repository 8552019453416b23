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

from geodata.cells import bbox_mask
from geodata.harm import WeightsTable
from geodata.store import Store
from hotspots.ranking.context import add_street_context
from hotspots.ranking.harmspots import (HotspotResult, assemble_result, forecast_part, key_weights, rank_cells,
                                       rank_forecast)
from hotspots.ranking.plan import DatasetInfo, QueryPlan, resolve_plan, study_area_name
from hotspots.ranking.query import HotspotQuery

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

    @classmethod
    def from_plan(cls, plan: QueryPlan) -> "FilterSpec":
        """The plan's selection and scope as plain values (the same WHERE as QueryPlan.base_sql)."""
        q, p, keys = plan.query, plan.preset, plan.keys
        rob = plan.robbery_keys
        return cls(
            start=pd.Timestamp(plan.start), end=pd.Timestamp(plan.end), keys=keys["offence_key"].to_numpy(np.int64),
            days=keys["days"].to_numpy(float), exact=keys["exact"].to_numpy(bool), resolution=q.resolution,
            require_public_place=bool(p and p.require_public_place), exclude_domestic=bool(p and p.exclude_domestic),
            victim_age_range=tuple(int(v) for v in p.victim_age_range) if p and p.victim_age_range else None,
            robbery_keys=rob if len(rob) else None, nte=bool(p and p.nte), dow=tuple(q.days) if q.days else None,
            hours=tuple(q.hours) if q.hours else None, bbox=q.bbox, area_cells=plan.area_cells)

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
    """Exactly the SQL of harm_spots (QueryPlan.base_sql), with SQL NULL logic spelled out (coalesce -> fillna)."""
    return _scope(df, spec) & _selection(df, spec)


def _scope(df: pd.DataFrame, spec: FilterSpec) -> np.ndarray:
    """QueryPlan.scope_sql: period, days/hours, bbox, area - every record type."""
    m = np.array((df["occurred_from"] >= spec.start) & (df["occurred_to"] <= spec.end), dtype=bool)  # writable
    dow = pd.to_numeric(df["dow"], errors="coerce")
    hour = pd.to_numeric(df["hour"], errors="coerce")
    if spec.dow:
        m &= dow.isin(spec.dow).to_numpy(bool)
    if spec.hours:
        m &= hour.isin(spec.hours).to_numpy(bool)
    if spec.bbox:
        m &= bbox_mask(df["lon"].to_numpy(float), df["lat"].to_numpy(float), spec.bbox)
    if spec.area_cells is not None:
        m &= np.isin(df["h3_10"].to_numpy(np.uint64), spec.area_cells)
    return m


def _selection(df: pd.DataFrame, spec: FilterSpec) -> np.ndarray:
    """QueryPlan.selection_sql: the selected offence keys and the preset's conditions."""
    m = np.isin(df["offence_key"].to_numpy(), spec.keys)
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
    return m


def _weights(keys: np.ndarray, spec: FilterSpec) -> tuple[np.ndarray, np.ndarray]:
    return key_weights(spec.keys, spec.days, spec.exact, keys)


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


_FORECAST_META = pd.DataFrame({"cell": pd.Series(dtype="uint64"), "t": pd.Series(dtype="datetime64[ns]"),
                               "harm": pd.Series(dtype="float64"), "records": pd.Series(dtype="int64")})


def _partial_forecast(df: pd.DataFrame, spec: FilterSpec) -> pd.DataFrame:
    """One partition -> per (cell, day) selected harm and count of ALL records in the scope (the forecast)."""
    scope = _scope(df, spec)
    sel = df.loc[scope]
    if sel.empty:
        return _FORECAST_META.copy()
    chosen = _selection(df, spec)[scope]
    days = np.zeros(len(sel))
    if chosen.any():
        days[chosen], _ = _weights(sel["offence_key"].to_numpy()[chosen], spec)
    part = pd.DataFrame({"cell": sel[f"h3_{spec.resolution}"].to_numpy(np.uint64),
                         "t": pd.to_datetime(sel["occurred_from"]).dt.floor("D").astype("datetime64[ns]").to_numpy(),
                         "harm": days, "records": np.ones(len(sel), dtype=np.int64)})
    return part.groupby(["cell", "t"], as_index=False, sort=False).sum()


def dask_harm_spots(store: Store, parquet_dir: Path | str, q: HotspotQuery,
                    default_weights: WeightsTable, default_method: str = "observed") -> HotspotResult:
    """``harm_spots`` on Dask: same query, same plan, same result, offences read from partitioned Parquet.

    Runs on the active ``distributed.Client`` if there is one, else Dask's local threaded scheduler."""
    import dask

    store.require_dataset(q.dataset)
    parquet_dir = Path(parquet_dir)
    # the dataset's span and whether it is month-only, measured on the cluster; the rest of the plan from the store
    meta = _read(parquet_dir, q.dataset, ["occurred_from", "occurred_to", "precision"])
    first, last, not_month = dask.compute(meta["occurred_from"].min(), meta["occurred_to"].max(),
                                          ((meta["precision"] != "month") & ~meta["precision"].isna()).sum())
    info = DatasetInfo(None if pd.isna(first) else pd.Timestamp(first).to_pydatetime(),
                       None if pd.isna(last) else pd.Timestamp(last).to_pydatetime(), int(not_month) == 0,
                       study_area_name(store, q.dataset))
    plan = resolve_plan(store, q, default_weights, default_method=default_method, info=info)
    result = run_plan_dask(plan, parquet_dir)
    # the returned cells' location texts from the store (one scan restricted to those few cells)
    top_n = len(result.cells) if q.top is None else min(q.top, len(result.cells))
    result.cells = add_street_context(store, plan, result.cells, top_n)
    return result


def run_plan_dask(plan: QueryPlan, parquet_dir: Path | str) -> HotspotResult:
    """The Dask executor of a resolved plan."""
    import dask

    q = plan.query
    spec = FilterSpec.from_plan(plan)
    # months that can hold records in [start, end): prune partitions before any file is opened
    last_month = (pd.Timestamp(plan.end) - pd.Timedelta(microseconds=1)).strftime("%Y-%m")
    ddf = _read(Path(parquet_dir), q.dataset, spec.columns(), (pd.Timestamp(plan.start).strftime("%Y-%m"), last_month))
    cells = ddf.map_partitions(_partial_cells, spec, meta=_AGG_META)
    flags = ddf.map_partitions(_partial_flags, spec, meta=_FLAG_META)
    todo = [cells.groupby("cell").sum(split_out=1), flags.groupby("precision", dropna=False).sum(split_out=1)]
    if plan.method == "forecast":
        todo.append(ddf.map_partitions(_partial_forecast, spec, meta=_FORECAST_META)
                    .groupby(["cell", "t"]).sum(split_out=1))
    done = dask.compute(*todo)
    agg = done[0].reset_index()[["cell", "harm", "count", "exact_harm"]]
    fc = None
    if plan.method == "forecast":
        f = done[2].reset_index()
        fc = forecast_part(plan, f["cell"].to_numpy(np.uint64), f["t"].to_numpy(), f["harm"].to_numpy(float),
                           f["records"].to_numpy(float))
        agg = rank_forecast(agg, fc[0])
    else:
        agg = rank_cells(agg, q.rank_by)
    flag_frame = done[1].reset_index()

    top_n = len(agg) if q.top is None else min(q.top, len(agg))
    top = agg["cell"].to_numpy(np.uint64)[:top_n]
    by_key = ddf.map_partitions(_partial_labels, spec, top, meta=_LABEL_META).groupby(["cell", "offence_key"]).sum()
    by_key = by_key.compute().reset_index()
    labels = _label(plan, by_key)
    return assemble_result(plan, agg, flag_frame, labels, fc[1] if fc is not None else None)


def _label(plan: QueryPlan, by_key: pd.DataFrame) -> pd.DataFrame:
    """(cell, offence key) sums -> (cell, offence label) sums; label = offence group, else police.uk category."""
    if by_key.empty:
        return pd.DataFrame({"cell": pd.Series(dtype="uint64"), "offence": pd.Series(dtype="object"),
                             "harm": pd.Series(dtype="float64"), "count": pd.Series(dtype="int64")})
    keys = pd.DataFrame({"offence_key": plan.keys["offence_key"].to_numpy(np.int64),
                         "offence": plan.keys["offence_group"].where(plan.keys["offence_group"].notna(),
                                                                     plan.keys["category"]).to_numpy(object)})
    merged = by_key.merge(keys, on="offence_key", how="left")
    return merged.groupby(["cell", "offence"], as_index=False)[["harm", "count"]].sum()
