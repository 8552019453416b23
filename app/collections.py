"""OGC API - Features collections as providers (the pygeoapi idea): what a collection is, and the one registry.

A provider is a :class:`Collection`: an id, a title, an ``items`` function ``(state, ItemsRequest) -> Items``
that returns the GeoJSON features of one page plus the number matched, an ``extent`` function, an
``available`` check (listed only once its engine or data exists) and a ``style`` hint for the map.

Each engine-facing router owns its collections and registers them here through a module-level
``register_collections(registry)`` function, which ``app.main.create_app`` calls for every router it includes
(in inclusion order, so harm spots come first): ``app.routes.hotspots`` (harm-spots), ``app.routes.meta``
(boundary layers), ``app.routes.stats`` (gistar), ``app.routes.rtm`` (rtm-risk, priority-places, one
``poi-<layer>`` per stored layer).  ``app.routes.ogc`` serves only the protocol (landing, conformance,
collections, paging, formats) over the :class:`Registry` it finds on the application.  Routers import this
module; this module imports no router, so the doors form no import circle (tests/test_structure.py).

Also here, for the cell collections (harm spots, Gi*): the ``HotspotQuery`` an items request stands for, the
bbox filter on ranked cells, and the extent of the stored offences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any, Callable, Literal

import numpy as np
import pandas as pd
from fastapi import Depends, Request

from app.deps import hotspot_query
from app.errors import ApiError
from app.state import ServiceState
from geodata.cells import bbox_geometry, bbox_parts
from hotspots.ranking.query import HotspotQuery

DEFAULT_LIMIT = 1_000   # a page QGIS/GDAL fetch in well under a second at res 10
MAX_LIMIT = 10_000      # the map asks for up to this many hexagons per request (5,000 renders smoothly)
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
TRS = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
# the /hotspots parameters the cell collections take (documented on the items operation)
HOTSPOT_PARAMETERS = ("dataset", "from", "to", "preset", "offences", "area", "resolution", "weights", "top",
                      "rank_by", "include_asb", "method")


# ---------------------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class ItemsRequest:
    """One items request, already parsed: OGC parameters plus the hotspot query parameters."""

    bbox: tuple[float, float, float, float] | None = None
    start: date | None = None   # datetime interval, inclusive days; None = open
    end: date | None = None
    has_datetime: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    query: dict[str, Any] = field(default_factory=dict)  # dataset, from, to, preset, ... (cell collections)
    feature_id: str | None = None  # set for /items/{featureId}
    disclosure: Any = None  # a hotspots.publish.disclosure.DisclosurePolicy: public output (app.deps.disclosure_policy)


@dataclass(frozen=True)
class Items:
    features: list[dict]          # GeoJSON features of this page (or the one feature asked for)
    number_matched: int
    metadata: dict | None = None  # query, weights table, caveats: a foreign member of the FeatureCollection
    fields: list[str] | None = None  # CSV column order


@dataclass(frozen=True)
class Collection:
    id: str
    title: str
    description: str
    items: Callable[[ServiceState, ItemsRequest], Items]
    extent: Callable[[ServiceState], dict]
    available: Callable[[ServiceState], bool] = lambda _state: True
    kind: Literal["cells", "areas", "points", "lines"] = "cells"
    style: dict = field(default_factory=dict)  # hint for the map: {"property", "type": sequential|categorical|outline}
    keywords: tuple[str, ...] = ()
    # the query a request stands for, in words and fields (cell collections: dataset, period, preset, weights),
    # shown in the collection's title and description so GIS clients record it; None = nothing to say
    describe: Callable[[ServiceState, ItemsRequest], "QueryDescription"] | None = None
    public: bool = False  # has a public form (disclosure-controlled, or no offence data): served to public keys


@dataclass(frozen=True)
class QueryDescription:
    summary: str            # e.g. "op-ark, 2024-04-01 to 2024-04-30, weights harmspot-open-2026, H3 res 10"
    fields: dict[str, Any]  # e.g. {"dataset", "period", "preset", "weights_table"}: also a property of each feature


# ------------------------------------------------------------------------------------------ the registry
class Registry:
    """The collections one application serves: fixed ones (listed when ``available``) and dynamic ones
    (functions ``state -> [Collection]``, e.g. one per stored POI layer), in registration order."""

    def __init__(self) -> None:
        self.static: tuple[Collection, ...] = ()
        self.dynamic: tuple[Callable[[ServiceState], list[Collection]], ...] = ()
        self._dynamic_at: tuple[int, ...] = ()  # how many static collections preceded each dynamic provider

    def add(self, *collections: Collection) -> None:
        taken = {c.id for c in self.static}
        for c in collections:
            if c.id in taken:
                raise ValueError(f"collection '{c.id}' is registered twice")
            taken.add(c.id)
        self.static = (*self.static, *collections)

    def add_dynamic(self, make: Callable[[ServiceState], list[Collection]]) -> None:
        self.dynamic = (*self.dynamic, make)
        self._dynamic_at = (*self._dynamic_at, len(self.static))

    def collections(self, state: ServiceState) -> list[Collection]:
        """Static (when available) and dynamic collections, in registration order."""
        out: list[Collection] = []
        at = list(self._dynamic_at) + [len(self.static)] * (len(self.dynamic) - len(self._dynamic_at))
        done = 0
        for make, pos in zip(self.dynamic, at):
            out += [c for c in self.static[done:pos] if c.available(state)]
            done = max(done, pos)
            out += make(state)
        return out + [c for c in self.static[done:] if c.available(state)]

    def get(self, state: ServiceState, collection_id: str) -> Collection:
        found = self.collections(state)
        for c in found:
            if c.id == collection_id:
                return c
        raise ApiError(404, "not_found", f"no collection '{collection_id}'", {"collections": [c.id for c in found]})


def registry_of(app) -> Registry:
    """The registry ``app.main.create_app`` put on the application."""
    return app.state.harmspot_collections


def get_registry(request: Request) -> Registry:
    return registry_of(request.app)


Collections = Annotated[Registry, Depends(get_registry)]


# ------------------------------------------------------------------------------------ cell collections
def hotspot_query_for_items(state: ServiceState, req: ItemsRequest) -> HotspotQuery:
    """The same HotspotQuery GET /hotspots builds (app.deps.hotspot_query), with OGC datetime as the period."""
    p = dict(req.query)
    if req.has_datetime:
        if p.get("from") or p.get("to"):
            raise ApiError(400, "invalid_parameter", "give either datetime or from/to, not both")
        first, last = dataset_span(state, p.get("dataset"))
        p["from"] = (req.start or first).isoformat() if (req.start or first) else None
        p["to"] = (req.end or last).isoformat() if (req.end or last) else None
    try:
        return hotspot_query(
            state, dataset=p.get("dataset"), date_from=p.get("from"), date_to=p.get("to"),
            preset=p.get("preset") or "op-ark", offences=p.get("offences"), days=p.get("days"),
            hours=p.get("hours"), bbox=None, area=p.get("area"), resolution=int(p.get("resolution") or 10),
            weights=p.get("weights"), top=p.get("top"), include_asb=bool(p.get("include_asb")),
            rank_by=p.get("rank_by") or "harm", method=p.get("method"))
    except ApiError as exc:  # OGC API - Features: an invalid parameter value is a 400
        if exc.status == 422:
            raise ApiError(400, exc.code, exc.message, exc.details) from exc
        raise


def _day_sql(expr: str) -> str:
    """SQL text of a timestamp's day (YYYY-MM-DD), NULL outside years 1-9999: a store may hold months no
    calendar library takes (9999-12 ends in year 10000; -001-01), and they must not break a listing."""
    return f"CASE WHEN year({expr}) BETWEEN 1 AND 9999 THEN strftime({expr}, '%Y-%m-%d') END"


def _day(text) -> date | None:
    return None if text is None or pd.isna(text) else date.fromisoformat(str(text))


def dataset_span(state: ServiceState, dataset: str | None) -> tuple[date | None, date | None]:
    """First and last day of the stored offences (of ``dataset`` when given); None where there are none or
    the stored bound is outside years 1-9999."""
    sql = (f"SELECT {_day_sql('min(occurred_from)')} AS a, "
           f"{_day_sql('max(occurred_to) - INTERVAL 1 MICROSECOND')} AS b FROM offences")
    frame = state.store.query_df(sql + (" WHERE dataset = ?" if dataset else ""), [dataset] if dataset else [])
    return _day(frame["a"].iloc[0]), _day(frame["b"].iloc[0])


def cells_page(cells: pd.DataFrame, req: ItemsRequest, resolution: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells matched by the request's bbox, the requested page of them or the one feature asked for)."""
    if req.bbox:
        cells = cells_in_bbox(cells, req.bbox, resolution)
    if req.feature_id is not None:
        return cells, cells[cells["h3"] == req.feature_id]
    return cells, cells.iloc[req.offset: req.offset + req.limit]


def cells_in_bbox(cells: pd.DataFrame, bbox: tuple[float, float, float, float], resolution: int) -> pd.DataFrame:
    """Cells whose hexagon intersects the bbox (OGC semantics), ranks unchanged: a filter, not a new query."""
    import h3
    import shapely

    if cells.empty:
        return cells
    edge_km = h3.average_hexagon_edge_length(resolution, unit="km") * 1.3
    dlat = edge_km / 111.0
    lat = cells["lat"].to_numpy(float)
    dlon = edge_km / (111.0 * np.cos(np.radians(lat)))
    lon = cells["lon"].to_numpy(float)
    near = np.zeros(len(cells), dtype=bool)
    for x0, y0, x1, y1 in bbox_parts(bbox):  # two boxes across the antimeridian, none upside down
        near |= (lon + dlon >= x0) & (lon - dlon <= x1) & (lat + dlat >= y0) & (lat - dlat <= y1)
    cand = cells[near]
    if cand.empty:
        return cand
    box = bbox_geometry(bbox)
    polys = [shapely.Polygon([(lng, la) for la, lng in h3.cell_to_boundary(c)]) for c in cand["h3"]]
    keep = shapely.intersects(np.array(polys, dtype=object), box)
    return cand[keep]


def offences_extent(state: ServiceState) -> dict:
    """Spatial and temporal extent of every stored offence (the extent of the cell collections); a temporal
    bound outside years 1-9999 is left open (null) rather than failing the listing."""
    frame = state.store.query_df(f"""SELECT min(lon) AS x0, min(lat) AS y0, max(lon) AS x1, max(lat) AS y1,
                                            {_instant_sql('min(occurred_from)')} AS t0,
                                            {_instant_sql('max(occurred_to)')} AS t1 FROM offences""")
    r = frame.iloc[0]
    if pd.isna(r.x0):
        return {}
    return {"spatial": {"bbox": [[round(float(r.x0), 6), round(float(r.y0), 6), round(float(r.x1), 6),
                                  round(float(r.y1), 6)]], "crs": CRS84},
            "temporal": {"interval": [[_text(r.t0), _text(r.t1)]], "trs": TRS}}


def _instant_sql(expr: str) -> str:
    return f"CASE WHEN year({expr}) BETWEEN 1 AND 9999 THEN strftime({expr}, '%Y-%m-%dT%H:%M:%SZ') END"


def _text(v) -> str | None:
    return None if v is None or pd.isna(v) else str(v)


__all__ = ["CRS84", "Collection", "Collections", "DEFAULT_LIMIT", "HOTSPOT_PARAMETERS", "Items", "ItemsRequest",
           "MAX_LIMIT", "QueryDescription", "Registry", "cells_in_bbox", "cells_page", "dataset_span", "get_registry",
           "hotspot_query_for_items", "offences_extent", "registry_of"]
