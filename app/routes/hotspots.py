"""GET /hotspots (JSON, CSV, GeoJSON), GET /hotspots.geojson, and the OGC ``harm-spots`` collection (the same
query and cells, registered in ``app.collections``)."""
from __future__ import annotations

import copy
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.cache import cached_response_async, cached_value
from app.collections import (Collection, Items, ItemsRequest, QueryDescription, Registry, cells_page,
                             hotspot_query_for_items, offences_extent)
from app.deps import Disclosure, Format, GiStar, GiStarParams, Query_, State
from app.errors import ApiError
from app.render import CELL_FIELDS, GEOJSON_MEDIA, cells_response, to_geojson
from app.state import ServiceState
from hotspots.publish.disclosure import DisclosureError, DisclosurePolicy, public_harm_spots
from hotspots.ranking.context import CONTEXT_FIELDS
from hotspots.ranking.forecast import FORECAST_COLUMNS
from hotspots.ranking.harmspots import HotspotResult, harm_spots
from hotspots.ranking.query import HotspotQuery
from hotspots.stats.for_query import GI_FIELDS, add_gistar, gistar_for_query

router = APIRouter(tags=["hotspots"])
FIELDS = [*CELL_FIELDS, *CONTEXT_FIELDS, "top_offences"]  # top_offences last (Gi* columns go before it)

HOTSPOT_EXAMPLE = {
    "dataset": "essex-sample", "from": "2024-04-01", "to": "2024-04-30", "preset": "op-ark", "resolution": 10,
    "weights_table": "harmspot-open-2026", "weights_exact": "approximate", "time_precision": ["month"],
    "not_applied": ["data.police.uk has only broad categories: ..."], "total_harm": 524838.0,
    "concentration": {"of_cells_with_harm": {"top_1pct": 0.085, "top_2pct": 0.128, "top_5pct": 0.218}},
    "cells": [{"h3": "8a194e0d3a77fff", "rank": 1, "harm": 3238.09, "count": 34, "harm_share": 0.00617,
               "area_km2": 0.0133, "harm_per_km2": 243349.8, "lat": 51.7362, "lon": 0.4853,
               "top_locations": ["High Street", "Parking Area", "Station Road"], "police_station_share": 0.0,
               "generic_point_share": 0.18,
               "top_offences": [{"offence": "Violence and sexual offences", "harm": 3148.4, "count": 34}]}],
}


def hotspot_result(state, q: HotspotQuery) -> HotspotResult:
    """``harm_spots`` once per store state and query (app.cache): /hotspots, its GeoJSON and the OGC harm-spots
    pages share it. Never mutate it (copy first)."""
    return cached_value(state, ("harm_spots", q), lambda: harm_spots(state.store, q, state.default_weights))


def gistar_result(state, q: HotspotQuery, value: str = "harm", transform: str | None = None, permutations: int = 0):
    """``gistar_for_query`` once per store state; ``top`` does not change Gi* (every domain cell), so it is not
    part of the key: /hotspots?stats=gistar and every page of the OGC gistar collection share one computation."""
    return cached_value(state, ("gistar", q.model_copy(update={"top": None}), value, transform, permutations),
                        lambda: gistar_for_query(state.store, q, state.default_weights, value=value,
                                                 transform=transform, permutations=permutations))


def _hotspots(state, q: HotspotQuery, disclosure: DisclosurePolicy | None, gi: GiStarParams, fmt: str) -> Response:
    if disclosure is not None:
        return render(public_harm_spots(state.store, q, state.default_weights, disclosure), fmt)
    result = hotspot_result(state, q)
    if not gi.on:
        return render(result, fmt)
    g = gistar_result(state, q, gi.value, None if gi.transform == "none" else gi.transform, gi.permutations)
    result, gmeta = add_gistar(copy.copy(result), g, gi.value)  # add_gistar sets .cells: not on the cached one
    return render(result, fmt, [*FIELDS[:-1], *GI_FIELDS, FIELDS[-1]], extra_meta={"gistar": gmeta})


def fields_for(result: HotspotResult, fields: list[str] = FIELDS) -> list[str]:
    """The cell fields of a result: the forecast value and its parts follow `count` when method=forecast."""
    if result.method != "forecast":
        return fields
    at = fields.index("count") + 1
    return [*fields[:at], *FORECAST_COLUMNS, *fields[at:]]


def _no_public_forecast(q, disclosure) -> None:
    if disclosure is not None and q.method == "forecast":
        raise DisclosureError("method=forecast is not available in public mode (its all-record "
                              "part counts records of every type, including cells that public output withholds)")


def render(result: HotspotResult, fmt: str, fields: list[str] = FIELDS, filename: str = "hotspots",
           extra_meta: dict | None = None) -> Response:
    return cells_response({**result.meta(), **(extra_meta or {})}, result.top_cells, fields_for(result, fields), fmt,
                          filename,
                          {"X-Harmspot-Weights-Table": result.weights_table,
                           "X-Harmspot-Time-Precision": ",".join(result.time_precision)})


@router.get(
    "/hotspots",
    summary="Harm spots: H3 cells ranked by harm (days under the harm weights table)",
    description="Offences filtered by period, preset or offence list, time window and area; weighted by the harm "
    "table; aggregated to H3 cells at the requested resolution; ranked by harm, highest first. Each response names "
    "the weights table, whether weights were exact (Home Office code) or approximate (police.uk category), the time "
    "precision of the records, and what the preset could not apply. `format=csv` for tasking scripts, "
    "`format=geojson` for GIS. `stats=gistar` adds Getis-Ord Gi* columns (gi_z, gi_p, gi_q, gi_class) to every "
    "cell and a `gistar` block (domain, inference, assumptions, caveats) to the response. `method=forecast` ranks "
    "cells by expected harm in the period after `to` instead (from records up to `to` only; `from` starts the "
    "look-back, default all history): every cell then carries forecast_harm and its parts (forecast_own_harm, "
    "forecast_records, forecast_records_harm) and the response a `forecast` block (model, parameters, forecast "
    "period, measured backtest skill, caveats); harm and count stay the look-back's observed values.",
    responses={200: {"content": {"application/json": {"example": HOTSPOT_EXAMPLE}, "text/csv": {},
                                 GEOJSON_MEDIA: {}}}},
)
async def get_hotspots(request: Request, state: State, q: Query_, disclosure: Disclosure, gi: GiStar,
                 format: Annotated[Format, Query(description="json (default), csv or geojson")] = "json") -> Response:
    _no_public_forecast(q, disclosure)
    if disclosure is not None and gi.on:
        raise DisclosureError("stats=gistar is not available in public mode (it is "
                              "computed from every cell, including withheld ones)")
    key = ("hotspots", q, disclosure, gi.key(), format)
    return await cached_response_async(request, state, key, lambda: _hotspots(state, q, disclosure, gi, format))


@router.get("/hotspots.geojson", summary="Harm spots as an RFC 7946 FeatureCollection of hexagons",
            description="The same cells as /hotspots, as GeoJSON polygons (WGS84 lon/lat, counter-clockwise rings).",
            responses={200: {"content": {GEOJSON_MEDIA: {}}}})
async def get_hotspots_geojson(request: Request, state: State, q: Query_, disclosure: Disclosure) -> Response:
    _no_public_forecast(q, disclosure)
    return await cached_response_async(request, state, ("hotspots", q, disclosure, None, "geojson"),
                                       lambda: _hotspots(state, q, disclosure, GiStarParams(), "geojson"))


# ------------------------------------------------------------------------------------- OGC collection
LABEL_BLOCK = 1_000  # ranks labelled (top offences) by the first computation of a harm-spots collection


def _label_depth(needed: int, top: int | None) -> int | None:
    """How deep one harm-spot computation labels: the first LABEL_BLOCK ranks (one computation serves every page
    a GIS client asks for within them, 10 at a time or 1,000), else every ranked cell (one more serves all the
    deeper pages); never deeper than ``top``."""
    depth = LABEL_BLOCK if needed <= LABEL_BLOCK else None
    if top is not None:
        depth = top if depth is None else min(depth, top)
    return depth


QUERY_FIELDS = ["dataset", "period", "preset", "weights_table"]  # on every OGC cell feature, so a GeoPackage keeps them


def describe_query(state: ServiceState, req: ItemsRequest) -> QueryDescription:
    """The ranking a cell-collection request stands for (defaults resolved: dataset, period, preset, weights
    table, resolution), from the same cached computation its first page slices."""
    q = hotspot_query_for_items(state, req)
    meta = hotspot_result(state, q.model_copy(update={"top": _label_depth(req.offset + req.limit, q.top)})).meta()
    selection = meta["preset"] or "offences " + ",".join(meta["offences"] or [])
    fields = {"dataset": meta["dataset"], "period": f"{meta['from']}/{meta['to']}", "preset": selection,
              "weights_table": meta["weights_table"]}
    summary = (f"{selection}, {meta['from']} to {meta['to']}, weights {meta['weights_table']}, H3 res "
               f"{meta['resolution']}, dataset {meta['dataset']}"
               + (f", ranked by forecast harm for the period after {meta['to']}" if meta["method"] == "forecast" else ""))
    return QueryDescription(summary, fields)


def harm_spot_items(state: ServiceState, req: ItemsRequest) -> Items:
    """Rank every cell once (cheap) and label the first LABEL_BLOCK ranks; a page is a slice of that cached result
    (app.cache), and a page deeper than the block (or a bbox/feature hit deeper) is a slice of the fully labelled
    one: at most two computations per query and store state, however the client pages.

    The engine's cost grows with how many cells get their top offences (``top``), so the first block costs what
    ``/hotspots?top=1000`` costs, not what labelling every cell would.  Ranks, shares and totals come from the full
    ranking, so they are the same on every page and in ``/hotspots``.
    """
    q = hotspot_query_for_items(state, req)
    if req.disclosure is not None:
        return _public_items(state, q, req)
    labelled = _label_depth(req.offset + req.limit, q.top)
    result = hotspot_result(state, q.model_copy(update={"top": labelled}))  # cached: pages are slices of it
    ranked = result.cells if q.top is None else result.cells.head(q.top)
    ranked, page = cells_page(ranked, req, q.resolution)
    deepest = int(page["rank"].max()) if len(page) else 1
    if labelled is not None and deepest > labelled:  # a bbox or one feature ranked deeper than the block
        result = hotspot_result(state, q.model_copy(update={"top": _label_depth(deepest, q.top)}))
    cells = result.cells.set_index("h3", drop=False).loc[page["h3"].tolist()].reset_index(drop=True)
    meta = {**result.meta(), "top": q.top}
    cells = cells.assign(**describe_query(state, req).fields)
    fields = [*fields_for(result), *QUERY_FIELDS]
    fc = to_geojson(meta, cells, fields)
    return Items(fc["features"], int(len(ranked)), fc["metadata"], fields)


def _public_items(state: ServiceState, q: HotspotQuery, req: ItemsRequest) -> Items:
    """The public output of the query (hotspots.publish.disclosure, as /hotspots?mode=public): every published
    cell ranked once per store state and policy, then the page (bbox keeps whole published cells)."""
    policy: DisclosurePolicy = req.disclosure
    # a request public output does not publish raises DisclosureError: 403 (app/errors.py), as on /hotspots
    result = cached_value(state, ("public_harm_spots", q, policy),
                          lambda: public_harm_spots(state.store, q, state.default_weights, policy))
    ranked, page = cells_page(result.top_cells, req, policy.resolution)
    fc = to_geojson({**result.meta(), "top": q.top}, page, FIELDS)
    return Items(fc["features"], int(len(ranked)), fc["metadata"], FIELDS)


HARM_SPOTS = Collection(
    id="harm-spots", title="Harm spots",
    description="H3 cells ranked by harm (days under the harm weights table; `harm_unit` in the metadata names it): the same query and cells as GET /hotspots. Query "
    "parameters dataset, from, to, preset, offences, area, resolution, weights, top, rank_by, include_asb and "
    "method work as on /hotspots (default: every cell with harm, ranked by observed harm; method=forecast ranks "
    "by expected harm in the period after `to`); datetime sets the period (whole days); "
    "bbox keeps the ranked cells whose hexagon intersects it (ranks and shares are not recomputed). "
    "mode=public (and always for a public key) gives the disclosure-controlled output of /hotspots?mode=public.",
    items=harm_spot_items, extent=offences_extent, kind="cells", describe=describe_query, public=True,
    style={"property": "harm", "type": "sequential"}, keywords=("harm", "hotspots", "H3", "CCHI"))


def register_collections(registry: Registry) -> None:
    registry.add(HARM_SPOTS)
