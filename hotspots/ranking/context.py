"""Street context of ranked cells: the location texts a planner can navigate by, and the location artefacts.

For each returned cell (the top N, like its top offences), from the records the query selects in its period:

- ``top_locations``: up to :data:`TOP_LOCATIONS` most frequent location texts ("On or near " removed; ties by
  how often the text occurs among all the dataset's records in the cell, then by name). A cell whose selected
  records carry no text gets the texts of all the dataset's records in it.
- ``police_station_share``: share of those records mapped to a data.police.uk "Police Station" point (crimes
  recorded at the station, not committed in the street);
- ``generic_point_share``: share mapped to any generic snap point (:data:`geodata.locations.GENERIC_POINTS`:
  "Parking Area", "Supermarket"...), police stations included.

The records of a cell are a store-state fact, whatever the query: :class:`CellRecords` keeps, per store state,
the dataset's records of the cells asked for recently (grouped by every column the plan's WHERE can test, with
a count; bounded by :data:`CELL_RECORDS_MAX_ROWS`), and the query's own selection and period are then applied to
those few rows with the plan's own SQL (``scope_sql``/``selection_sql``, the same text the main scan runs). So a
distinct query costs no second scan of the offences once its returned cells have been seen (the hot cells of a
force are the same few hundred whatever the period or preset); a cell not seen yet costs one scan of the cells
missing. That holds for the patrol-spot resolutions (10 and 11, :data:`KEPT_MIN_RESOLUTION`); coarser cells hold
so many records that keeping them would be keeping most of the table, so their context is one scan of their
records, grouped by location text. The per-cell lists are then built in plain Python over the few grouped rows.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pandas as pd
import pyarrow as pa

from geodata.locations import GENERIC_POINTS, NO_LOCATION, POLICE_STATION, clean_location_sql
from geodata.store import Store
from hotspots.ranking.plan import QueryPlan

TOP_LOCATIONS = 3
CONTEXT_FIELDS = ["top_locations", "police_station_share", "generic_point_share"]
MAIN_LOCATION_RULE = ("a police-station cell is one whose main (most frequent) location text among its selected "
                      "records is 'Police Station': data.police.uk maps crimes recorded at a station to the "
                      "station's point")


# The offence columns the plan's scope and selection SQL may test (hotspots.ranking.plan: scope_sql,
# selection_sql); tests/test_street_context.py checks that every ``o.<column>`` they can write is listed.
PLAN_COLUMNS = ("dataset", "occurred_from", "occurred_to", "dow", "hour", "lon", "lat", "h3_10", "offence_key",
                "public_place", "domestic", "victim_age", "knife", "nte")
KEPT_MIN_RESOLUTION = 10  # CellRecords for res 10-11 (patrol-spot cells); coarser cells are read directly
PREFETCH_RANKS = 3  # a scan for missing cells also reads the next 3 x N ranked cells of the ranking
CELL_RECORDS_MAX_ROWS = 200_000  # grouped rows kept per store state (~25 MB); least recently used cells dropped


class CellRecords:
    """The dataset's records in recently asked-for cells, grouped by (cell, raw location, PLAN_COLUMNS) with a
    count ``n``: one Arrow table per (dataset, resolution, cell), least recently used dropped beyond
    :data:`CELL_RECORDS_MAX_ROWS`. One instance per store state (``Store.cached``), so a write never serves old
    rows. Thread-safe: the threadpool's requests share it."""

    def __init__(self, max_rows: int = CELL_RECORDS_MAX_ROWS):
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._cells: OrderedDict[tuple[str, int, int], pa.Table] = OrderedDict()
        self._rows = 0
        self.stats = {"cells_hit": 0, "cells_fetched": 0, "fetches": 0}

    def rows(self, store: Store, dataset: str, res: int, cells: np.ndarray,
             prefetch: np.ndarray | None = None) -> pa.Table:
        """The grouped records of ``cells`` (uint64 at ``res``): kept ones from memory, the others in one scan.
        When a scan is needed anyway, the cells of ``prefetch`` not kept yet are fetched in it too (the next
        ranks of the same ranking: the cells the next query over a neighbouring period returns)."""
        wanted = list(dict.fromkeys(int(c) for c in cells.tolist()))
        wanted_set = set(wanted)
        parts: dict[int, pa.Table] = {}
        with self._lock:
            for c in wanted:
                t = self._cells.get((dataset, res, c))
                if t is not None:
                    self._cells.move_to_end((dataset, res, c))
                    parts[c] = t
            self.stats["cells_hit"] += len(parts)
        missing = [c for c in wanted if c not in parts]
        if missing:
            if prefetch is not None and len(prefetch):
                with self._lock:
                    extra = [c for c in dict.fromkeys(int(x) for x in prefetch.tolist())
                             if c not in parts and (dataset, res, c) not in self._cells]
                missing = list(dict.fromkeys(missing + extra))
            fetched = _fetch_cells(store, dataset, res, np.array(missing, dtype=np.uint64))
            with self._lock:
                self.stats["fetches"] += 1
                self.stats["cells_fetched"] += len(missing)
                for c, t in fetched.items():
                    if c in wanted_set:
                        parts[c] = t
                    self._keep((dataset, res, c), t)
        # one table per cell, empty ones included, in one chunk: DuckDB scans a table of 50 small chunks
        # markedly slower than the same rows in one
        return pa.concat_tables([parts[c] for c in wanted]).combine_chunks()

    def _keep(self, key: tuple[str, int, int], table: pa.Table) -> None:
        if table.num_rows > self.max_rows // 4:  # one huge cell: used for this request only
            return
        old = self._cells.pop(key, None)
        if old is not None:
            self._rows -= old.num_rows
        self._cells[key] = table
        self._rows += table.num_rows
        while self._rows > self.max_rows and self._cells:
            _, dropped = self._cells.popitem(last=False)
            self._rows -= dropped.num_rows


def _fetch_sql(res: int) -> str:
    cols = ", ".join(f"o.{c}" for c in PLAN_COLUMNS)
    return (f"SELECT o.h3_{res} AS cell, o.location, {cols}, count(*) AS n FROM offences o "
            f"WHERE o.dataset = ? AND o.h3_{res} IN (SELECT cell FROM ctx_cells) GROUP BY ALL ORDER BY cell")


def _fetch_cells(store: Store, dataset: str, res: int, cells: np.ndarray) -> dict[int, pa.Table]:
    """One scan: every record of the dataset in ``cells``, grouped, split per cell (empty tables included)."""
    cur = store.cursor()
    try:
        cur.register("ctx_cells", pa.table({"cell": pa.array(cells, type=pa.uint64())}))
        rel = cur.sql(_fetch_sql(res), params=[dataset])
        table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()
    finally:
        cur.close()
    ids = np.asarray(table.column("cell").to_numpy(), dtype=np.uint64)
    out: dict[int, pa.Table] = {}
    for c in cells.tolist():
        lo, hi = np.searchsorted(ids, np.uint64(c), "left"), np.searchsorted(ids, np.uint64(c), "right")
        out[int(c)] = table.slice(int(lo), int(hi - lo))
    return out


def cell_records(store: Store) -> CellRecords:
    """This store state's :class:`CellRecords`."""
    return store.cached(("street_context_cell_records",), CellRecords)


def street_context(store: Store, plan: QueryPlan, cells: np.ndarray, prefetch: np.ndarray | None = None) -> pd.DataFrame:
    """One row per cell in ``cells`` (uint64 at the plan's resolution, same order): top_locations (list of str),
    police_station_share, generic_point_share (None when the cell has no selected record in the period).
    ``prefetch``: further cells whose records are worth keeping if the store has to be read anyway."""
    cells = np.asarray(cells, dtype=np.uint64)
    if not len(cells):
        return pd.DataFrame({"cell": cells}).assign(top_locations=pd.Series([], dtype=object),
                                                    police_station_share=np.nan, generic_point_share=np.nan)
    scope, params = plan.scope_sql()
    sel = plan.selection_sql()
    if plan.resolution < KEPT_MIN_RESOLUTION:  # big cells: one scan of their records (kept rows would be most of them)
        res = plan.resolution
        sql = _grouped_sql(scope, sel, "offences", cell=f"o.h3_{res}", records="count(*)",
                           where=f"WHERE o.dataset = ? AND o.h3_{res} IN (SELECT cell FROM ctx_cells)")
        grouped = _run(store, plan, sql, [*params, plan.query.dataset],
                       ctx_cells=pa.table({"cell": pa.array(cells, type=pa.uint64())}))
    else:  # the plan's own WHERE over the cells' kept grouped records (a row stands for ``n`` records)
        rows = cell_records(store).rows(store, plan.query.dataset, plan.resolution, cells, prefetch)
        grouped = _run(store, plan, _grouped_sql(scope, sel, "ctx_rows", cell="o.cell", records="sum(o.n)"), params,
                       ctx_rows=rows)
    return _assemble(cells, grouped)


def _grouped_sql(scope: str, sel: str, source: str, *, cell: str, records: str, where: str = "") -> str:
    """(cell, cleaned text, selected records, all records) of the rows of ``source`` (aliased ``o``; ``where``
    picks them), "selected" meaning in the plan's scope and selection. ``records``: what a row counts for
    (``count(*)`` over offences, ``sum(o.n)`` over kept grouped rows). Grouped by the raw text first and cleaned
    on the few grouped rows (cleaning every record's text with a regular expression was a third of a top-50
    query)."""
    return f"""WITH raw AS (
                SELECT {cell} AS cell, o.location AS location,
                       coalesce({records} FILTER (WHERE {scope} AND {sel}), 0) AS n_sel, {records} AS n_all
                FROM {source} o LEFT JOIN kw ON kw.offence_key = o.offence_key
                {where}
                GROUP BY 1, 2)
              SELECT cell, {clean_location_sql("location")} AS loc, sum(n_sel)::BIGINT AS n_sel,
                     sum(n_all)::BIGINT AS n_all
              FROM raw GROUP BY 1, 2"""


def _run(store: Store, plan: QueryPlan, sql: str, params: list, **tables: pa.Table) -> list[tuple]:
    """``sql`` with the plan's key weights (``kw``) and area, and ``tables`` registered under their names."""
    sql, params = plan.with_kw(sql, params)
    cur = store.cursor()
    try:
        plan.register_area(cur)
        for name, table in tables.items():
            cur.register(name, table)
        return cur.execute(sql, params).fetchall()
    finally:
        cur.close()


def _assemble(cells: np.ndarray, grouped: list[tuple]) -> pd.DataFrame:
    """One row per cell of ``cells`` (same order) with its context columns, from (cell, text, n_sel, n_all) rows."""
    per: dict[int, list[tuple[str, int, int]]] = {}
    for cell, loc, n_sel, n_all in grouped:
        per.setdefault(int(cell), []).append((loc, int(n_sel), int(n_all)))
    tops = np.empty(len(cells), dtype=object)  # lists in an object array: pandas would probe a list of lists
    ps_share, gp_share = np.full(len(cells), np.nan), np.full(len(cells), np.nan)
    for i, c in enumerate(cells.tolist()):
        tops[i], ps_share[i], gp_share[i] = _cell_context(per.get(c, []))
    return pd.DataFrame({"cell": cells, "top_locations": tops, "police_station_share": np.round(ps_share, 4),
                         "generic_point_share": np.round(gp_share, 4)})


_GENERIC = frozenset(n.lower() for n in GENERIC_POINTS)
_STATION = POLICE_STATION.lower()
_NO_LOCATION = NO_LOCATION.lower()


def _cell_context(items: list[tuple[str, int, int]]) -> tuple[list[str], float, float]:
    """(top_locations, police-station share, generic-point share) of one cell from its (text, selected records,
    all records) rows; shares NaN when the cell has no selected record."""
    n = sum(ns for _, ns, _ in items)
    ps = sum(ns for loc, ns, _ in items if loc.lower() == _STATION)
    gp = sum(ns for loc, ns, _ in items if loc.lower() in _GENERIC)
    texts = [t for t in items if t[0] != "" and t[0].lower() != _NO_LOCATION]
    if any(ns > 0 for _, ns, _ in texts):  # the selection's texts when it has any, else all records'
        texts = [t for t in texts if t[1] > 0]
    texts.sort(key=lambda t: (-t[1], -t[2], t[0]))
    share = (lambda k: k / n) if n > 0 else (lambda k: np.nan)
    return [t[0] for t in texts[:TOP_LOCATIONS]], share(ps), share(gp)


def context_columns(store: Store, plan: QueryPlan, ids: np.ndarray, top_n: int) -> dict[str, np.ndarray]:
    """The context columns for ranked cells ``ids`` (uint64, rank order): filled for the first ``top_n`` (the
    returned ones, as for top_offences), empty beyond. Reads the store only (no result frame), so it can run
    beside the result's assembly."""
    ids = np.asarray(ids, dtype=np.uint64)
    n = min(top_n, len(ids))
    ctx = street_context(store, plan, ids[:n], prefetch=ids[n:n + PREFETCH_RANKS * max(n, 1)])
    none: list = []
    tops = np.empty(len(ids), dtype=object)
    tops[:n] = ctx["top_locations"].to_numpy(dtype=object)
    tops[n:].fill(none)  # cells beyond the returned ones share one empty list
    columns: dict = {"top_locations": tops}
    for col in ("police_station_share", "generic_point_share"):
        values = np.full(len(ids), np.nan)
        values[:n] = ctx[col].to_numpy(float)
        columns[col] = values
    return columns


def add_street_context(store: Store, plan: QueryPlan, cells: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """``cells`` (a ranked result's cells) with the context columns (:func:`context_columns`)."""
    return cells.assign(**context_columns(store, plan, cells["cell"].to_numpy(np.uint64), top_n))


def police_station_cells(cells: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the police-station cells among ``cells`` (see :data:`MAIN_LOCATION_RULE`)."""
    if "top_locations" not in cells or cells.empty:  # no cells (an empty period or bbox): no station cells
        return np.zeros(len(cells), dtype=bool)
    main = cells["top_locations"].map(lambda v: v[0] if isinstance(v, list) and v else "").astype(str)
    at_station = cells["police_station_share"].fillna(0).to_numpy(float) > 0  # the text is the selection's own
    return (main.str.lower() == POLICE_STATION.lower()).to_numpy(bool) & at_station


__all__ = ["CELL_RECORDS_MAX_ROWS", "CONTEXT_FIELDS", "PLAN_COLUMNS", "CellRecords", "cell_records", "MAIN_LOCATION_RULE", "TOP_LOCATIONS", "add_street_context", "context_columns", "police_station_cells",
           "street_context"]
