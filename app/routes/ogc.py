"""The GIS door: OGC API - Features, Part 1 (Core, GeoJSON, HTML, OpenAPI 3.0) over the same engines.

QGIS ("WFS / OGC API - Features") and GDAL (``OAPIF:http://host/``) load harm spots, boundaries, Gi*, RTM and
POI layers straight from the service, with no download step.  This router serves only the protocol: the
landing page, conformance, the collection documents, items paging (limit/offset, next/prev links), bbox and
datetime parsing, and the formats (GeoJSON, CSV, HTML).  The collections themselves are providers registered
in ``app.collections`` by the routers that own their engines (harm-spots in ``app.routes.hotspots``, ...);
see docs/ogc.md for adding one.

Also here: ``GET /`` (the map for browsers, the OGC landing document for API clients) and
:func:`install_openapi`, which puts ``limit`` into ``components.parameters`` where QGIS looks for the largest
page size.
"""
from __future__ import annotations

import html
import json
import logging
import math
import re
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.cache import cached_route
from app.collections import (CRS84, DEFAULT_LIMIT, HOTSPOT_PARAMETERS, MAX_LIMIT, Collection, Collections, Items,
                             ItemsRequest)
from app.deps import OFFENCES_SCHEMA, Disclosure, State, forced_public
from app.errors import ApiError
from app.render import JSONResponse, to_csv
from app.state import ServiceState
from hotspots.ranking.presets import PRESETS
from hotspots.ranking.query import DAY_REGEX, MAX_TOP, PERIOD_REGEX

log = logging.getLogger("harmspot")
router = APIRouter(tags=["ogc-features"])

GEOJSON = "application/geo+json"
OPENAPI_TYPE = "application/vnd.oai.openapi+json;version=3.0"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
]
QUERYABLES_SAMPLE = 200  # features read to type a collection's queryables
Preset = Literal[tuple(sorted(PRESETS))]  # type: ignore[valid-type]
_HOTSPOT_PARAM_DOC = " (cell collections; as on /hotspots)"
# A bad value of any declared parameter is the 400 OGC API - Features asks for (/req/core/query-param-invalid):
# app/errors.py answers FastAPI's validation errors on these routes (tag ogc-features) with 400, not 422.


# ------------------------------------------------------------------------------------------ parameters
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
# The datetime parameter's syntax as declared in the OpenAPI document (RFC 3339 full-date or date-time, or an
# interval a/b whose ends may be '..' or empty); parse_datetime then checks the calendar and the order.
_INSTANT = (DAY_REGEX + r"([Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
            r"(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?")  # a real day, 1900-2999
DATETIME_RE = rf"^(|{_INSTANT}|(\.\.|{_INSTANT})?/(\.\.|{_INSTANT})?)$"


def parse_ogc_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None or text.strip() == "":
        return None
    parts = text.split(",")
    if len(parts) not in (4, 6):
        raise ApiError(400, "invalid_parameter", "bbox: minLon,minLat,maxLon,maxLat (4 or 6 numbers, CRS84)")
    try:
        v = [float(p) for p in parts]
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", "bbox: values must be numbers") from exc
    if not all(math.isfinite(x) for x in v):
        raise ApiError(400, "invalid_parameter", "bbox: values must be finite")
    box = (v[0], v[1], v[3], v[4]) if len(v) == 6 else (v[0], v[1], v[2], v[3])
    if not (-180 <= box[0] <= 180 and -180 <= box[2] <= 180):
        raise ApiError(400, "invalid_parameter", "bbox: longitudes run from -180 to 180 (CRS84)")
    # a latitude beyond a pole reaches the pole (the declared schema bounds every number by 180)
    box = (box[0], min(max(box[1], -90.0), 90.0), box[2], min(max(box[3], -90.0), 90.0))
    # minLon > maxLon crosses the antimeridian (OGC API - Features 7.15.3: the west edge is then the larger);
    # minLat > maxLat holds no point: every filter reads the box through geodata.cells.bbox_parts
    return box


def _instant(text: str, end: bool) -> date | None:
    text = text.strip()
    if text in ("", ".."):
        return None
    if not _DATE.match(text):
        raise ApiError(400, "invalid_parameter", f"datetime: '{text}' is not RFC 3339 (YYYY-MM-DD or "
                       "YYYY-MM-DDThh:mm:ssZ)")
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"datetime: '{text}' is not a valid date-time") from exc
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    if end and t.time() == datetime.min.time():  # an interval ending at midnight excludes that day
        return (t - timedelta(days=1)).date()
    return t.date()


def parse_datetime(text: str | None) -> tuple[date | None, date | None, bool]:
    """OGC ``datetime``: an instant or an interval ``a/b`` with ``..`` open ends, as inclusive days.

    Harm spots are computed over whole days (or whole months for month-only data), so times within a day
    widen to the day: the records do not carry finer time than that everywhere (DESIGN: never invent time).
    """
    if text is None or text.strip() == "":
        return None, None, False
    if "/" in text:
        a, _, b = text.partition("/")
        start, end = _instant(a, False), _instant(b, True)
        if a.strip() in ("", "..") and b.strip() in ("", ".."):
            return None, None, True
    else:
        start = end = _instant(text, False)
        if start is None:
            raise ApiError(400, "invalid_parameter", "datetime: give an instant or an interval a/b")
    if start and end and start > end:
        raise ApiError(400, "invalid_parameter", "datetime: the interval starts after it ends")
    return start, end, True


def _format(request: Request, f: str | None) -> str:
    if f:
        if f not in ("json", "csv", "html"):
            raise ApiError(400, "invalid_parameter", "f: json, csv or html")
        return f
    accept = request.headers.get("accept", "")
    if "text/html" in accept and "json" not in accept:
        return "html"
    return "json"


# ------------------------------------------------------------------------------------------ documents
def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _url(request: Request, path: str, params: dict | None = None) -> str:
    params = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
    return f"{_base(request)}{path}" + (f"?{urlencode(params)}" if params else "")


def landing_document(request: Request) -> dict:
    base = _base(request)
    return {
        "title": "harmspot",
        "description": "Harm-weighted hotspots (crime harm index on H3 cells) for patrol planning: OGC API - "
                       "Features for GIS, /hotspots for tasking scripts, /map for planners.",
        "links": [
            {"href": f"{base}/?f=json", "rel": "self", "type": "application/json", "title": "this document"},
            {"href": f"{base}/?f=html", "rel": "alternate", "type": "text/html", "title": "this document as HTML"},
            {"href": f"{base}/openapi.json", "rel": "service-desc", "type": OPENAPI_TYPE,
             "title": "OpenAPI definition"},
            {"href": f"{base}/docs", "rel": "service-doc", "type": "text/html", "title": "API documentation"},
            {"href": f"{base}/conformance", "rel": "conformance", "type": "application/json",
             "title": "OGC API conformance classes"},
            {"href": f"{base}/collections", "rel": "data", "type": "application/json", "title": "collections"},
            {"href": f"{base}/hotspots", "rel": "related", "type": "application/json",
             "title": "harm spots for tasking scripts (JSON, CSV, GeoJSON)"},
            {"href": f"{base}/map", "rel": "alternate", "type": "text/html", "title": "the map"},
        ],
    }


def collection_document(request: Request, state: ServiceState, c: Collection, req: ItemsRequest) -> dict:
    """The collection's document. A cell collection's description starts with the ranking it serves
    (``Collection.describe``: preset, period, weights table, resolution, dataset) and ``harmspot:query`` holds it
    as fields, so the layer a GIS client adds (QGIS: its abstract), and the GeoPackage it writes
    (gpkg_contents.description), say what they hold."""
    query = {k: v for k, v in request.query_params.items() if k != "f"}  # the harmspot parameters given
    described, problem = _described(state, c, req)
    title = c.title  # kept short: the map's layer switcher and QGIS's layer list show it
    description = (f"This layer: {described.summary}. " if described else "") + c.description
    if problem:
        description += f" (The ranking could not be described: {problem})"
    doc: dict = {
        "id": c.id, "title": title, "description": description, "itemType": "feature", "crs": [CRS84],
        "keywords": list(c.keywords),
        "links": [
            {"href": _url(request, f"/collections/{c.id}", {**query, "f": "json"}), "rel": "self",
             "type": "application/json", "title": c.title},
            {"href": _url(request, f"/collections/{c.id}", {**query, "f": "html"}), "rel": "alternate",
             "type": "text/html", "title": c.title},
            {"href": _url(request, f"/collections/{c.id}/items", query), "rel": "items", "type": GEOJSON,
             "title": f"{c.title} (GeoJSON)"},
            {"href": _url(request, f"/collections/{c.id}/items", {**query, "f": "csv"}), "rel": "items",
             "type": "text/csv", "title": f"{c.title} (CSV)"},
            {"href": _url(request, f"/collections/{c.id}/items", {**query, "f": "html"}), "rel": "items",
             "type": "text/html", "title": f"{c.title} (HTML)"},
            {"href": _url(request, f"/collections/{c.id}/queryables", query),
             "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables", "type": "application/schema+json",
             "title": "queryables"},
        ],
        "harmspot:kind": c.kind,
        "harmspot:style": c.style,
    }
    extent = c.extent(state)
    if extent:
        doc["extent"] = extent
    if c.kind == "cells":
        doc["harmspot:parameters"] = list(HOTSPOT_PARAMETERS)
        doc["harmspot:presets"] = sorted(PRESETS)
    if described:
        doc["harmspot:query"] = described.fields
    return doc


# ------------------------------------------------------------------------------------------ HTML
_CSS = ("body{font-family:system-ui,Arial,sans-serif;margin:1.5rem;max-width:70rem;color:#1b1b1b}"
        "table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
        "a{color:#0b5394}")


def _html_page(title: str, doc: dict, rows: list[dict] | None = None) -> HTMLResponse:
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>"]
    if doc.get("description"):
        parts.append(f"<p>{e(str(doc['description']))}</p>")
    if doc.get("numberMatched") is not None:
        parts.append(f"<p>{doc['numberMatched']} matched, {doc.get('numberReturned', 0)} shown.</p>")
    links = doc.get("links", [])
    if links:
        parts.append("<ul>" + "".join(f"<li><a href='{e(str(lk['href']), quote=True)}'>{e(str(lk.get('title') or lk['href']))}"
                                      f"</a> <small>{e(str(lk.get('rel', '')))} {e(str(lk.get('type', '')))}</small></li>"
                                      for lk in links) + "</ul>")
    for c in doc.get("collections", []):
        parts.append(f"<h2><a href='/collections/{e(c['id'], quote=True)}?f=html'>{e(c['title'])}</a></h2>"
                     f"<p>{e(c.get('description', ''))}</p>")
    if doc.get("conformsTo"):
        parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in doc["conformsTo"]) + "</ul>")
    if rows:
        cols = list(rows[0].keys())
        parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{e(_cell_text(r.get(c)))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return HTMLResponse("".join(parts))


def _cell_text(v: Any) -> str:
    v = _flat(v)
    return "" if v is None else str(v)


# ------------------------------------------------------------------------------------------ parameters
class HarmspotParams:
    """The /hotspots query parameters, accepted by every OGC door so a client can put them in the service URL
    (GDAL's ``OAPIF:http://host/?preset=all-crime`` adds them to every request it makes): they select the ranking
    the cell collections serve and that the collection documents describe; other collections ignore them."""

    def __init__(self, query: dict[str, Any]):
        self.query = query


def harmspot_params(
        dataset: Annotated[str | None, Query(max_length=64, description="Dataset" + _HOTSPOT_PARAM_DOC)] = None,
        date_from: Annotated[str | None, Query(alias="from", pattern=PERIOD_REGEX,
                                               description="Start YYYY-MM[-DD]" + _HOTSPOT_PARAM_DOC)] = None,
        date_to: Annotated[str | None, Query(alias="to", pattern=PERIOD_REGEX,
                                             description="End, inclusive" + _HOTSPOT_PARAM_DOC)] = None,
        preset: Annotated[Preset | None, Query(description="Offence preset" + _HOTSPOT_PARAM_DOC)] = None,
        offences: Annotated[str | None, Query(max_length=2000, pattern=OFFENCES_SCHEMA["pattern"],
                                              description="Offence list: category slugs or offence groups"
                                              + _HOTSPOT_PARAM_DOC)] = None,
        area: Annotated[str | None, Query(max_length=200, description="Area layer:id or name" + _HOTSPOT_PARAM_DOC)] = None,
        resolution: Annotated[int | None, Query(ge=7, le=11, description="H3 resolution 7-11" + _HOTSPOT_PARAM_DOC)] = None,
        weights: Annotated[str | None, Query(max_length=64, description="Harm weights table" + _HOTSPOT_PARAM_DOC)] = None,
        top: Annotated[int | None, Query(ge=1, le=MAX_TOP, description="Keep the N highest cells (default: all)"
                                         + _HOTSPOT_PARAM_DOC)] = None,
        rank_by: Annotated[Literal["harm", "count"] | None, Query(description="harm or count" + _HOTSPOT_PARAM_DOC)] = None,
        include_asb: Annotated[bool | None, Query(description="true: count anti-social behaviour"
                                                  + _HOTSPOT_PARAM_DOC)] = None,
        method: Annotated[Literal["observed", "forecast"] | None, Query(
            description="observed (default) or forecast: rank by expected harm in the period after `to`"
            + _HOTSPOT_PARAM_DOC)] = None,
) -> HarmspotParams:
    """The dependency that reads :class:`HarmspotParams` (a function, not the class itself: FastAPI before 0.115
    cannot resolve a class's postponed annotations, as pyproject's lower bound needs)."""
    return HarmspotParams({
        "dataset": dataset, "from": date_from, "to": date_to, "preset": preset, "offences": offences,
        "area": area, "resolution": resolution, "weights": weights, "top": top, "rank_by": rank_by,
        "include_asb": bool(include_asb), "method": method})


Harmspot = Annotated[HarmspotParams, Depends(harmspot_params)]


def known_parameters_only(request: Request) -> None:
    """OGC API - Features /req/core/query-param-unknown: a query parameter the route does not declare is a 400
    (the declared ones are the OGC parameters plus the documented harmspot ones)."""
    route = request.scope.get("route")
    if route is None:
        return
    unknown = sorted(set(request.query_params) - _declared_query_parameters(route))
    if unknown:
        allowed = sorted(_declared_query_parameters(route))
        raise ApiError(400, "unknown_parameter", f"unknown query parameter(s) {', '.join(unknown)}: this "
                       f"operation takes {', '.join(allowed)}", {"unknown": unknown, "allowed": allowed})


def _declared_query_parameters(route) -> frozenset[str]:
    """Names (aliases) of the query parameters a route declares, its dependencies' included."""
    names: set[str] = set()
    todo = [route.dependant]
    while todo:
        dep = todo.pop()
        names.update(p.alias for p in dep.query_params)
        todo.extend(dep.dependencies)
    return frozenset(names)


def flat_properties(props: dict) -> dict:
    """Properties with nested values (lists, objects) as plain text: QGIS 3.22 reads a nested JSON value as
    NULL and cannot write it to a GeoPackage. A list of counted things reads "Violence and sexual offences (34);
    Burglary (2)", the format of the CSV; other objects are JSON text."""
    return {k: _flat(v) for k, v in props.items()}


def _flat(v: Any) -> Any:
    if isinstance(v, list):
        return "; ".join(_item_text(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return v


def _item_text(x: Any) -> str:
    if isinstance(x, dict):
        label = next((str(v) for v in x.values() if isinstance(v, str)), None)
        if label is None:
            return json.dumps(x, separators=(",", ":"), ensure_ascii=False)
        return f"{label} ({x['count']})" if x.get("count") is not None else label
    return "" if x is None else str(x)


def _described(state: ServiceState, c: Collection, req: ItemsRequest) -> tuple[Any, str | None]:
    """(the collection's description of the query, or None; why it could not be described, or None). A
    description never fails a listing: a dataset whose stored months no calendar takes says so instead."""
    if c.describe is None:
        return None, None
    try:
        return c.describe(state, req), None
    except ApiError as exc:
        return None, exc.message
    except (ValueError, OverflowError) as exc:
        log.warning("collection %s: query not described: %s", c.id, exc)
        return None, str(exc)


# ------------------------------------------------------------------------------------------ routes
_STRICT = [Depends(known_parameters_only)]  # every route but items, which also takes ?property=value filters
_F_JSON_HTML = Annotated[Literal["json", "html"] | None, Query(description="json or html")]
_F_ITEMS = Annotated[Literal["json", "csv", "html"] | None, Query(description="json (GeoJSON, default), csv or html")]
_F_ITEM = Annotated[Literal["json", "html"] | None, Query(description="json (GeoJSON, default) or html")]
_ERRORS = {400: {"description": "an invalid or unknown query parameter (OGC API - Features asks for 400)",
                 "content": {"application/json": {}}},
           403: {"description": "public output (a public key or deployment) and a collection without a public form",
                 "content": {"application/json": {}}},
           404: {"description": "no such collection or feature", "content": {"application/json": {}}}}


@router.get("/", dependencies=_STRICT, summary="Landing page: the map for browsers, the OGC API landing document for API clients",
            description="A browser asking for HTML is redirected to the map (`/map`, with the harmspot query "
            "parameters, e.g. `/?dataset=leics` opens the map on that dataset); `Accept: application/json` "
            "or `?f=json` returns the OGC API - Features landing document (links: service-desc, conformance, data). "
            "The harmspot query parameters are accepted (and ignored here) so that they can be part of a client's "
            "service URL.",
            responses={200: {"content": {"application/json": {}}},
                       303: {"description": "a browser (Accept: text/html, or f=html) is sent to /map"},
                       400: _ERRORS[400]})
def landing(request: Request, _p: Harmspot, f: _F_JSON_HTML = None) -> Response:
    if _format(request, f) == "html":  # the harmspot parameters go on to the map (a shared link keeps its dataset)
        query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "f"])
        return RedirectResponse("/map" + (f"?{query}" if query else ""), status_code=303)
    return JSONResponse(landing_document(request))


@router.get("/conformance", dependencies=_STRICT, summary="OGC API conformance classes",
            responses={200: {"content": {"application/json": {}, "text/html": {}}}, 400: _ERRORS[400]})
def conformance(request: Request, _p: Harmspot, f: _F_JSON_HTML = None) -> Response:
    doc = {"conformsTo": CONFORMANCE}
    if _format(request, f) == "html":
        return _html_page("Conformance", doc)
    return JSONResponse(doc)


@router.get("/collections", dependencies=_STRICT, summary="Feature collections: harm spots, boundaries, Gi*, RTM, POI layers",
            description="Each cell collection's description starts with the ranking it serves (preset, period, "
                        "weights table, resolution, dataset), resolved from the harmspot query parameters given "
                        "(defaults otherwise); `harmspot:query` holds the same as fields.",
            responses={200: {"content": {"application/json": {}, "text/html": {}}}, 400: _ERRORS[400]})
def get_collections(request: Request, state: State, registry: Collections, p: Harmspot,
                    f: _F_JSON_HTML = None) -> Response:
    base = _base(request)
    req = ItemsRequest(query=p.query)
    doc = {
        "links": [{"href": f"{base}/collections?f=json", "rel": "self", "type": "application/json", "title": "collections"},
                  {"href": f"{base}/collections?f=html", "rel": "alternate", "type": "text/html", "title": "as HTML"}],
        "collections": [collection_document(request, state, c, req) for c in registry.collections(state)
                        if c.public or not forced_public(request)],  # a public key sees what it may read
    }
    if _format(request, f) == "html":
        return _html_page("Collections", doc)
    return JSONResponse(doc)


@router.get("/collections/{collection_id}", dependencies=_STRICT, summary="One collection: title, extent, links",
            responses={200: {"content": {"application/json": {}, "text/html": {}}}, **_ERRORS})
def get_collection_doc(request: Request, state: State, registry: Collections, collection_id: str, p: Harmspot,
                       f: _F_JSON_HTML = None) -> Response:
    doc = collection_document(request, state, _collection_for(request, state, registry, collection_id),
                              ItemsRequest(query=p.query))
    if _format(request, f) == "html":
        return _html_page(doc["title"], doc)
    return JSONResponse(doc)


@router.get("/collections/{collection_id}/queryables", dependencies=_STRICT,
            summary="The properties of a collection's features (JSON Schema), each usable as a ?name=value filter",
            description="OGC API - Features Part 3 queryables: the properties of the collection's features with "
            "their types, read from the features the collection serves. Each can filter the items as "
            "`?name=value` (equality; OGC API - Features Part 1, 7.15.8).",
            responses={200: {"content": {"application/schema+json": {}, "application/json": {}}}, **_ERRORS})
@cached_route("ogc-queryables")
def get_queryables(request: Request, state: State, registry: Collections, collection_id: str, p: Harmspot) -> Response:
    c = _collection_for(request, state, registry, collection_id)
    doc = {"$schema": "https://json-schema.org/draft/2019-09/schema",
           "$id": _url(request, f"/collections/{c.id}/queryables"), "type": "object", "title": c.title,
           "properties": queryables(state, c, ItemsRequest(query=p.query)), "additionalProperties": False}
    return JSONResponse(doc, media_type="application/schema+json")


def queryables(state: ServiceState, c: Collection, req: ItemsRequest) -> dict[str, dict]:
    """Property name -> JSON Schema (type, title), from the first page of features the collection serves."""
    items = c.items(state, replace(req, offset=0, limit=QUERYABLES_SAMPLE))
    types: dict[str, str] = {name: "string" for name in (items.fields or [])}
    seen: dict[str, set[str]] = {}
    for ft in items.features:
        for k, v in flat_properties(ft["properties"]).items():
            seen.setdefault(k, set()).add(_json_type(v))
    for k, kinds in seen.items():
        kinds.discard("null")
        types[k] = ("number" if kinds <= {"integer", "number"} and "number" in kinds else
                    next(iter(kinds)) if len(kinds) == 1 else "string")
    return {k: {"type": t, "title": k} for k, t in types.items()}


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    return "string"


def _property_filters(request: Request, c: Collection, state: ServiceState, req: ItemsRequest) -> dict[str, str]:
    """``?name=value`` filters on the collection's queryables; any other undeclared parameter is a 400."""
    declared = _declared_query_parameters(request.scope["route"])
    extra = {k: v for k, v in request.query_params.items() if k not in declared}
    if not extra:
        return {}
    props = queryables(state, c, req)
    unknown = sorted(k for k in extra if k not in props)
    if unknown:
        allowed = sorted(declared | set(props))
        raise ApiError(400, "unknown_parameter", f"unknown query parameter(s) {', '.join(unknown)}: this "
                       f"collection takes {', '.join(allowed)}", {"unknown": unknown, "allowed": allowed})
    return extra


def _matches(props: dict, filters: dict[str, str]) -> bool:
    for k, want in filters.items():
        v = props.get(k)
        if isinstance(v, bool) or v is None or isinstance(v, str):
            if ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) != want:
                return False
        else:
            try:
                if float(want) != float(v):
                    return False
            except ValueError:
                return False
    return True


def _collection_for(request: Request, state: ServiceState, registry, collection_id: str, disclosure=None):
    """The collection, if this request may read it: with public output (a public key, a public deployment, or
    mode=public) only collections with a public form (harm spots, loaded boundary layers)."""
    c = registry.get(state, collection_id)
    if c.public or (disclosure is None and not forced_public(request)):
        return c
    if forced_public(request):
        raise ApiError(403, "not_public", f"collection '{c.id}' has no public (disclosure-controlled) form; public "
                       "output covers harm-spots and the loaded boundary layers (docs/security.md#public-output-mode)")
    raise ApiError(400, "invalid_parameter", f"mode=public: collection '{c.id}' has no public form (harm-spots has)")


def _items_request(bbox: str | None, datetime_: str | None, limit: int | None, offset: int | None,
                   query: dict[str, Any], feature_id: str | None = None, disclosure=None) -> ItemsRequest:
    start, end, has_dt = parse_datetime(datetime_)
    return ItemsRequest(bbox=parse_ogc_bbox(bbox), start=start, end=end, has_datetime=has_dt,
                        limit=DEFAULT_LIMIT if limit is None else limit, offset=offset or 0, query=query,
                        feature_id=feature_id, disclosure=disclosure)


@router.get(
    "/collections/{collection_id}/items",
    summary="Features of a collection (GeoJSON, CSV or HTML), paged with limit/offset",
    description=f"`bbox` (CRS84 minLon,minLat,maxLon,maxLat), `datetime` (RFC 3339 instant or interval, `..` for "
    f"open ends; whole days), `limit` (default {DEFAULT_LIMIT}, largest {MAX_LIMIT}), `offset`, and `name=value` "
    "filters on the collection's queryables. The response carries `numberMatched`, `numberReturned` and "
    f"`next`/`prev` links; a JSON `next` link asks for at least {DEFAULT_LIMIT} features (a client that opened "
    "with a small page, as GDAL 3.6 does with 10, then pages at the server's size). The cell collections also "
    "take the /hotspots query parameters and are the same query as GET /hotspots. Nested values (top offences, "
    "top locations) are plain text.",
    responses={200: {"content": {GEOJSON: {}, "text/csv": {}, "text/html": {}}}, **_ERRORS},
)
@cached_route("ogc-items")  # one response per store state and request; pages slice one cached result (app.cache)
def get_items(
    request: Request, state: State, registry: Collections, collection_id: str, p: Harmspot, disclosure: Disclosure,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (CRS84)")] = None,
    datetime_: Annotated[str | None, Query(alias="datetime", pattern=DATETIME_RE,
                                           description="RFC 3339 instant or interval a/b ('..' or empty: open)")] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1-{MAX_LIMIT} (default "
                                       f"{DEFAULT_LIMIT})")] = None,
    offset: Annotated[int | None, Query(ge=0, description="Features to skip")] = None,
    f: _F_ITEMS = None,
) -> Response:
    c = _collection_for(request, state, registry, collection_id, disclosure)
    fmt = _format(request, f)
    req = _items_request(bbox, datetime_, limit, offset, p.query, disclosure=disclosure)
    filters = _property_filters(request, c, state, req)
    if filters:  # a filter on properties: the page is a slice of the filtered features
        every = c.items(state, replace(req, offset=0, limit=10**9))
        kept = [ft for ft in every.features if _matches(flat_properties(ft["properties"]), filters)]
        items = Items(kept[req.offset: req.offset + req.limit], len(kept), every.metadata, every.fields)
    else:
        items = c.items(state, req)
    features = [{**ft, "properties": flat_properties(ft["properties"])} for ft in items.features]
    described, _ = _described(state, c, req)
    passthrough = {k: v for k, v in request.query_params.items() if k not in ("offset", "f", "limit")}
    path = f"/collections/{c.id}/items"
    here = {**passthrough, "limit": req.limit if limit is not None else None, "offset": req.offset or None}
    links = [
        {"href": _url(request, path, {**here, "f": "json"}), "rel": "self", "type": GEOJSON, "title": "this page"},
        {"href": _url(request, path, {**here, "f": "csv"}), "rel": "alternate", "type": "text/csv",
         "title": "this page as CSV"},
        {"href": _url(request, path, {**here, "f": "html"}), "rel": "alternate", "type": "text/html",
         "title": "this page as HTML"},
        {"href": _url(request, f"/collections/{c.id}"), "rel": "collection", "type": "application/json",
         "title": c.title},
    ]
    page_fmt = fmt if fmt != "csv" else "json"
    page_type = GEOJSON if fmt != "html" else "text/html"
    # the next page: at least DEFAULT_LIMIT features for machine clients (GDAL 3.6 opens every layer with
    # limit=10 and follows the next link as given), the client's own size for people paging HTML
    next_limit = req.limit if fmt == "html" else max(req.limit, DEFAULT_LIMIT)
    nxt = req.offset + len(features)
    if nxt < items.number_matched and features:
        links.append({"href": _url(request, path, {**passthrough, "limit": next_limit, "offset": nxt, "f": page_fmt}),
                      "rel": "next", "type": page_type, "title": "next page"})
    if req.offset > 0:
        links.append({"href": _url(request, path, {**passthrough, "limit": req.limit,
                                                   "offset": max(0, req.offset - req.limit) or None, "f": page_fmt}),
                      "rel": "prev", "type": page_type, "title": "previous page"})
    if fmt == "csv":
        props = [ft["properties"] for ft in features]
        frame = pd.DataFrame(props, columns=items.fields or (list(props[0]) if props else []))
        headers = {"Content-Disposition": f'attachment; filename="{c.id}.csv"',
                   "OGC-NumberMatched": str(items.number_matched)}
        nl = [lk for lk in links if lk["rel"] == "next"]
        if nl:
            headers["Link"] = f'<{nl[0]["href"].replace("f=json", "f=csv")}>; rel="next"'
        return Response(to_csv(frame, items.fields), media_type="text/csv; charset=utf-8", headers=headers)
    doc: dict = {"type": "FeatureCollection", "features": features,
                 "numberMatched": items.number_matched, "numberReturned": len(features),
                 "timeStamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "links": links}
    if items.metadata is not None:
        doc["metadata"] = items.metadata  # foreign member (RFC 7946 s6.1): query, weights, caveats
    if fmt == "html":
        doc["description"] = c.description + (f" This page: {described.summary}." if described else "")
        return _html_page(f"{c.title}: items", doc, [ft["properties"] for ft in features])
    return JSONResponse(doc, media_type=GEOJSON)


@router.get("/collections/{collection_id}/items/{feature_id}", dependencies=_STRICT, summary="One feature by id (an H3 cell, a boundary)",
            responses={200: {"content": {GEOJSON: {}, "text/html": {}}}, **_ERRORS})
@cached_route("ogc-item")
def get_item(request: Request, state: State, registry: Collections, collection_id: str, feature_id: str,
             p: Harmspot, disclosure: Disclosure, f: _F_ITEM = None) -> Response:
    c = _collection_for(request, state, registry, collection_id, disclosure)
    fmt = _format(request, f)
    items = c.items(state, ItemsRequest(query=p.query, feature_id=feature_id, limit=1, disclosure=disclosure))
    if not items.features:
        raise ApiError(404, "not_found", f"no feature '{feature_id}' in collection '{c.id}'")
    feat = dict(items.features[0])
    feat["properties"] = flat_properties(feat["properties"])
    feat["links"] = [
        {"href": _url(request, f"/collections/{c.id}/items/{feature_id}", {**request.query_params, "f": "json"}),
         "rel": "self", "type": GEOJSON, "title": "this feature"},
        {"href": _url(request, f"/collections/{c.id}"), "rel": "collection", "type": "application/json", "title": c.title},
    ]
    if fmt == "html":
        return _html_page(f"{c.title}: {feature_id}", {"links": feat["links"]}, [feat["properties"]])
    return JSONResponse(feat, media_type=GEOJSON)


# ------------------------------------------------------------------------------------------ OpenAPI
def install_openapi(app: FastAPI) -> None:
    """Put ``limit`` into ``components.parameters`` (QGIS reads the largest page size only there) and
    reference it from the items path.  Wraps whatever ``app.openapi`` is, so other post-processing composes."""
    original = app.openapi

    def openapi() -> dict:
        schema = original()
        comps = schema.setdefault("components", {}).setdefault("parameters", {})
        comps["limit"] = {
            "name": "limit", "in": "query", "required": False, "style": "form", "explode": False,
            "description": f"The largest number of features in a page: 1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}; "
                           "a value outside that range is a 400.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        }
        comps["bbox"] = {
            "name": "bbox", "in": "query", "required": False, "style": "form", "explode": False,
            "description": "minLon,minLat,maxLon,maxLat (or 6 numbers with heights, ignored) in CRS84. Latitudes "
                           "beyond +-90 reach the pole. A box crossing the antimeridian (minLon > maxLon) or whose "
                           "south edge is north of its north edge is a 400 (not supported).",
            "schema": {"type": "array", "items": {"type": "number", "minimum": -180, "maximum": 180},
                       "oneOf": [{"minItems": 4, "maxItems": 4}, {"minItems": 6, "maxItems": 6}]},
        }
        op = schema.get("paths", {}).get("/collections/{collection_id}/items", {}).get("get")
        if op:
            op["parameters"] = [{"$ref": f"#/components/parameters/{p['name']}"} if p.get("name") in ("limit", "bbox")
                                else p for p in op.get("parameters", [])]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["flat_properties", "install_openapi", "landing_document", "parse_datetime", "parse_ogc_bbox", "router"]
