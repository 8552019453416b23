"""Street context of ranked cells: the location texts a planner can navigate by, and the location artefacts.

For each returned cell (the top N, like its top offences), from the records the query selects in its period:

- ``top_locations``: up to :data:`TOP_LOCATIONS` most frequent location texts ("On or near " removed; ties by
  name). A cell whose selected records carry no text gets the texts of all the dataset's records in it.
- ``police_station_share``: share of those records mapped to a data.police.uk "Police Station" point (crimes
  recorded at the station, not committed in the street);
- ``generic_point_share``: share mapped to any generic snap point (:data:`geodata.locations.GENERIC_POINTS`:
  "Parking Area", "Supermarket"...), police stations included.

One grouped scan of the offences in the returned cells (DuckDB); the per-cell lists are built over the few rows
of those cells only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from geodata.locations import GENERIC_POINTS, NO_LOCATION, POLICE_STATION, clean_location_sql
from geodata.store import Store
from hotspots.ranking.plan import QueryPlan

TOP_LOCATIONS = 3
CONTEXT_FIELDS = ["top_locations", "police_station_share", "generic_point_share"]
MAIN_LOCATION_RULE = ("a police-station cell is one whose main (most frequent) location text among its selected "
                      "records is 'Police Station': data.police.uk maps crimes recorded at a station to the "
                      "station's point")


def street_context(store: Store, plan: QueryPlan, cells: np.ndarray) -> pd.DataFrame:
    """One row per cell in ``cells`` (uint64 at the plan's resolution, same order): top_locations (list of str),
    police_station_share, generic_point_share (None when the cell has no selected record in the period)."""
    cells = np.asarray(cells, dtype=np.uint64)
    out = pd.DataFrame({"cell": cells})
    if not len(cells):
        return out.assign(top_locations=pd.Series([], dtype=object), police_station_share=np.nan,
                          generic_point_share=np.nan)
    scope, params = plan.scope_sql()
    sel = plan.selection_sql()
    res = plan.resolution
    # grouped by the raw text first, cleaned on the few grouped rows (cleaning every record's text with a regular
    # expression was a third of a top-50 query's time at 1 M offences)
    sql = f"""WITH raw AS (
                SELECT o.h3_{res} AS cell, o.location AS location,
                       count(*) FILTER (WHERE {scope} AND {sel}) AS n_sel, count(*) AS n_all
                FROM offences o LEFT JOIN kw ON kw.offence_key = o.offence_key
                WHERE o.dataset = ? AND o.h3_{res} IN (SELECT cell FROM ctx_cells)
                GROUP BY 1, 2)
              SELECT cell, {clean_location_sql("location")} AS loc, sum(n_sel)::BIGINT AS n_sel,
                     sum(n_all)::BIGINT AS n_all
              FROM raw GROUP BY 1, 2"""
    cur = store.cursor()
    try:
        plan.register(cur)
        cur.register("ctx_cells", pd.DataFrame({"cell": cells}))
        df = cur.execute(sql, [*params, plan.query.dataset]).df()
    finally:
        cur.close()
    df["cell"] = df["cell"].to_numpy(np.uint64)
    low = df["loc"].str.lower()
    generic = low.isin([n.lower() for n in GENERIC_POINTS])
    station = low == POLICE_STATION.lower()
    sums = (df.assign(ps=np.where(station, df["n_sel"], 0), gp=np.where(generic, df["n_sel"], 0))
            .groupby("cell")[["n_sel", "ps", "gp"]].sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        ps_share = (sums["ps"] / sums["n_sel"]).where(sums["n_sel"] > 0)
        gp_share = (sums["gp"] / sums["n_sel"]).where(sums["n_sel"] > 0)
    texts = df[(df["loc"] != "") & (low != NO_LOCATION.lower())]
    has_sel = texts.groupby("cell")["n_sel"].transform("max") > 0
    texts = texts[(texts["n_sel"] > 0) | ~has_sel]  # the selection's texts when it has any, else all records'
    texts = texts.sort_values(["cell", "n_sel", "n_all", "loc"], ascending=[True, False, False, True],
                              kind="mergesort")
    top = texts.groupby("cell", sort=False).head(TOP_LOCATIONS).groupby("cell", sort=False)["loc"].agg(list)
    out["top_locations"] = [top.get(c, []) for c in cells.tolist()] if len(top) else [[] for _ in range(len(cells))]
    out["police_station_share"] = out["cell"].map(ps_share.round(4)).astype(float)
    out["generic_point_share"] = out["cell"].map(gp_share.round(4)).astype(float)
    return out


def add_street_context(store: Store, plan: QueryPlan, cells: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """``cells`` (a ranked result's cells) with the context columns; filled for the first ``top_n`` rows (the
    returned ones, as for top_offences), empty beyond."""
    n = min(top_n, len(cells))
    ctx = street_context(store, plan, cells["cell"].to_numpy(np.uint64)[:n])
    none: list = []
    out = cells.copy(deep=False)
    out["top_locations"] = list(ctx["top_locations"]) + [none] * (len(cells) - n)
    for col in ("police_station_share", "generic_point_share"):
        values = np.full(len(cells), np.nan)
        values[:n] = ctx[col].to_numpy(float)
        out[col] = values
    return out


def police_station_cells(cells: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the police-station cells among ``cells`` (see :data:`MAIN_LOCATION_RULE`)."""
    if "top_locations" not in cells:
        return np.zeros(len(cells), dtype=bool)
    main = cells["top_locations"].map(lambda v: v[0] if isinstance(v, list) and v else "")
    at_station = cells["police_station_share"].fillna(0).to_numpy(float) > 0  # the text is the selection's own
    return (main.str.lower() == POLICE_STATION.lower()).to_numpy(bool) & at_station


__all__ = ["CONTEXT_FIELDS", "MAIN_LOCATION_RULE", "TOP_LOCATIONS", "add_street_context", "police_station_cells",
           "street_context"]
