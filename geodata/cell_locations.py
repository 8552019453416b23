"""How many of a dataset's records each cell holds per location text, kept beside the offences.

The street context of a ranked cell (``hotspots.ranking.context``) breaks ties between location texts by how
often each occurs among ALL the dataset's records in the cell, and falls back to those texts when the selected
records carry none. Counting that from the offences costs a read of every record of the dataset in those cells,
whatever the period: at national scale (60 M records) that read was most of a one-month ``/hotspots``. So the
store keeps the count: ``cell_locations`` holds (dataset, h3_7 .. h3_11, raw location text, n), one row per
distinct (cells, text) of each ingest batch. A location text belongs to one data.police.uk map point, so
this is about one row per map point: a million rows for all 43 forces, against tens of millions of records.

It is written inside each ingest's transaction (:func:`add_batch`, a post-ingest step, after duplicates are
dropped, so it counts exactly the stored rows), and built once for a store made before it existed
(:func:`ensure_cell_locations`, when the store is opened for writing). Rows of the same (cell, text) from
different batches are summed by the readers (:func:`location_index`: per dataset and resolution, the counts by
cell and cleaned text as sorted numpy arrays, built once per state of the offences, so a query looks its cells
up with a binary search instead of reading the table; the index also keeps every cell's centre, computed on
first use, for the ranked cells' lat/lon). Every resolution is kept as its own column, as in ``offences``:
each is indexed from the point itself, and a point's res-8 cell is not always the parent of its res-10 cell.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from geodata.cells import RESOLUTIONS, cell_centres, unique_cells
from geodata.locations import clean_location_sql

_CELLS = ", ".join(f"h3_{r}" for r in RESOLUTIONS)
SCHEMA = f"""CREATE TABLE IF NOT EXISTS cell_locations (
    dataset VARCHAR, {", ".join(f"h3_{r} UBIGINT" for r in RESOLUTIONS)}, location VARCHAR, n BIGINT);"""
STAMP = "cell_locations"  # store_meta key: set once cell_locations holds every stored record
VERSION = "v1"

_GROUP = (f"SELECT dataset, {_CELLS}, location, count(*) AS n FROM offences WHERE {{where}} "
          f"GROUP BY dataset, {_CELLS}, location")


def add_batch(cur, dataset: str, batch_id: int) -> None:
    """Count an ingested batch's stored records per (cell, text), on the ingest's cursor (a post-ingest step)."""
    cur.execute(f"INSERT INTO cell_locations {_GROUP.format(where='dataset = ? AND batch_id = ?')}",
                [dataset, batch_id])


def rebuild(cur) -> None:
    """Count every stored record again (a store made before the table, or re-indexed), and stamp it."""
    cur.execute("DELETE FROM cell_locations")
    cur.execute(f"INSERT INTO cell_locations {_GROUP.format(where='true')}")
    cur.execute("INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [STAMP, VERSION])


def is_current(cur) -> bool:
    """True when ``cell_locations`` holds every stored record (its stamp is set)."""
    exists = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'store_meta'").fetchall()[0][0]
    if not exists:
        return False
    got = cur.execute("SELECT value FROM store_meta WHERE key = ?", [STAMP]).fetchall()
    return bool(got) and got[0][0] == VERSION


def source_sql(current: bool) -> tuple[str, bool]:
    """(FROM source aliased ``l``, whether it takes the dataset as a parameter of its own): the kept table, or,
    on a store opened read-only before the table existed, the same counts grouped from the offences (correct,
    and as slow as a read of every record of the dataset)."""
    if current:
        return "cell_locations l", False
    return f"({_GROUP.format(where='dataset = ?')}) l", True


def location_cell_sql(res: int, alias: str = "l") -> str:
    """The cell at ``res`` (7-11) of a ``cell_locations`` row."""
    if res not in RESOLUTIONS:
        raise ValueError(f"resolution {res}: cell_locations keeps {RESOLUTIONS}")
    return f"{alias}.h3_{int(res)}"


@dataclass(frozen=True)
class LocationIndex:
    """All of a dataset's records counted by (cell at one resolution, cleaned location text), sorted by cell:
    about 20 bytes a row (a national dataset: ~1.5 M rows, ~30 MB)."""

    cells: np.ndarray  # uint64, ascending
    codes: np.ndarray  # int32, into texts
    n: np.ndarray      # int64 records
    texts: list[str]   # distinct cleaned texts ('' for none)

    def counts(self, cells: np.ndarray) -> dict[int, list[tuple[str, int]]]:
        """{cell: [(text, records), ...]} for ``cells`` (those with no record are left out)."""
        cells = np.asarray(cells, dtype=np.uint64)
        lo = np.searchsorted(self.cells, cells, "left")
        hi = np.searchsorted(self.cells, cells, "right")
        out: dict[int, list[tuple[str, int]]] = {}
        for c, a, b in zip(cells.tolist(), lo.tolist(), hi.tolist()):
            if b > a:
                out[c] = [(self.texts[k], n) for k, n in zip(self.codes[a:b].tolist(), self.n[a:b].tolist())]
        return out

    @functools.cached_property
    def _centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(distinct cells, lat, lon) of every cell with a record: made on first use, kept with the index."""
        cells = unique_cells(self.cells)
        lat, lon = cell_centres(cells)
        return cells, lat, lon

    def centres(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) of ``cells`` (uint64 at the index's resolution), looked up (a binary search); a cell the
        index does not hold is computed (:func:`geodata.cells.cell_centres`), so the answer is the same."""
        cells = np.asarray(cells, dtype=np.uint64)
        known, lat_all, lon_all = self._centres
        if not len(known):
            return cell_centres(cells)
        i = np.minimum(np.searchsorted(known, cells), len(known) - 1)
        found = known[i] == cells
        lat, lon = lat_all[i], lon_all[i]  # copies (fancy indexing): the kept arrays are never written
        if not found.all():
            lat[~found], lon[~found] = cell_centres(cells[~found])
        return lat, lon


def build_index(cur, dataset: str, res: int, current: bool) -> LocationIndex:
    """One read of the kept counts (``current``; else the offences) for ``dataset`` at ``res``."""
    source, takes_dataset = source_sql(current)
    key = location_cell_sql(res)
    sql = (f"SELECT {key} AS cell, {clean_location_sql('l.location')} AS loc, sum(l.n)::BIGINT AS n FROM {source} "
           "WHERE l.dataset = ? GROUP BY 1, 2 ORDER BY 1")
    rel = cur.sql(sql, params=[*([dataset] if takes_dataset else []), dataset])
    table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()
    loc = pc.dictionary_encode(table.column("loc")).combine_chunks()
    return LocationIndex(cells=np.asarray(table.column("cell").to_numpy(), dtype=np.uint64),
                         codes=np.asarray(loc.indices.to_numpy(zero_copy_only=False), dtype=np.int32),
                         n=np.asarray(table.column("n").to_numpy(), dtype=np.int64),
                         texts=[str(t) for t in loc.dictionary.to_pylist()])


def location_index(store, dataset: str, res: int) -> LocationIndex:
    """The dataset's :class:`LocationIndex` at ``res``, built once per state of the offences (``Store.offences_cached``:
    kept across writes that do not touch the offences, such as patrol logs)."""
    def build() -> LocationIndex:
        current = store.has_cell_locations()
        cur = store.cursor()
        try:
            return build_index(cur, dataset, res, current)
        finally:
            cur.close()

    return store.offences_cached(("location_index", dataset, int(res)), build)
