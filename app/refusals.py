"""Repeated refusals aggregated in the audit log, so a flood of 401s cannot grow the store without bound.

Every refused request (401, 403, 429) is still counted, but per (client address, status, key id) and window of
``window_s`` seconds only the FIRST is written at once (``repeats = 1``); the others are counted in memory and
written as ONE row when the window closes (``repeats = n``, with the last refused request's method, path and
query), or when an admin reads ``/audit``, or at shutdown. 20,000 refusals from one client in a minute are two
rows, not 20,000. Memory is bounded: at most ``max_buckets`` open windows; refusals beyond that fold into one
bucket per status with the client ``(many clients)``. Served requests are audited one row each, as before.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

AGGREGATED = frozenset({401, 403, 429})
MANY = "(many clients)"


@dataclass
class _Bucket:
    opened: float
    count: int  # refusals after the first (not yet written)
    last: list  # the last refused request's audit row


class RefusalAggregator:
    def __init__(self, window_s: float = 60.0, max_buckets: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: dict[tuple, _Bucket] = {}
        self._lock = threading.Lock()
        self._swept = clock()

    def admit(self, row: list, client: str, status: int, key_id: str | None) -> tuple[bool, list[list]]:
        """(write this row now?, summary rows now due). ``row`` ends with its ``repeats`` value (1)."""
        now = self.clock()
        with self._lock:
            due = self._sweep(now) if now - self._swept >= 1.0 else []
            key = (client, status, key_id)
            if key not in self._buckets and len(self._buckets) >= self.max_buckets:
                key = (MANY, status, None)
                row = [*row[:8], MANY, *row[9:]]
            bucket = self._buckets.get(key)
            if bucket is not None and now - bucket.opened >= self.window_s:
                due += self._close(key)
                bucket = None
            if bucket is None:
                self._buckets[key] = _Bucket(now, 0, row)
                return True, due
            bucket.count += 1
            bucket.last = row
            return False, due

    def flush(self) -> list[list]:
        """Summary rows of every open window (GET /audit, shutdown); the windows stay open."""
        with self._lock:
            out = []
            for b in self._buckets.values():
                if b.count:
                    out.append([*b.last[:-1], b.count])
                    b.count = 0
            return out

    def _sweep(self, now: float) -> list[list]:
        self._swept = now
        out: list[list] = []
        for key in [k for k, b in self._buckets.items() if now - b.opened >= self.window_s]:
            out += self._close(key)
        return out

    def _close(self, key: tuple) -> list[list]:
        b = self._buckets.pop(key)
        return [[*b.last[:-1], b.count]] if b.count else []
