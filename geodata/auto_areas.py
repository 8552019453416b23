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

import numpy as np
import pandas as pd
import shapely
from scipy.spatial import cKDTree

from geodata.cells import AREA_RESOLUTION, cell_centres, lonlat_to_bng, parents

AUTO_LAYERS = {"lad": "local authority districts from the records' LSOA names (or a mapped district column)",
               "lsoa": "LSOAs from the records' LSOA codes and names"}
SEPARATOR = "@"
FILL_RESOLUTION = 9       # the fill grid (res 9, ~0.1 km2): outlines dissolve ~7x fewer cells than at res 10
FILL_KM = 2.0             # empty cells further than this from any record cell stay outside every area
SMOOTH_M = 120.0          # closing radius that smooths the dissolved hexagon outline
MIN_SHARE = 0.002         # districts below this share of the records are strays (and below MIN_RECORDS)
MIN_RECORDS = 20
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
    Returns a summary (features per layer); a dataset without LSOA names or a district column gets none."""
    from geodata.store import DATASET_LAYER

    cur.execute(META_SCHEMA)
    for name in AUTO_LAYERS:
        _drop(cur, auto_layer(name, dataset))
    cols = {r[0] for r in cur.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'offences'").fetchall()}
    if not {"lsoa_name", "district"} <= cols:
        return {}
    rec = cur.execute(f"""
        SELECT o.h3_10, coalesce(nullif(trim(o.district), ''), regexp_extract(o.lsoa_name, '{LSOA_NAME}', 1)) AS lad,
               nullif(trim(o.lsoa_code), '') AS lsoa_code, nullif(trim(o.lsoa_name), '') AS lsoa_name,
               (o.district IS NOT NULL AND trim(o.district) <> '') AS from_column, count(*) AS n
        FROM offences o SEMI JOIN (SELECT h3_10 FROM area_cells WHERE layer = ? AND feature_id = ?) s
             ON s.h3_10 = o.h3_10
        WHERE o.dataset = ? AND o.h3_10 IS NOT NULL GROUP BY ALL""", [DATASET_LAYER, dataset, dataset]).df()
    rec["lad"] = rec["lad"].replace("", None)
    rec = rec[rec["lad"].notna()]
    if rec.empty:
        return {}
    from_column = bool(rec.loc[rec["from_column"], "n"].sum() > rec.loc[~rec["from_column"], "n"].sum())
    total = rec["n"].sum()
    per_lad = rec.groupby("lad")["n"].sum()
    keep = per_lad[(per_lad >= MIN_RECORDS) & (per_lad >= MIN_SHARE * total)].index
    rec = rec[rec["lad"].isin(keep)]
    if rec.empty:
        return {}
    study = cur.execute("SELECT h3_10 FROM area_cells WHERE layer = ? AND feature_id = ?",
                        [DATASET_LAYER, dataset]).df()["h3_10"].to_numpy(np.uint64)
    grid = _Grid(study, rec["h3_10"].to_numpy(np.uint64))
    lad_cells = _majority(rec, "lad")
    lad_key = grid.nearest(lad_cells, "lad")
    source = "the records' district column" if from_column else "the records' LSOA names"
    lad_names = {k: k for k in lad_cells["lad"].astype(str)}
    summary = {"lad": _store_layer(cur, auto_layer("lad", dataset), dataset, "lad", grid, lad_key, lad_cells, "lad",
                                   lad_names, lad_names, source)}
    with_lsoa = rec[rec["lsoa_code"].notna()]
    if len(with_lsoa):
        lsoa_cells = _majority(with_lsoa, "lsoa_code")
        first = with_lsoa.sort_values("n", ascending=False, kind="mergesort").drop_duplicates("lsoa_code")
        names = dict(zip(first["lsoa_code"].astype(str), first["lsoa_name"].fillna(first["lsoa_code"]).astype(str)))
        districts = dict(zip(first["lsoa_code"].astype(str), first["lad"].astype(str)))
        lsoa_cells["district"] = lsoa_cells["lsoa_code"].astype(str).map(districts)
        lsoa_key = grid.nearest(lsoa_cells, "lsoa_code", within=lad_key)  # LSOAs filled inside their district
        summary["lsoa"] = _store_layer(cur, auto_layer("lsoa", dataset), dataset, "lsoa", grid, lsoa_key, lsoa_cells,
                                       "lsoa_code", names, districts, "the records' LSOA codes and names")
    return summary


def _drop(cur, layer: str) -> None:
    cur.execute("DELETE FROM areas WHERE layer = ?", [layer])
    cur.execute("DELETE FROM area_cells WHERE layer = ?", [layer])
    cur.execute("DELETE FROM area_layer_meta WHERE layer = ?", [layer])


def _majority(rec: pd.DataFrame, key: str) -> pd.DataFrame:
    """One row per record cell: the ``key`` holding most of its records (ties: smallest key), and its count."""
    agg = rec.groupby(["h3_10", key], as_index=False)["n"].sum()
    agg = agg.sort_values(["h3_10", "n", key], ascending=[True, False, True], kind="mergesort")
    return agg.drop_duplicates("h3_10").reset_index(drop=True)


def _xy(cells: np.ndarray) -> np.ndarray:
    lat, lon = cell_centres(cells)
    x, y = lonlat_to_bng(lon, lat)
    return np.column_stack([x, y])


class _Grid:
    """The fill grid shared by both layers: res-9 cells of the study area (and of every record cell), their
    hexagons, and their res-10 children with centres, each computed once."""

    def __init__(self, study: np.ndarray, record_cells: np.ndarray):
        cand = np.unique(parents(study, FILL_RESOLUTION)) if len(study) else np.empty(0, np.uint64)
        cells = np.union1d(cand, np.unique(parents(record_cells, FILL_RESOLUTION)))
        xy = _xy(cells)
        # only grid cells within FILL_KM of a record cell can be assigned (``nearest`` gives None beyond): the
        # others are dropped before their hexagons and children are made (a national hull holds millions)
        if len(cells) and len(record_cells):
            d, _ = cKDTree(_xy(np.unique(np.asarray(record_cells, dtype=np.uint64)))).query(
                xy, distance_upper_bound=FILL_KM * 1000)
            near = np.isfinite(d)
            cells, xy = cells[near], xy[near]
        self.cells = cells
        self.xy = xy
        self._hexes = None
        self._children = None

    def nearest(self, record: pd.DataFrame, key: str, within: np.ndarray | None = None) -> np.ndarray:
        """Per grid cell, the ``key`` of the nearest record cell within FILL_KM (None beyond); with ``within``
        (a district per grid cell), only record cells of that district count."""
        out = np.full(len(self.cells), None, dtype=object)
        rxy = _xy(record["h3_10"].to_numpy(np.uint64))
        keys = record[key].astype(str).to_numpy()
        if within is None:
            groups = [(np.ones(len(record), bool), np.ones(len(self.cells), bool))]
        else:
            rd = record["district"].astype(str).to_numpy()
            groups = [(rd == d, within == d) for d in pd.unique(within[pd.notna(within)])]
        for rmask, cmask in groups:
            if rmask.any() and cmask.any():
                d, i = cKDTree(rxy[rmask]).query(self.xy[cmask], distance_upper_bound=FILL_KM * 1000)
                ok = np.isfinite(d)
                out[np.flatnonzero(cmask)[ok]] = keys[rmask][i[ok]]
        return out

    @property
    def hexes(self) -> np.ndarray:
        if self._hexes is None:
            self._hexes = _hexagons(self.cells)
        return self._hexes

    @property
    def children(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(parent position, res-10 child, lat, lon)."""
        if self._children is None:
            pos, child = _children_paired(self.cells)
            lat, lon = cell_centres(child)
            self._children = (pos, child, lat, lon)
        return self._children


def _hexagons(cells: np.ndarray) -> np.ndarray:
    """Shapely hexagons (lon/lat) of the cells, vectorised through h3ronpy's WKB."""
    import pyarrow as pa
    from h3ronpy.vector import cells_to_wkb_polygons

    wkb = cells_to_wkb_polygons(pa.array(cells, pa.uint64()), radians=False, link_cells=False)
    return shapely.from_wkb(np.asarray(pa.array(wkb).to_pylist(), dtype=object))


def _outline(hexes: np.ndarray, smooth: bool) -> shapely.Geometry:
    """Hexagons dissolved (a coverage union: they share edges exactly) into one MultiPolygon; ``smooth``: a
    closing of about SMOOTH_M metres and a light simplification, so the stepped hexagon edge reads as a line."""
    geom = shapely.coverage_union_all(hexes) if len(hexes) > 1 else hexes[0]
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


def _store_layer(cur, layer: str, dataset: str, public: str, grid: _Grid, grid_key: np.ndarray,
                 majority: pd.DataFrame, key: str, names: dict, districts: dict, source: str) -> int:
    """Dissolve and store one automatic layer: ``areas`` rows (MultiPolygon outlines) and ``area_cells`` (res-10
    cells: the children of the assigned grid cells, record cells overridden by their majority feature)."""
    assigned = pd.notna(grid_key)
    if not assigned.any():
        return 0
    codes = np.full(len(grid_key), -1, dtype=np.int64)
    codes[assigned], features = pd.factorize(pd.Series(grid_key[assigned], dtype=object).astype(str), sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(-1, len(features) + 1))
    hexes = grid.hexes
    rows = []
    for j, fid in enumerate(features):
        idx = order[bounds[j + 1]:bounds[j + 2]]
        district = districts.get(fid)
        rows.append((layer, fid, names.get(fid, fid), None if district is None or pd.isna(district) else str(district),
                     shapely.to_wkb(_outline(hexes[idx], smooth=public == "lad"))))
    pos, child, lat, lon = grid.children
    keep = codes[pos] >= 0
    feature_of = np.asarray(features, dtype=object)
    fill = pd.DataFrame({"feature_id": feature_of[codes[pos[keep]]], "h3_10": child[keep], "lat": lat[keep],
                         "lon": lon[keep]})
    # a record cell belongs to the feature holding most of its records, whatever the fill grid said
    own_cells = majority["h3_10"].to_numpy(np.uint64)
    olat, olon = cell_centres(own_cells)
    own = pd.DataFrame({"feature_id": majority[key].astype(str).to_numpy(), "h3_10": own_cells, "lat": olat,
                        "lon": olon})
    cells = pd.concat([own, fill[~np.isin(fill["h3_10"].to_numpy(np.uint64), own_cells)]], ignore_index=True)
    cells = cells.drop_duplicates("h3_10")
    cell_table = cells.assign(layer=layer)[["layer", "feature_id", "h3_10", "lat", "lon"]]  # noqa: F841
    area_rows = pd.DataFrame(rows, columns=["layer", "feature_id", "name", "district", "geometry_wkb"])  # noqa: F841
    cur.execute("INSERT INTO areas SELECT * FROM area_rows")
    cur.execute("INSERT INTO area_cells SELECT layer, feature_id, h3_10, lat, lon FROM cell_table")
    cur.execute("INSERT INTO area_layer_meta VALUES (?, ?, ?, 'automatic', ?, NULL, NULL, NULL, ?, TRUE, ?, now())",
                [layer, public, dataset, source, len(rows), APPROXIMATE_NOTE])
    return len(rows)


def _children_paired(cells9: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of the parent in ``cells9``, res-10 child) for every child of the res-9 cells."""
    import pyarrow as pa
    from h3ronpy import change_resolution_paired

    batch = change_resolution_paired(pa.array(cells9, pa.uint64()), AREA_RESOLUTION)
    before = np.asarray(batch.column(0), dtype=np.uint64)
    after = np.asarray(batch.column(1), dtype=np.uint64)
    pos = pd.Index(cells9).get_indexer(before)
    return pos, after
