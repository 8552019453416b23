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
import math
import re
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any
from urllib.parse import urlencode

import pandas as pd
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.collections import (CRS84, DEFAULT_LIMIT, HOTSPOT_PARAMETERS, MAX_LIMIT, Collection, Collections,
                             ItemsRequest)
from app.cache import cached_route
from app.deps import State
from app.errors import ApiError
from app.render import JSONResponse, to_csv
from app.state import ServiceState
from hotspots.ranking.presets import PRESETS

router = APIRouter(tags=["ogc-features"])

GEOJSON = "application/geo+json"
OPENAPI_TYPE = "application/vnd.oai.openapi+json;version=3.0"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
]
# `f` and the numeric hotspot parameters are read as text and checked here, so that a bad value is the 400 OGC
# API - Features asks for (/req/core/query-param-invalid), not FastAPI's 422.
_F_SCHEMA = {"enum": ["json", "csv", "html"]}
F = str


# ------------------------------------------------------------------------------------------ parameters
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


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
    if not (-180 <= box[0] <= 180 and -180 <= box[2] <= 180 and -90 <= box[1] <= 90 and -90 <= box[3] <= 90):
        raise ApiError(400, "invalid_parameter", "bbox: out of range for CRS84 lon/lat")
    if box[0] > box[2]:
        raise ApiError(400, "invalid_parameter", "bbox: crosses the antimeridian (minLon > maxLon): not supported")
    if box[1] > box[3]:
        raise ApiError(400, "invalid_parameter", "bbox: minLat is greater than maxLat")
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


def parse_limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        n = int(text)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", "limit: an integer from 1") from exc
    if n < 1:
        raise ApiError(400, "invalid_parameter", f"limit: at least 1 (largest {MAX_LIMIT})")
    return min(n, MAX_LIMIT)  # OGC API - Features 1.0, /per/core/limit-response: larger values are capped


def parse_offset(text: str | None) -> int:
    if text is None or text == "":
        return 0
    try:
        n = int(text)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", "offset: an integer from 0") from exc
    if n < 0:
        raise ApiError(400, "invalid_parameter", "offset: an integer from 0")
    return n


def _int_param(name: str, text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"{name}: '{text}' is not an integer") from exc


def _bool_param(name: str, text: str | None) -> bool:
    if text is None or text == "":
        return False
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ApiError(400, "invalid_parameter", f"{name}: true or false")


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


def collection_document(request: Request, state: ServiceState, c: Collection) -> dict:
    base = _base(request)
    items = f"{base}/collections/{c.id}/items"
    doc: dict = {
        "id": c.id, "title": c.title, "description": c.description, "itemType": "feature", "crs": [CRS84],
        "keywords": list(c.keywords),
        "links": [
            {"href": f"{base}/collections/{c.id}?f=json", "rel": "self", "type": "application/json", "title": c.title},
            {"href": f"{base}/collections/{c.id}?f=html", "rel": "alternate", "type": "text/html", "title": c.title},
            {"href": items, "rel": "items", "type": GEOJSON, "title": f"{c.title} (GeoJSON)"},
            {"href": f"{items}?f=csv", "rel": "items", "type": "text/csv", "title": f"{c.title} (CSV)"},
            {"href": f"{items}?f=html", "rel": "items", "type": "text/html", "title": f"{c.title} (HTML)"},
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
    if isinstance(v, list):
        return "; ".join(f"{o.get('offence')} ({o.get('count')})" if isinstance(o, dict) else str(o) for o in v)
    return "" if v is None else str(v)


# ------------------------------------------------------------------------------------------ routes
@router.get("/", summary="Landing page: the map for browsers, the OGC API landing document for API clients",
            description="A browser asking for HTML is redirected to the map (`/map`); `Accept: application/json` "
            "or `?f=json` returns the OGC API - Features landing document (links: service-desc, conformance, data).",
            responses={200: {"content": {"application/json": {}}}, 303: {"description": "a browser (Accept: text/html) is sent to /map"}})
def landing(request: Request, f: Annotated[F | None, Query(description="json or html", json_schema_extra=_F_SCHEMA)] = None) -> Response:
    fmt = _format(request, f)
    if fmt == "html":
        return RedirectResponse("/map", status_code=303)
    if fmt == "csv":
        raise ApiError(400, "invalid_parameter", "f: json or html for the landing page")
    return JSONResponse(landing_document(request))


@router.get("/conformance", summary="OGC API conformance classes")
def conformance(request: Request, f: Annotated[F | None, Query(description="json or html", json_schema_extra=_F_SCHEMA)] = None) -> Response:
    doc = {"conformsTo": CONFORMANCE}
    if _format(request, f) == "html":
        return _html_page("Conformance", doc)
    return JSONResponse(doc)


@router.get("/collections", summary="Feature collections: harm spots, boundaries (and later Gi*, RTM, POI)")
def get_collections(request: Request, state: State, registry: Collections,
                    f: Annotated[F | None, Query(description="json or html", json_schema_extra=_F_SCHEMA)] = None) -> Response:
    base = _base(request)
    doc = {
        "links": [{"href": f"{base}/collections?f=json", "rel": "self", "type": "application/json", "title": "collections"},
                  {"href": f"{base}/collections?f=html", "rel": "alternate", "type": "text/html", "title": "as HTML"}],
        "collections": [collection_document(request, state, c) for c in registry.collections(state)],
    }
    if _format(request, f) == "html":
        return _html_page("Collections", doc)
    return JSONResponse(doc)


@router.get("/collections/{collection_id}", summary="One collection: title, extent, links")
def get_collection_doc(request: Request, state: State, registry: Collections, collection_id: str,
                       f: Annotated[F | None, Query(description="json or html", json_schema_extra=_F_SCHEMA)] = None) -> Response:
    doc = collection_document(request, state, registry.get(state, collection_id))
    if _format(request, f) == "html":
        return _html_page(doc["title"], doc)
    return JSONResponse(doc)


def _items_request(bbox: str | None, datetime_: str | None, limit: str | None, offset: str | None,
                   query: dict[str, Any], feature_id: str | None = None) -> ItemsRequest:
    start, end, has_dt = parse_datetime(datetime_)
    return ItemsRequest(bbox=parse_ogc_bbox(bbox), start=start, end=end, has_datetime=has_dt,
                        limit=parse_limit(limit), offset=parse_offset(offset), query=query, feature_id=feature_id)


_HOTSPOT_PARAM_DOC = " (harm-spots; as on /hotspots)"


@router.get(
    "/collections/{collection_id}/items",
    summary="Features of a collection (GeoJSON, CSV or HTML), paged with limit/offset",
    description="`bbox` (CRS84 minLon,minLat,maxLon,maxLat), `datetime` (RFC 3339 instant or interval, `..` for "
    "open ends; whole days), `limit` (default 1000, largest 10000; larger values are capped), `offset`. "
    "The response carries `numberMatched`, `numberReturned` and `next`/`prev` links. The harm-spots collection "
    "also takes the /hotspots query parameters and is the same query as GET /hotspots.",
    responses={200: {"content": {GEOJSON: {}, "text/csv": {}, "text/html": {}}}},
)
@cached_route("ogc-items")  # one response per store state and request; pages slice one cached result (app.cache)
def get_items(
    request: Request, state: State, registry: Collections, collection_id: str,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (CRS84)")] = None,
    datetime_: Annotated[str | None, Query(alias="datetime", description="RFC 3339 instant or interval a/b")] = None,
    limit: Annotated[str | None, Query(description=f"Page size, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})")] = None,
    offset: Annotated[str | None, Query(description="Features to skip")] = None,
    f: Annotated[F | None, Query(description="json (GeoJSON, default), csv or html", json_schema_extra=_F_SCHEMA)] = None,
    dataset: Annotated[str | None, Query(description="Dataset" + _HOTSPOT_PARAM_DOC)] = None,
    date_from: Annotated[str | None, Query(alias="from", description="Start YYYY-MM[-DD]" + _HOTSPOT_PARAM_DOC)] = None,
    date_to: Annotated[str | None, Query(alias="to", description="End, inclusive" + _HOTSPOT_PARAM_DOC)] = None,
    preset: Annotated[str | None, Query(description="Offence preset" + _HOTSPOT_PARAM_DOC)] = None,
    offences: Annotated[str | None, Query(description="Offence list" + _HOTSPOT_PARAM_DOC)] = None,
    area: Annotated[str | None, Query(description="Area layer:id or name" + _HOTSPOT_PARAM_DOC)] = None,
    resolution: Annotated[str | None, Query(description="H3 resolution 7-11" + _HOTSPOT_PARAM_DOC,
                                            json_schema_extra={"type": "integer"})] = None,
    weights: Annotated[str | None, Query(description="Harm weights table" + _HOTSPOT_PARAM_DOC)] = None,
    top: Annotated[str | None, Query(description="Keep the N highest cells (default: all)" + _HOTSPOT_PARAM_DOC,
                                     json_schema_extra={"type": "integer"})] = None,
    rank_by: Annotated[str | None, Query(description="harm or count" + _HOTSPOT_PARAM_DOC,
                                         json_schema_extra={"enum": ["harm", "count"]})] = None,
    include_asb: Annotated[str | None, Query(description="true: count anti-social behaviour" + _HOTSPOT_PARAM_DOC,
                                             json_schema_extra={"type": "boolean"})] = None,
    method: Annotated[str | None, Query(description="observed or forecast" + _HOTSPOT_PARAM_DOC,
                                        json_schema_extra={"enum": ["observed", "forecast"]})] = None,
) -> Response:
    c = registry.get(state, collection_id)
    fmt = _format(request, f)
    query = {"dataset": dataset, "from": date_from, "to": date_to, "preset": preset, "offences": offences,
             "area": area, "resolution": _int_param("resolution", resolution), "weights": weights,
             "top": _int_param("top", top), "rank_by": rank_by, "include_asb": _bool_param("include_asb", include_asb),
             "method": method}
    req = _items_request(bbox, datetime_, limit, offset, query)
    items = c.items(state, req)
    passthrough = {k: v for k, v in request.query_params.items() if k not in ("offset", "f")}
    path = f"/collections/{c.id}/items"
    links = [
        {"href": _url(request, path, {**passthrough, "offset": req.offset or None, "f": "json"}), "rel": "self",
         "type": GEOJSON, "title": "this page"},
        {"href": _url(request, path, {**passthrough, "offset": req.offset or None, "f": "csv"}), "rel": "alternate",
         "type": "text/csv", "title": "this page as CSV"},
        {"href": _url(request, path, {**passthrough, "offset": req.offset or None, "f": "html"}), "rel": "alternate",
         "type": "text/html", "title": "this page as HTML"},
        {"href": _url(request, f"/collections/{c.id}"), "rel": "collection", "type": "application/json",
         "title": c.title},
    ]
    nxt = req.offset + len(items.features)
    if nxt < items.number_matched and items.features:
        links.append({"href": _url(request, path, {**passthrough, "offset": nxt, "f": fmt if fmt != "csv" else "json"}),
                      "rel": "next", "type": GEOJSON if fmt != "html" else "text/html", "title": "next page"})
    if req.offset > 0:
        links.append({"href": _url(request, path, {**passthrough, "offset": max(0, req.offset - req.limit) or None,
                                                   "f": fmt if fmt != "csv" else "json"}),
                      "rel": "prev", "type": GEOJSON if fmt != "html" else "text/html", "title": "previous page"})
    if fmt == "csv":
        props = [ft["properties"] for ft in items.features]
        frame = pd.DataFrame(props, columns=items.fields or (list(props[0]) if props else []))
        headers = {"Content-Disposition": f'attachment; filename="{c.id}.csv"',
                   "OGC-NumberMatched": str(items.number_matched)}
        nl = [lk for lk in links if lk["rel"] == "next"]
        if nl:
            headers["Link"] = f'<{nl[0]["href"].replace("f=json", "f=csv")}>; rel="next"'
        return Response(to_csv(frame, items.fields), media_type="text/csv; charset=utf-8", headers=headers)
    doc: dict = {"type": "FeatureCollection", "features": items.features,
                 "numberMatched": items.number_matched, "numberReturned": len(items.features),
                 "timeStamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "links": links}
    if items.metadata is not None:
        doc["metadata"] = items.metadata  # foreign member (RFC 7946 s6.1): query, weights, caveats
    if fmt == "html":
        doc["description"] = c.description
        return _html_page(f"{c.title}: items", doc, [ft["properties"] for ft in items.features])
    return JSONResponse(doc, media_type=GEOJSON)


@router.get("/collections/{collection_id}/items/{feature_id}", summary="One feature by id (an H3 cell, a boundary)",
            responses={200: {"content": {GEOJSON: {}, "text/html": {}}}})
@cached_route("ogc-item")
def get_item(
    request: Request, state: State, registry: Collections, collection_id: str, feature_id: str,
    f: Annotated[F | None, Query(description="json (GeoJSON) or html", json_schema_extra=_F_SCHEMA)] = None,
    dataset: Annotated[str | None, Query(description="Dataset" + _HOTSPOT_PARAM_DOC)] = None,
    date_from: Annotated[str | None, Query(alias="from", description="Start" + _HOTSPOT_PARAM_DOC)] = None,
    date_to: Annotated[str | None, Query(alias="to", description="End" + _HOTSPOT_PARAM_DOC)] = None,
    preset: Annotated[str | None, Query(description="Offence preset" + _HOTSPOT_PARAM_DOC)] = None,
    resolution: Annotated[str | None, Query(description="H3 resolution" + _HOTSPOT_PARAM_DOC,
                                            json_schema_extra={"type": "integer"})] = None,
    weights: Annotated[str | None, Query(description="Harm weights table" + _HOTSPOT_PARAM_DOC)] = None,
    method: Annotated[str | None, Query(description="observed or forecast" + _HOTSPOT_PARAM_DOC,
                                        json_schema_extra={"enum": ["observed", "forecast"]})] = None,
) -> Response:
    c = registry.get(state, collection_id)
    fmt = _format(request, f)
    query = {"dataset": dataset, "from": date_from, "to": date_to, "preset": preset,
             "resolution": _int_param("resolution", resolution), "weights": weights, "method": method}
    items = c.items(state, ItemsRequest(query=query, feature_id=feature_id, limit=1))
    if not items.features:
        raise ApiError(404, "not_found", f"no feature '{feature_id}' in collection '{c.id}'")
    feat = dict(items.features[0])
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
                           "larger values are capped.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        }
        op = schema.get("paths", {}).get("/collections/{collection_id}/items", {}).get("get")
        if op:
            op["parameters"] = [{"$ref": "#/components/parameters/limit"} if p.get("name") == "limit" else p
                                for p in op.get("parameters", [])]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["install_openapi", "landing_document", "parse_datetime", "parse_limit", "parse_ogc_bbox", "router"]
