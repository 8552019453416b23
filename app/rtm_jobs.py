"""RTM runs as background jobs: plan (validate), execute (in one worker thread), persist (``rtm_runs``,
``rtm_cells``).  No HTTP here: ``app/routes/rtm.py`` is the door.

* A run is **planned** synchronously when it is posted: dataset, offences (the :class:`HotspotQuery` model:
  preset or offence list, area, resolution, weights), periods and layer names are checked, so a bad request is a
  422 and never becomes a run.
* It is **executed** by a :class:`RunManager` (``ThreadPoolExecutor(max_workers=1)``): the selected offences
  are fetched with :func:`hotspots.ranking.harmspots.offence_rows`, the grid is the query's study-area domain
  (:func:`hotspots.stats.for_query.study_domain`: every H3 cell of the area or the dataset's study area at the
  run's resolution), layers are read back from the store and :func:`rtm.run_rtm` reports its progress into the
  ``rtm_runs`` row (stage, fraction).
* It is **persisted** in one transaction: the per-cell surface (every grid cell: relative risk, class, training
  and test counts, a bitmask of the selected factors present) in ``rtm_cells`` and the result JSON
  (``RTMResult.to_dict()`` plus the query) in ``rtm_runs``, with status ``done``.  A failure stores only the
  status ``failed`` and the error message: nothing half-written.  Runs survive restarts; a run that was queued
  or running when the service stopped is marked failed ("interrupted") at the next start.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import h3
import numpy as np
import pandas as pd

from geodata import layer_store
from geodata.areas import resolve_area
from geodata.store import DATASET_LAYER, DataCannotAnswer, NotStored, Store, StoreError, utc_now
from hotspots.ranking.query import HotspotQuery, period_end_exclusive, period_start

log = logging.getLogger("harmspot.rtm")

SCHEMA = """
CREATE TABLE IF NOT EXISTS rtm_runs (
    id VARCHAR, status VARCHAR, stage VARCHAR, fraction DOUBLE, error VARCHAR, created_at TIMESTAMP,
    started_at TIMESTAMP, finished_at TIMESTAMP, dataset VARCHAR, request VARCHAR, result VARCHAR);
ALTER TABLE rtm_runs ADD COLUMN IF NOT EXISTS key_id VARCHAR;
CREATE TABLE IF NOT EXISTS rtm_cells (
    run_id VARCHAR, cell UBIGINT, relative_risk DOUBLE, risk_class TINYINT, train_offences INTEGER,
    test_offences INTEGER, factors UBIGINT);
"""
STATUSES = ("queued", "running", "done", "failed")
MAX_GRID_CELLS = 600_000  # Essex at res 10 is ~276,000 cells; res 11 over a county (~1.9 M) is refused


class PlanError(ValueError):
    """The request cannot become a run (a bad period, options that do not go together...): a 422, no run is
    created. Names that are not stored are ``NotStored`` (404); what the stored data cannot answer (no layers,
    periods outside the data, a grid too large for the study area) ``DataCannotAnswer`` (409)."""


class RunCancelled(Exception):
    pass


class QueueFull(Exception):
    """Too many runs queued or running (for this key, or in all): a 429 with Retry-After, no run is created."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


DEFAULT_RUN_SECONDS = 60.0  # Retry-After estimate before any run has finished


def ensure_tables(store: Store) -> None:
    """Create this module's tables once per store handle."""
    store.ensure_schema(SCHEMA)


# ---------------------------------------------------------------------------------------------- planning
@dataclass
class RunPlan:
    query: HotspotQuery
    layers: list[str]
    config: dict  # RTMConfig keyword arguments
    fetch: tuple[datetime, datetime]  # offences fetched: [start, end)
    request: dict  # the request as posted (for the record)
    offence_label: str = "offences"
    notes: list[str] = field(default_factory=list)
    grid: dict = field(default_factory=lambda: {"kind": "h3"})  # kind h3 | square (+ cell_size_m)


def plan_run(store: Store, default_weights, body: dict) -> RunPlan:
    """Validate a run request (``body``: the route's pydantic model as a dict with aliases) into a plan."""
    dataset = body.get("dataset")
    if not dataset:
        names = store.query_df("SELECT name FROM datasets ORDER BY created_at DESC LIMIT 1")["name"].tolist()
        if not names:
            raise NotStored("no datasets loaded: POST /datasets first")  # as app.deps.default_dataset
        dataset = names[0]
    store.require_dataset(dataset)  # StoreError -> 404
    try:
        q = HotspotQuery.model_validate({
            "dataset": dataset, "preset": body.get("preset"), "offences": body.get("offences"),
            "area": body.get("area"), "resolution": body.get("resolution", 10), "weights": body.get("weights"),
            "top": None})
    except ValueError as exc:
        errors = getattr(exc, "errors", lambda: [])()
        raise PlanError("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in errors) or str(exc)) from exc
    if q.offences is None and q.preset is None:
        q = q.model_copy(update={"preset": "op-ark"})
    if q.offences:  # unknown offence names are a 422 now, not a failed run later
        from hotspots.ranking.presets import resolve_offences

        resolve_offences(q.offences)
    if q.weights:
        store.weights_table(q.weights)
    layer, ids = (resolve_area(store, q.area, dataset)[:2] if q.area else (DATASET_LAYER, [dataset]))
    n10 = int(store.scalar(f"SELECT count(DISTINCT h3_10) FROM area_cells WHERE layer = ? AND feature_id IN "
                           f"({','.join('?' * len(ids))})", [layer, *ids]) or 0)
    cells = n10 * 7.0 ** (q.resolution - 10)  # ~7 children per cell per finer resolution
    grid = {"kind": body.get("grid") or "h3"}
    if grid["kind"] == "square":
        size = body.get("cell_size_m") or (body["block_length_m"] / 2 if body.get("block_length_m") else None)
        if not size:
            raise PlanError("grid=square needs cell_size_m or block_length_m (cells are half a block)")
        grid["cell_size_m"] = float(size)
        cells = n10 * h3.average_hexagon_area(10, unit="m^2") / size ** 2
    elif body.get("cell_size_m"):
        raise PlanError("cell_size_m is for grid=square")
    if cells > MAX_GRID_CELLS:  # the stored study area is too large for this grid: 409, as emerging's cube limit
        raise DataCannotAnswer(f"the grid would have about {cells:,.0f} cells at resolution {q.resolution} "
                               f"(largest {MAX_GRID_CELLS:,}): choose an area or a coarser resolution"
                               + (" or larger squares" if grid["kind"] == "square" else ""))

    stored = layer_store.layer_names(store)
    wanted = body.get("layers") or stored
    if not stored:
        raise DataCannotAnswer("no environmental layers loaded: POST /layers first")
    unknown = [n for n in wanted if n not in stored]
    if unknown:
        raise NotStored(f"unknown layer(s) {unknown}; loaded layers: {stored}")
    if len(set(wanted)) != len(wanted):
        raise PlanError("layers: each layer once")

    # periods: training [from, to], test (test_from/test_to) right after it, or the last test_months months
    f, t, tf, tt = (body.get(k) for k in ("from", "to", "test_from", "test_to"))
    train_start = period_start(f) if f else None
    train_end = period_end_exclusive(t) if t else (period_start(tf) if tf else None)
    if t and tf and period_start(tf) != period_end_exclusive(t):
        raise PlanError(f"test_from ({tf}) must be the day after the training period ends ({t}): the test "
                        "period follows training directly")
    test_end = period_end_exclusive(tt) if tt else None
    if train_start and train_end and train_start >= train_end:
        raise PlanError(f"'from' ({f}) is not before the end of training")
    if train_end and test_end and test_end < train_end:
        raise PlanError("the test period ends before training ends")
    if train_start and test_end and train_start >= test_end:
        raise PlanError("'from' is after test_to")
    span = store.query_df("SELECT min(occurred_from) AS a, max(occurred_to) AS b FROM offences WHERE dataset = ?",
                          [dataset])
    if pd.isna(span["a"].iloc[0]):
        raise DataCannotAnswer(f"dataset '{dataset}' has no offences")
    first, last = pd.Timestamp(span["a"].iloc[0]).to_pydatetime(), pd.Timestamp(span["b"].iloc[0]).to_pydatetime()
    fetch = (train_start or first, test_end or last)
    if fetch[0] >= fetch[1]:
        raise DataCannotAnswer("the requested periods hold no data of the dataset")

    cfg: dict = {"test_months": int(body.get("test_months") or 3), "bootstrap": int(body.get("bootstrap", 5)),
                 "seed": int(body.get("seed", 0)), "folds": int(body.get("folds", 5)),
                 "recent_months": int(body.get("recent_months", 12)),
                 "priority_top": int(body.get("priority_top", 25))}
    if body.get("distances"):
        cfg["distances"] = tuple(sorted({float(d) for d in body["distances"]}))
    if body.get("distances_blocks") and not body.get("block_length_m"):
        raise PlanError("distances_blocks needs block_length_m")
    if body.get("block_length_m"):
        cfg["block_length_m"] = float(body["block_length_m"])
    if body.get("distances_blocks"):
        cfg["distances_blocks"] = tuple(sorted({float(d) for d in body["distances_blocks"]}))
    cfg["outcome"] = body.get("outcome") or "count"
    if body.get("tweedie_power") is not None:
        if cfg["outcome"] != "harm":
            raise PlanError("tweedie_power is for outcome=harm")
        cfg["tweedie_power"] = float(body["tweedie_power"])
    if body.get("operationalisations"):
        cfg["operationalisations"] = tuple(dict.fromkeys(body["operationalisations"]))
    if train_start:
        cfg["train_start"] = train_start.date().isoformat()
    if train_end:
        cfg["train_end"] = train_end.date().isoformat()
    if test_end:
        cfg["test_end"] = test_end.date().isoformat()
    label = f"{q.preset} offences" if not q.offences else "selected offences"
    return RunPlan(query=q, layers=list(wanted), config=cfg, fetch=fetch, request=body, offence_label=label,
                   grid=grid)


# ---------------------------------------------------------------------------------------------- execution
def execute(store: Store, default_weights, plan: RunPlan, progress) -> tuple[dict, pd.DataFrame]:
    """Run the plan; returns (result dict, per-cell frame). Raises on failure (nothing is written here)."""
    import rtm
    from hotspots.ranking.harmspots import offence_rows
    from hotspots.stats.for_query import study_domain

    q = plan.query
    progress("offences", 0.0)
    rows, filt = offence_rows(store, q, default_weights, period=(plan.fetch[0], plan.fetch[1], "rtm run"))
    if rows.empty:
        raise ValueError("no offence matches the selection in the requested period")
    domain = study_domain(store, q, filt.domain)
    if plan.grid.get("kind") == "square":
        from rtm.grid import square_grid_from_cells

        grid = square_grid_from_cells(domain.cells, plan.grid["cell_size_m"], name=domain.description)
    else:
        grid = rtm.h3_grid_from_cells(domain.cells, name=domain.description)
    crimes = rows.drop(columns=["h3_10"]).rename(columns={"cell": f"h3_{q.resolution}"})
    layers = [layer_store.load_point_layer(store, n) for n in plan.layers]
    cfg = rtm.RTMConfig(**plan.config, offence_label=plan.offence_label)
    result = rtm.run_rtm(crimes, layers, grid, cfg, harm="harm", date="occurred_from",
                         progress=lambda stage, frac: progress(stage, 0.02 + 0.95 * frac))
    progress("storing", 0.98)
    out = result.to_dict()
    summaries = {s["name"]: s for s in layer_store.list_layers(store)}
    out["layers"] = [{**lay, "attribution": summaries.get(lay["name"], {}).get("attribution", "")}
                     for lay in out["layers"]]
    out["query"] = {"dataset": q.dataset, "preset": q.preset if not q.offences else None, "offences": q.offences,
                    "area": q.area, "resolution": q.resolution, "grid": plan.grid,
                    "weights_table": filt.table.name,
                    "offences_fetched": int(len(rows)), "fetched_from": plan.fetch[0].date().isoformat(),
                    "fetched_to_exclusive": plan.fetch[1].date().isoformat(), "study_area": domain.description,
                    "layers": plan.layers}
    present = result.present if result.present is not None else np.zeros((len(grid), 0), np.uint8)
    if present.shape[1] > 63:
        raise ValueError("more than 63 selected factors: cannot store the factor mask")
    bits = (present.astype(np.uint64) << np.arange(present.shape[1], dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    cells = pd.DataFrame({"cell": grid.ids.astype(np.uint64), "relative_risk": result.relative_risk.astype(float),
                          "risk_class": result.risk_class.astype(np.int8),
                          "train_offences": result.train_counts.astype(np.int32),
                          "test_offences": result.test_counts.astype(np.int32), "factors": bits})
    return out, cells


# ---------------------------------------------------------------------------------------------- persistence
def create_run(store: Store, plan: RunPlan, key_id: str | None = None, per_key: int | None = None,
               total: int | None = None) -> str:
    """Record a queued run. With caps, the count of open (queued or running) runs - of ``key_id`` (``per_key``)
    and of everyone (``total``) - is checked in the same transaction as the insert (Store.write), so parallel
    posts cannot overshoot it; over a cap: QueueFull (429) with a Retry-After estimate, nothing stored."""
    ensure_tables(store)
    run_id = uuid.uuid4().hex[:12]

    def write(cur) -> None:
        if per_key is not None or total is not None:
            mine, everyone = cur.execute("""SELECT count(*) FILTER (WHERE key_id = ?), count(*) FROM rtm_runs
                                            WHERE status IN ('queued', 'running')""", [key_id]).fetchall()[0]
            over = ("this key has" if per_key is not None and key_id is not None and mine >= per_key else
                    "the service has" if total is not None and everyone >= total else None)
            if over:
                cap = per_key if over == "this key has" else total
                typical = cur.execute("""SELECT median(epoch(finished_at) - epoch(started_at)) FROM (
                    SELECT finished_at, started_at FROM rtm_runs WHERE status = 'done' AND started_at IS NOT NULL
                    ORDER BY finished_at DESC LIMIT 20)""").fetchall()[0][0]
                wait = int(min(3600, max(5, (typical or DEFAULT_RUN_SECONDS) * max(1, everyone))))
                raise QueueFull(f"{over} {cap} RTM runs queued or running (the most allowed): wait for one to "
                                f"finish (about {wait} s), then post again", wait)
        cur.execute("""INSERT INTO rtm_runs (id, status, stage, fraction, error, created_at, started_at, finished_at,
                                             dataset, request, result, key_id)
                       VALUES (?, 'queued', 'queued', 0.0, NULL, ?, NULL, NULL, ?, ?, NULL, ?)""",
                    [run_id, utc_now(), plan.query.dataset, json.dumps(plan.request, default=str), key_id])

    store.write(write, scope="rtm_runs")
    return run_id


def _update(store: Store, run_id: str, **cols) -> None:
    sets = ", ".join(f"{k} = ?" for k in cols)
    with store.write_lock:
        cur = store.cursor()
        try:
            cur.execute(f"UPDATE rtm_runs SET {sets} WHERE id = ?", [*cols.values(), run_id])
        finally:
            cur.close()


def store_result(store: Store, run_id: str, result: dict, cells: pd.DataFrame) -> None:
    """The cells and the result in ONE transaction, with status done."""
    with store.write_lock, store.transaction() as cur:
        cur.execute("DELETE FROM rtm_cells WHERE run_id = ?", [run_id])
        cur.register("rtm_cells_df", cells.assign(run_id=run_id)[
            ["run_id", "cell", "relative_risk", "risk_class", "train_offences", "test_offences", "factors"]])
        cur.execute("INSERT INTO rtm_cells SELECT * FROM rtm_cells_df")
        cur.unregister("rtm_cells_df")
        cur.execute("UPDATE rtm_runs SET status = 'done', stage = 'done', fraction = 1.0, finished_at = ?, "
                    "result = ? WHERE id = ?", [utc_now(), json.dumps(result, allow_nan=False), run_id])


def get_run(store: Store, run_id: str) -> dict | None:
    ensure_tables(store)
    frame = store.query_df("SELECT * FROM rtm_runs WHERE id = ?", [run_id])
    if frame.empty:
        return None
    return _row(frame.iloc[0].to_dict(), with_result=True)


def list_runs(store: Store, dataset: str | None = None, limit: int = 100) -> list[dict]:
    ensure_tables(store)
    sql = "SELECT * EXCLUDE (result), result IS NOT NULL AS has_result FROM rtm_runs"
    params: list = []
    if dataset:
        sql, params = sql + " WHERE dataset = ?", [dataset]
    frame = store.query_df(sql + " ORDER BY created_at DESC LIMIT ?", params + [int(limit)])
    return [_row(r, with_result=False) for r in frame.to_dict("records")]


def latest_done(store: Store, dataset: str | None = None) -> str | None:
    ensure_tables(store)
    sql = "SELECT id FROM rtm_runs WHERE status = 'done'"
    params: list = []
    if dataset:
        sql, params = sql + " AND dataset = ?", [dataset]
    ids = store.query_df(sql + " ORDER BY finished_at DESC LIMIT 1", params)["id"].tolist()
    return ids[0] if ids else None


def _ts(v) -> str | None:
    return None if v is None or pd.isna(v) else pd.Timestamp(v).isoformat()


def _row(r: dict, with_result: bool) -> dict:
    out = {"id": r["id"], "status": r["status"], "stage": r["stage"],
           "fraction": None if pd.isna(r["fraction"]) else round(float(r["fraction"]), 4),
           "error": None if r["error"] is None or pd.isna(r["error"]) else r["error"], "dataset": r["dataset"],
           "created_at": _ts(r["created_at"]), "started_at": _ts(r["started_at"]),
           "finished_at": _ts(r["finished_at"]), "request": json.loads(r["request"]) if r["request"] else None}
    if with_result:
        out["result"] = json.loads(r["result"]) if r.get("result") else None
    return out


def recover_interrupted(store: Store) -> int:
    """Runs left queued/running by a stopped service are failed (their worker is gone)."""
    ensure_tables(store)
    n = int(store.scalar("SELECT count(*) FROM rtm_runs WHERE status IN ('queued', 'running')") or 0)
    if n:
        _update_where_open(store, "interrupted: the service stopped before the run finished; post it again")
    return n


def _update_where_open(store: Store, message: str) -> None:
    with store.write_lock:
        cur = store.cursor()
        try:
            cur.execute("UPDATE rtm_runs SET status = 'failed', error = ?, finished_at = ? "
                        "WHERE status IN ('queued', 'running')", [message, utc_now()])
        finally:
            cur.close()


def run_plan(store: Store, default_weights, run_id: str, plan: RunPlan, check=None, report=None) -> bool:
    """Execute a created run and record its outcome: done with its result, or failed with the message (never
    raises).  ``check()`` may raise RunCancelled at any progress report; ``report(stage, fraction)`` sees every
    report (the CLI's progress bar); the store row is updated throttled (new stage, +2 %, or 1 s)."""
    last = {"stage": None, "fraction": -1.0, "t": 0.0}

    def progress(stage: str, fraction: float) -> None:
        if check is not None:
            check()
        if report is not None:
            report(stage, fraction)
        now = time.monotonic()
        if stage != last["stage"] or fraction - last["fraction"] >= 0.02 or now - last["t"] >= 1.0:
            _update(store, run_id, stage=stage, fraction=float(min(fraction, 0.99)))
            last.update(stage=stage, fraction=fraction, t=now)

    try:
        _update(store, run_id, status="running", stage="starting", started_at=utc_now())
        result, cells = execute(store, default_weights, plan, progress)
        store_result(store, run_id, result, cells)
        log.info("RTM run %s done in %.1f s", run_id, result.get("timings", {}).get("total") or -1)
        return True
    except Exception as exc:  # noqa: BLE001 -- every failure becomes a failed run with its message
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, StoreError, RunCancelled)):
            log.error("RTM run %s failed:\n%s", run_id, traceback.format_exc())
            message = f"{type(exc).__name__}: {message}"
        try:
            _update(store, run_id, status="failed", error=message[:2000], finished_at=utc_now())
        except Exception:  # the store is gone (shutdown): recovered as interrupted at the next start
            log.exception("could not record the failure of RTM run %s", run_id)
        return False


# ---------------------------------------------------------------------------------------------- manager
class RunManager:
    """One worker thread for RTM runs (a run uses the whole machine for seconds to a minute)."""

    def __init__(self, store: Store, default_weights):
        self.store = store
        self.default_weights = default_weights
        self.stop = threading.Event()
        ensure_tables(store)
        recovered = recover_interrupted(store)
        if recovered:
            log.warning("%d RTM run(s) interrupted by the last shutdown marked failed", recovered)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtm-run")

    def submit(self, plan: RunPlan, key_id: str | None = None, per_key: int | None = None,
               total: int | None = None) -> str:
        """Queue a run (QueueFull beyond the caps: the queue is bounded per key and in all)."""
        run_id = create_run(self.store, plan, key_id, per_key, total)
        self.executor.submit(self._execute, run_id, plan)
        return run_id

    def _execute(self, run_id: str, plan: RunPlan) -> None:
        def cancelled() -> None:
            if self.stop.is_set():
                raise RunCancelled("cancelled: the service is shutting down")

        run_plan(self.store, self.default_weights, run_id, plan, cancelled)

    def shutdown(self) -> None:
        self.stop.set()
        self.executor.shutdown(wait=True, cancel_futures=True)
        try:
            _update_where_open(self.store, "cancelled: the service stopped before the run finished; post it again")
        except Exception:
            log.exception("could not mark open RTM runs as cancelled")
