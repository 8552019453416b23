"""Street context of ranked cells: the location texts a planner can navigate by, and the location artefacts.

For each returned cell (the top N, like its top offences), from the records the query selects in its period:

- ``top_locations``: up to :data:`TOP_LOCATIONS` most frequent location texts ("On or near " removed; ties by
  how often the text occurs among all the dataset's records in the cell, then by name). A cell whose selected
  records carry no text gets the texts of all the dataset's records in it.
- ``police_station_share``: share of those records mapped to a data.police.uk "Police Station" point (crimes
  recorded at the station, not committed in the street);
- ``generic_point_share``: share mapped to any generic snap point (:data:`geodata.locations.GENERIC_POINTS`:
  "Parking Area", "Supermarket"...), police stations included.

Two counts per (cell, text) make these: the selected records in the period and all the dataset's records
(``cell_locations``, kept at ingest, looked up in memory: geodata/cell_locations.py), so no query reads the
dataset's whole history for its returned cells. The selected counts come from the observed ranking's own scan
when it grouped by location text too (:func:`selected_counts`: no second read), else from one read of the
offences restricted to the plan's scope (the time-ordered store reads only the period's row groups). The per-cell
lists are then built in plain Python over the few grouped rows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from geodata import cell_locations
from geodata.locations import GENERIC_POINTS, NO_LOCATION, POLICE_STATION, clean_location, clean_location_sql
from geodata.store import Store
from hotspots.ranking.plan import QueryPlan

TOP_LOCATIONS = 3
CONTEXT_FIELDS = ["top_locations", "police_station_share", "generic_point_share"]
MAIN_LOCATION_RULE = ("a police-station cell is one whose main (most frequent) location text among its selected "
                      "records is 'Police Station': data.police.uk maps crimes recorded at a station to the "
                      "station's point")


def street_context(store: Store, plan: QueryPlan, cells: np.ndarray,
                   selected: list[tuple[int, str, int]] | None = None) -> pd.DataFrame:
    """One row per cell in ``cells`` (uint64 at the plan's resolution, same order): top_locations (list of str),
    police_station_share, generic_point_share (None when the cell has no selected record in the period).
    ``selected``: the (cell, cleaned text, selected records) rows of these cells when the caller's scan already
    counted them (:func:`selected_counts`); else they are read from the store."""
    cells = np.asarray(cells, dtype=np.uint64)
    if not len(cells):
        return pd.DataFrame({"cell": cells}).assign(top_locations=pd.Series([], dtype=object),
                                                    police_station_share=np.nan, generic_point_share=np.nan)
    if selected is None:
        scope, params = plan.scope_sql()
        selected = _run(store, plan, _selected_sql(scope, plan.selection_sql(), plan.resolution), params,
                        ctx_cells=pa.table({"cell": pa.array(cells, type=pa.uint64())}))
    every = cell_locations.location_index(store, plan.query.dataset, plan.resolution).counts(cells)
    return _assemble(cells, _merge(selected, every))


def _selected_sql(scope: str, sel: str, res: int) -> str:
    """(cell, cleaned text, selected records) of the cells in ``ctx_cells``: the records in the plan's scope and
    selection (one read of the offences, of the period's row groups). Grouped by the raw text first and cleaned
    on the few grouped rows (cleaning every record's text with a regular expression was a third of a top-50
    query)."""
    return f"""WITH raw AS (
                SELECT o.h3_{res} AS cell, o.location AS location, count(*) AS n_sel
                FROM offences o JOIN kw ON kw.offence_key = o.offence_key
                WHERE {scope} AND {sel} AND o.h3_{res} IN (SELECT cell FROM ctx_cells)
                GROUP BY 1, 2)
              SELECT cell, {clean_location_sql("location")} AS loc, sum(n_sel)::BIGINT AS n_sel
              FROM raw GROUP BY 1, 2"""


def selected_counts(cells: np.ndarray, locations: list, counts: np.ndarray) -> list[tuple[int, str, int]]:
    """(cell, cleaned text, selected records) from scan groups that carry the raw location text (the observed
    ranking's groups of the returned cells: a few hundred rows, so plain Python): what :func:`_selected_sql`
    counts, without reading the offences again."""
    sums: dict[tuple[int, str], int] = {}
    cleaned: dict[object, str] = {}
    for cell, raw, n in zip(np.asarray(cells, dtype=np.uint64).tolist(), locations, counts.tolist()):
        text = cleaned.get(raw)
        if text is None:
            text = cleaned[raw] = clean_location(raw)
        key = (cell, text)
        sums[key] = sums.get(key, 0) + int(n)
    return [(cell, text, n) for (cell, text), n in sums.items()]


def _merge(selected: list[tuple], every: dict[int, list[tuple[str, int]]]) -> list[tuple]:
    """(cell, text, selected records, all records) rows from the selection's (cell, text, n) rows and every
    record's counts per cell (:meth:`geodata.cell_locations.LocationIndex.counts`)."""
    rows: dict[tuple[int, str], list[int]] = {}
    for cell, items in every.items():
        for text, n in items:
            rows[(cell, text)] = [0, n]
    for cell, text, n in selected:
        rows.setdefault((int(cell), text), [0, 0])[0] += int(n)
    return [(cell, text, ns, na) for (cell, text), (ns, na) in rows.items()]


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


def context_columns(store: Store, plan: QueryPlan, ids: np.ndarray, top_n: int,
                    selected: list[tuple[int, str, int]] | None = None) -> dict[str, np.ndarray]:
    """The context columns for ranked cells ``ids`` (uint64, rank order): filled for the first ``top_n`` (the
    returned ones, as for top_offences), empty beyond. ``selected`` as for :func:`street_context`."""
    ids = np.asarray(ids, dtype=np.uint64)
    n = min(top_n, len(ids))
    ctx = street_context(store, plan, ids[:n], selected)
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


__all__ = ["CONTEXT_FIELDS", "MAIN_LOCATION_RULE", "TOP_LOCATIONS", "add_street_context", "context_columns", "police_station_cells",
           "selected_counts", "street_context"]
