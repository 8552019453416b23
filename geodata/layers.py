"""Environmental point layers (pubs, bars, stations, ...) for risk-terrain modelling.

:func:`load_layer` reads a CSV/TSV (longitude/latitude *or* easting/northing columns, detected from their
names), a GeoJSON file or a GeoPackage (via pyogrio) and returns a :class:`PointLayer` with WGS84 and
British National Grid (EPSG:27700) coordinates as numpy arrays.  Every input row is either kept, rejected
with its line number and a reason (``layer.rejects``), or counted as lying too far outside the study area
(``layer.outside``).  Features outside the study area but within ``buffer_m`` of it are *kept*: a pub just
across the boundary still makes the cells near the boundary risky (edge effects).
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import shapely

from geodata.cells import bng_to_lonlat, lonlat_to_bng

LON_NAMES = ("lon", "lng", "long", "longitude", "x_wgs84", "lon_wgs84")
LAT_NAMES = ("lat", "latitude", "y_wgs84", "lat_wgs84")
EAST_NAMES = ("easting", "eastings", "x", "bng_x", "grid_x", "east", "x_bng")
NORTH_NAMES = ("northing", "northings", "y", "bng_y", "grid_y", "north", "y_bng")
NAME_NAMES = ("name", "stationname", "station_name", "businessname", "business_name", "title", "label")
MISSING_TOKENS = {"", "\\n", "na", "n/a", "nan", "null", "none", "-"}

# Great Britain in BNG metres (generous): anything outside is a swapped or mistyped coordinate.
BNG_BOUNDS = (-100_000.0, -100_000.0, 800_000.0, 1_300_000.0)
DEFAULT_BUFFER_M = 400.0  # the largest default analysis distance in rtm (50 m steps up to 400 m)


class LayerError(ValueError):
    """A layer file could not be used at all (unreadable, no coordinate columns, no valid rows)."""


@dataclass
class PointLayer:
    """A named, typed set of points.  ``type`` is the singular noun used in narratives ("pub")."""

    name: str
    type: str
    lon: np.ndarray
    lat: np.ndarray
    x: np.ndarray  # BNG easting, metres
    y: np.ndarray  # BNG northing, metres
    source: str = ""
    plural: str = ""
    labels: np.ndarray | None = None  # feature names where the file has them
    rejects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["line", "reason", "raw"]))
    outside: int = 0  # valid rows dropped because they lie further than buffer_m from the study area
    buffer_m: float | None = None  # features were kept up to this far outside the study area (None: not clipped)
    read: int = 0
    coordinate_columns: tuple[str, str] = ("", "")
    crs: str = "EPSG:4326"
    licence: str = ""

    def __post_init__(self) -> None:
        if not self.plural:
            self.plural = plural_of(self.type)

    def __len__(self) -> int:
        return len(self.x)

    def summary(self) -> dict:
        return {
            "name": self.name, "type": self.type, "plural": self.plural, "features": int(len(self)),
            "read": int(self.read), "rejected": int(len(self.rejects)), "outside_study_area": int(self.outside),
            "coordinate_columns": list(self.coordinate_columns), "crs": self.crs, "source": self.source,
            "licence": self.licence, "buffer_m": self.buffer_m,
            "bbox": ([float(self.lon.min()), float(self.lat.min()), float(self.lon.max()), float(self.lat.max())]
                     if len(self) else None),
        }

    def to_dict(self, rejects_limit: int = 100) -> dict:
        out = self.summary()
        out["rejects"] = self.rejects.head(rejects_limit).to_dict(orient="records")
        return out

    @classmethod
    def from_xy(cls, name: str, type: str, x: np.ndarray, y: np.ndarray, **kw) -> "PointLayer":
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        lon, lat = bng_to_lonlat(x, y)
        return cls(name=name, type=type, lon=lon, lat=lat, x=x, y=y, read=len(x), crs="EPSG:27700", **kw)

    @classmethod
    def from_lonlat(cls, name: str, type: str, lon: np.ndarray, lat: np.ndarray, **kw) -> "PointLayer":
        lon = np.asarray(lon, dtype=float)
        lat = np.asarray(lat, dtype=float)
        x, y = lonlat_to_bng(lon, lat)
        return cls(name=name, type=type, lon=lon, lat=lat, x=x, y=y, read=len(x), **kw)


def plural_of(noun: str) -> str:
    noun = noun.strip()
    if not noun:
        return noun
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def _norm(col: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(col).strip().lower())


def _find(columns: Sequence[str], names: Sequence[str]) -> str | None:
    by_norm = {_norm(c): c for c in columns}
    for n in names:
        if n in by_norm:
            return by_norm[n]
    return None


def detect_columns(columns: Sequence[str]) -> tuple[str, str, str]:
    """(kind, first, second): kind 'lonlat' (first=lon column, second=lat) or 'bng' (easting, northing)."""
    lon, lat = _find(columns, LON_NAMES), _find(columns, LAT_NAMES)
    if lon and lat:
        return "lonlat", lon, lat
    east, north = _find(columns, EAST_NAMES), _find(columns, NORTH_NAMES)
    if east and north:
        return "bng", east, north
    raise LayerError(
        "no coordinate columns found: expected longitude/latitude (one of "
        f"{', '.join(LON_NAMES)} and one of {', '.join(LAT_NAMES)}) or easting/northing (one of "
        f"{', '.join(EAST_NAMES)} and one of {', '.join(NORTH_NAMES)}); the file has columns {list(columns)}")


def _read_table(raw: bytes, name: str, columns: Sequence[str] | None) -> pd.DataFrame:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    first = text.split("\n", 1)[0]
    sep = "\t" if (name.lower().endswith((".tsv", ".tsv.gz", ".tab")) or first.count("\t") > first.count(",")) else ","
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                            header=None if columns else "infer", names=list(columns) if columns else None,
                            quotechar='"', skipinitialspace=False, on_bad_lines="error", engine="python")
    except (pd.errors.ParserError, ValueError) as exc:
        raise LayerError(f"{name}: not a readable CSV/TSV file ({exc})") from exc
    # line numbers in the file: header is line 1 (when present), first record line 2
    frame["_line"] = np.arange(1, len(frame) + 1) + (0 if columns else 1)
    return frame


def _parse_coords(frame: pd.DataFrame, c1: str, c2: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numbers, plus a reason per row ('' when fine)."""
    t1 = frame[c1].astype(str).str.strip()
    t2 = frame[c2].astype(str).str.strip()
    v1 = pd.to_numeric(t1, errors="coerce").to_numpy(dtype=float)
    v2 = pd.to_numeric(t2, errors="coerce").to_numpy(dtype=float)
    miss1 = t1.str.lower().isin(MISSING_TOKENS).to_numpy()
    miss2 = t2.str.lower().isin(MISSING_TOKENS).to_numpy()
    reason = np.full(len(frame), "", dtype=object)
    bad1 = ~miss1 & ~np.isfinite(v1)
    bad2 = ~miss2 & ~np.isfinite(v2)
    reason[bad2] = [f"{c2} is not a number ({v!r})" for v in t2[bad2]]
    reason[bad1] = [f"{c1} is not a number ({v!r})" for v in t1[bad1]]
    reason[miss1 | miss2] = [f"missing coordinates ({c1}={a!r}, {c2}={b!r})"
                             for a, b in zip(t1[miss1 | miss2], t2[miss1 | miss2])]
    return v1, v2, reason


def _raw_text(frame: pd.DataFrame, mask: np.ndarray) -> list[str]:
    part = frame.loc[mask, [c for c in frame.columns if not str(c).startswith("_")]]
    if part.empty:
        return []
    return part.astype(str).agg(",".join, axis=1).str.slice(0, 300).tolist()


def _study_filter(x: np.ndarray, y: np.ndarray, area, buffer_m: float) -> np.ndarray:
    """True for points inside the study area or within buffer_m of it (BNG metres)."""
    if area is None or len(x) == 0:
        return np.ones(len(x), dtype=bool)
    return shapely.contains_xy(study_zone(area, buffer_m), x, y)


_ZONES: dict[tuple, shapely.Geometry] = {}


def study_zone(area, buffer_m: float) -> shapely.Geometry:
    """The study area grown by buffer_m, in BNG metres (cached: buffering a county outline takes ~1 s)."""
    poly = area.polygon if getattr(area, "polygon", None) is not None else shapely.box(*area.bbox)
    key = (shapely.to_wkb(poly), float(buffer_m))
    if key not in _ZONES:
        bng = shapely.transform(poly, lambda c: np.column_stack(lonlat_to_bng(c[:, 0], c[:, 1])))
        # simplify first (tolerance well under the buffer) so a detailed outline buffers quickly
        zone = shapely.buffer(shapely.simplify(bng, min(25.0, buffer_m / 4)), buffer_m) if buffer_m > 0 else bng
        shapely.prepare(zone)
        if len(_ZONES) > 8:
            _ZONES.clear()
        _ZONES[key] = zone
    return _ZONES[key]


def _finish(frame: pd.DataFrame, v1: np.ndarray, v2: np.ndarray, reason: np.ndarray, kind: str,
            cols: tuple[str, str], *, name: str, type: str, source: str, area, buffer_m: float,
            strict: bool, label_col: str | None, **kw) -> PointLayer:
    if kind == "lonlat":
        lon, lat = v1, v2
        ok = reason == ""
        rng = ok & ((np.abs(lat) > 90) | (np.abs(lon) > 180))
        reason[rng] = [f"coordinates out of range (lon={a}, lat={b})" for a, b in zip(lon[rng], lat[rng])]
        ok = reason == ""
        x = np.full(len(lon), np.nan)
        y = np.full(len(lon), np.nan)
        if ok.any():
            x[ok], y[ok] = lonlat_to_bng(lon[ok], lat[ok])
        bad = ok & ~(np.isfinite(x) & np.isfinite(y) & (x > BNG_BOUNDS[0]) & (x < BNG_BOUNDS[2])
                     & (y > BNG_BOUNDS[1]) & (y < BNG_BOUNDS[3]))
        reason[bad] = [f"outside Great Britain (lon={a}, lat={b}); are longitude and latitude swapped?"
                       for a, b in zip(lon[bad], lat[bad])]
    else:
        x, y = v1, v2
        ok = reason == ""
        bad = ok & ~((x > BNG_BOUNDS[0]) & (x < BNG_BOUNDS[2]) & (y > BNG_BOUNDS[1]) & (y < BNG_BOUNDS[3]))
        reason[bad] = [f"easting/northing outside the British National Grid (x={a}, y={b})"
                       for a, b in zip(x[bad], y[bad])]
        ok = reason == ""
        lon = np.full(len(x), np.nan)
        lat = np.full(len(x), np.nan)
        if ok.any():
            lon[ok], lat[ok] = bng_to_lonlat(x[ok], y[ok])
    ok = reason == ""
    rej_mask = ~ok
    rejects = pd.DataFrame({"line": frame["_line"].to_numpy()[rej_mask], "reason": reason[rej_mask].astype(str),
                            "raw": _raw_text(frame, rej_mask)})
    if strict and len(rejects):
        head = "; ".join(f"line {r.line}: {r.reason}" for r in rejects.head(5).itertuples())
        raise LayerError(f"{source}: {len(rejects)} bad rows ({head})")
    if not ok.any():
        head = "; ".join(f"line {r.line}: {r.reason}" for r in rejects.head(5).itertuples())
        raise LayerError(f"{source}: no row has usable coordinates ({head})")
    keep = ok.copy()
    keep[ok] = _study_filter(x[ok], y[ok], area, buffer_m)
    labels = frame[label_col].astype(str).to_numpy()[keep] if label_col else None
    return PointLayer(name=name, type=type, lon=lon[keep], lat=lat[keep], x=x[keep], y=y[keep], source=source,
                      labels=labels, rejects=rejects, outside=int(ok.sum() - keep.sum()), read=len(frame),
                      buffer_m=float(buffer_m) if area is not None else None,
                      coordinate_columns=cols, crs="EPSG:4326" if kind == "lonlat" else "EPSG:27700", **kw)


def load_layer(path: str | Path, name: str | None = None, type: str | None = None, *, data: bytes | None = None,
               area=None, buffer_m: float = DEFAULT_BUFFER_M, lon_col: str | None = None,
               lat_col: str | None = None, x_col: str | None = None, y_col: str | None = None,
               columns: Sequence[str] | None = None, where: dict[str, str | Sequence[str]] | None = None,
               strict: bool = False, plural: str = "", licence: str = "", layer: str | None = None) -> PointLayer:
    """Load a point layer.

    path/data: a .csv/.tsv (optionally .gz), .geojson/.json or .gpkg file (``data`` = its bytes, else read).
    name: layer id (default: file stem); type: singular noun for narratives (default: name).
    area: a ``geodata.ingest.StudyArea`` (or anything with ``polygon``/``bbox`` in WGS84); features further
    than ``buffer_m`` metres outside it are dropped (counted in ``outside``), nearer ones are kept.
    lon_col/lat_col or x_col/y_col: force the coordinate columns (otherwise detected from the header).
    columns: names for a header-less file.  where: keep rows whose column equals one of the values, e.g.
    ``{"business_type": "Pub"}``.  strict: raise :class:`LayerError` on any bad row instead of rejecting it.
    """
    path = Path(path)
    name = name or re.sub(r"\.(csv|tsv|geojson|json|gpkg)(\.gz)?$", "", path.name, flags=re.I)
    type = type or name
    lower = path.name.lower()
    common = dict(name=name, type=type, source=path.name, area=area, buffer_m=buffer_m, strict=strict,
                  plural=plural, licence=licence)
    if lower.endswith((".geojson", ".json", ".gpkg", ".shp", ".fgb", ".geojson.gz")):
        return _load_vector(path, data, layer=layer, where=where, **common)
    raw = data if data is not None else path.read_bytes()
    if lower.endswith(".gz"):
        import gzip

        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise LayerError(f"{path.name}: not a valid gzip file ({exc})") from exc
    frame = _read_table(raw, path.name, columns)
    frame = _apply_where(frame, where, path.name)
    cols = [c for c in frame.columns if c != "_line"]
    if lon_col or lat_col:
        if not (lon_col and lat_col):
            raise LayerError("give both lon_col and lat_col")
        kind, c1, c2 = "lonlat", lon_col, lat_col
    elif x_col or y_col:
        if not (x_col and y_col):
            raise LayerError("give both x_col and y_col")
        kind, c1, c2 = "bng", x_col, y_col
    else:
        try:
            kind, c1, c2 = detect_columns(cols)
        except LayerError as exc:
            raise LayerError(f"{path.name}: {exc}") from None
    for c in (c1, c2):
        if c not in frame.columns:
            raise LayerError(f"{path.name}: column {c!r} not found; the file has columns {cols}")
    v1, v2, reason = _parse_coords(frame, c1, c2)
    return _finish(frame, v1, v2, reason, kind, (c1, c2), label_col=_find(cols, NAME_NAMES), **common)


def _apply_where(frame: pd.DataFrame, where, source: str) -> pd.DataFrame:
    if not where:
        return frame
    for col, values in where.items():
        if col not in frame.columns:
            raise LayerError(f"{source}: filter column {col!r} not found; the file has columns "
                             f"{[c for c in frame.columns if c != '_line']}")
        vals = [values] if isinstance(values, str) else list(values)
        frame = frame[frame[col].astype(str).isin(vals)]
    return frame


def _load_vector(path: Path, data: bytes | None, *, layer: str | None, where, **common) -> PointLayer:
    import pyogrio

    try:
        frame = pyogrio.read_dataframe(io.BytesIO(data) if data is not None else path, layer=layer)
    except Exception as exc:  # pyogrio raises several DataSource errors
        raise LayerError(f"{path.name}: not a readable GeoJSON/GeoPackage file ({exc})") from exc
    crs = frame.crs
    frame = frame.reset_index(drop=True)
    frame["_line"] = np.arange(len(frame))  # feature index (0-based) stands in for a line number
    frame = _apply_where(frame, where, path.name)
    geoms = frame.geometry.to_numpy()
    reason = np.full(len(frame), "", dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    reason[missing] = "missing geometry"
    # polygons (e.g. OSM buildings) and lines become a representative point; multipoints their centroid
    pts = np.where(missing, None, geoms)
    kinds = shapely.get_type_id(pts)
    not_point = ~missing & (kinds != 0)
    pts[not_point] = shapely.point_on_surface(pts[not_point])
    xs = np.where(missing, np.nan, shapely.get_x(pts))
    ys = np.where(missing, np.nan, shapely.get_y(pts))
    epsg = crs.to_epsg() if crs is not None else 4326
    if epsg not in (4326, 27700, None):
        from pyproj import Transformer

        tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        xs, ys = tr.transform(xs, ys)
        epsg = 4326
    kind = "bng" if epsg == 27700 else "lonlat"
    plain = pd.DataFrame(frame.drop(columns=frame.geometry.name))
    cols = [c for c in plain.columns if c != "_line"]
    layer_obj = _finish(plain, np.asarray(xs, float), np.asarray(ys, float), reason, kind,
                        ("geometry.x", "geometry.y"), label_col=_find(cols, NAME_NAMES), **common)
    if not_point.any():
        layer_obj.source += f" ({int(not_point.sum())} non-point geometries reduced to a point on their surface)"
    return layer_obj
