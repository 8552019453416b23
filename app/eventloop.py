"""Nothing blocking on the event loop: a guard that makes it an error, and a watchdog that measures it.

One uvicorn process serves every request from ONE event-loop thread. Routes declared with ``def`` run in the
threadpool; anything ``async`` (middleware, ``async def`` routes, exception handlers) runs on the loop itself, so
a single blocking call there - a store query, a wait for the store's write lock behind a long ingest, a big
parse - stalls every request: ``/health``, ``/openapi.json`` and even 401s (issue 13 item 5: a ``POST /patrols``
during a 1 M-row upload froze the service for 6.3 s).

* :class:`LoopGuard` (ASGI middleware): once start-up is complete it calls ``Store.forbid_thread`` with the
  loop's thread, so every store query, transaction or write-lock wait made on the loop raises
  ``BlockingCallOnLoop`` (a 500 naming the cause) instead of freezing the service. The whole test suite therefore
  fails on any such call it reaches; lifted again at shutdown.
* :class:`Watchdog`: a task that wakes every 50 ms and logs ``event loop blocked for N ms`` (logger
  ``harmspot.eventloop``) when it wakes late by more than ``HARMSPOT_LOOP_LAG_WARN_MS``: CPU work on the loop that
  never touches the store shows up too. ``max_lag_ms`` keeps the worst since start.

Blocking work belongs in a ``def`` route, or behind ``await run_in_threadpool(fn, ...)`` in an async one.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time

log = logging.getLogger("harmspot.eventloop")


class Watchdog:
    """Measures how late the event loop wakes a 50 ms sleeper; logs every lag above ``warn_ms``."""

    PERIOD = 0.05

    def __init__(self, warn_ms: float):
        self.warn_ms = warn_ms
        self.max_lag_ms = 0.0
        self.stalls = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.warn_ms > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="harmspot-loop-watchdog")

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.PERIOD)
            lag = (time.perf_counter() - t - self.PERIOD) * 1000
            self.max_lag_ms = max(self.max_lag_ms, lag)
            if lag > self.warn_ms:
                self.stalls += 1
                log.warning("event loop blocked for %.0f ms (a blocking call in async code, or the machine's CPUs "
                            "saturated)", lag)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


class LoopGuard:
    """ASGI middleware: forbid store calls on the loop thread from start-up complete until shutdown; run the
    watchdog meanwhile (``app.state.harmspot_watchdog``)."""

    def __init__(self, app, warn_ms: float):
        self.app = app
        self.warn_ms = warn_ms

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        starlette_app = scope.get("app")

        def store():
            state = getattr(getattr(starlette_app, "state", None), "harmspot", None)
            return state.store if state is not None else None

        async def guarded_receive():
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                s = store()
                if s is not None:
                    s.forbid_thread(None)  # shutdown hooks may close things on the loop thread
                dog = getattr(starlette_app.state, "harmspot_watchdog", None)
                if dog is not None:
                    dog.stop()
            return message

        async def guarded_send(message):
            if message["type"] == "lifespan.startup.complete":
                s = store()
                if s is not None:
                    s.forbid_thread(threading.get_ident())
                dog = Watchdog(self.warn_ms)
                starlette_app.state.harmspot_watchdog = dog
                dog.start()
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)
