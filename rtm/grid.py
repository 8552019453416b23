"""Analysis grids for RTM: H3 cells over a study area (default resolution 10) or a square BNG grid."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from geodata.cells import (bng_to_lonlat, cell_area_km2, cell_boundaries_lonlat, cell_centres, lonlat_to_bng,
                           polygon_cells, to_hex, unique_cells)

# H3 res 10: ~15,000 m² cells, ~66 m edge, ~114 m between neighbouring centres -- close to the RTMDx advice of a
# cell side about half the median street-block length (Caplan & Kennedy 2016, ch. 5) for UK towns (blocks of
# 150-250 m), and it is the resolution the store keeps study areas at (geodata.cells.AREA_RESOLUTION).
DEFAULT_RESOLUTION = 10


class GridError(ValueError):
    pass


@dataclass
class Grid:
    """Cells with BNG centres.  ``ids`` are uint64 H3 cells (kind 'h3') or int64 row*ncols+col ('square')."""

    kind: str  # "h3" | "square"
    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    area_m2: np.ndarray
    resolution: int | None = None  # h3
    cell_size: float | None = None  # square, metres
    origin: tuple[float, float] = (0.0, 0.0)  # square: lower-left corner of col 0 / row 0
    ncols: int = 0
    name: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self) -> dict:
        d = {"kind": self.kind, "cells": int(len(self)), "resolution": self.resolution,
             "cell_size_m": self.cell_size, "area_km2": float(self.area_m2.sum() / 1e6), "name": self.name,
             "mean_cell_area_m2": float(self.area_m2.mean()) if len(self) else None}
        if self.kind == "square":  # enough to rebuild any cell's square from its id (square_geometry)
            d.update({"crs": "EPSG:27700", "origin": list(self.origin), "ncols": int(self.ncols)})
        return d

    def locate(self, x: np.ndarray | None = None, y: np.ndarray | None = None, lon: np.ndarray | None = None,
               lat: np.ndarray | None = None) -> np.ndarray:
        """Index into the grid of each point (-1 when the point falls in no grid cell)."""
        if self.kind == "h3":
            if lon is None or lat is None:
                lon, lat = bng_to_lonlat(np.asarray(x, float), np.asarray(y, float))
            from geodata.cells import cells_at_all_resolutions

            if self.resolution in (7, 8, 9, 10, 11):
                cells = cells_at_all_resolutions(np.asarray(lat, float), np.asarray(lon, float))[self.resolution]
            else:
                import pyarrow as pa
                from h3ronpy.vector import coordinates_to_cells

                cells = np.asarray(pa.array(coordinates_to_cells(np.ascontiguousarray(lat, float),
                                                                 np.ascontiguousarray(lon, float),
                                                                 self.resolution)), dtype=np.uint64)
            return self.index_of(cells)
        if x is None or y is None:
            x, y = lonlat_to_bng(np.asarray(lon, float), np.asarray(lat, float))
        col = np.floor((np.asarray(x) - self.origin[0]) / self.cell_size).astype(np.int64)
        row = np.floor((np.asarray(y) - self.origin[1]) / self.cell_size).astype(np.int64)
        ok = (col >= 0) & (col < self.ncols) & (row >= 0)
        return self.index_of(np.where(ok, row * self.ncols + col, -1))

    def index_of(self, ids: np.ndarray) -> np.ndarray:
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        ids = np.asarray(ids).astype(self.ids.dtype, copy=False)
        pos = np.searchsorted(sorted_ids, ids)
        pos = np.clip(pos, 0, len(sorted_ids) - 1)
        found = sorted_ids[pos] == ids
        return np.where(found, order[pos], -1)

    def id_strings(self) -> list[str]:
        if self.kind == "h3":
            return to_hex(self.ids)
        return square_id_strings(self.ids, self.cell_size, self.ncols)

    def boundaries_lonlat(self, idx: np.ndarray | None = None) -> list[list[list[float]]]:
        """Closed counter-clockwise [lon, lat] rings (RFC 7946) for the cells at idx (all by default)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx)
        if self.kind == "h3":
            return cell_boundaries_lonlat(self.ids[idx])
        return _square_rings(self.x[idx], self.y[idx], self.cell_size)


def square_id_strings(ids: np.ndarray, cell_size: float, ncols: int) -> list[str]:
    """``sq<size>_<row>_<col>`` for square-grid ids (row * ncols + col)."""
    return [f"sq{cell_size:g}_{int(i) // ncols}_{int(i) % ncols}" for i in np.asarray(ids)]


def square_ids(names: list[str], ncols: int) -> np.ndarray:
    """Square-grid ids (row * ncols + col) of ``sq<size>_<row>_<col>`` strings (the inverse of square_id_strings)."""
    out = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        _, row, col = name.rsplit("_", 2)
        out[i] = int(row) * ncols + int(col)
    return out


def square_centres_lonlat(ids: np.ndarray, origin, cell_size: float, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 centres (lon, lat) of square-grid ids."""
    return bng_to_lonlat(*square_centres(ids, origin, cell_size, ncols))


def square_centres(ids: np.ndarray, origin, cell_size: float, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """BNG centres (x, y) of square-grid ids."""
    ids = np.asarray(ids, dtype=np.int64)
    return (origin[0] + (ids % ncols + 0.5) * cell_size, origin[1] + (ids // ncols + 0.5) * cell_size)


def square_geometry(ids: np.ndarray, origin, cell_size: float, ncols: int) -> tuple[list[str], list]:
    """(id strings, lon/lat rings) of square-grid ids, from a grid's describe()."""
    x, y = square_centres(ids, origin, cell_size, ncols)
    return square_id_strings(ids, cell_size, ncols), _square_rings(x, y, cell_size)


def _square_rings(cx: np.ndarray, cy: np.ndarray, cell_size: float) -> list[list[list[float]]]:
    h = cell_size / 2
    xs = np.stack([cx - h, cx + h, cx + h, cx - h, cx - h], axis=1)  # counter-clockwise
    ys = np.stack([cy - h, cy - h, cy + h, cy + h, cy - h], axis=1)
    lon, lat = bng_to_lonlat(xs.ravel(), ys.ravel())
    lon = np.round(lon.reshape(xs.shape), 7)
    lat = np.round(lat.reshape(xs.shape), 7)
    return [[[float(a), float(b)] for a, b in zip(lo, la)] for lo, la in zip(lon, lat)]


def _area_polygon(area) -> shapely.Geometry:
    if isinstance(area, shapely.Geometry):
        return area
    if getattr(area, "polygon", None) is not None:
        return area.polygon
    if getattr(area, "bbox", None) is not None:
        return shapely.box(*area.bbox)
    raise GridError("area must be a StudyArea or a shapely polygon in WGS84")


def h3_grid(area, resolution: int = DEFAULT_RESOLUTION, name: str = "") -> Grid:
    """H3 cells whose centre lies in the study area (WGS84 polygon or StudyArea)."""
    poly = _area_polygon(area)
    cells = polygon_cells([shapely.to_wkb(poly)], resolution)[0]
    if len(cells) == 0:
        raise GridError(f"no H3 resolution-{resolution} cell centre lies inside the study area")
    return h3_grid_from_cells(unique_cells(cells), name=name or getattr(area, "name", ""))


def h3_grid_from_cells(cells: np.ndarray, name: str = "") -> Grid:
    import h3

    cells = np.asarray(cells, dtype=np.uint64)
    res = h3.get_resolution(h3.int_to_str(int(cells[0])))
    lat, lon = cell_centres(cells)
    x, y = lonlat_to_bng(lon, lat)
    return Grid(kind="h3", ids=cells, x=x, y=y, lon=lon, lat=lat, area_m2=cell_area_km2(cells) * 1e6,
                resolution=res, name=name)


def square_grid(area, cell_size: float | None = None, median_block_length: float | None = None,
                name: str = "") -> Grid:
    """Square cells in EPSG:27700 whose centre lies in the area.  Cell size: ``cell_size`` metres, or half the
    median street-block length when that is given (Caplan & Kennedy 2016; RTMDx default)."""
    if cell_size is None:
        if median_block_length is None:
            raise GridError("give cell_size or median_block_length")
        cell_size = median_block_length / 2.0
    if cell_size <= 0:
        raise GridError("cell size must be positive")
    poly = _area_polygon(area)
    bng = shapely.transform(poly, lambda c: np.column_stack(lonlat_to_bng(c[:, 0], c[:, 1])))
    minx, miny, maxx, maxy = bng.bounds
    x0 = np.floor(minx / cell_size) * cell_size
    y0 = np.floor(miny / cell_size) * cell_size
    ncols = int(np.ceil((maxx - x0) / cell_size))
    nrows = int(np.ceil((maxy - y0) / cell_size))
    if ncols * nrows > 20_000_000:
        raise GridError(f"{ncols * nrows:,} cells: cell size {cell_size} m is too small for this area")
    cols, rows = np.meshgrid(np.arange(ncols), np.arange(nrows))
    cx = x0 + (cols.ravel() + 0.5) * cell_size
    cy = y0 + (rows.ravel() + 0.5) * cell_size
    shapely.prepare(bng)
    inside = shapely.contains_xy(bng, cx, cy)
    ids = (rows.ravel() * ncols + cols.ravel())[inside].astype(np.int64)
    cx, cy = cx[inside], cy[inside]
    if len(ids) == 0:
        raise GridError("no square cell centre lies inside the study area")
    lon, lat = bng_to_lonlat(cx, cy)
    return Grid(kind="square", ids=ids, x=cx, y=cy, lon=lon, lat=lat, area_m2=np.full(len(ids), cell_size ** 2),
                cell_size=float(cell_size), origin=(float(x0), float(y0)), ncols=ncols,
                name=name or getattr(area, "name", ""))


def square_grid_from_cells(cells: np.ndarray, cell_size: float, name: str = "") -> Grid:
    """Square BNG cells whose centre falls in one of the given H3 cells (a stored study-area domain)."""
    import h3

    cells = unique_cells(np.asarray(cells, dtype=np.uint64))
    if cell_size <= 0:
        raise GridError("cell size must be positive")
    res = h3.get_resolution(h3.int_to_str(int(cells[0])))
    lat, lon = cell_centres(cells)
    x, y = lonlat_to_bng(lon, lat)
    pad = h3.average_hexagon_edge_length(res, unit="m") * 1.2
    x0 = np.floor((x.min() - pad) / cell_size) * cell_size
    y0 = np.floor((y.min() - pad) / cell_size) * cell_size
    ncols = int(np.ceil((x.max() + pad - x0) / cell_size))
    nrows = int(np.ceil((y.max() + pad - y0) / cell_size))
    if ncols * nrows > 20_000_000:
        raise GridError(f"{ncols * nrows:,} cells: cell size {cell_size:g} m is too small for this area")
    probe = Grid(kind="h3", ids=cells, x=x, y=y, lon=lon, lat=lat, area_m2=np.ones(len(cells)), resolution=res)
    ids = np.arange(ncols * nrows, dtype=np.int64)
    cx, cy = square_centres(ids, (x0, y0), cell_size, ncols)
    keep = probe.locate(x=cx, y=cy) >= 0
    ids, cx, cy = ids[keep], cx[keep], cy[keep]
    if len(ids) == 0:
        raise GridError("no square cell centre lies inside the study area")
    clon, clat = bng_to_lonlat(cx, cy)
    return Grid(kind="square", ids=ids, x=cx, y=cy, lon=clon, lat=clat, area_m2=np.full(len(ids), cell_size ** 2),
                cell_size=float(cell_size), origin=(float(x0), float(y0)), ncols=ncols, name=name)
