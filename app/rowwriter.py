"""Small rows appended by one background thread in batches (the audit log): awaited without a threadpool token.

Every audited request appends one ``audit_log`` row. Written from the shared threadpool, each row waited for the
store's write lock in a worker thread; behind a long ingest (which holds that lock for seconds) the 40 worker
threads all ended up waiting for it, and every ``def`` route - reads included - stalled until the commit.
:class:`RowWriter` gives the rows to ONE dedicated thread instead: it takes whatever has queued, inserts it in
one statement under the write lock, and resolves each caller's future on its event loop. A long write elsewhere
only makes the queue longer; callers (already past sending their response) wait on the loop, holding nothing.
Under load, many rows share one insert, so the audit costs far less than one transaction per request.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Sequence

import pyarrow as pa

log = logging.getLogger("harmspot.rowwriter")
MAX_BATCH = 5_000


class RowWriter:
    """Append rows of ``table`` (``columns`` values each) from any thread or coroutine, in batches."""

    def __init__(self, store, table: str, columns: int, name: str = "harmspot-rowwriter"):
        self.store = store
        self.columns = columns
        self.sql = f"INSERT INTO {table} SELECT * FROM rowwriter_batch"
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    async def write(self, row: Sequence) -> None:
        """Queue ``row`` and wait (on the loop, holding nothing) until it is stored; raises what the insert raised."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put((tuple(row), loop, fut))
        await fut

    def write_nowait(self, row: Sequence) -> None:
        """Queue ``row`` and return at once (errors are logged)."""
        self._q.put((tuple(row), None, None))

    def close(self, timeout: float = 30) -> None:
        """Store what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._q.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            error: BaseException | None = None
            try:
                rows = [row for row, _, _ in batch]
                frame = pa.table({f"c{i}": pa.array([r[i] for r in rows]) for i in range(self.columns)})
                with self.store.write_lock:
                    cur = self.store.cursor()
                    try:  # one statement, one commit, however many rows queued
                        cur.register("rowwriter_batch", frame)
                        cur.execute(self.sql)
                        cur.unregister("rowwriter_batch")
                    finally:
                        cur.close()
            except Exception as exc:  # reported to the callers; the thread keeps going
                log.exception("could not store %d rows", len(batch))
                error = exc
            by_loop: dict = {}
            for _, loop, fut in batch:
                if loop is not None:
                    by_loop.setdefault(loop, []).append(fut)
            for loop, futs in by_loop.items():  # one wake-up per loop and batch, not one per row
                try:
                    loop.call_soon_threadsafe(_resolve, futs, error)
                except RuntimeError:  # that loop has closed: nobody is waiting any more
                    pass
            if stop:
                return
            if len(batch) > 1:  # under load: let the next rows gather (group commit; nobody waits on them)
                time.sleep(min(0.02, 0.001 * len(batch)))


def _resolve(futs: list[asyncio.Future], error: BaseException | None) -> None:
    for fut in futs:
        if fut.done():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
