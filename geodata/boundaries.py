"""Boundary layers loaded by users: GeoJSON, GeoPackage or a zipped Shapefile, any CRS, into the store.

Every file goes through :func:`read_boundaries` (bounded: bytes, zip members and inflated size, JSON nesting,
features, vertices) and :func:`prepare` (reprojected to WGS84; fields guessed when not given and the guess
reported; invalid rings repaired with ``make_valid`` or the feature rejected with its index and reason; every
geometry a MultiPolygon, so the OGC layer has one geometry type), then :func:`save_layer` stores it in one
transaction: re-adding a layer replaces it whole, and a rejected file leaves nothing behind.
"""
from __future__ import annotations

import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import shapely

from geodata.auto_areas import AUTO_LAYERS, META_SCHEMA, SEPARATOR
from geodata.cells import AREA_RESOLUTION, cell_centres, polygon_cells
from geodata.store import DATASET_LAYER, Store, utc_now

LAYER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
MAX_FEATURES = 50_000           # England has 33,755 LSOAs (2021): a national LSOA file fits
MAX_VERTICES = 5_000_000        # about 150 MB of coordinates in memory; ONS generalised boundaries are far below
MAX_ZIP_MEMBERS = 64
MAX_INFLATED_BYTES = 1 << 30    # a zipped Shapefile may inflate to at most 1 GiB
MAX_RATIO = 200                 # and no member may inflate more than 200x (zip bombs inflate 1000x+)
MAX_JSON_DEPTH = 40             # a FeatureCollection of MultiPolygons nests about 8 deep
SHAPEFILE_PARTS = {".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".xml"}
UK_LONLAT = (-9.0, 49.0, 3.0, 61.5)  # loose Great Britain box: a layer wholly outside it is refused
# field-name patterns tried in order when a field is not given (ONS/OS conventions first)
NAME_PATTERNS = (r"^(LAD|WD|LSOA|MSOA|OA|CTY|PFA|CSP|LPA|PCON|UTLA|LTLA|CMLAD|NBH|BEAT)\d*NM$",
                 r"^(LAD|WD|LSOA|MSOA|PFA)_?NAME$", r"^.*\d{2}NM$", r"^name$", r"^.*_name$", r"^.*name.*$")
ID_PATTERNS = (r"^(LAD|WD|LSOA|MSOA|OA|CTY|PFA|CSP|LPA|PCON|UTLA|LTLA|CMLAD|NBH|BEAT)\d*CD$",
               r"^(LAD|WD|LSOA|MSOA|PFA)_?CODE$", r"^.*\d{2}CD$", r"^(code|id|fid|objectid|gss_code)$",
               r"^.*_(code|id)$")
DISTRICT_PATTERNS = (r"^LAD\d*NM$", r"^LAD_?NAME$", r"^(district|district_name|local_authority|la_name)$")


class BoundaryError(ValueError):
    """A boundary file that cannot be loaded; ``details`` lists per-feature problems (index, reason)."""

    def __init__(self, message: str, details: list | None = None, status: int = 422):
        super().__init__(message)
        self.details = details
        self.status = status


@dataclass
class Prepared:
    frame: "pd.DataFrame"  # feature_id, name, district, geometry (shapely MultiPolygon, WGS84)
    fields: dict
    guessed: dict
    source_crs: str | None
    crs_note: str | None
    repaired: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)


def check_layer_name(layer: str) -> str:
    if not LAYER_NAME.match(layer or ""):
        raise BoundaryError("layer: 1-40 characters, lower-case letters, digits, '_' or '-', starting with a letter")
    if layer in AUTO_LAYERS or SEPARATOR in layer or layer == DATASET_LAYER or layer.startswith(("lad-", "lsoa-")):
        raise BoundaryError(f"layer: '{layer}' is reserved for the automatic layers built from each dataset's "
                            f"records ({', '.join(AUTO_LAYERS)}); choose another name")
    return layer


# ------------------------------------------------------------------------------------------------ reading
def json_depth(data: bytes, chunk: int = 1 << 23) -> int:
    """Deepest bracket nesting outside JSON strings, vectorised per 8 MB chunk (bounded memory), carrying the
    depth, whether a string is open and the parity of a trailing backslash run from chunk to chunk."""
    depth = deepest = carry = 0
    in_string = False
    for start in range(0, len(data), chunk):
        arr = np.frombuffer(data, dtype=np.uint8, count=min(chunk, len(data) - start), offset=start)
        idx = np.arange(len(arr))
        back = arr == 92  # backslash
        last_plain = np.maximum.accumulate(np.where(back, -1, idx))  # last non-backslash at or before i
        prev_plain = np.concatenate([[-1], last_plain[:-1]])
        run = idx - 1 - prev_plain  # backslashes just before byte i
        run = run + np.where(prev_plain == -1, carry, 0)  # a run reaching the chunk start continues the last one
        real = (arr == 34) & (run % 2 == 0)  # unescaped quotes
        toggles = np.cumsum(real)
        inside = ((toggles % 2) == 1) ^ in_string
        opens = ((arr == 91) | (arr == 123)) & ~inside
        closes = ((arr == 93) | (arr == 125)) & ~inside
        steps = np.cumsum(opens.astype(np.int64) - closes.astype(np.int64))
        deepest = max(deepest, depth + int(steps.max()))
        depth += int(steps[-1])
        in_string = bool(inside[-1])
        trailing = len(arr) - 1 - int(last_plain[-1])
        carry = (trailing + (carry if last_plain[-1] == -1 else 0)) % 2
    return deepest


def _kind(filename: str, data: bytes) -> str:
    name = filename.lower()
    if data[:4] == b"PK\x03\x04" or name.endswith(".zip"):
        return "zip"
    if data[:16].startswith(b"SQLite format 3") or name.endswith(".gpkg"):
        return "gpkg"
    if name.endswith((".geojson", ".json")) or data.lstrip()[:1] in (b"{", b"["):
        return "geojson"
    raise BoundaryError(f"{filename}: not a GeoJSON, GeoPackage or zipped Shapefile (by name and content)")


def _unzip_shapefile(data: bytes, folder: Path, filename: str) -> Path:
    """The one Shapefile in a zip, extracted with every member capped (count, inflated size, ratio, no nesting,
    no paths outside the folder). Sizes are enforced while inflating, not trusted from the headers."""
    import io

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BoundaryError(f"{filename}: not a readable zip file ({exc})") from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_ZIP_MEMBERS:
            raise BoundaryError(f"{filename}: {len(infos)} files in the zip (at most {MAX_ZIP_MEMBERS})")
        shp = [i for i in infos if i.filename.lower().endswith(".shp") and not _junk(i.filename)]
        nested = [i.filename for i in infos if i.filename.lower().endswith((".zip", ".gz", ".7z", ".rar"))]
        if nested:
            raise BoundaryError(f"{filename}: archives inside the zip are not read ({nested[:3]})")
        if len(shp) != 1:
            raise BoundaryError(f"{filename}: a zipped Shapefile must hold exactly one .shp "
                                f"(found {len(shp)}: {[i.filename for i in shp][:5]})")
        stem = PurePosixPath(shp[0].filename).with_suffix("")
        total = 0
        wanted = [i for i in infos if PurePosixPath(i.filename).with_suffix("") == stem
                  and PurePosixPath(i.filename).suffix.lower() in SHAPEFILE_PARTS]
        exts = {PurePosixPath(i.filename).suffix.lower() for i in wanted}
        missing = {".shp", ".shx", ".dbf"} - exts
        if missing:
            raise BoundaryError(f"{filename}: the Shapefile lacks {sorted(missing)} (a Shapefile needs .shp, .shx "
                                "and .dbf, and a .prj for its CRS)")
        for info in wanted:
            ext = PurePosixPath(info.filename).suffix.lower()
            target = folder / ("layer" + ext)  # flat, fixed names: no path from the archive is used
            limit = MAX_INFLATED_BYTES - total
            with zf.open(info) as src, open(target, "wb") as dst:
                written = 0
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > limit:
                        raise BoundaryError(f"{filename}: the zip inflates to more than "
                                            f"{MAX_INFLATED_BYTES >> 20} MB", status=413)
                    if written > 1_000_000 and written > MAX_RATIO * max(info.compress_size, 1):
                        raise BoundaryError(f"{filename}: {info.filename} inflates more than {MAX_RATIO}x "
                                            "(a zip bomb?)", status=413)
                    dst.write(chunk)
            total += written
        return folder / "layer.shp"


def _junk(name: str) -> bool:
    return name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._")


def read_boundaries(data: bytes, filename: str, source_layer: str | None = None):
    """A GeoDataFrame of the file's polygons (still in its own CRS), bounded in every dimension."""
    import geopandas as gpd
    import pyogrio

    if not data:
        raise BoundaryError(f"{filename or 'upload'}: the file is empty")
    kind = _kind(filename or "", data)
    with tempfile.TemporaryDirectory(prefix="harmspot-areas-") as tmp:
        folder = Path(tmp)
        if kind == "zip":
            path = _unzip_shapefile(data, folder, filename)
        else:
            if kind == "geojson":
                depth = json_depth(data)
                if depth > MAX_JSON_DEPTH:
                    raise BoundaryError(f"{filename}: JSON nested {depth} deep (at most {MAX_JSON_DEPTH})")
            path = folder / ("layer.gpkg" if kind == "gpkg" else "layer.geojson")
            path.write_bytes(data)
        try:
            layers = pyogrio.list_layers(path)
        except Exception as exc:  # GDAL's own message says what is wrong with the file
            raise BoundaryError(f"{filename}: GDAL cannot read it as {kind}: {exc}") from exc
        polygonal = [str(n) for n, g in layers if g is None or "polygon" in str(g).lower() or str(g) == "Unknown"]
        if source_layer:
            if source_layer not in [str(n) for n, _ in layers]:
                raise BoundaryError(f"{filename}: no layer '{source_layer}' (layers: {[str(n) for n, _ in layers]})")
            chosen = source_layer
        elif len(layers) == 1:
            chosen = str(layers[0][0])
        elif len(polygonal) == 1:
            chosen = polygonal[0]
        else:
            raise BoundaryError(f"{filename}: {len(layers)} layers ({[str(n) for n, _ in layers][:10]}); name one "
                                "with source_layer")
        try:
            info = pyogrio.read_info(path, layer=chosen, force_feature_count=True)
        except Exception as exc:
            raise BoundaryError(f"{filename}: GDAL cannot read layer '{chosen}': {exc}") from exc
        n = int(info.get("features") or 0)
        if n == 0:
            raise BoundaryError(f"{filename}: the layer '{chosen}' holds no features")
        if n > MAX_FEATURES:
            raise BoundaryError(f"{filename}: {n} features (at most {MAX_FEATURES})", status=413)
        try:
            frame = gpd.read_file(path, layer=chosen, engine="pyogrio", on_invalid="ignore")
        except TypeError:  # pyogrio before on_invalid
            frame = gpd.read_file(path, layer=chosen, engine="pyogrio")
        except Exception as exc:
            raise BoundaryError(f"{filename}: GDAL cannot read the features: {exc}") from exc
    geoms = frame.geometry.values
    vertices = int(shapely.get_num_coordinates(np.asarray(geoms, dtype=object)).sum()) if len(frame) else 0
    if vertices > MAX_VERTICES:
        raise BoundaryError(f"{filename}: {vertices:,} vertices (at most {MAX_VERTICES:,}); simplify it first "
                            "(e.g. ONS 'generalised' boundaries)", status=413)
    return frame


# ------------------------------------------------------------------------------------------------ fields
def _guess(columns: list[str], patterns: tuple[str, ...], avoid: set[str] = frozenset()) -> str | None:
    for pat in patterns:
        for c in columns:
            if c not in avoid and re.match(pat, c, re.IGNORECASE):
                return c
    return None


def _matching_id(name_field: str, columns: list[str]) -> str | None:
    """The code field of a name field: LAD22NM -> LAD22CD, WD13NM -> WD13CD, LAD_NAME -> LAD_CODE."""
    for a, b in (("NM", "CD"), ("nm", "cd"), ("NAME", "CODE"), ("name", "code"), ("Name", "Code")):
        if name_field.endswith(a) and name_field[: -len(a)] + b in columns:
            return name_field[: -len(a)] + b
    return None


def choose_fields(columns: list[str], name_field: str | None, id_field: str | None,
                  district_field: str | None) -> tuple[dict, dict]:
    """(fields used, the ones guessed with the rule) ; given fields must exist."""
    cols = [c for c in columns if c != "geometry"]
    for label, given in (("name_field", name_field), ("id_field", id_field), ("district_field", district_field)):
        if given and given not in cols:
            raise BoundaryError(f"{label}: no field '{given}' in the file (fields: {cols[:40]})")
    guessed = {}
    if not name_field:
        name_field = _guess(cols, NAME_PATTERNS)
        if not name_field:
            raise BoundaryError(f"name_field: none given and none recognised (fields: {cols[:40]}); give one")
        guessed["name_field"] = f"{name_field} (first field matching the ONS/OS name patterns *NM, *_NAME, name)"
    if not id_field:
        id_field = _matching_id(name_field, cols) or _guess(cols, ID_PATTERNS, {name_field})
        guessed["id_field"] = (f"{id_field} (code field matching the name field or the patterns *CD, *_CODE, id)"
                               if id_field else f"none found: the name ({name_field}) is the id")
        id_field = id_field or name_field
    if not district_field:
        district_field = _guess(cols, DISTRICT_PATTERNS)
        if district_field == name_field and re.match(r"^LAD", name_field, re.IGNORECASE):
            guessed["district_field"] = f"{district_field} (the layer is districts)"
        elif district_field:
            guessed["district_field"] = f"{district_field} (first field matching LAD*NM, LAD_NAME, district)"
    return {"name_field": name_field, "id_field": id_field, "district_field": district_field}, guessed


# ------------------------------------------------------------------------------------------------ geometry
def to_wgs84(frame):
    """(frame in EPSG:4326, the source CRS, a note when the CRS was missing and inferred)."""
    note = None
    crs = frame.crs
    if crs is None:
        b = frame.total_bounds
        if np.all(np.isfinite(b)) and -180 <= b[0] and b[2] <= 180 and -90 <= b[1] and b[3] <= 90:
            frame = frame.set_crs(4326)
            note = "the file declares no CRS; its coordinates look like longitude/latitude, so WGS84 was assumed"
        elif np.all(np.isfinite(b)) and 0 <= b[0] and b[2] <= 700_000 and 0 <= b[1] and b[3] <= 1_300_000:
            frame = frame.set_crs(27700)
            note = ("the file declares no CRS; its coordinates look like British National Grid metres, so "
                    "EPSG:27700 was assumed")
        else:
            raise BoundaryError(f"the file declares no CRS and its coordinates ({[round(float(v), 1) for v in b]}) "
                                "are neither longitude/latitude nor British National Grid: add a .prj / CRS")
    source = crs.to_string() if crs is not None else frame.crs.to_string()
    try:
        out = frame.to_crs(4326)
    except Exception as exc:
        raise BoundaryError(f"cannot reproject from {source} to WGS84: {exc}") from exc
    b = out.total_bounds
    if not np.all(np.isfinite(b)):
        raise BoundaryError(f"reprojecting from {source} to WGS84 gave no finite coordinates: is the CRS right?")
    if b[2] < UK_LONLAT[0] or b[0] > UK_LONLAT[2] or b[3] < UK_LONLAT[1] or b[1] > UK_LONLAT[3]:
        raise BoundaryError(f"after reprojection from {source} the layer lies at lon {b[0]:.3f}..{b[2]:.3f}, lat "
                            f"{b[1]:.3f}..{b[3]:.3f}, wholly outside Great Britain: is the declared CRS right?")
    return out, source, note


def _multipolygon(g) -> shapely.Geometry | None:
    """The polygonal part of ``g`` as one MultiPolygon (None when nothing polygonal with area is left)."""
    if g is None or g.is_empty:
        return None
    if g.geom_type == "Polygon":
        return shapely.MultiPolygon([g])
    if g.geom_type == "MultiPolygon":
        return g
    if g.geom_type == "GeometryCollection":
        polys = [p for part in g.geoms for p in (part.geoms if part.geom_type == "MultiPolygon" else [part])
                 if p.geom_type == "Polygon" and not p.is_empty]
        return shapely.MultiPolygon(polys) if polys else None
    return None


def prepare(frame, name_field: str | None = None, id_field: str | None = None,
            district_field: str | None = None) -> Prepared:
    fields, guessed = choose_fields(list(frame.columns), name_field, id_field, district_field)
    wgs, source, note = to_wgs84(frame)
    repaired, rejected, keep = [], [], []
    ids = wgs[fields["id_field"]].astype("string")
    names = wgs[fields["name_field"]].astype("string")
    for i, g in enumerate(wgs.geometry.values):
        fid = None if pd.isna(ids.iloc[i]) else str(ids.iloc[i]).strip()
        if g is None or g.is_empty:
            rejected.append({"index": i, "id": fid, "reason": "no geometry"})
            continue
        if g.geom_type not in ("Polygon", "MultiPolygon"):
            rejected.append({"index": i, "id": fid, "reason": f"geometry type {g.geom_type}: not a polygon"})
            continue
        if not fid:
            rejected.append({"index": i, "id": None, "reason": f"empty {fields['id_field']}"})
            continue
        if not g.is_valid:
            why = shapely.is_valid_reason(g)
            fixed = _multipolygon(shapely.make_valid(g))
            if fixed is None or fixed.area <= 0:
                rejected.append({"index": i, "id": fid, "reason": f"invalid ({why}) and nothing polygonal is left "
                                 "after repair"})
                continue
            repaired.append({"index": i, "id": fid, "reason": f"{why}; repaired with make_valid"})
            g = fixed
        mp = _multipolygon(g)
        if mp is None or mp.area <= 0:
            rejected.append({"index": i, "id": fid, "reason": "zero area"})
            continue
        keep.append((i, fid, mp))
    if not keep:
        raise BoundaryError("no usable polygon in the file", rejected[:200])
    idx = [k[0] for k in keep]
    out = pd.DataFrame({
        "feature_id": [k[1] for k in keep],
        "name": [("" if pd.isna(names.iloc[i]) else str(names.iloc[i]).strip()) or k for i, k in
                 zip(idx, [k[1] for k in keep])],
        "district": (wgs[fields["district_field"]].astype("string").iloc[idx].fillna("").astype(str).tolist()
                     if fields["district_field"] else [None] * len(keep)),
        "geometry": [k[2] for k in keep]})
    merged = []
    if out["feature_id"].duplicated().any():  # one feature per id: parts of the same area are unioned
        merged = sorted(out.loc[out["feature_id"].duplicated(), "feature_id"].unique().tolist())
        out = (out.groupby("feature_id", sort=False)
               .agg(name=("name", "first"), district=("district", "first"),
                    geometry=("geometry", lambda s: _multipolygon(shapely.union_all(list(s)))))
               .reset_index())
    return Prepared(out, fields, guessed, source, note, repaired, rejected, merged)


# ------------------------------------------------------------------------------------------------ storing
def save_layer(store: Store, layer: str, prep: Prepared, source: str) -> dict:
    """Store the layer (polygons + res-10 cells + meta) in one transaction, replacing any layer of that name."""
    store.ensure_schema(META_SCHEMA)
    frame = prep.frame
    wkb = [shapely.to_wkb(g) for g in frame["geometry"]]
    cells = polygon_cells(wkb, AREA_RESOLUTION)
    parts = [pd.DataFrame({"feature_id": fid, "h3_10": cs}) for fid, cs in zip(frame["feature_id"], cells)]
    cell_frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"feature_id": [], "h3_10": []})
    cell_frame["h3_10"] = cell_frame["h3_10"].astype(np.uint64)
    lat, lon = cell_centres(cell_frame["h3_10"].to_numpy(np.uint64))
    cell_rows = pd.DataFrame({"layer": layer, "feature_id": cell_frame["feature_id"].astype(str),  # noqa: F841
                              "h3_10": cell_frame["h3_10"].to_numpy(np.uint64), "lat": lat, "lon": lon})
    area_rows = pd.DataFrame({"layer": layer, "feature_id": frame["feature_id"].astype(str),  # noqa: F841
                              "name": frame["name"].astype(str), "district": frame["district"], "geometry_wkb": wkb})
    with store.write_lock, store.transaction() as cur:
        replaced = int(cur.execute("SELECT count(*) FROM areas WHERE layer = ?", [layer]).fetchall()[0][0])
        cur.execute("DELETE FROM areas WHERE layer = ?", [layer])
        cur.execute("DELETE FROM area_cells WHERE layer = ?", [layer])
        cur.execute("DELETE FROM area_layer_meta WHERE layer = ?", [layer])
        cur.execute("INSERT INTO areas SELECT layer, feature_id, name, district, geometry_wkb FROM area_rows")
        cur.execute("INSERT INTO area_cells SELECT layer, feature_id, h3_10, lat, lon FROM cell_rows")
        cur.execute("INSERT INTO area_layer_meta VALUES (?, ?, NULL, 'loaded', ?, ?, ?, ?, ?, FALSE, ?, ?)",
                    [layer, layer, source, prep.fields["name_field"], prep.fields["id_field"],
                     prep.fields["district_field"], len(frame), prep.crs_note, utc_now()])
    empty = [fid for fid, cs in zip(frame["feature_id"], cells) if len(cs) == 0]
    return {
        "layer": layer, "features": int(len(frame)), "replaced_features": replaced, "source": source,
        "geometry_type": "MultiPolygon", "source_crs": prep.source_crs, "crs_note": prep.crs_note,
        "fields": prep.fields, "guessed": prep.guessed, "repaired": prep.repaired[:200],
        "rejected": prep.rejected[:200], "rejected_count": len(prep.rejected), "merged_ids": prep.merged[:200],
        "cells": int(len(cell_rows)),
        "features_without_cells": empty[:50],
        "note": ("features smaller than one res-10 cell (about 15,000 m2) hold no cell centre, so no offence "
                 "falls in them" if empty else None),
    }


def add_layer(store: Store, layer: str, data: bytes, filename: str, name_field: str | None = None,
              id_field: str | None = None, district_field: str | None = None, source_layer: str | None = None) -> dict:
    """Read, check and store a boundary file as ``layer`` (one transaction; nothing stored if it is refused)."""
    check_layer_name(layer)
    frame = read_boundaries(data, filename, source_layer)
    prep = prepare(frame, name_field, id_field, district_field)
    return save_layer(store, layer, prep, Path(filename or "upload").name)


def delete_layer(store: Store, layer: str) -> int:
    """Remove a loaded layer (its polygons, cells and meta) in one transaction; returns the features removed."""
    check_layer_name(layer)
    store.ensure_schema(META_SCHEMA)
    with store.write_lock, store.transaction() as cur:
        n = int(cur.execute("SELECT count(*) FROM areas WHERE layer = ?", [layer]).fetchall()[0][0])
        if n:
            cur.execute("DELETE FROM areas WHERE layer = ?", [layer])
            cur.execute("DELETE FROM area_cells WHERE layer = ?", [layer])
            cur.execute("DELETE FROM area_layer_meta WHERE layer = ?", [layer])
    return n
