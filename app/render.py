"""One renderer per format, shared by every endpoint that returns cells: JSON, CSV, GeoJSON (RFC 7946)."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pandas as pd

from fastapi.responses import JSONResponse, Response

from geodata.cells import cell_boundaries_lonlat, from_hex

CELL_FIELDS = ["h3", "rank", "harm", "count", "harm_share", "count_share", "area_km2", "harm_per_km2", "lat", "lon"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
GEOJSON_MEDIA = "application/geo+json"


def _clean(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else round(f, 6)
    if isinstance(v, np.bool_):
        return bool(v)
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def records(cells: pd.DataFrame, fields: list[str] | None = None) -> list[dict]:
    cols = [c for c in (fields or list(cells.columns)) if c in cells.columns and c != "cell"]
    return [{k: _clean(v) for k, v in zip(cols, row)} for row in cells[cols].itertuples(index=False, name=None)]


def to_json(meta: dict, cells: pd.DataFrame, fields: list[str] | None = None) -> dict:
    return {**meta, "cells": records(cells, fields)}


def _csv_safe(value) -> str:
    """Neutralise spreadsheet formula injection: text cells starting = + - @ get a leading quote."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        value = json.dumps(value, separators=(",", ":"))
    text = str(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def to_csv(cells: pd.DataFrame, fields: list[str] | None = None, meta_comment: dict | None = None) -> str:
    rows = records(cells, fields)
    cols = [c for c in (fields or list(cells.columns)) if c in cells.columns and c != "cell"]
    if "top_offences" in cols:
        for r in rows:
            r["top_offences"] = "; ".join(f"{o['offence']} ({o['count']})" for o in (r.get("top_offences") or []))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for r in rows:
        writer.writerow([_csv_safe(r.get(c)) for c in cols])
    return buf.getvalue()


def to_geojson(meta: dict, cells: pd.DataFrame, fields: list[str] | None = None) -> dict:
    """RFC 7946 FeatureCollection of hex polygons: WGS84 lon/lat, closed counter-clockwise rings, no crs."""
    props = records(cells, fields)
    ids = from_hex(cells["h3"].tolist()) if len(cells) else np.empty(0, dtype=np.uint64)
    rings = cell_boundaries_lonlat(ids)
    features = [{"type": "Feature", "id": p.get("h3"), "geometry": {"type": "Polygon", "coordinates": [ring]},
                 "properties": p} for p, ring in zip(props, rings)]
    out: dict = {"type": "FeatureCollection", "features": features}
    if len(features):
        lons = [pt[0] for r in rings for pt in r]
        lats = [pt[1] for r in rings for pt in r]
        out["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
    out["metadata"] = meta  # foreign member (RFC 7946 s6.1): query, weights table, caveats
    return out


def cells_response(meta: dict, cells: pd.DataFrame, fields: list[str], fmt: str, filename: str,
                   csv_headers: dict[str, str] | None = None) -> Response:
    """The HTTP response for a table of cells in the requested format (json, csv or geojson)."""
    if fmt == "csv":
        return Response(to_csv(cells, fields), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"',
                                 **(csv_headers or {})})
    if fmt == "geojson":
        return JSONResponse(to_geojson(meta, cells, fields), media_type=GEOJSON_MEDIA)
    return JSONResponse(to_json(meta, cells, fields))
