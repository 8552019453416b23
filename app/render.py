"""One renderer per format, shared by every endpoint that returns cells: JSON, CSV, GeoJSON (RFC 7946).

Also the one place that turns store values into JSON (:func:`json_value`, :func:`frame_records`): DuckDB hands
pandas NULLs as None, NaN, NaT or pd.NA depending on the column type and the pandas version (pandas 3 reads a
NULL text column as NaN), and JSON has only ``null``.  :class:`JSONResponse` is the service's response class:
it writes strict JSON and, if a value slipped through as NaN/inf or a numpy/pandas scalar, cleans the whole
body with :func:`json_value` instead of failing.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import typing

import numpy as np
import pandas as pd

from fastapi.responses import JSONResponse as _StarletteJSON, Response

from geodata.cells import cell_boundaries_lonlat, from_hex

CELL_FIELDS = ["h3", "rank", "harm", "count", "harm_share", "count_share", "area_km2", "harm_per_km2", "lat", "lon"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
GEOJSON_MEDIA = "application/geo+json"


def json_value(v, digits: int | None = None):
    """A store/pandas/numpy value as plain JSON: missing (None, NaN, NaT, pd.NA, inf) -> None; numpy scalars ->
    int/float/bool; timestamps and dates -> ISO 8601 text; bytes -> None (geometry blobs
    are never JSON); arrays, lists, tuples and dicts recursively.  ``digits`` rounds floats."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, np.bool_):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f) or math.isinf(f):
            return None
        return round(f, digits) if digits is not None else f
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, dict):
        return {str(k): json_value(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [json_value(x, digits) for x in v]
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (pd.Timestamp, _dt.datetime)):
        if pd.isna(v):
            return None
        return pd.Timestamp(v).isoformat()
    if isinstance(v, _dt.date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return None
    if isinstance(v, (pd.Timedelta, _dt.timedelta)):
        return None if pd.isna(v) else pd.Timedelta(v).total_seconds()
    try:  # any other pandas missing marker
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def _clean(v):
    return json_value(v, 6)


def records(cells: pd.DataFrame, fields: list[str] | None = None) -> list[dict]:
    """Rows of a frame as JSON-ready dicts (floats rounded to 6 decimals; the internal ``cell`` column left out).
    Converted a column at a time (numeric columns without a per-value type dispatch): the same values as
    :func:`json_value` of each one."""
    cols = [c for c in (fields or list(cells.columns)) if c in cells.columns and c != "cell"]
    if not cols:
        return [{} for _ in range(len(cells))]
    return [dict(zip(cols, row)) for row in zip(*(_column_values(cells[c]) for c in cols))]


def _column_values(column: pd.Series) -> list:
    """One column as JSON values (:func:`_clean` of each): floats rounded to 6 decimals, NaN/inf as None."""
    values = column.tolist()  # Python scalars (numpy dtypes) or the stored objects
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else None
    if kind == "f":
        return [None if v != v or v in (math.inf, -math.inf) else round(v, 6) for v in values]
    if kind in ("i", "u", "b"):
        return values
    return [clean_object_value(v) for v in values]


_PLAIN = (str, int)  # exact types (type() is, so bool and numpy scalars take the general path)


def clean_object_value(v):
    """:func:`_clean` of one value of an object column, with a short path for what the engine puts there:
    lists of str (top_locations) and lists of flat dicts of str/int/finite float (top_offences)."""
    if type(v) is list:
        if all(type(x) is str for x in v):
            return list(v)
        if all(type(x) is dict for x in v):
            out = []
            for d in v:
                row = {}
                for k, x in d.items():
                    t = type(x)
                    if t in _PLAIN and type(k) is str:
                        row[k] = x
                    elif t is float and type(k) is str and math.isfinite(x):
                        row[k] = round(x, 6)
                    else:
                        return _clean(v)
                out.append(row)
            return out
    return _clean(v)


def frame_records(frame: pd.DataFrame, columns: list[str] | None = None) -> list[dict]:
    """Rows of a store frame (datasets, layers, packs, rejects...) as JSON-ready dicts, values unrounded."""
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    return [{k: json_value(v) for k, v in zip(cols, row)} for row in frame[cols].itertuples(index=False, name=None)]


class JSONResponse(_StarletteJSON):
    """Strict JSON (no NaN/Infinity tokens); a body holding NaN/inf or numpy/pandas values is cleaned with
    :func:`json_value` rather than failing (the fast path is the plain encoder)."""

    def render(self, content: typing.Any) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                              separators=(",", ":")).encode("utf-8")
        except (ValueError, TypeError):
            return json.dumps(json_value(content), ensure_ascii=False, allow_nan=False, indent=None,
                              separators=(",", ":")).encode("utf-8")


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
            v = r.get("top_offences")
            if not isinstance(v, str):  # already plain text when it comes from the OGC door
                r["top_offences"] = "; ".join(f"{o['offence']} ({o['count']})" for o in (v or []))
    if "top_locations" in cols:
        for r in rows:
            v = r.get("top_locations")
            if not isinstance(v, str):  # a list from the engine; plain text when it comes from the OGC door
                r["top_locations"] = "; ".join(v or [])
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
