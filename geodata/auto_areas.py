"""Automatic areas from the records themselves: every data.police.uk row carries its LSOA code and name, and an
LSOA name is its local authority district's name plus a code ("Maidstone 012A", "Cardiff 001A"). So every
police.uk dataset gets, with no boundary file, two layers stored like any boundary layer (``areas`` and
``area_cells``), under the dataset's own names ``lad@<dataset>`` and ``lsoa@<dataset>`` (see
:mod:`geodata.areas` for how requests name them: ``lad``, ``lsoa``):

- ``lad``: local authority districts. A res-10 cell holding records belongs to the district holding most of
  them (ties: the name first in alphabetical order). Cells without records are filled from the nearest record
  cell (within :data:`FILL_KM`) inside the dataset's study area, on a res-9 grid; a district's outline is those
  cells dissolved and smoothed (about :data:`SMOOTH_M` m), so it is APPROXIMATE: drawn from where records were
  mapped, not a surveyed boundary. A force extract mapped with a ``district`` column (a district, beat or
  sector) builds the layer from that column instead.
- ``lsoa``: the LSOAs, the same way (cells by majority, filled from the nearest record cell of the same
  district).

Districts with very few records (under :data:`MIN_SHARE` of the dataset, or under :data:`MIN_RECORDS`) are
left out: they are records a force mapped far outside its area. :func:`derive_auto_areas` runs at the end of
every ingest, inside its transaction (``Store`` calls it as a post-ingest step), over the whole dataset.
"""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import shapely
from scipy.spatial import cKDTree

from geodata.cells import AREA_RESOLUTION, cell_centres, lonlat_to_bng, parents, unique_cells

AUTO_LAYERS = {"lad": "local authority districts from the records' LSOA names (or a mapped district column)",
               "lsoa": "LSOAs from the records' LSOA codes and names"}
SEPARATOR = "@"
FILL_RESOLUTION = 9       # the fill grid (res 9, ~0.1 km2): outlines dissolve ~7x fewer cells than at res 10
FILL_KM = 2.0             # empty cells further than this from any record cell stay outside every area
SMOOTH_M = 120.0          # closing radius that smooths the dissolved hexagon outline
MIN_SHARE = 0.002         # districts below this share of the records are strays (and below MIN_RECORDS)
MIN_RECORDS = 20
SLICE = 1 << 20           # study-area cells read at a time
GRID_SLICE = 1 << 17      # fill-grid cells whose res-10 children (7x) are made, centred and stored at a time
HEX_SLICE = 1 << 17       # most hexagons (shapely polygons, ~0.4 kB each) held at a time while dissolving
LSOA_NAME = r"^(.*\S)\s+[0-9]{3}[A-Z]$"   # "Maidstone 012A" -> "Maidstone"
APPROXIMATE_NOTE = ("approximate: drawn from the cells where the dataset's records were mapped (each cell to the "
                    "area holding most of its records, empty cells to the nearest record cell within "
                    f"{FILL_KM:g} km), dissolved and smoothed; not a surveyed boundary")
META_SCHEMA = """
CREATE TABLE IF NOT EXISTS area_layer_meta (
    layer VARCHAR PRIMARY KEY, public_name VARCHAR, dataset VARCHAR, kind VARCHAR, source VARCHAR,
    name_field VARCHAR, id_field VARCHAR, district_field VARCHAR, features INTEGER, approximate BOOLEAN,
    note VARCHAR, loaded_at TIMESTAMP);
"""


def auto_layer(name: str, dataset: str) -> str:
    """The stored name of a dataset's automatic layer: ``lad@leics``."""
    return f"{name}{SEPARATOR}{dataset}"


def split_layer(stored: str) -> tuple[str, str | None]:
    """``lad@leics`` -> ("lad", "leics"); a loaded layer -> (name, None)."""
    name, sep, dataset = stored.partition(SEPARATOR)
    return (name, dataset) if sep else (stored, None)


def lad_from_lsoa_name(names: pd.Series) -> pd.Series:
    """The local authority part of LSOA names ("Maidstone 012A" -> "Maidstone"); None where it does not parse."""
    return names.astype("string").str.extract(LSOA_NAME, expand=False)


def derive_auto_areas(cur, dataset: str, batch_id: int | None = None) -> dict:
    """(Re)build the dataset's ``lad`` and ``lsoa`` layers from all its records, on the ingest's cursor.
    Returns a summary (features per layer); a dataset without LSOA names or a district column gets none.

    Memory is bounded by the layers' geography, never by the records (issue 14): the records are grouped,
    filtered and reduced to one majority feature per record cell in DuckDB (which spills under its memory
    limit), and only integer codes come back to Python (plus the few distinct names); the study area is read in
    slices of :data:`SLICE` cells; the fill grid's hexagons and res-10 children are made and stored a slice at a
    time (:func:`_store_layer`)."""
    from geodata.store import DATASET_LAYER

    cur.execute(META_SCHEMA)
    for name in AUTO_LAYERS:
        _drop(cur, auto_layer(name, dataset))
    cols = {r[0] for r in cur.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'offences'").fetchall()}
    if not {"lsoa_name", "district"} <= cols:
        return {}
    try:
        return _derive(cur, dataset, DATASET_LAYER)
    finally:
        try:
            cur.execute(f"DROP TABLE IF EXISTS {_REC}")
        except duckdb.Error:
            pass  # the transaction failed already: its rollback drops the table, and the first error is kept


_REC = "temp.main._auto_area_records"  # the dataset's records grouped by cell, district and LSOA (dropped after use)


def _derive(cur, dataset: str, dataset_layer: str) -> dict:
    # one row per (record cell, district, LSOA code, LSOA name, from a district column) with its record count
    cur.execute(f"""CREATE OR REPLACE TEMP TABLE _auto_area_records AS
        SELECT h3_10, nullif(lad, '') AS lad, lsoa_code, lsoa_name, from_column, n FROM (
            SELECT o.h3_10, coalesce(nullif(trim(o.district), ''), regexp_extract(o.lsoa_name, '{LSOA_NAME}', 1)) AS lad,
                   nullif(trim(o.lsoa_code), '') AS lsoa_code, nullif(trim(o.lsoa_name), '') AS lsoa_name,
                   (o.district IS NOT NULL AND trim(o.district) <> '') AS from_column, count(*) AS n
            FROM offences o SEMI JOIN (SELECT h3_10 FROM area_cells WHERE layer = ? AND feature_id = ?) s
                 ON s.h3_10 = o.h3_10
            WHERE o.dataset = ? AND o.h3_10 IS NOT NULL GROUP BY ALL)
        WHERE nullif(lad, '') IS NOT NULL""", [dataset_layer, dataset, dataset])
    col_n, other_n, total = cur.execute(f"""SELECT coalesce(sum(n) FILTER (WHERE from_column), 0),
        coalesce(sum(n) FILTER (WHERE NOT from_column), 0), coalesce(sum(n), 0) FROM {_REC}""").fetchall()[0]
    if not total:
        return {}
    from_column = bool(col_n > other_n)
    # districts with too few records are strays: their rows leave the table
    cur.execute(f"""DELETE FROM {_REC} WHERE lad NOT IN (SELECT lad FROM {_REC} GROUP BY lad
                    HAVING sum(n) >= ? AND sum(n) >= ?)""", [MIN_RECORDS, MIN_SHARE * float(total)])
    lads = [r[0] for r in cur.execute(f"SELECT DISTINCT lad FROM {_REC} ORDER BY lad").fetchall()]
    if not lads:
        return {}
    lad_cells, lad_code = _majority(cur, "lad", lads)
    study = _study_parents(cur, dataset_layer, dataset)
    grid = _Grid(study, lad_cells)
    lad_key = grid.nearest(lad_cells, lad_code)
    source = "the records' district column" if from_column else "the records' LSOA names"
    lad_names = {k: k for k in lads}
    summary = {"lad": _store_layer(cur, auto_layer("lad", dataset), dataset, "lad", grid, lad_key, lads,
                                   lad_cells, lad_code, lad_names, lad_names, source)}
    # each LSOA's name and district: those of its row with the most records (ties: first name, then district)
    first = cur.execute(f"""SELECT lsoa_code, coalesce(lsoa_name, lsoa_code), lad FROM {_REC}
        WHERE lsoa_code IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY lsoa_code ORDER BY n DESC, lsoa_name NULLS LAST, lad) = 1
        ORDER BY lsoa_code""").fetchall()
    if first:
        codes = [r[0] for r in first]
        names = {r[0]: r[1] for r in first}
        districts = {r[0]: r[2] for r in first}
        lad_index = {k: i for i, k in enumerate(lads)}
        lsoa_district = np.array([lad_index[r[2]] for r in first], dtype=np.int64)
        lsoa_cells, lsoa_code = _majority(cur, "lsoa_code", codes)
        # LSOAs filled inside their district
        lsoa_key = grid.nearest(lsoa_cells, lsoa_code, within=lad_key, record_group=lsoa_district[lsoa_code])
        summary["lsoa"] = _store_layer(cur, auto_layer("lsoa", dataset), dataset, "lsoa", grid, lsoa_key, codes,
                                       lsoa_cells, lsoa_code, names, districts, "the records' LSOA codes and names")
    return summary


def _study_parents(cur, layer: str, dataset: str) -> np.ndarray:
    """The distinct res-9 parents of the study area's res-10 cells, read :data:`SLICE` cells at a time."""
    rel = cur.sql("SELECT h3_10 FROM area_cells WHERE layer = ? AND feature_id = ?", params=[layer, dataset])
    reader = (rel.to_arrow_reader if hasattr(rel, "to_arrow_reader") else rel.fetch_arrow_reader)(SLICE)  # DuckDB 2 / 1
    out = [np.empty(0, np.uint64)]
    for batch in reader:
        cells = np.asarray(batch.column(0).to_numpy(zero_copy_only=False), dtype=np.uint64)
        if len(cells):
            out.append(unique_cells(parents(cells, FILL_RESOLUTION)))
    return unique_cells(np.concatenate(out))


def _drop(cur, layer: str) -> None:
    cur.execute("DELETE FROM areas WHERE layer = ?", [layer])
    cur.execute("DELETE FROM area_cells WHERE layer = ?", [layer])
    cur.execute("DELETE FROM area_layer_meta WHERE layer = ?", [layer])


def _majority(cur, key: str, values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per record cell (ascending), the ``key`` holding most of its records (ties: smallest key), as a position in
    ``values`` (the sorted distinct keys): computed in DuckDB, two integer arrays back."""
    import pyarrow as pa

    keys = pa.table({"v": pa.array(values, pa.string()), "code": pa.array(np.arange(len(values)), pa.int64())})  # noqa: F841
    got = cur.execute(f"""SELECT r.h3_10, keys.code FROM (
            SELECT h3_10, v FROM (SELECT h3_10, {key} AS v, sum(n) AS n FROM {_REC} WHERE {key} IS NOT NULL
                                  GROUP BY h3_10, {key})
            QUALIFY row_number() OVER (PARTITION BY h3_10 ORDER BY n DESC, v) = 1) r
        JOIN keys USING (v) ORDER BY r.h3_10""").fetchnumpy()
    return np.asarray(got["h3_10"], dtype=np.uint64), np.asarray(got["code"], dtype=np.int64)


def _xy(cells: np.ndarray) -> np.ndarray:
    lat, lon = cell_centres(cells)
    x, y = lonlat_to_bng(lon, lat)
    return np.column_stack([x, y])


class _Grid:
    """The fill grid shared by both layers: res-9 cells of the study area (and of every record cell) within
    FILL_KM of a record cell, with their BNG centres (a few arrays of the grid's length: bounded by the area
    covered, ~1.5 M cells for all of England and Wales)."""

    def __init__(self, study_parents: np.ndarray, record_cells: np.ndarray):
        record_cells = unique_cells(np.asarray(record_cells, dtype=np.uint64))
        cells = unique_cells(np.concatenate([study_parents, parents(record_cells, FILL_RESOLUTION)]))
        xy = _xy(cells)
        # only grid cells within FILL_KM of a record cell can be assigned (``nearest`` gives none beyond): the
        # others are dropped before their hexagons and children are made (a national hull holds millions)
        if len(cells) and len(record_cells):
            d, _ = cKDTree(_xy(record_cells)).query(xy, distance_upper_bound=FILL_KM * 1000)
            near = np.isfinite(d)
            cells, xy = cells[near], xy[near]
        self.cells = cells
        self.xy = xy

    def nearest(self, record_cells: np.ndarray, record_code: np.ndarray, within: np.ndarray | None = None,
                record_group: np.ndarray | None = None) -> np.ndarray:
        """Per grid cell, the code of the nearest record cell within FILL_KM (-1 beyond); with ``within`` (a
        district code per grid cell, -1 none), only record cells whose ``record_group`` is that district count."""
        out = np.full(len(self.cells), -1, dtype=np.int64)
        rxy = _xy(record_cells)
        if within is None:
            groups = [(np.arange(len(record_cells)), np.arange(len(self.cells)))]
        else:
            groups = [(r, c) for _, r, c in _groups(record_group, within)]
        for ridx, cidx in groups:
            if len(ridx) and len(cidx):
                d, i = cKDTree(rxy[ridx]).query(self.xy[cidx], distance_upper_bound=FILL_KM * 1000)
                ok = np.isfinite(d)
                out[cidx[ok]] = record_code[ridx[i[ok]]]
        return out


def _groups(record_group: np.ndarray, within: np.ndarray):
    """(district, its record positions, its grid positions), each ascending, for every district in ``within``."""
    r_order = np.argsort(record_group, kind="stable")
    r_sorted = record_group[r_order]
    c_order = np.argsort(within, kind="stable")
    c_sorted = within[c_order]
    for d in np.unique(within[within >= 0]):
        r = r_order[np.searchsorted(r_sorted, d, "left"):np.searchsorted(r_sorted, d, "right")]
        c = c_order[np.searchsorted(c_sorted, d, "left"):np.searchsorted(c_sorted, d, "right")]
        yield d, r, c


def _hexagons(cells: np.ndarray) -> np.ndarray:
    """Shapely hexagons (lon/lat) of the cells, vectorised through h3ronpy's WKB."""
    import pyarrow as pa
    from h3ronpy.vector import cells_to_wkb_polygons

    wkb = cells_to_wkb_polygons(pa.array(cells, pa.uint64()), radians=False, link_cells=False)
    return shapely.from_wkb(pa.array(wkb).to_numpy(zero_copy_only=False))


def _dissolve(cells: np.ndarray) -> shapely.Geometry:
    """The cells' hexagons dissolved (a coverage union: they share edges exactly). At most :data:`HEX_SLICE`
    hexagons exist at a time: a larger feature is dissolved in slices (in cell order, so each slice is compact)
    and the slices' outlines, which share the same hexagon edges, are dissolved together."""
    if len(cells) <= HEX_SLICE:
        hexes = _hexagons(cells)
        return shapely.coverage_union_all(hexes) if len(hexes) > 1 else hexes[0]
    pieces = [_dissolve(cells[i:i + HEX_SLICE]) for i in range(0, len(cells), HEX_SLICE)]
    return shapely.coverage_union_all(np.asarray(pieces, dtype=object))


def _outline(geom: shapely.Geometry, smooth: bool) -> shapely.Geometry:
    """A dissolved outline as one MultiPolygon; ``smooth``: a closing of about SMOOTH_M metres and a light
    simplification, so the stepped hexagon edge reads as a line."""
    if smooth:
        lat = float(shapely.get_y(shapely.centroid(geom)))
        k = max(np.cos(np.radians(lat)), 0.2)
        r = SMOOTH_M / 111_320.0
        # closing in a lon-stretched frame so the radius is about SMOOTH_M both ways
        g = shapely.affinity.scale(geom, xfact=k, yfact=1.0, origin=(0, 0))
        g = g.buffer(r, quad_segs=3).buffer(-r, quad_segs=3).simplify(r / 3)
        geom = shapely.affinity.scale(g, xfact=1 / k, yfact=1.0, origin=(0, 0))
    geom = shapely.make_valid(geom)
    parts = []
    for p in (geom.geoms if hasattr(geom, "geoms") else [geom]):
        if p.geom_type == "Polygon" and not p.is_empty:
            parts.append(p)
        elif p.geom_type == "MultiPolygon":
            parts.extend(p.geoms)
    return shapely.MultiPolygon(parts)


def _store_layer(cur, layer: str, dataset: str, public: str, grid: _Grid, grid_key: np.ndarray, values: list[str],
                 own_cells: np.ndarray, own_code: np.ndarray, names: dict, districts: dict, source: str) -> int:
    """Dissolve and store one automatic layer: ``areas`` rows (MultiPolygon outlines) and ``area_cells`` (res-10
    cells: the children of the assigned grid cells, record cells overridden by their majority feature).
    ``grid_key`` and ``own_code`` are positions in ``values`` (the sorted feature ids; -1: none).

    Bounded memory: outlines are dissolved feature by feature (at most :data:`HEX_SLICE` hexagons at a time),
    and cells are made, centred and inserted :data:`GRID_SLICE` grid cells (7x as many children) at a time."""
    import pyarrow as pa

    assigned = grid_key >= 0
    if not assigned.any():
        return 0
    order = np.argsort(grid_key, kind="stable")
    sorted_key = grid_key[order]
    present = np.unique(grid_key[assigned])
    lo, hi = np.searchsorted(sorted_key, present, "left"), np.searchsorted(sorted_key, present, "right")
    rows = []
    for code, a, b in zip(present.tolist(), lo.tolist(), hi.tolist()):
        fid = values[code]
        district = districts.get(fid)
        geom = _outline(_dissolve(grid.cells[order[a:b]]), smooth=public == "lad")
        rows.append((layer, fid, names.get(fid, fid), None if district is None or pd.isna(district) else str(district),
                     shapely.to_wkb(geom)))
    area_rows = pd.DataFrame(rows, columns=["layer", "feature_id", "name", "district", "geometry_wkb"])  # noqa: F841
    cur.execute("INSERT INTO areas SELECT * FROM area_rows")
    ids = pa.array(values, pa.string())

    def insert(cells: np.ndarray, codes: np.ndarray) -> None:
        lat, lon = cell_centres(cells)
        chunk = pa.table({"feature_id": pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), ids),  # noqa: F841
                          "h3_10": pa.array(cells, pa.uint64()), "lat": lat, "lon": lon})
        cur.execute("INSERT INTO area_cells SELECT ?, feature_id::VARCHAR, h3_10, lat, lon FROM chunk", [layer])

    # a record cell belongs to the feature holding most of its records, whatever the fill grid said: those first
    # (ascending), then the grid cells' children in grid order, less the record cells
    for i in range(0, len(own_cells), GRID_SLICE * 7):
        insert(own_cells[i:i + GRID_SLICE * 7], own_code[i:i + GRID_SLICE * 7])
    for i in range(0, len(grid.cells), GRID_SLICE):
        keys = grid_key[i:i + GRID_SLICE]
        sel = keys >= 0
        if not sel.any():
            continue
        pos, child = _children_paired(grid.cells[i:i + GRID_SLICE][sel])
        codes = keys[sel][pos]
        fresh = ~_isin_sorted(child, own_cells)
        insert(child[fresh], codes[fresh])
    cur.execute("INSERT INTO area_layer_meta VALUES (?, ?, ?, 'automatic', ?, NULL, NULL, NULL, ?, TRUE, ?, now())",
                [layer, public, dataset, source, len(rows), APPROXIMATE_NOTE])
    return len(rows)


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_set)`` for an ascending ``sorted_set``, without copying or sorting it."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def _children_paired(cells9: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of the parent in ``cells9``, res-10 child) for every child of the res-9 cells."""
    import pyarrow as pa
    from h3ronpy import change_resolution_paired

    batch = change_resolution_paired(pa.array(cells9, pa.uint64()), AREA_RESOLUTION)
    before = np.asarray(batch.column(0), dtype=np.uint64)
    after = np.asarray(batch.column(1), dtype=np.uint64)
    pos = pd.Index(cells9).get_indexer(before)
    return pos, after
