"""The embedded store: one DuckDB file holding offences, batches, rejects, weights and areas.

DuckDB is a columnar, in-process database: the hot query (filter, join a few hundred offence keys to
their weights, group by an H3 column) runs vectorised in C++ with no server to run.  Each ingest is one
transaction: a batch lands whole or not at all.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from geodata import cell_locations
from geodata.auto_areas import derive_auto_areas
from geodata.cells import AREA_RESOLUTION, RESOLUTIONS, cell_centres, cells_at_all_resolutions, polygon_cells
from geodata.harm import WeightsTable
from geodata.ingest import Parsed, StudyArea

SCHEMA = f"""
CREATE SEQUENCE IF NOT EXISTS batch_seq START 1;
CREATE TABLE IF NOT EXISTS datasets (
    name VARCHAR PRIMARY KEY, created_at TIMESTAMP, study_area VARCHAR, description VARCHAR);
CREATE TABLE IF NOT EXISTS batches (
    batch_id INTEGER PRIMARY KEY, dataset VARCHAR, created_at TIMESTAMP, files VARCHAR, kind VARCHAR,
    read INTEGER, stored INTEGER, rejected INTEGER, duplicates INTEGER);
CREATE TABLE IF NOT EXISTS offence_keys (
    offence_key INTEGER PRIMARY KEY, category VARCHAR, offence_group VARCHAR, ho_code VARCHAR);
CREATE TABLE IF NOT EXISTS offences (
    dataset VARCHAR, batch_id INTEGER, record_id VARCHAR, offence_key INTEGER,
    occurred_from TIMESTAMP, occurred_to TIMESTAMP, precision VARCHAR, dow SMALLINT, hour SMALLINT,
    lon DOUBLE, lat DOUBLE, x DOUBLE, y DOUBLE,
    {", ".join(f"h3_{r} UBIGINT" for r in RESOLUTIONS)},
    offence_title VARCHAR, location VARCHAR, lsoa_code VARCHAR,
    domestic BOOLEAN, public_place BOOLEAN, knife BOOLEAN, nte BOOLEAN, victim_age SMALLINT,
    lsoa_name VARCHAR, district VARCHAR);
ALTER TABLE offences ADD COLUMN IF NOT EXISTS lsoa_name VARCHAR;  -- stores made before automatic areas
ALTER TABLE offences ADD COLUMN IF NOT EXISTS district VARCHAR;
CREATE TABLE IF NOT EXISTS rejects (
    dataset VARCHAR, batch_id INTEGER, file VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR);
CREATE TABLE IF NOT EXISTS weights (
    weights_table VARCHAR, key_type VARCHAR, key VARCHAR, days DOUBLE);
CREATE TABLE IF NOT EXISTS weights_meta (
    weights_table VARCHAR PRIMARY KEY, source VARCHAR, licence VARCHAR, category_method VARCHAR,
    loaded_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS areas (
    layer VARCHAR, feature_id VARCHAR, name VARCHAR, district VARCHAR, geometry_wkb BLOB);
CREATE TABLE IF NOT EXISTS area_cells (
    layer VARCHAR, feature_id VARCHAR, h3_10 UBIGINT, lat DOUBLE, lon DOUBLE);
CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
""" + cell_locations.SCHEMA
# How offences' H3 columns were made. "direct-v1": every resolution indexed from the point itself (issue 12);
# stores written before (coarser cells as parents of res 11) are re-indexed once when opened for writing.
H3_INDEXING = "direct-v1"
DATASET_LAYER = "__dataset__"  # area_cells rows describing each dataset's study area


T = TypeVar("T")
log = logging.getLogger("harmspot.store")
WRITE_RETRIES = 3  # a transaction conflict is retried this many times before StoreConflict


class StoreError(ValueError):
    """A request the store cannot satisfy (unknown dataset, weights table, area...)."""


class NotStored(StoreError):
    """A named object (dataset, area layer or area, weights table, pack...) that is not in the store: the API
    answers 404."""


class DataCannotAnswer(StoreError):
    """A well-formed request the stored data cannot answer in its present state (an hour filter on month-only
    records, a backtest needing more months than the data hold): the API answers 409 - the conflict is with
    the data, and finer or more data (or leaving the option out) resolves it."""


class StoreConflict(StoreError):
    """A write that lost a race it cannot win by retrying: a name taken meanwhile, or a DuckDB transaction
    conflict that persisted over :data:`WRITE_RETRIES` attempts. The API answers 409."""


class BlockingCallOnLoop(RuntimeError):
    """A store call made on the service's event-loop thread: it would stall every request (see forbid_thread)."""


class _GuardedLock:
    """The store's write lock (re-entrant), refusing to be waited for on a forbidden thread."""

    def __init__(self, store: "Store"):
        self._store = store
        self._lock = threading.RLock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self._store.check_thread()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self._lock.release()


@dataclass
class IngestReport:
    dataset: str
    batch_id: int | None
    files: list[str]
    kind: str
    read: int
    stored: int
    rejected: int
    duplicates: int
    rejects_by_reason: dict[str, int]
    time_precision: list[str]

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset, "batch_id": self.batch_id, "files": self.files, "kind": self.kind,
            "read": self.read, "stored": self.stored, "rejected": self.rejected, "duplicates": self.duplicates,
            "rejects_by_reason": self.rejects_by_reason, "time_precision": self.time_precision,
        }


def utc_now() -> datetime:
    """Naive UTC timestamp, the form every store table keeps."""
    return datetime.now(timezone.utc).replace(tzinfo=None)



def _offence_keys(cur, table: pa.Table) -> np.ndarray:
    """The offence_keys key of every row's (category, offence_group, ho_code), matched in Arrow over the few
    distinct combinations (nulls match nulls, as IS NOT DISTINCT FROM)."""
    n = table.num_rows
    known = {(c, g, h): k for k, c, g, h in cur.execute(
        "SELECT offence_key, category, offence_group, ho_code FROM offence_keys").fetchall()}
    code = np.zeros(n, dtype=np.int64)
    dicts = []
    for name in ("category", "offence_group", "ho_code"):
        enc = pc.dictionary_encode(table.column(name), null_encoding="encode").combine_chunks()
        values = enc.dictionary.to_pylist()
        code = code * (len(values) + 1) + enc.indices.to_numpy(zero_copy_only=False)
        dicts.append(values)
    inverse, combos = pd.factorize(code)
    out = np.empty(len(combos), dtype=np.int32)
    for i, c in enumerate(combos.tolist()):
        parts = []
        for values in reversed(dicts):
            c, j = divmod(c, len(values) + 1)
            parts.append(values[j])
        out[i] = known[tuple(reversed(parts))]
    return out[inverse] if n else np.empty(0, dtype=np.int32)


INSERT_COLUMNS = ["dataset", "batch_id", "record_id", "offence_key", "occurred_from", "occurred_to", "precision",
                  "dow", "hour", "lon", "lat", "x", "y", *[f"h3_{r}" for r in RESOLUTIONS], "offence_title",
                  "location", "lsoa_code", "domestic", "public_place", "knife", "nte", "victim_age", "lsoa_name",
                  "district"]
PostIngestStep = Callable[[duckdb.DuckDBPyConnection, str, int], None]


def _insert_chunk(cur, dataset: str, batch_id: int, table: pa.Table) -> int:
    """Append one chunk's rows (new offence-key combinations get the next integer keys); returns the row count.
    Duplicates are left for :func:`_drop_duplicates`, once per batch.

    The chunk is read by DuckDB's replacement scan of the local Arrow table, never ``cursor.register``: a
    registered table stays referenced until the transaction ends, so a streamed batch would pile up in memory."""
    staged = table  # noqa: F841 (read by name in the SQL below)
    cur.execute("""INSERT INTO offence_keys
        SELECT (SELECT coalesce(max(offence_key), 0) FROM offence_keys)
                 + row_number() OVER (ORDER BY category, offence_group, ho_code),
               category, offence_group, ho_code
        FROM (SELECT DISTINCT category, offence_group, ho_code FROM staged
              EXCEPT SELECT category, offence_group, ho_code FROM offence_keys)""")
    keyed = table.append_column("offence_key", pa.array(_offence_keys(cur, table), pa.int32()))  # noqa: F841
    exprs = ", ".join({"dataset": "?", "batch_id": "?"}.get(c, f"s.{c}") for c in INSERT_COLUMNS)
    # chunks arrive in file order (parse_stream: files by name, rows by line) and DuckDB keeps insertion
    # order, so the first copy of a repeated record id has the lowest rowid
    cur.execute(f"INSERT INTO offences SELECT {exprs} FROM keyed s", [dataset, batch_id])
    return table.num_rows


ROW_GROUP_ROWS = 122_880  # DuckDB's row group: the unit its min/max zone maps let a scan skip


class TimeOrder:
    """Whether a batch's rows arrive clustered in time (by day of ``occurred_from``), seen one chunk at a time.

    Every read filters on the period, and DuckDB skips a row group whose min/max ``occurred_from`` lie outside
    it; that only works when a row group holds a narrow span of time.  Monthly police.uk downloads, date-ordered
    force extracts and concatenations of them arrive that way (the rows go in as they come, costing nothing); a
    file in another order (a records-management export by crime reference, a shuffled or resampled file) leaves
    every row group spanning most of the period, so :func:`_order_batch_by_time` rewrites such a batch once.

    The rows are cut, in arrival order, into windows of :data:`ROW_GROUP_ROWS` (what DuckDB would store as one
    row group); the batch is *clustered* unless the median window spans more than a quarter of the batch's
    whole span and more than two months (local disorder - months interleaved within a few - costs little)."""

    MIN_SPAN_DAYS = 62

    def __init__(self, window: int | None = None) -> None:
        self.window = max(1, window if window is not None else ROW_GROUP_ROWS)
        self._spans: list[int] = []  # days spanned by each full window
        self._lo = self._hi = None  # the batch's first and last day
        self._tail = np.empty(0, dtype=np.int64)  # days of the window being filled (fewer than ``window``)

    def see(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        col = pc.cast(table.column("occurred_from"), pa.timestamp("us"))
        days = pc.fill_null(col, pa.scalar(0, pa.timestamp("us"))).combine_chunks().to_numpy(zero_copy_only=False)
        days = days.astype("datetime64[D]").astype(np.int64)
        lo, hi = int(days.min()), int(days.max())
        self._lo = lo if self._lo is None else min(self._lo, lo)
        self._hi = hi if self._hi is None else max(self._hi, hi)
        days = np.concatenate([self._tail, days])  # the window the previous chunk began goes on here
        full = len(days) // self.window
        if full:
            cut = days[: full * self.window].reshape(full, self.window)
            self._spans.extend((cut.max(axis=1) - cut.min(axis=1)).tolist())
        self._tail = days[full * self.window:]

    @property
    def clustered(self) -> bool:
        spans = self._spans + ([int(self._tail.max() - self._tail.min())] if len(self._tail) else [])
        if not spans or self._lo is None:
            return True
        whole = self._hi - self._lo
        return float(np.median(spans)) <= max(0.25 * whole, self.MIN_SPAN_DAYS)


def _order_batch_by_time(cur, dataset: str, batch_id: int) -> None:
    """Rewrite the batch's stored rows in time order (see :class:`TimeOrder`), inside the ingest transaction:
    the rows are appended again sorted by ``occurred_from`` (DuckDB sorts within its memory limit, spilling
    beyond it), then the unsorted copies are deleted by row id.  Same rows, same values: only their order on
    disk changes.  Run after duplicates are dropped (which keep the first copy by file order)."""
    (last,) = cur.execute("SELECT max(rowid) FROM offences").fetchall()[0]
    cols = ", ".join(INSERT_COLUMNS)
    cur.execute(f"""INSERT INTO offences ({cols}) SELECT {cols} FROM offences WHERE dataset = ? AND batch_id = ?
                    ORDER BY occurred_from, occurred_to""", [dataset, batch_id])
    cur.execute("DELETE FROM offences WHERE dataset = ? AND batch_id = ? AND rowid <= ?", [dataset, batch_id, last])


def _drop_duplicates(cur, dataset: str, batch_id: int, had_rows: bool) -> None:
    """Delete the batch's rows whose record id is already stored in the dataset, then every later copy of a
    record id repeated within the batch (the first by file and line stays, as rows were appended in that
    order).  Both are found on a 64-bit hash of the id first (a GROUP BY / join on integers, which DuckDB
    spills to disk under its memory limit) and confirmed on the id itself, so they stay exact."""
    if had_rows:
        cur.execute("""DELETE FROM offences WHERE dataset = ? AND batch_id = ? AND record_id IN (
            SELECT record_id FROM offences WHERE dataset = ? AND batch_id <> ?)""", [dataset, batch_id, dataset, batch_id])
    repeated = cur.execute("""SELECT count(*) FROM (SELECT hash(record_id) FROM offences
        WHERE dataset = ? AND batch_id = ? GROUP BY 1 HAVING count(*) > 1)""", [dataset, batch_id]).fetchall()[0][0]
    if repeated:
        cur.execute("""DELETE FROM offences WHERE rowid IN (
            SELECT rowid FROM offences WHERE dataset = ? AND batch_id = ? AND hash(record_id) IN (
                SELECT hash(record_id) FROM offences WHERE dataset = ? AND batch_id = ? GROUP BY 1 HAVING count(*) > 1)
            QUALIFY row_number() OVER (PARTITION BY record_id ORDER BY rowid) > 1)""",
                    [dataset, batch_id, dataset, batch_id])


def _private_dir(path: Path) -> None:
    """Create the store's folder owner-only (0700). An existing folder is left as it is (it may be shared, e.g. a
    mounted volume or /tmp): the store file and its WAL are still made 0600, and a warning names the folder."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask
    elif path.stat().st_mode & 0o077:
        log.warning("store folder %s is readable by other users; the store file is kept 0600 (chmod 700 the "
                    "folder to hide its name and temporary files too)", path)


def _private_files(path: Path) -> None:
    """The store file and its WAL owner-only (0600)."""
    for f in (path, path.with_name(path.name + ".wal")):
        try:
            if f.exists() and f.stat().st_mode & 0o077:
                f.chmod(0o600)
        except OSError:
            pass


class Store:
    """A handle on the DuckDB file. Reads use a cursor each; writes go through :meth:`transaction` or
    :meth:`write`, which hold the process's write lock for the whole transaction (check-then-write is atomic).
    The folder is created 0700 and the file 0600: the store holds personal data (offence locations)."""

    def __init__(self, path: Path | str, read_only: bool = False, memory_limit_mb: int | None = None):
        self.path = Path(path)
        if str(path) != ":memory:":
            _private_dir(self.path.parent)
        try:
            self._con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(f"cannot open the store at {path}: {exc} (is `harmspot serve` running on it? "
                             "upload through the API instead, or stop the service)") from exc
        if str(path) != ":memory:":
            _private_files(self.path)
        self._forbidden_thread: int | None = None
        self.memory_limit_mb = memory_limit_mb
        self._configure()
        self.write_lock = _GuardedLock(self)  # bulk writers (ingest, weights, areas, RTM results) hold it throughout
        self._scope_locks: dict[str, _GuardedLock] = {}  # one per check-then-write scope (see write)
        self._scope_locks_guard = threading.Lock()
        self._schemas: set[str] = set()
        # small per-state memo (dataset names, period bounds, key weights, domain sizes): every write goes
        # through transaction(), which bumps the version after it commits, so an entry is only reused while
        # the store is unchanged
        self._version = 0
        self._memo: dict = {}
        # a second memo for values made from the offences alone (offences_cached): kept until the offences change
        # (an ingest or a re-index), not cleared by the frequent small writes (patrol logs, keys, audit)
        self._offences_version = 0
        self._offences_memo: dict = {}
        # per-cell location counts (geodata.cell_locations); lad/lsoa layers from the records
        self._post_ingest: list[PostIngestStep] = [cell_locations.add_batch, derive_auto_areas]
        if not read_only:
            self._con.execute(SCHEMA)
            self.reindex_h3()
            self.ensure_cell_locations()

    def _configure(self) -> None:
        if self.memory_limit_mb:
            self._con.execute(f"SET memory_limit = '{int(self.memory_limit_mb)}MB'")

    def close(self) -> None:
        self._con.close()

    @property
    def version(self) -> int:
        """Bumped after every write transaction ends (commit or rollback): a result computed at one version stays
        valid until it moves (app.cache keys results by it)."""
        return self._version

    def forbid_thread(self, ident: int | None) -> None:
        """Refuse every query, transaction and write-lock wait made on thread ``ident`` (the service's event loop:
        one blocking call there stalls every request, /health and 401s included). ``None`` lifts it."""
        self._forbidden_thread = ident

    def check_thread(self) -> None:
        if self._forbidden_thread is not None and threading.get_ident() == self._forbidden_thread:
            raise BlockingCallOnLoop("a blocking store call on the event-loop thread (an async route or middleware "
                                     "calling store code): declare the route with `def`, or await "
                                     "run_in_threadpool(...) around the call")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        self.check_thread()
        return self._con.cursor()

    def reindex_h3(self) -> int:
        """Bring a store made before direct indexing up to date: recompute h3_7..h3_10 of every stored offence
        from its point (once per distinct point, updating only the rows whose cell changes), in one
        transaction, and stamp ``store_meta``.  Returns the number of rows changed (0 when already done)."""
        stamp = self.scalar("SELECT value FROM store_meta WHERE key = 'h3_indexing'")
        if stamp == H3_INDEXING:
            return 0
        coarse = [r for r in RESOLUTIONS if r != max(RESOLUTIONS)]
        with self.write_lock, self.transaction() as cur:
            pts = cur.execute("SELECT DISTINCT lon, lat FROM offences WHERE lon IS NOT NULL AND lat IS NOT NULL").df()
            changed = 0
            if len(pts):
                lon = pts["lon"].to_numpy(dtype=float)
                lat = pts["lat"].to_numpy(dtype=float)
                cells = cells_at_all_resolutions(lat, lon)
                fresh = pa.table({"lon": lon, "lat": lat,  # noqa: F841 (read by name in the SQL)
                                  **{f"h3_{r}": pa.array(cells[r], pa.uint64()) for r in coarse}})
                differs = " OR ".join(f"o.h3_{r} IS DISTINCT FROM f.h3_{r}" for r in coarse)
                changed = cur.execute(f"""UPDATE offences o SET {", ".join(f"h3_{r} = f.h3_{r}" for r in coarse)}
                    FROM fresh f WHERE o.lon = f.lon AND o.lat = f.lat AND ({differs})""").fetchall()[0][0]
            cur.execute("INSERT OR REPLACE INTO store_meta VALUES ('h3_indexing', ?)", [H3_INDEXING])
            if changed:  # the per-cell location counts name cells: count again (ensure_cell_locations)
                cur.execute("DELETE FROM store_meta WHERE key = ?", [cell_locations.STAMP])
        self._offences_changed()
        if changed:
            import logging

            logging.getLogger("harmspot").warning(
                "store %s: re-indexed H3 res 7-10 of %d offences directly from their points", self.path, changed)
        return int(changed)

    def ensure_cell_locations(self) -> bool:
        """Build ``cell_locations`` (geodata.cell_locations) once for a store made before it: one GROUP BY over
        the offences in a transaction. Returns True when it was built now."""
        cur = self._con.cursor()
        try:
            if cell_locations.is_current(cur):
                return False
        finally:
            cur.close()
        with self.write_lock, self.transaction() as cur:
            cell_locations.rebuild(cur)
        self._offences_changed()
        return True

    def has_cell_locations(self) -> bool:
        """Whether ``cell_locations`` holds every stored record (False only on an old store opened read-only)."""
        def check() -> bool:
            cur = self.cursor()
            try:
                return cell_locations.is_current(cur)
            finally:
                cur.close()
        return self.cached(("has_cell_locations",), check)

    def recover(self) -> bool:
        """Reopen the DuckDB file after a fatal error (DuckDB invalidates a database whose checkpoint failed,
        e.g. on a full disk): the committed state is read back from the file and its WAL.  Returns True when
        the store answers again.  Called by the doors on ``duckdb.FatalException``, and by reads here."""
        with self.write_lock:
            try:
                self._con.execute("SELECT 1").fetchall()
                return True  # another thread recovered it already
            except duckdb.Error:
                pass
            try:
                self._con.close()
            except duckdb.Error:
                pass
            try:
                self._con = duckdb.connect(str(self.path))
                self._configure()
            except duckdb.Error:
                return False
            self._schemas.clear()
            self._changed()
            self._offences_changed()
            return True

    def _read(self, fn):
        try:
            return fn()
        except duckdb.FatalException:
            if not self.recover():
                raise
            return fn()

    def cached(self, key, compute):
        """``compute()`` once per store state: the value is reused until the next write transaction ends.
        The version is read before computing, so a value computed across a commit is never reused."""
        version = self._version
        hit = self._memo.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        if len(self._memo) > 512:
            self._memo.clear()
        self._memo[key] = (version, value)
        return value

    def offences_cached(self, key, compute, max_entries: int = 8):
        """``compute()`` once per state of the offences: reused until the next ingest (or re-index) ends, whatever
        else is written meanwhile. At most ``max_entries`` values are kept (for values of tens of MB)."""
        version = self._offences_version
        hit = self._offences_memo.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        memo = {k: v for k, v in self._offences_memo.items() if v[0] == self._offences_version}
        while len(memo) >= max_entries:
            memo.pop(next(iter(memo)))
        memo[key] = (version, value)
        self._offences_memo = memo  # replaced whole: readers on other threads never see it half-changed
        return value

    def _offences_changed(self) -> None:
        self._offences_version += 1
        self._offences_memo = {}

    def _changed(self) -> None:
        self._version += 1
        self._memo.clear()

    def ensure_schema(self, sql: str) -> None:
        """Run another module's ``CREATE ... IF NOT EXISTS`` statements once per store handle."""
        if sql in self._schemas:  # the common case: no lock (a long ingest holds it for seconds)
            return
        with self.write_lock:
            if sql in self._schemas:
                return
            cur = self._con.cursor()
            try:
                cur.execute(sql)
            finally:
                cur.close()
            self._schemas.add(sql)

    def query_df(self, sql: str, params: list | tuple = ()) -> pd.DataFrame:
        def run() -> pd.DataFrame:
            cur = self.cursor()
            try:
                return cur.execute(sql, params).df()
            finally:
                cur.close()
        return self._read(run)

    def scalar(self, sql: str, params: list | tuple = ()):
        def run():
            cur = self.cursor()
            try:
                rows = cur.execute(sql, params).fetchall()
                return rows[0][0] if rows else None
            finally:
                cur.close()
        return self._read(run)

    # ------------------------------------------------------------------ transactions
    def scope_lock(self, scope: str) -> _GuardedLock:
        """The lock of one write scope (a table or family of tables: "keydates", "layers", "keys"...): writers of
        one scope take turns, writers of different scopes - and the bulk writers holding :attr:`write_lock`, such
        as a long ingest - do not wait for each other (DuckDB isolates their transactions)."""
        with self._scope_locks_guard:
            return self._scope_locks.setdefault(scope, _GuardedLock(self))

    def transaction(self, scope: str | None = None) -> "_Tx":
        """``with store.transaction() as cur:`` one DuckDB transaction. With ``scope`` it holds that scope's lock
        throughout (:meth:`scope_lock`), so no other writer of the scope in this process interleaves between a
        check and the write that depends on it; bulk writers wrap it in ``with store.write_lock``. A DuckDB
        transaction conflict surfaces as :class:`StoreConflict` (409); use :meth:`write` to retry it."""
        return _Tx(self, self.scope_lock(scope) if scope else None)

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T], scope: str, retries: int = WRITE_RETRIES) -> T:
        """Check-then-write in one transaction, retried on conflict: ``fn(cur)`` runs inside
        ``transaction(scope)`` (the scope's lock held, BEGIN..COMMIT); raise inside ``fn`` to roll everything back
        (e.g. an "already exists" error: the check and the insert see the same state). A DuckDB transaction
        conflict (a writer of another scope on the same rows) rolls back and runs ``fn`` again, up to ``retries``
        more times with a short back-off, then raises StoreConflict. ``fn`` must touch the store only through
        ``cur`` (it may run more than once). The scope is not the whole store: a small write never waits for a
        long ingest (issue 13 item 5)."""
        for attempt in range(retries + 1):
            try:
                with self.transaction(scope) as cur:
                    return fn(cur)
            except StoreConflict as exc:
                if not getattr(exc, "retryable", False) or attempt == retries:
                    raise
                time.sleep(0.01 * 2 ** attempt)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ datasets
    def datasets(self) -> pd.DataFrame:
        return self.query_df("""
            SELECT d.name, d.created_at, d.study_area, d.description,
                   (SELECT count(*) FROM offences o WHERE o.dataset = d.name) AS offences,
                   (SELECT min(occurred_from) FROM offences o WHERE o.dataset = d.name) AS first,
                   (SELECT max(occurred_to) FROM offences o WHERE o.dataset = d.name) AS last_exclusive,
                   (SELECT list(DISTINCT precision) FROM offences o WHERE o.dataset = d.name) AS precisions,
                   (SELECT count(*) FROM batches b WHERE b.dataset = d.name) AS batches,
                   (SELECT count(*) FROM rejects r WHERE r.dataset = d.name) AS rejects
            FROM datasets d ORDER BY d.name""")

    def has_dataset(self, name: str) -> bool:
        return name in self.cached("dataset_names", lambda: frozenset(
            self.query_df("SELECT name FROM datasets")["name"].tolist()))

    def require_dataset(self, name: str) -> None:
        if not self.has_dataset(name):
            known = self.query_df("SELECT name FROM datasets ORDER BY name")["name"].tolist()
            raise NotStored(f"unknown dataset '{name}'; known datasets: {known}")

    def add_post_ingest(self, step: "PostIngestStep") -> None:
        """Run ``step(cur, dataset, batch_id)`` at the end of every ingest, inside its transaction (after the
        rows, rejects and batch row are written; before commit), e.g. to derive districts from the new rows."""
        self._post_ingest.append(step)

    def ingest(self, dataset: str, batch: Parsed | Iterable[Parsed], study_area: StudyArea | None = None,
               description: str = "") -> IngestReport:
        """Store a batch in one transaction: a :class:`Parsed`, or a stream of them (``parse_stream``), inserted
        chunk by chunk so memory stays bounded whatever the batch's size; all-or-nothing either way.
        Duplicates (same record id, in the batch or already stored) are counted, not stored: the first copy by
        file and line is kept.  Runs in DuckDB over Arrow tables (no Python loop over rows)."""
        chunks = [batch] if isinstance(batch, Parsed) else batch
        read = inserted = rejected = 0
        files: list[str] = []
        kinds: set[str] = set()
        precisions: set[str] = set()
        by_reason: Counter = Counter()
        with self.write_lock, self.transaction() as cur:
            if not cur.execute("SELECT count(*) FROM datasets WHERE name = ?", [dataset]).fetchall()[0][0]:
                cur.execute("INSERT INTO datasets VALUES (?, ?, ?, ?)",
                            [dataset, utc_now(), study_area.name if study_area else None, description])
            batch_id = int(cur.execute("SELECT nextval('batch_seq')").fetchall()[0][0])
            before = cur.execute("SELECT count(*) FROM offences WHERE dataset = ?", [dataset]).fetchall()[0][0]
            order = TimeOrder()
            for part in chunks:
                read += part.read
                files += part.files
                kinds.update(k for k in part.kind.split("+") if k and k != "empty")
                if part.table.num_rows:
                    inserted += _insert_chunk(cur, dataset, batch_id, part.table)
                    order.see(part.table)
                    precisions.update(p for p in pc.unique(part.table.column("precision")).to_pylist() if p)
                if len(part.rejects):
                    rejected += len(part.rejects)
                    by_reason.update(part.rejects["reason"].astype(str).value_counts().to_dict())
                    rej = part.rejects.assign(dataset=dataset, batch_id=batch_id)[  # noqa: F841 (read by name)
                        ["dataset", "batch_id", "file", "line", "reason", "raw"]]
                    cur.execute("INSERT INTO rejects SELECT * FROM rej")
            if inserted:
                _drop_duplicates(cur, dataset, batch_id, bool(before))
            after = cur.execute("SELECT count(*) FROM offences WHERE dataset = ?", [dataset]).fetchall()[0][0]
            stored = int(after - before)
            if stored > ROW_GROUP_ROWS and not order.clustered:  # fewer rows than a row group: nothing to skip
                _order_batch_by_time(cur, dataset, batch_id)
            duplicates = inserted - stored
            kind = "+".join(sorted(kinds)) or "empty"
            cur.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [batch_id, dataset, utc_now(), json.dumps(files), kind, read, stored, rejected, duplicates])
            self._refresh_dataset_cells(cur, dataset, study_area)
            for step in self._post_ingest:
                step(cur, dataset, batch_id)
        self._offences_changed()
        return IngestReport(dataset, batch_id, files, kind, read, stored, rejected, duplicates,
                            {str(k): int(v) for k, v in by_reason.most_common()}, sorted(precisions))

    def _refresh_dataset_cells(self, cur, dataset: str, study_area: StudyArea | None) -> None:
        """Store the dataset's study area as res-10 cells: the area polygon if given, else the data's hull."""
        if study_area is not None and study_area.polygon is not None:
            if cur.execute("SELECT count(*) FROM area_cells WHERE layer = ? AND feature_id = ?",
                           [DATASET_LAYER, dataset]).fetchall()[0][0]:
                return
            geom, label = study_area.polygon, f"study area polygon ({study_area.name})"
        else:
            # convex hull of the data, trimmed of stray points: only the central 99.8 % by lon and by lat
            # quantiles over at most a million rows (all of them up to that: exact; a fixed-seed reservoir
            # sample beyond, so memory does not grow with the dataset)
            pts = cur.execute("""
                WITH b AS (SELECT quantile_cont(lon, 0.001) AS x0, quantile_cont(lon, 0.999) AS x1,
                                  quantile_cont(lat, 0.001) AS y0, quantile_cont(lat, 0.999) AS y1
                           FROM (SELECT lon, lat FROM offences WHERE dataset = ?)
                           USING SAMPLE reservoir(1000000 ROWS) REPEATABLE (7))
                SELECT DISTINCT lon, lat FROM offences, b WHERE dataset = ?
                  AND lon BETWEEN b.x0 AND b.x1 AND lat BETWEEN b.y0 AND b.y1""", [dataset, dataset]).df()
            if pts.empty:
                return
            hull = shapely.MultiPoint(pts[["lon", "lat"]].to_numpy()).convex_hull
            geom = hull.buffer(0.002) if hull.geom_type != "Polygon" else hull
            label = "convex hull of the data (central 99.8% by longitude and latitude, stray points left out)"
        wkb = shapely.to_wkb(geom)
        if cur.execute("SELECT count(*) FROM areas WHERE layer = ? AND feature_id = ? AND geometry_wkb = ?",
                       [DATASET_LAYER, dataset, wkb]).fetchall()[0][0]:
            return  # same hull as before this batch: its cells are stored already
        cells = polygon_cells([wkb], AREA_RESOLUTION)[0]
        cur.execute("DELETE FROM area_cells WHERE layer = ? AND feature_id = ?", [DATASET_LAYER, dataset])
        cur.execute("DELETE FROM areas WHERE layer = ? AND feature_id = ?", [DATASET_LAYER, dataset])
        step = 1 << 21  # a national hull is ~20 M res-10 cells: centres and insert in slices (bounded memory)
        for i in range(0, len(cells), step):
            part = cells[i:i + step]
            lat, lon = cell_centres(part)
            cells_df = pa.table({"h3_10": pa.array(part, pa.uint64()), "lat": lat, "lon": lon})  # noqa: F841
            cur.execute("INSERT INTO area_cells SELECT ?, ?, h3_10, lat, lon FROM cells_df", [DATASET_LAYER, dataset])
        cur.execute("INSERT INTO areas VALUES (?, ?, ?, ?, ?)", [DATASET_LAYER, dataset, label, None, shapely.to_wkb(geom)])

    def rejects(self, dataset: str, limit: int | None = None, offset: int = 0) -> pd.DataFrame:
        self.require_dataset(dataset)
        # a file ingested twice has its rejects listed once (from the first batch that saw them)
        sql = """SELECT min(batch_id) AS batch_id, file, line, reason, raw FROM rejects WHERE dataset = ?
                 GROUP BY file, line, reason, raw ORDER BY batch_id, file, line"""
        params: list = [dataset]
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return self.query_df(sql, params)

    # ------------------------------------------------------------------ weights
    def save_weights(self, table: WeightsTable) -> None:
        rows = ([("ho_code", k, v) for k, v in table.by_ho.items()]
                + [("group", k, v) for k, v in table.by_group.items()]
                + [("category", k, v) for k, v in table.by_category.items()])
        frame = pd.DataFrame(rows, columns=["key_type", "key", "days"]).assign(weights_table=table.name)
        with self.write_lock, self.transaction() as cur:
            cur.execute("DELETE FROM weights WHERE weights_table = ?", [table.name])
            cur.execute("DELETE FROM weights_meta WHERE weights_table = ?", [table.name])
            cur.register("w", frame[["weights_table", "key_type", "key", "days"]])
            cur.execute("INSERT INTO weights SELECT * FROM w")
            cur.unregister("w")
            cur.execute("INSERT INTO weights_meta VALUES (?, ?, ?, ?, ?)",
                        [table.name, table.source, table.licence, table.category_method, utc_now()])

    def weights_tables(self) -> pd.DataFrame:
        return self.query_df("SELECT * FROM weights_meta ORDER BY loaded_at")

    def weights_table(self, name: str) -> WeightsTable:
        return self.cached(("weights_table", name), lambda: self._weights_table(name))

    def _weights_table(self, name: str) -> WeightsTable:
        meta = self.query_df("SELECT * FROM weights_meta WHERE weights_table = ?", [name])
        if meta.empty:
            known = self.weights_tables()["weights_table"].tolist()
            raise NotStored(f"unknown weights table '{name}'; loaded tables: {known}")
        rows = self.query_df("SELECT key_type, key, days FROM weights WHERE weights_table = ?", [name])
        part = lambda t: dict(zip(rows.key[rows.key_type == t], rows.days[rows.key_type == t]))  # noqa: E731
        m = meta.iloc[0]
        return WeightsTable(name=name, source=m.source, licence=m.licence, by_ho=part("ho_code"),
                            by_group=part("group"), by_category=part("category"), category_method=m.category_method)

    def key_weights(self, table: WeightsTable) -> pd.DataFrame:
        """Weight (days) and exactness for every offence key, under ``table`` (memoised per store state and
        table object; the memo holds the table, so its id cannot be reused while cached)."""
        _, frame = self.cached(("key_weights", id(table)), lambda: (table, self._key_weights(table)))
        return frame.copy()

    def _key_weights(self, table: WeightsTable) -> pd.DataFrame:
        keys = self.query_df("SELECT * FROM offence_keys ORDER BY offence_key")
        if keys.empty:
            return keys.assign(days=pd.Series(dtype=float), exact=pd.Series(dtype=bool))
        days, exact = table.weigh(keys["ho_code"].astype("string"), keys["offence_group"].astype("string"),
                                  keys["category"].astype("string"))
        return keys.assign(days=days, exact=exact)

    # ------------------------------------------------------------------ areas
    def load_areas(self, layer: str, frame, name_field: str, id_field: str, district_field: str | None = None) -> int:
        """Store polygons of a boundary layer (a GeoDataFrame in WGS84) and their res-10 cells."""
        geoms = [shapely.make_valid(g) for g in frame.geometry]
        wkb = [shapely.to_wkb(g) for g in geoms]
        cells = polygon_cells(wkb, AREA_RESOLUTION)
        ids = frame[id_field].astype(str).tolist()
        names = frame[name_field].astype(str).tolist()
        districts = frame[district_field].astype(str).tolist() if district_field else [None] * len(ids)
        parts = []
        for fid, cs in zip(ids, cells):
            lat, lon = cell_centres(cs)
            parts.append(pd.DataFrame({"layer": layer, "feature_id": fid, "h3_10": cs, "lat": lat, "lon": lon}))
        with self.write_lock, self.transaction() as cur:
            cur.execute("DELETE FROM areas WHERE layer = ?", [layer])
            cur.execute("DELETE FROM area_cells WHERE layer = ?", [layer])
            cur.register("a", pd.DataFrame({"layer": layer, "feature_id": ids, "name": names, "district": districts,
                                            "geometry_wkb": wkb}))
            cur.execute("INSERT INTO areas SELECT * FROM a")
            cur.unregister("a")
            if parts:
                cur.register("c", pd.concat(parts, ignore_index=True))
                cur.execute("INSERT INTO area_cells SELECT * FROM c")
                cur.unregister("c")
        return len(ids)

    def area_layers(self) -> pd.DataFrame:
        return self.query_df(f"""SELECT layer, count(*) AS features FROM areas WHERE layer <> '{DATASET_LAYER}'
                                 GROUP BY layer ORDER BY layer""")

    def areas(self, layer: str) -> pd.DataFrame:
        return self.query_df("SELECT feature_id, name, district, geometry_wkb FROM areas WHERE layer = ? ORDER BY name",
                             [layer])

    def resolve_area(self, spec: str) -> tuple[str, list[str], str]:
        """``layer:id-or-name`` (or a bare name searched in every layer) -> (layer, feature ids, label)."""
        layer, _, key = spec.partition(":") if ":" in spec else ("", "", spec)
        params: list = [key, key]
        sql = "SELECT layer, feature_id, name, district FROM areas WHERE (feature_id = ? OR lower(name) = lower(?))"
        if layer:
            sql += " AND layer = ?"
            params.append(layer)
        hits = self.query_df(sql + f" AND layer <> '{DATASET_LAYER}'", params)
        if hits.empty:  # a district name selects all its features (e.g. every ward in Southend)
            sql = "SELECT layer, feature_id, name, district FROM areas WHERE lower(district) = lower(?)"
            params = [key] + ([layer] if layer else [])
            hits = self.query_df(sql + (" AND layer = ?" if layer else "") + f" AND layer <> '{DATASET_LAYER}'", params)
            if not hits.empty:
                hits = hits[hits.layer == hits.layer.iloc[0]]
        if hits.empty:
            raise NotStored(f"unknown area '{spec}': give layer:feature_id, a feature name or a district name "
                             f"(layers: {self.area_layers()['layer'].tolist()})")
        return str(hits.layer.iloc[0]), hits.feature_id.astype(str).tolist(), spec


def _is_conflict(exc: BaseException) -> bool:
    """A DuckDB transaction conflict (two writers on the same rows or catalog entry), not a failed commit for
    another reason (a full disk also raises TransactionException: that stays the storage error it is)."""
    text = str(exc).lower()
    return isinstance(exc, duckdb.TransactionException) and ("conflict" in text or "duplicate key" in text)


def _conflict(exc: Exception) -> StoreConflict:
    err = StoreConflict(f"the write conflicted with another write to the same data; retry it ({exc})")
    err.retryable = True  # type: ignore[attr-defined]
    return err


class _Tx:
    """One transaction, under a scope's lock when given one (re-entrant). DuckDB transaction conflicts become a
    retryable :class:`StoreConflict`."""

    def __init__(self, store: Store, lock: _GuardedLock | None = None):
        self.store = store
        self.lock = lock
        self.cur: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        if self.lock is not None:
            self.lock.acquire()
        try:
            try:
                self.cur = self.store.cursor()
                self.cur.execute("BEGIN TRANSACTION")
            except duckdb.FatalException:  # invalidated by an earlier failed checkpoint: reopen, then write
                if not self.store.recover():
                    raise
                self.cur = self.store.cursor()
                self.cur.execute("BEGIN TRANSACTION")
        except BaseException:
            if self.cur is not None:
                self.cur.close()
            if self.lock is not None:
                self.lock.release()
            raise
        return self.cur

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.cur is not None
        try:
            if exc_type is None:
                try:
                    self.cur.execute("COMMIT")
                except duckdb.TransactionException as err:
                    if _is_conflict(err):
                        raise _conflict(err) from err
                    raise
            else:
                try:
                    self.cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the transaction is already gone (failed commit, invalidated database): keep exc
                if _is_conflict(exc):
                    raise _conflict(exc) from exc
        finally:
            self.cur.close()
            self.store._changed()
            if self.lock is not None:
                self.lock.release()

