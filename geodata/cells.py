"""H3 and projection helpers, vectorised (h3ronpy in Rust for the hot paths, pyproj for BNG)."""
from __future__ import annotations

from functools import lru_cache

import h3
import numpy as np
import pandas as pd
import pyarrow as pa
from h3ronpy import cells_area_km2, cells_to_string, change_resolution
from h3ronpy.vector import cells_to_coordinates, coordinates_to_cells, wkb_to_cells
from pyproj import Transformer

RESOLUTIONS: tuple[int, ...] = (7, 8, 9, 10, 11)
FINEST = max(RESOLUTIONS)
AREA_RESOLUTION = 10  # areas (districts, wards, study areas) are stored as sets of res-10 cells


@lru_cache(maxsize=2)
def _transformer(to_bng: bool) -> Transformer:
    if to_bng:
        return Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)
    return Transformer.from_crs("EPSG:27700", "EPSG:4326", always_xy=True)


def lonlat_to_bng(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _transformer(True).transform(lon, lat)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def bng_to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = _transformer(False).transform(x, y)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def _to_numpy(arr) -> np.ndarray:
    return np.asarray(pa.array(arr), dtype=np.uint64) if not isinstance(arr, np.ndarray) else arr


def cells_at_all_resolutions(lat: np.ndarray, lon: np.ndarray) -> dict[int, np.ndarray]:
    """H3 cells (uint64) at every supported resolution, each indexed directly from the point: the hexagon of
    that resolution that contains it.  (Not the parents of the finest cell: H3 parents do not contain their
    children exactly, and ~6-7 % of police.uk map points lie outside the parent of their res-11 cell at
    res 7-10, so a count by parent would disagree with a point-in-polygon check of the drawn hexagon.)"""
    lat = np.ascontiguousarray(lat, dtype=float)
    lon = np.ascontiguousarray(lon, dtype=float)
    return {res: np.asarray(pa.array(coordinates_to_cells(lat, lon, res)), dtype=np.uint64) for res in RESOLUTIONS}


def parents(cells: np.ndarray, res: int) -> np.ndarray:
    """H3 parents (cell-level: e.g. which coarse cell an area's res-10 cells fall under). A parent does not
    contain its children exactly: never use it to place records (they are indexed at every resolution)."""
    return np.asarray(pa.array(change_resolution(pa.array(cells, type=pa.uint64()), res)), dtype=np.uint64)


def cell_centres(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of cell centres."""
    if len(cells) == 0:
        return np.empty(0), np.empty(0)
    batch = cells_to_coordinates(pa.array(cells, type=pa.uint64()))
    return (np.asarray(batch.column("lat"), dtype=float), np.asarray(batch.column("lng"), dtype=float))


def unique_cells(cells: np.ndarray) -> np.ndarray:
    """The distinct values of ``cells`` (H3 ids), ascending: ``np.unique`` by one sort. NumPy 2.4's np.unique of
    uint64 ids hashes them (3.1 s for 2.5 M ids here, against 0.2 s for the sort)."""
    a = np.sort(np.asarray(cells).ravel())
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


AREA_CHUNK = 16_384  # cells per h3ronpy call: ~50 ms each here


def cell_area_km2(cells: np.ndarray) -> np.ndarray:
    """Exact H3 cell areas (km2). h3ronpy holds the GIL for the whole call (~3 us a cell), so a study area's
    275,731 cells in one call would stall the event loop for a second; in chunks of ``AREA_CHUNK`` other threads
    get the interpreter between chunks. Same values either way (cell by cell)."""
    cells = np.asarray(cells, dtype=np.uint64)
    if len(cells) == 0:
        return np.empty(0)
    return np.concatenate([np.asarray(pa.array(cells_area_km2(pa.array(cells[i:i + AREA_CHUNK], type=pa.uint64()))),
                                      dtype=float) for i in range(0, len(cells), AREA_CHUNK)])


def _hex_arrow(cells: np.ndarray) -> pa.Array:
    return pa.array(cells_to_string(pa.array(np.asarray(cells, dtype=np.uint64), type=pa.uint64())))


def to_hex(cells: np.ndarray) -> list[str]:
    if len(cells) == 0:
        return []
    return _hex_arrow(cells).to_pylist()


def to_hex_array(cells: np.ndarray) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """The hex ids of ``cells`` as the column pandas makes of a list of str (its default string dtype), built
    from the Arrow array directly: converting thousands of Python strings costs pandas 3 several milliseconds."""
    return _hex_arrow(cells).to_pandas().array


def from_hex(values: list[str]) -> np.ndarray:
    return np.array([int(h3.str_to_int(v)) for v in values], dtype=np.uint64)


def polygon_cells(geom_wkb: list[bytes], res: int = AREA_RESOLUTION) -> list[np.ndarray]:
    """Cells whose centre lies in each (multi)polygon, one array per geometry."""
    if not geom_wkb:
        return []
    lists = wkb_to_cells(pa.array(geom_wkb, type=pa.binary()), res, containment_mode=_centroid_mode())
    lists = pa.array(lists)
    values = np.asarray(lists.flatten(), dtype=np.uint64)  # no Python ints: a national hull is ~10 M cells
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    return [values[offsets[i]:offsets[i + 1]] for i in range(len(lists))]


def _centroid_mode():
    from h3ronpy import ContainmentMode

    return ContainmentMode.ContainsCentroid


def cell_boundaries_lonlat(cells: np.ndarray) -> list[list[list[float]]]:
    """Closed, counter-clockwise rings of [lon, lat] (RFC 7946 order) for each cell."""
    rings = []
    for c in cells:
        pts = h3.cell_to_boundary(h3.int_to_str(int(c)))  # (lat, lng) tuples, counter-clockwise
        ring = [[round(lng, 7), round(lat, 7)] for lat, lng in pts]
        if _signed_area(ring) < 0:
            ring.reverse()
        ring.append(ring[0])
        rings.append(ring)
    return rings


def _signed_area(ring: list[list[float]]) -> float:
    a = 0.0
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]):
        a += x1 * y2 - x2 * y1
    return a / 2.0


# ------------------------------------------------------------------------------------------------ bbox
Bbox = tuple[float, float, float, float]


def bbox_parts(bbox: Bbox) -> list[Bbox]:
    """The plain boxes a WGS84 ``minLon,minLat,maxLon,maxLat`` covers: itself; two when it crosses the
    antimeridian (minLon > maxLon, as RFC 7946 section 5.2 and OGC API - Features read it: from minLon east to
    180 and from -180 east to maxLon); none when it is upside down (minLat > maxLat: it holds no point)."""
    x0, y0, x1, y1 = bbox
    if y0 > y1:
        return []
    if x0 <= x1:
        return [bbox]
    return [(x0, y0, 180.0, y1), (-180.0, y0, x1, y1)]


def bbox_sql(bbox: Bbox, lon: str = "lon", lat: str = "lat") -> tuple[str, list]:
    """SQL condition (and its parameters) true for points ``lon``/``lat`` inside ``bbox`` (see :func:`bbox_parts`)."""
    parts = bbox_parts(bbox)
    if not parts:
        return "FALSE", []
    sql = " OR ".join(f"({lon} BETWEEN ? AND ? AND {lat} BETWEEN ? AND ?)" for _ in parts)
    return f"({sql})", [v for x0, y0, x1, y1 in parts for v in (x0, x1, y0, y1)]


def bbox_bounds_sql(bbox: Bbox, minx: str = "minx", miny: str = "miny", maxx: str = "maxx",
                    maxy: str = "maxy") -> tuple[str, list]:
    """SQL condition true for stored bounds (``minx``..``maxy`` columns) that meet ``bbox``."""
    parts = bbox_parts(bbox)
    if not parts:
        return "FALSE", []
    sql = " OR ".join(f"({maxx} >= ? AND {minx} <= ? AND {maxy} >= ? AND {miny} <= ?)" for _ in parts)
    return f"({sql})", [v for x0, y0, x1, y1 in parts for v in (x0, x1, y0, y1)]


def bbox_mask(lon: np.ndarray, lat: np.ndarray, bbox: Bbox) -> np.ndarray:
    """Which of the points ``lon``/``lat`` lie inside ``bbox`` (see :func:`bbox_parts`)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    mask = np.zeros(len(lon), dtype=bool)
    for x0, y0, x1, y1 in bbox_parts(bbox):
        mask |= (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)
    return mask


def bbox_geometry(bbox: Bbox):
    """``bbox`` as a shapely geometry (a box, two boxes across the antimeridian, or empty when upside down)."""
    import shapely

    parts = bbox_parts(bbox)
    return shapely.union_all([shapely.box(*p) for p in parts]) if parts else shapely.Polygon()
