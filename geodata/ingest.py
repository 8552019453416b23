"""Ingest: read offence files, map their columns, validate every row, and return stored rows plus rejects.

Readers accept data.police.uk street CSVs exactly as downloaded (one month, many, or a zip of a download),
force extract CSVs (columns mapped by :data:`EXTRACT_ALIASES`, documented in docs/ingest.md), GeoJSON points
and Parquet.  Every input row either lands in :class:`Parsed.rows` or in :class:`Parsed.rejects` with its
file, line number and reason; nothing is silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from geodata.cells import RESOLUTIONS, bng_to_lonlat, cells_at_all_resolutions, lonlat_to_bng
from geodata.readers import Budget, IngestError, IngestLimitError, IngestLimits, RawChunk, read_source
from geodata.taxonomy import (
    ASB,
    category_of_groups,
    groups_from_ho,
    groups_from_titles,
    normalise_category,
    normalise_ho_code,
)

# Great Britain and its islands, the default study area when none is given.
GB_BBOX = (-8.75, 49.8, 1.8, 60.95)

POLICEUK_COLUMNS = ["Crime ID", "Month", "Reported by", "Falls within", "Longitude", "Latitude", "Location",
                    "LSOA code", "LSOA name", "Crime type", "Last outcome category", "Context"]

# Force extract: canonical field -> accepted column names (compared case-insensitively, spaces = underscores).
EXTRACT_ALIASES: dict[str, tuple[str, ...]] = {
    "record_id": ("record_id", "crime_id", "crime_ref", "crime_reference", "urn", "occurrence_id", "id"),
    "occurred": ("occurred", "occurred_at", "occurred_date", "date", "datetime", "date_time", "committed",
                 "committed_on", "offence_date", "occurred_from", "month"),
    "longitude": ("longitude", "lon", "lng", "long", "x_wgs84"),
    "latitude": ("latitude", "lat", "y_wgs84"),
    "easting": ("easting", "x", "bng_x", "grid_x"),
    "northing": ("northing", "y", "bng_y", "grid_y"),
    "ho_code": ("ho_code", "home_office_code", "ho_offence_code", "offence_code", "hocr_code",
                "home_office_classification"),
    "offence_title": ("offence_title", "offence", "offence_description", "offence_name", "title"),
    "category": ("category", "crime_type", "police_uk_category"),
    "location": ("location", "street", "street_name", "location_text", "address"),
    "lsoa_code": ("lsoa_code", "lsoa", "lsoa11cd", "lsoa21cd"),
    "lsoa_name": ("lsoa_name", "lsoa11nm", "lsoa21nm"),
    "district": ("district", "beat", "sector", "neighbourhood", "policing_area", "lad_name", "local_authority"),
    "domestic": ("domestic", "domestic_abuse", "da_flag", "domestic_flag"),
    "public_place": ("public_place", "public", "public_place_flag"),
    "knife": ("knife", "knife_enabled", "knife_crime", "weapon", "knife_flag"),
    "nte": ("nte", "night_time_economy", "nte_flag"),
    "victim_age": ("victim_age", "age_of_victim", "victim_age_years"),
}

STORED_COLUMNS = ["record_id", "occurred_from", "occurred_to", "precision", "dow", "hour", "lon", "lat", "x", "y",
                  *[f"h3_{r}" for r in RESOLUTIONS], "category", "offence_group", "ho_code", "offence_title",
                  "location", "lsoa_code", "domestic", "public_place", "knife", "nte", "victim_age", "lsoa_name",
                  "district"]


__all__ = ["IngestError", "IngestLimitError", "IngestLimits", "Parsed", "StudyArea", "parse_files", "parse_stream",
           "read_source"]

ROW_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("occurred_from", pa.timestamp("us")), ("occurred_to", pa.timestamp("us")),
    ("precision", pa.string()), ("dow", pa.int16()), ("hour", pa.int16()),
    ("lon", pa.float64()), ("lat", pa.float64()), ("x", pa.float64()), ("y", pa.float64()),
    *[(f"h3_{r}", pa.uint64()) for r in RESOLUTIONS],
    ("category", pa.string()), ("offence_group", pa.string()), ("ho_code", pa.string()),
    ("offence_title", pa.string()), ("location", pa.string()), ("lsoa_code", pa.string()),
    ("domestic", pa.bool_()), ("public_place", pa.bool_()), ("knife", pa.bool_()), ("nte", pa.bool_()),
    ("victim_age", pa.int16()), ("lsoa_name", pa.string()), ("district", pa.string()),  # areas from the records
    ("_line", pa.int64()), ("_file", pa.string()),
])


@dataclass
class Parsed:
    """Validated rows (an Arrow table in :data:`ROW_SCHEMA`) and rejected rows (file, line, reason, raw)."""

    table: pa.Table
    rejects: pd.DataFrame
    read: int
    kind: str
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.table, pd.DataFrame):
            self.table = _to_row_table(self.table)

    @property
    def rows(self) -> pd.DataFrame:
        """The stored rows as a pandas frame (for analysis and tests; ingest itself stays in Arrow)."""
        return self.table.to_pandas()


def _to_row_table(frame: pd.DataFrame) -> pa.Table:
    frame = frame.copy()
    for name in ROW_SCHEMA.names:
        if name not in frame.columns:
            frame[name] = None
    arrays = []
    for f in ROW_SCHEMA:
        col = frame[f.name]
        if pa.types.is_string(f.type):
            col = col.astype("string")
        elif pa.types.is_timestamp(f.type):
            col = pd.to_datetime(col)
        arrays.append(pa.array(col, type=f.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=ROW_SCHEMA)


@dataclass(frozen=True)
class StudyArea:
    """Where offences may lie: a bounding box and optionally a polygon (WGS84)."""

    bbox: tuple[float, float, float, float] = GB_BBOX
    polygon: shapely.Geometry | None = None
    name: str = "Great Britain (default bounding box)"

    def contains(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        minx, miny, maxx, maxy = self.bbox
        inside = (lon >= minx) & (lon <= maxx) & (lat >= miny) & (lat <= maxy)
        if self.polygon is not None and inside.any():
            idx = np.flatnonzero(inside)
            inside[idx] = shapely.contains_xy(self.polygon, lon[idx], lat[idx])
        return inside

    @classmethod
    def from_geojson(cls, path: Path, name: str | None = None) -> "StudyArea":
        import geopandas as gpd

        frame = gpd.read_file(path)
        if frame.crs is not None and frame.crs.to_epsg() != 4326:
            frame = frame.to_crs(4326)
        geom = shapely.make_valid(frame.geometry.union_all())
        shapely.prepare(geom)
        return cls(bbox=tuple(geom.bounds), polygon=geom, name=name or Path(path).stem)


# ---------------------------------------------------------------- normalisers

def _reject(rejects: list[pd.DataFrame], frame: pd.DataFrame, mask: np.ndarray, reason: str | pd.Series,
            file: str) -> np.ndarray:
    """Move rows under ``mask`` (not yet rejected) to the reject list; return the still-alive mask."""
    if mask.any():
        part = frame.loc[mask]
        raw = part.drop(columns=[c for c in part.columns if c.startswith("_")]).astype("string").fillna("")
        raw_text = raw.agg(",".join, axis=1) if len(raw.columns) else pd.Series("", index=part.index)
        reasons = reason[mask] if isinstance(reason, pd.Series) else reason
        rejects.append(pd.DataFrame({"file": file, "line": part["_line"].to_numpy(), "reason": reasons,
                                     "raw": raw_text.str.slice(0, 500).to_numpy()}))
    return ~mask


def _coordinates(lon_text: pd.Series, lat_text: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = (lon_text.isna() | (lon_text.astype("string").str.strip() == "")
               | lat_text.isna() | (lat_text.astype("string").str.strip() == "")).to_numpy(dtype=bool, na_value=True)
    lon = pd.to_numeric(lon_text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    lat = pd.to_numeric(lat_text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return lon, lat, missing, ~missing & ~(np.isfinite(lon) & np.isfinite(lat))


def _content_ids(frame: pd.DataFrame, cols: list[str], prefix: str, ranks: Ranks) -> pd.Series:
    """Stable ids for rows without a record id: a hash of their content plus their rank among identical rows."""
    h = pd.util.hash_pandas_object(frame[cols].astype("string").fillna(""), index=False).to_numpy()
    rank = ranks.rank(h)
    hexed = pd.Series(h).map("{:016x}".format)
    return (prefix + hexed + ":" + pd.Series(rank).astype(str)).set_axis(frame.index)


def _finish(out: pd.DataFrame, lon: np.ndarray, lat: np.ndarray, x: np.ndarray | None = None,
            y: np.ndarray | None = None) -> pa.Table:
    """Add projected coordinates and H3 cells at every resolution; return a table in ROW_SCHEMA."""
    table = _to_row_table(out)
    for name, values in geo_columns(lon, lat, x, y).items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def _month_window(limits: IngestLimits) -> tuple[np.datetime64, np.datetime64]:
    """First day of the oldest accepted month and of the month of ingest (microseconds, as stored)."""
    try:
        oldest = np.datetime64(pd.Timestamp(limits.oldest_month + "-01").to_datetime64(), "us")
    except ValueError as exc:
        raise ValueError(f"oldest month setting is not YYYY-MM: {limits.oldest_month!r}") from exc
    newest = np.datetime64(limits.newest_time().to_datetime64(), "M").astype("datetime64[us]")
    return oldest, newest


def _month_bounds(month_text: pd.Series) -> tuple[pd.Series, pd.Series]:
    start = pd.to_datetime(month_text.astype("string").str.strip() + "-01", format="%Y-%m-%d", errors="coerce")
    return start, start + pd.DateOffset(months=1)


def _arrow_float(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Text -> float64 (NaN where not a number) and a 'present but not a number' mask."""
    try:
        values = pc.cast(col, pa.float64())
        out = values.to_numpy(zero_copy_only=False)
        return np.where(pc.is_null(values).to_numpy(zero_copy_only=False), np.nan, out).astype(float), np.zeros(len(col), bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        text = pd.Series(col.to_pandas(), dtype="string").str.strip()
        num = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        present = (text.notna() & (text != "")).to_numpy(dtype=bool, na_value=False)
        return num, present & np.isnan(num)


def _blank(col: pa.ChunkedArray) -> np.ndarray:
    """Null or empty (the CSV reader already turns empty fields into nulls)."""
    return pc.fill_null(pc.equal(pc.utf8_length(col), 0), True).to_numpy(zero_copy_only=False)


def _constant(value: str, n: int) -> pa.Array:
    """A string column holding ``value`` n times, built straight from its buffers."""
    data = value.encode("utf-8")
    if not data or n * len(data) >= 2**31 - 1:
        return pc.cast(pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array([value])), pa.string())
    offsets = np.arange(0, (n + 1) * len(data), len(data), dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)])


def _reject_rows(rejects: list[pd.DataFrame], table: pa.Table, mask: np.ndarray, reason: str, file: str) -> np.ndarray:
    """Record rows under ``mask`` as rejected (Arrow input); return the still-alive mask."""
    if mask.any():
        part = table.filter(pa.array(mask))
        lines = part.column("_line").to_numpy()
        cols = [c for c in part.column_names if not c.startswith("_")]
        raw = pc.binary_join_element_wise(*[pc.fill_null(part.column(c), "") for c in cols], ",")
        rejects.append(pd.DataFrame({"file": file, "line": lines, "reason": reason,
                                     "raw": pc.utf8_slice_codeunits(raw, 0, 500).to_pylist()}))
    return ~mask


def _hash_ids(table: pa.Table, cols: list[str], ranks: "Ranks") -> np.ndarray:
    """Stable ids for rows without a record id: a hash of their text plus their rank among identical rows
    of the file (``ranks`` carries the counts across the file's chunks)."""
    joined = pc.binary_join_element_wise(*[pc.fill_null(table.column(c), "") for c in cols], "\x1f")
    h = pd.util.hash_array(np.asarray(joined.to_pylist(), dtype=object))
    rank = ranks.rank(h)
    return np.array([f"hash:{a:016x}:{b}" for a, b in zip(h.tolist(), rank.tolist())], dtype=object)


class Ranks:
    """How many rows of each content hash one file has shown so far: sorted distinct hashes and counts."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.counts = np.empty(0, dtype=np.int64)

    def rank(self, h: np.ndarray) -> np.ndarray:
        """Rank of each row among identical rows (0 for the first one in the file), then count them in."""
        h = np.asarray(h, dtype=np.uint64)
        if len(h) == 0:
            return np.empty(0, dtype=np.int64)
        order = np.argsort(h, kind="stable")
        sorted_h = h[order]
        first = np.r_[True, sorted_h[1:] != sorted_h[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(h)), 0))
        rank = np.empty(len(h), dtype=np.int64)
        rank[order] = np.arange(len(h)) - group_start
        if len(self.keys):
            at = np.minimum(np.searchsorted(self.keys, h), len(self.keys) - 1)
            rank += np.where(self.keys[at] == h, self.counts[at], 0)
        starts = np.flatnonzero(first)
        keys = np.concatenate([self.keys, sorted_h[starts]])
        counts = np.concatenate([self.counts, np.diff(np.r_[starts, len(h)])])
        o = np.argsort(keys, kind="stable")
        keys, counts = keys[o], counts[o]
        head = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        self.keys, self.counts = keys[head], np.add.reduceat(counts, head)
        return rank


def _dictionary_map(col: pa.ChunkedArray, fn) -> tuple[np.ndarray, pa.Array]:
    """Apply ``fn`` (pandas Series -> Series) to the distinct values only; return (indices, mapped values)."""
    enc = pc.dictionary_encode(col).combine_chunks()
    mapped = fn(pd.Series(enc.dictionary.to_pandas(), dtype="string"))
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)  # integer even when nulls are present
    return idx, mapped


def normalise_policeuk(table: pa.Table, file: str, area: StudyArea, limits: IngestLimits = IngestLimits(),
                       ranks: Ranks | None = None) -> tuple[pa.Table, list[pd.DataFrame]]:
    """data.police.uk street CSV (one chunk of it), vectorised in Arrow (the 1 M-row path)."""
    ranks = ranks if ranks is not None else Ranks()
    rejects: list[pd.DataFrame] = []
    n = table.num_rows
    alive = np.ones(n, dtype=bool)
    lon, bad_lon = _arrow_float(table.column("Longitude"))
    lat, bad_lat = _arrow_float(table.column("Latitude"))
    missing = _blank(table.column("Longitude")) | _blank(table.column("Latitude"))
    invalid = ~missing & (bad_lon | bad_lat | (np.abs(lon) > 180) | (np.abs(lat) > 90) | np.isnan(lon) | np.isnan(lat))
    alive &= _reject_rows(rejects, table, alive & missing, "missing coordinates", file)
    alive &= _reject_rows(rejects, table, alive & invalid, "invalid coordinates", file)

    # months are few: bounds per distinct value, gathered to the rows (index -1, a null Month, is NaT)
    m_idx, m_start = _dictionary_map(table.column("Month"), lambda v: _month_bounds(v)[0])
    starts = np.append(m_start.to_numpy(dtype="datetime64[us]"), np.datetime64("NaT", "us"))
    ends = (starts.astype("datetime64[M]") + np.timedelta64(1, "M")).astype("datetime64[us]")
    alive &= _reject_rows(rejects, table, alive & np.isnat(starts)[m_idx], "bad date: Month is not YYYY-MM", file)
    oldest, newest = _month_window(limits)
    with np.errstate(invalid="ignore"):
        early, late = starts < oldest, starts > newest
    alive &= _reject_rows(rejects, table, alive & early[m_idx],
                          f"bad date: Month is before {limits.oldest_month} (the oldest month harmspot accepts)", file)
    alive &= _reject_rows(rejects, table, alive & late[m_idx],
                          f"bad date: Month is after the month of ingest ({str(newest)[:7]})", file)

    c_enc = pc.dictionary_encode(table.column("Crime type")).combine_chunks()
    c_dict = normalise_category(pd.Series(c_enc.dictionary.to_pandas(), dtype="string"))
    c_idx = pc.fill_null(c_enc.indices, -1).to_numpy(zero_copy_only=False)
    known = np.append(c_dict.notna().to_numpy(), False)  # index -1 (null) -> unknown
    alive &= _reject_rows(rejects, table, alive & ~known[c_idx],
                          "unknown offence: Crime type not a data.police.uk category", file)
    inside = np.zeros(n, dtype=bool)
    inside[alive] = area.contains(lon[alive], lat[alive])
    alive &= _reject_rows(rejects, table, alive & ~inside, f"outside the study area ({area.name})", file)

    every = bool(alive.all())
    keep_mask = None if every else pa.array(alive)
    # one chunk per column: DuckDB inserts a single-chunk table markedly faster than the reader's 16 MB chunks
    kept = lambda name: (table.column(name) if every  # noqa: E731
                         else pc.filter(table.column(name), keep_mask)).combine_chunks()
    m = int(alive.sum())
    ids = table.column("Crime ID")
    no_id_all = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True).to_numpy(zero_copy_only=False)
    ids = kept("Crime ID")
    if (no_id_all & alive).any():
        hashed = _hash_ids(table.filter(pa.array(no_id_all & alive)), POLICEUK_COLUMNS[1:], ranks)
        ids = pc.replace_with_mask(ids, pa.array(no_id_all[alive]), pa.array(hashed, pa.string()))
    kept_m = m_idx[alive]
    start, end = starts[kept_m], ends[kept_m]
    kept_idx = pa.array(c_idx[alive].astype(np.int32))
    cat_dict = pa.array(c_dict.astype(object).where(c_dict.notna(), None).tolist(), pa.string())
    category = pc.cast(pa.DictionaryArray.from_arrays(kept_idx, cat_dict), pa.string())
    group_dict = pa.array(["asb" if c == ASB else None for c in cat_dict.to_pylist()], pa.string())
    group = pc.cast(pa.DictionaryArray.from_arrays(kept_idx, group_dict), pa.string())
    nulls = lambda t: pa.nulls(m, t)  # noqa: E731
    columns = {
        "record_id": ids, "occurred_from": pa.array(start), "occurred_to": pa.array(end),
        "precision": _constant("month", m), "dow": nulls(pa.int16()), "hour": nulls(pa.int16()),
        "category": category, "offence_group": group,
        "ho_code": nulls(pa.string()), "offence_title": nulls(pa.string()),
        "location": kept("Location"), "lsoa_code": kept("LSOA code"),
        "domestic": nulls(pa.bool_()), "public_place": nulls(pa.bool_()), "knife": nulls(pa.bool_()),
        "nte": nulls(pa.bool_()), "victim_age": nulls(pa.int16()),
        "lsoa_name": kept("LSOA name"), "district": nulls(pa.string()),
        "_line": kept("_line"), "_file": _constant(file, m),
    }
    columns.update(geo_columns(lon[alive], lat[alive]))
    return pa.Table.from_pydict({f.name: columns[f.name] for f in ROW_SCHEMA}, schema=ROW_SCHEMA), rejects


def geo_columns(lon: np.ndarray, lat: np.ndarray, x: np.ndarray | None = None,
                 y: np.ndarray | None = None) -> dict[str, pa.Array]:
    """Projected coordinates (BNG via pyproj) and H3 cells at every resolution (h3ronpy).

    police.uk points are snapped to a few tens of thousands of anonymised map points, so both are computed
    once per distinct (lon, lat) and gathered back to the rows (same values, a fraction of the work)."""
    out = {"lon": pa.array(lon, pa.float64()), "lat": pa.array(lat, pa.float64())}
    points = _distinct_points(lon, lat)
    if points is None:
        if x is None or y is None:
            x, y = lonlat_to_bng(lon, lat)
        cells = cells_at_all_resolutions(lat, lon)
    else:
        inverse, ulon, ulat = points
        if x is None or y is None:
            ux, uy = lonlat_to_bng(ulon, ulat)
            x, y = ux[inverse], uy[inverse]
        cells = {res: c[inverse] for res, c in cells_at_all_resolutions(ulat, ulon).items()}
    out["x"], out["y"] = pa.array(x, pa.float64()), pa.array(y, pa.float64())
    for res, c in cells.items():
        out[f"h3_{res}"] = pa.array(c, pa.uint64())
    return out


def _distinct_points(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(row -> point index, distinct lon, distinct lat), or None when that would not save work."""
    n = len(lon)
    if n < 10_000 or not (np.isfinite(lon).all() and np.isfinite(lat).all()
                          and np.abs(lon).max() <= 180 and np.abs(lat).max() <= 90):
        return None
    # one int64 key per point at micro-degree resolution (police.uk gives 6 decimals); verified exact below
    key = (np.rint(lon * 1e6).astype(np.int64) + 200_000_000) * (1 << 28) + (np.rint(lat * 1e6).astype(np.int64)
                                                                            + 100_000_000)
    inverse, keys = pd.factorize(key)
    if len(keys) > n // 4:
        return None
    rep = np.empty(len(keys), dtype=np.int64)
    rep[inverse] = np.arange(n)  # any row of each point
    ulon, ulat = lon[rep], lat[rep]
    if not (np.array_equal(ulon[inverse], lon) and np.array_equal(ulat[inverse], lat)):
        return None  # finer than a micro-degree: two different points share a key
    return inverse, ulon, ulat


def _resolve_columns(frame: pd.DataFrame, mapping: dict[str, str] | None) -> dict[str, str]:
    norm = {c.strip().lower().replace(" ", "_").replace("-", "_"): c for c in frame.columns if not c.startswith("_")}
    found: dict[str, str] = {}
    for field_name, aliases in EXTRACT_ALIASES.items():
        if mapping and field_name in mapping:
            if mapping[field_name] not in frame.columns:
                raise IngestError(f"column mapping names '{mapping[field_name]}' for {field_name}, not in the file")
            found[field_name] = mapping[field_name]
            continue
        for alias in aliases:
            if alias in norm:
                found[field_name] = norm[alias]
                break
    return found


_TRUE = {"1", "y", "yes", "true", "t"}
_FALSE = {"0", "n", "no", "false", "f"}


def _flag(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    text = values.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    out[text.isin(_TRUE).fillna(False)] = True
    out[text.isin(_FALSE).fillna(False)] = False
    bad = (text.notna() & (text != "") & ~text.isin(_TRUE | _FALSE)).to_numpy(dtype=bool, na_value=False)
    return out, bad


def _parse_occurred(text: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(from, to, precision) keeping the precision the text gives: YYYY-MM, a date, or a date and time."""
    s = text.astype("string").str.strip()
    n = len(s)
    start = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us]")
    end = start.copy()
    prec = pd.Series(pd.NA, index=s.index, dtype="string")
    is_month = s.str.fullmatch(r"\d{4}-\d{2}").fillna(False)
    is_day = s.str.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4}").fillna(False)
    is_time = s.str.fullmatch(r"(\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4})[ T]\d{1,2}:\d{2}(:\d{2})?(\.\d+)?Z?").fillna(False)
    if is_month.any():
        m0, m1 = _month_bounds(s[is_month])
        start[is_month], end[is_month], prec[is_month] = m0, m1, "month"
    for mask, precision, step in ((is_day, "day", pd.Timedelta(days=1)), (is_time, "minute", pd.Timedelta(minutes=1))):
        if mask.any():
            part = s[mask].str.replace("T", " ").str.rstrip("Z")
            iso = part.str.match(r"\d{4}-")
            parsed = pd.Series(pd.NaT, index=part.index, dtype="datetime64[us]")
            if iso.any():
                parsed[iso] = pd.to_datetime(part[iso], errors="coerce", format="ISO8601")
            if (~iso).any():  # UK day-first dates
                parsed[~iso] = pd.to_datetime(part[~iso], errors="coerce", dayfirst=True, format="mixed")
            if precision == "minute":
                parsed = parsed.dt.floor("min")
            start[mask], end[mask], prec[mask] = parsed, parsed + step, precision
    prec[start.isna()] = pd.NA
    del n
    return start, end, prec


def normalise_extract(frame: pd.DataFrame, file: str, area: StudyArea,
                      mapping: dict[str, str] | None = None, titles: dict[str, str] | None = None,
                      limits: IngestLimits = IngestLimits(), ranks: Ranks | None = None
                      ) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    ranks = ranks if ranks is not None else Ranks()
    cols = _resolve_columns(frame, mapping)
    has_lonlat = "longitude" in cols and "latitude" in cols
    has_bng = "easting" in cols and "northing" in cols
    problems = []
    if "occurred" not in cols:
        problems.append("an occurred date column (occurred / date / datetime / month)")
    if not (has_lonlat or has_bng):
        problems.append("coordinates (longitude+latitude, or easting+northing)")
    if not ({"ho_code", "offence_title", "category"} & cols.keys()):
        problems.append("an offence column (ho_code, offence_title or category)")
    if problems:
        raise IngestError(f"{file}: cannot map columns; missing " + "; ".join(problems)
                          + f". Columns found: {[c for c in frame.columns if not c.startswith('_')]}")
    rejects: list[pd.DataFrame] = []
    alive = np.ones(len(frame), dtype=bool)
    if "_geometry_error" in frame.columns:
        geo_err = frame["_geometry_error"].notna().to_numpy()
        alive &= _reject(rejects, frame, geo_err, "invalid coordinates: " + frame["_geometry_error"].fillna(""), file)
    col = lambda f: frame[cols[f]] if f in cols else pd.Series(pd.NA, index=frame.index, dtype="string")  # noqa: E731
    if has_lonlat:
        lon, lat, missing, invalid = _coordinates(col("longitude"), col("latitude"))
        invalid |= ~missing & ~invalid & ((np.abs(lon) > 180) | (np.abs(lat) > 90))
        x = y = None
    else:
        x, y, missing, invalid = _coordinates(col("easting"), col("northing"))
        invalid |= ~missing & ~invalid & ((x < 0) | (x > 700_000) | (y < 0) | (y > 1_300_000))
        lon, lat = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
        ok = ~missing & ~invalid
        lon[ok], lat[ok] = bng_to_lonlat(x[ok], y[ok])
    alive &= _reject(rejects, frame, alive & missing, "missing coordinates", file)
    alive &= _reject(rejects, frame, alive & invalid, "invalid coordinates", file)
    start, end, prec = _parse_occurred(col("occurred"))
    alive &= _reject(rejects, frame, alive & start.isna().to_numpy(), "bad date: occurred is not YYYY-MM, a date, or a date and time", file)
    if start.notna().any():
        oldest, _ = _month_window(limits)
        early = (start < pd.Timestamp(oldest)).to_numpy(dtype=bool, na_value=False)
        alive &= _reject(rejects, frame, alive & early,
                         f"bad date: occurred is before {limits.oldest_month} (the oldest month harmspot accepts)", file)
        future = (start > limits.newest_time() + pd.Timedelta(days=1)).to_numpy(dtype=bool, na_value=False)
        alive &= _reject(rejects, frame, alive & future, "bad date: occurred is in the future", file)

    ho = normalise_ho_code(col("ho_code"))
    title = col("offence_title").astype("string").str.strip()
    bad_ho = (col("ho_code").notna() & (col("ho_code").astype("string").str.strip() != "") & ho.isna()).to_numpy(dtype=bool, na_value=False)
    if titles:  # an offence title that a loaded harm table knows gives its exact HO code
        from_title = title.str.lower().map(titles).astype("string")
        ho = ho.fillna(from_title)
    group = groups_from_ho(ho, title).fillna(groups_from_titles(title))
    category = category_of_groups(group)
    given_cat = normalise_category(col("category"))
    category = category.fillna(given_cat)
    unknown = category.isna().to_numpy() | bad_ho
    reason = pd.Series("unknown offence: no HO code, title or category harmspot recognises", index=frame.index)
    reason[bad_ho] = "unknown offence: HO code is not of the form NNN/NN"
    alive &= _reject(rejects, frame, alive & unknown, reason, file)

    flags = {}
    for name in ("domestic", "public_place", "knife", "nte"):
        flags[name], bad = _flag(col(name))
        alive &= _reject(rejects, frame, alive & bad, f"invalid {name} flag (use yes/no, true/false or 1/0)", file)
    age_text = col("victim_age").astype("string").str.strip()
    age = pd.to_numeric(age_text, errors="coerce")
    bad_age = (age_text.notna() & (age_text != "") & (age.isna() | (age < 0) | (age > 120))).to_numpy(dtype=bool, na_value=False)
    alive &= _reject(rejects, frame, alive & bad_age, "invalid victim_age (0-120)", file)
    inside = np.zeros(len(frame), dtype=bool)
    inside[alive] = area.contains(lon[alive], lat[alive])
    alive &= _reject(rejects, frame, alive & ~inside, f"outside the study area ({area.name})", file)

    keep = frame.loc[alive]
    ids = col("record_id")[alive].astype("string").str.strip()
    no_id = ids.isna() | (ids == "")
    if no_id.any():
        ids = ids.where(~no_id, _content_ids(keep, [c for c in keep.columns if not c.startswith("_")], "hash:", ranks)[no_id])
    st = start[alive]
    minute = (prec[alive] == "minute").to_numpy(dtype=bool, na_value=False)
    out = pd.DataFrame({
        "record_id": ids.to_numpy(),
        "occurred_from": st.to_numpy(),
        "occurred_to": end[alive].to_numpy(),
        "precision": prec[alive].to_numpy(),
        "dow": pd.array(np.where(minute, st.dt.day_of_week.to_numpy(dtype=float, na_value=np.nan), np.nan), dtype="Int16"),
        "hour": pd.array(np.where(minute, st.dt.hour.to_numpy(dtype=float, na_value=np.nan), np.nan), dtype="Int16"),
        "category": category[alive].to_numpy(),
        "offence_group": group[alive].to_numpy(),
        "ho_code": ho[alive].to_numpy(),
        "offence_title": title[alive].to_numpy(),
        "location": col("location")[alive].astype("string").to_numpy(),
        "lsoa_code": col("lsoa_code")[alive].astype("string").to_numpy(),
        "lsoa_name": col("lsoa_name")[alive].astype("string").to_numpy(),
        "district": col("district")[alive].astype("string").to_numpy(),
        "_line": keep["_line"].to_numpy(),
    })
    for name, values in flags.items():
        out[name] = values[alive].to_numpy()
    out["victim_age"] = pd.array(age[alive].to_numpy(dtype=float, na_value=np.nan), dtype="Int16")
    return _finish(out, lon[alive], lat[alive],
                   None if x is None else x[alive], None if y is None else y[alive]), rejects


def is_policeuk(columns: list[str]) -> bool:
    return {"Crime ID", "Month", "Longitude", "Latitude", "Crime type"} <= set(columns)


def _no_rejects() -> pd.DataFrame:
    return pd.DataFrame({"file": pd.Series(dtype="string"), "line": pd.Series(dtype="int64"),
                         "reason": pd.Series(dtype="string"), "raw": pd.Series(dtype="string")})


def _text_frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    for col in frame.columns:
        if col != "_line":
            frame[col] = frame[col].astype("string")
    return frame


def _normalise(chunk: RawChunk, area: StudyArea, mapping: dict[str, str] | None, titles: dict[str, str] | None,
               limits: IngestLimits, ranks: Ranks) -> tuple[pa.Table, list[pd.DataFrame], str]:
    frame = chunk.data
    if is_policeuk(chunk.columns):
        if isinstance(frame, pd.DataFrame):
            frame = pa.Table.from_pandas(frame.astype({c: "string" for c in frame.columns if c != "_line"}),
                                         preserve_index=False)
        rows, rej = normalise_policeuk(frame, chunk.name, area, limits, ranks)
        return rows, rej, "police.uk"
    text = _text_frame(frame) if isinstance(frame, pa.Table) else frame
    rows, rej = normalise_extract(text, chunk.name, area, mapping, titles, limits, ranks)
    rows = rows.set_column(rows.schema.get_field_index("_file"), "_file",
                           pa.array(np.full(rows.num_rows, chunk.name, dtype=object), pa.string()))
    return rows, rej, "extract"


def parse_stream(sources: Iterable[tuple[str, object]], area: StudyArea = StudyArea(),
                 mapping: dict[str, str] | None = None, titles: dict[str, str] | None = None,
                 limits: IngestLimits = IngestLimits()) -> Iterator[Parsed]:
    """Read and validate every source (name, and its bytes, an open binary file, or None to read the path) as a
    stream of bounded chunks, one :class:`Parsed` each (``read`` and ``files`` count what is new in that
    chunk).  Raises :class:`IngestError` for a file that cannot be read at all and
    :class:`IngestLimitError` when the batch goes over ``limits``; otherwise every row is stored or rejected
    with a reason.  Nothing is held beyond the chunk in hand (and the per-file id ranks).  Files are read
    in name order, so the stream is in (file, line) order, the order duplicates are resolved in."""
    budget = Budget(limits)
    seen: set[str] = set()
    # files by name (zip members are read by name too): "the first copy by file and line" is the stream order
    for path, data in sorted(sources, key=lambda s: Path(s[0]).name):
        ranks: dict[str, Ranks] = {}
        for chunk in read_source(Path(path), data, budget):
            rows, rej, kind = _normalise(chunk, area, mapping, titles, limits, ranks.setdefault(chunk.name, Ranks()))
            rejects = [*chunk.rejects, *rej]
            new = [] if chunk.name in seen else [chunk.name]
            seen.add(chunk.name)
            yield Parsed(table=rows, rejects=pd.concat(rejects, ignore_index=True) if rejects else _no_rejects(),
                         read=chunk.num_rows + sum(len(r) for r in chunk.rejects), kind=kind, files=new)


def merge(parts: Iterable[Parsed]) -> Parsed:
    """One :class:`Parsed` holding every chunk (for small inputs and analysis; ingest streams instead)."""
    parts = list(parts)
    tables = [p.table for p in parts]
    rejects = [p.rejects for p in parts if len(p.rejects)]
    kinds = sorted({k for p in parts for k in p.kind.split("+") if k and k != "empty"})
    return Parsed(table=pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table(),
                  rejects=pd.concat(rejects, ignore_index=True) if rejects else _no_rejects(),
                  read=sum(p.read for p in parts), kind="+".join(kinds) or "empty",
                  files=[f for p in parts for f in p.files])


def parse_files(sources: Iterable[tuple[str, object]], area: StudyArea = StudyArea(),
                mapping: dict[str, str] | None = None, titles: dict[str, str] | None = None,
                limits: IngestLimits = IngestLimits()) -> Parsed:
    """:func:`parse_stream` gathered into one :class:`Parsed` (holds every row: for small inputs)."""
    return merge(parse_stream(sources, area, mapping, titles, limits))
