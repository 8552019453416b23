"""Road layers loaded by users: street lines drawn under the hexagons on the map and on the patrol sheet's small
maps, so an officer can find the street where no tile server is allowed.

A road layer is a line file (GeoJSON, GeoPackage or a zipped Shapefile; any CRS; OS Open Roads, OS MasterMap
Highways, OpenStreetMap extracts or a force's own street gazetteer). It is read through the same bounded reader as
boundary layers (:func:`geodata.boundaries.read_boundaries`: bytes, zip members and inflated size, JSON nesting,
features, vertices) and reprojected to WGS84 (:func:`geodata.boundaries.to_wgs84`). Every geometry is stored as a
MultiLineString (one geometry type per layer, for GDAL/QGIS); a feature that is not a line (a point, a polygon) or
has no geometry is rejected with its index and reason; a file with no line at all is refused. The road name field
is guessed when not given (``name``, ``name1`` (OS Open Roads), ``road_name``, ``street``...) and the guess
reported. Re-adding a layer replaces it in one transaction; a refused file stores nothing.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import shapely

from geodata.boundaries import BoundaryError, check_layer_name, read_boundaries, to_wgs84
from geodata.cells import bbox_bounds_sql
from geodata.store import Store, utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS road_layers (
    layer VARCHAR PRIMARY KEY, source VARCHAR, source_crs VARCHAR, name_field VARCHAR, features INTEGER,
    rejected INTEGER, minx DOUBLE, miny DOUBLE, maxx DOUBLE, maxy DOUBLE, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS road_lines (
    layer VARCHAR, idx INTEGER, name VARCHAR, minx DOUBLE, miny DOUBLE, maxx DOUBLE, maxy DOUBLE, geometry_wkb BLOB);
"""
NAME_PATTERNS = (r"^name$", r"^name1$", r"^road_?name$", r"^street_?name$", r"^street$", r"^roadname\d*$",
                 r"^.*_name$", r"^.*name.*$")
REJECTS_LISTED = 100


def ensure_tables(store: Store) -> None:
    store.ensure_schema(SCHEMA)


def _guess_name(columns: list[str]) -> str | None:
    for pat in NAME_PATTERNS:
        for c in columns:
            if re.match(pat, c, flags=re.IGNORECASE):
                return c
    return None


def _lines(g) -> shapely.Geometry | None:
    """A MultiLineString of the geometry's lines, or None when it holds no line of positive length."""
    if g is None or g.is_empty:
        return None
    if g.geom_type == "LineString":
        parts = [g]
    elif g.geom_type == "MultiLineString":
        parts = list(g.geoms)
    elif g.geom_type == "GeometryCollection":
        parts = [p for p in g.geoms if p.geom_type == "LineString"] + [
            q for p in g.geoms if p.geom_type == "MultiLineString" for q in p.geoms]
    else:
        return None
    parts = [p for p in parts if not p.is_empty and p.length > 0]
    return shapely.MultiLineString(parts) if parts else None


def prepare_roads(frame, name_field: str | None = None) -> tuple[pd.DataFrame, list[dict], dict]:
    """(stored rows: idx, name, bounds, geometry_wkb; rejects with index and reason; what was used and guessed)."""
    columns = [str(c) for c in frame.columns if c != frame.geometry.name]
    guessed = name_field is None
    if name_field is not None and name_field not in columns:
        raise BoundaryError(f"name_field '{name_field}' is not a field of the file (fields: {columns[:30]})")
    field = name_field if name_field is not None else _guess_name(columns)
    wgs, source, note = to_wgs84(frame)
    geoms = list(wgs.geometry.values)
    names = (wgs[field].astype("string").fillna("").str.strip().tolist() if field else [""] * len(geoms))
    rows, rejects = [], []
    for i, (g, name) in enumerate(zip(geoms, names)):
        lines = _lines(g)
        if lines is None:
            kind = "no geometry" if g is None or g.is_empty else f"not a line ({g.geom_type})"
            rejects.append({"index": i, "reason": kind})
            continue
        rows.append((i, name[:200], *lines.bounds, shapely.to_wkb(lines)))
    if not rows:
        raise BoundaryError(f"no line features: a road layer needs LineString/MultiLineString features "
                            f"({len(rejects)} rejected, first: {rejects[:3]})")
    out = pd.DataFrame(rows, columns=["idx", "name", "minx", "miny", "maxx", "maxy", "geometry_wkb"])
    info = {"name_field": field, "name_field_guessed": guessed and field is not None, "source_crs": source,
            "crs_note": note}
    return out, rejects, info


def add_roads(store: Store, layer: str, data: bytes, filename: str, name_field: str | None = None,
              source_layer: str | None = None) -> dict:
    """Read, check and store a road layer (replacing one of the same name); the load report."""
    check_layer_name(layer)
    frame = read_boundaries(data, filename, source_layer)
    rows, rejects, info = prepare_roads(frame, name_field)
    ensure_tables(store)
    bounds = (float(rows["minx"].min()), float(rows["miny"].min()), float(rows["maxx"].max()),
              float(rows["maxy"].max()))
    frame_rows = rows.assign(layer=layer)[["layer", "idx", "name", "minx", "miny", "maxx", "maxy", "geometry_wkb"]]

    def write(cur) -> None:  # replace the layer whole, in one transaction (retried on a conflict)
        cur.execute("DELETE FROM road_lines WHERE layer = ?", [layer])
        cur.execute("DELETE FROM road_layers WHERE layer = ?", [layer])
        cur.execute("INSERT INTO road_layers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [layer, filename, info["source_crs"], info["name_field"], len(rows), len(rejects), *bounds,
                     utc_now()])
        cur.register("rl", frame_rows)
        try:
            cur.execute("INSERT INTO road_lines SELECT * FROM rl")
        finally:
            cur.unregister("rl")

    store.write(write, scope="roads")
    return {"layer": layer, "features": int(len(rows)), "rejected": len(rejects),
            "rejects": rejects[:REJECTS_LISTED], "geometry_type": "MultiLineString",
            "bbox": [round(v, 6) for v in bounds], **info}


def delete_roads(store: Store, layer: str) -> int:
    """Delete a road layer; the number of lines it held (0: no such layer)."""
    ensure_tables(store)

    def write(cur) -> int:
        n = int(cur.execute("SELECT count(*) FROM road_lines WHERE layer = ?", [layer]).fetchall()[0][0])
        cur.execute("DELETE FROM road_lines WHERE layer = ?", [layer])
        cur.execute("DELETE FROM road_layers WHERE layer = ?", [layer])
        return n

    return store.write(write, scope="roads")


def list_roads(store: Store) -> list[dict]:
    ensure_tables(store)
    frame = store.query_df("SELECT * FROM road_layers ORDER BY layer")
    out = []
    for r in frame.to_dict("records"):
        out.append({"layer": r["layer"], "source": r["source"], "source_crs": r["source_crs"],
                    "name_field": None if pd.isna(r["name_field"]) else r["name_field"],
                    "features": int(r["features"]), "rejected": int(r["rejected"]),
                    "bbox": [float(r[k]) for k in ("minx", "miny", "maxx", "maxy")],
                    "created_at": pd.Timestamp(r["created_at"]).isoformat()})
    return out


def road_layer_names(store: Store) -> list[str]:
    ensure_tables(store)
    return store.query_df("SELECT layer FROM road_layers ORDER BY layer")["layer"].tolist()


def roads_in_bbox(store: Store, bbox: tuple[float, float, float, float] | None = None, layer: str | None = None,
                  limit: int | None = None, offset: int = 0) -> tuple[pd.DataFrame, int]:
    """(lines of one layer or all whose bounds meet ``bbox``: layer, idx, name, geometry (shapely), the number
    matched); ordered by layer and index, paged by ``limit``/``offset``."""
    ensure_tables(store)
    where, params = ["TRUE"], []
    if layer is not None:
        where.append("layer = ?")
        params.append(layer)
    if bbox is not None:
        cond, values = bbox_bounds_sql(bbox)
        where.append(cond)
        params += values
    cond = " AND ".join(where)
    matched = int(store.query_df(f"SELECT count(*) AS n FROM road_lines WHERE {cond}", params)["n"].iloc[0])
    page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
    frame = store.query_df(f"SELECT layer, idx, name, geometry_wkb FROM road_lines WHERE {cond} "
                           f"ORDER BY layer, idx{page}", params)
    geoms = shapely.from_wkb(np.array([bytes(b) for b in frame["geometry_wkb"]], dtype=object)) if len(frame) \
        else np.empty(0, dtype=object)
    return frame.drop(columns=["geometry_wkb"]).assign(geometry=list(geoms)), matched


__all__ = ["SCHEMA", "add_roads", "delete_roads", "list_roads", "prepare_roads", "road_layer_names", "roads_in_bbox"]
