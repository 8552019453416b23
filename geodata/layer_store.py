"""Environmental point layers kept in the store (``poi_layers``, ``poi_points``, ``poi_rejects``).

A :class:`geodata.layers.PointLayer` is written in ONE transaction (replacing a layer of the same name), so a
layer is either there whole, with its rejects and attribution, or not at all.  :func:`load_point_layer` reads
it back as a ``PointLayer`` for ``rtm.run_rtm``.  The tables live in their own module (created with
``CREATE TABLE IF NOT EXISTS`` on first use) so ``geodata/store.py`` does not change.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geodata.layers import DEFAULT_BUFFER_M, LayerError, PointLayer, load_layer
from geodata.settings import SAMPLE_DIR
from geodata.store import DATASET_LAYER, NotStored, Store, StoreError, utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS poi_layers (
    name VARCHAR PRIMARY KEY, type VARCHAR, plural VARCHAR, source VARCHAR, licence VARCHAR, attribution VARCHAR,
    crs VARCHAR, coordinate_columns VARCHAR, read INTEGER, features INTEGER, rejected INTEGER,
    outside_study_area INTEGER, study_area VARCHAR, buffer_m DOUBLE, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS poi_points (
    layer VARCHAR, idx INTEGER, label VARCHAR, lon DOUBLE, lat DOUBLE, x DOUBLE, y DOUBLE);
CREATE TABLE IF NOT EXISTS poi_rejects (
    layer VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR);
"""


LAYER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class InvalidLayerRequest(LayerError):
    """A bad layer name or type (the file was not read)."""


class LayerExists(LayerError):
    """A layer of that name is stored and replacing it was not asked for."""


class UnknownLayer(StoreError):
    pass


def ensure_tables(store: Store) -> None:
    """Create this module's tables once per store handle."""
    store.ensure_schema(SCHEMA)


def add_layer(store: Store, source: str | Path, name: str, type: str, *, data: bytes | None = None,
              plural: str = "", licence: str = "", attribution: str = "", dataset: str | None = None,
              buffer_m: float = DEFAULT_BUFFER_M, replace: bool = False) -> dict:
    """Check, read and store a layer file (the one path of ``POST /layers`` and ``harmspot layer add``): name
    and type checked (InvalidLayerRequest), an existing layer kept unless ``replace`` (LayerExists), the file
    read with per-row rejects (LayerError when unreadable), features kept within ``buffer_m`` of ``dataset``'s
    study area when given, stored in one transaction.  Returns the summary with the first 20 rejects."""
    if not LAYER_NAME.match(name):
        raise InvalidLayerRequest("name: 1-64 letters, digits, '_' or '-'")
    type = type.strip()
    if not type or len(type) > 60:
        raise InvalidLayerRequest("type: a noun of 1-60 characters, e.g. 'bus stop'")
    if has_layer(store, name) and not replace:
        raise LayerExists(f"layer '{name}' exists: ask to replace it (replace=true, or --replace)")
    area = dataset_study_area(store, dataset) if dataset else None
    layer = load_layer(source, name, type, data=data, area=area, buffer_m=buffer_m, plural=plural.strip(),
                       licence=licence.strip())
    summary = save_layer(store, layer, attribution=attribution.strip(), study_area=area.name if area else None,
                         buffer_m=buffer_m if area else None, replace=replace)
    summary["rejects"] = layer_rejects(store, name, limit=20, raw=True)
    return summary


def save_layer(store: Store, layer: PointLayer, *, attribution: str = "", study_area: str | None = None,
               buffer_m: float | None = None, replace: bool = True) -> dict:
    """Store (or, with ``replace``, replace) a layer, its points and its rejects in one transaction; returns its
    summary. The exists check runs inside that transaction (Store.write), so of parallel uploads of one new name
    without ``replace`` exactly one is stored and the others raise LayerExists."""
    ensure_tables(store)
    n = len(layer)
    points = pd.DataFrame({
        "layer": layer.name, "idx": np.arange(n, dtype=np.int32),
        "label": (pd.Series(layer.labels, dtype="string") if layer.labels is not None
                  else pd.Series([None] * n, dtype="string")),
        "lon": np.asarray(layer.lon, float), "lat": np.asarray(layer.lat, float),
        "x": np.asarray(layer.x, float), "y": np.asarray(layer.y, float)})
    rejects = layer.rejects.assign(layer=layer.name)[["layer", "line", "reason", "raw"]]
    rejects = rejects.astype({"line": "int64", "reason": "string", "raw": "string"})
    def write(cur) -> None:
        if not replace and cur.execute("SELECT count(*) FROM poi_layers WHERE name = ?", [layer.name]).fetchall()[0][0]:
            raise LayerExists(f"layer '{layer.name}' exists: ask to replace it (replace=true, or --replace)")
        for table, col in (("poi_layers", "name"), ("poi_points", "layer"), ("poi_rejects", "layer")):
            cur.execute(f"DELETE FROM {table} WHERE {col} = ?", [layer.name])
        cur.execute("INSERT INTO poi_layers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [layer.name, layer.type, layer.plural, layer.source, layer.licence, attribution, layer.crs,
                     json.dumps(list(layer.coordinate_columns)), int(layer.read), n, int(len(layer.rejects)),
                     int(layer.outside), study_area, buffer_m, utc_now()])
        if n:
            cur.register("poi_df", points)
            cur.execute("INSERT INTO poi_points SELECT * FROM poi_df")
            cur.unregister("poi_df")
        if len(rejects):
            cur.register("poi_rej", rejects)
            cur.execute("INSERT INTO poi_rejects SELECT * FROM poi_rej")
            cur.unregister("poi_rej")

    store.write(write, scope="layers")
    return layer_summary(store, layer.name)


def layer_names(store: Store) -> list[str]:
    ensure_tables(store)
    return store.query_df("SELECT name FROM poi_layers ORDER BY name")["name"].tolist()


def has_layer(store: Store, name: str) -> bool:
    ensure_tables(store)
    return bool(store.scalar("SELECT count(*) FROM poi_layers WHERE name = ?", [name]))


def _summary_rows(store: Store, name: str | None = None) -> list[dict]:
    ensure_tables(store)
    sql = """SELECT l.*, (SELECT min(lon) FROM poi_points p WHERE p.layer = l.name) AS x0,
                    (SELECT min(lat) FROM poi_points p WHERE p.layer = l.name) AS y0,
                    (SELECT max(lon) FROM poi_points p WHERE p.layer = l.name) AS x1,
                    (SELECT max(lat) FROM poi_points p WHERE p.layer = l.name) AS y1
             FROM poi_layers l"""
    frame = store.query_df(sql + (" WHERE name = ?" if name else "") + " ORDER BY name", [name] if name else [])
    out = []
    for r in frame.to_dict("records"):
        out.append({
            "name": r["name"], "type": r["type"], "plural": r["plural"], "features": int(r["features"]),
            "read": int(r["read"]), "rejected": int(r["rejected"]), "outside_study_area": int(r["outside_study_area"]),
            "study_area": r["study_area"], "buffer_m": None if pd.isna(r["buffer_m"]) else float(r["buffer_m"]),
            "coordinate_columns": json.loads(r["coordinate_columns"] or "[]"), "crs": r["crs"],
            "source": r["source"], "licence": r["licence"], "attribution": r["attribution"],
            "created_at": pd.Timestamp(r["created_at"]).isoformat(),
            "bbox": (None if pd.isna(r["x0"]) else [round(float(r[k]), 6) for k in ("x0", "y0", "x1", "y1")]),
        })
    return out


def list_layers(store: Store) -> list[dict]:
    return _summary_rows(store)


def layer_summary(store: Store, name: str) -> dict:
    rows = _summary_rows(store, name)
    if not rows:
        raise UnknownLayer(f"unknown layer '{name}'; loaded layers: {layer_names(store)}")
    return rows[0]


def layer_rejects(store: Store, name: str, limit: int | None = 100, raw: bool = False) -> list[dict]:
    ensure_tables(store)
    cols = "line, reason" + (", raw" if raw else "")
    sql = f"SELECT {cols} FROM poi_rejects WHERE layer = ? ORDER BY line"
    params: list = [name]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    frame = store.query_df(sql, params)
    return [{k: (int(v) if k == "line" else v) for k, v in r.items()} for r in frame.to_dict("records")]


def layer_points(store: Store, name: str) -> pd.DataFrame:
    layer_summary(store, name)  # raises UnknownLayer
    return store.query_df("SELECT idx, label, lon, lat, x, y FROM poi_points WHERE layer = ? ORDER BY idx", [name])


def load_point_layer(store: Store, name: str) -> PointLayer:
    """A stored layer as a :class:`PointLayer` (BNG x/y for rtm, lon/lat for maps)."""
    meta = layer_summary(store, name)
    pts = layer_points(store, name)
    labels = pts["label"].astype(object).to_numpy() if pts["label"].notna().any() else None
    return PointLayer(name=name, type=meta["type"], plural=meta["plural"], lon=pts["lon"].to_numpy(float),
                      lat=pts["lat"].to_numpy(float), x=pts["x"].to_numpy(float), y=pts["y"].to_numpy(float),
                      source=meta["source"], labels=labels, outside=meta["outside_study_area"], read=meta["read"],
                      coordinate_columns=tuple(meta["coordinate_columns"] or ("", "")), crs=meta["crs"],
                      licence=meta["licence"], buffer_m=meta["buffer_m"])


def dataset_study_area(store: Store, dataset: str):
    """The stored study-area polygon of a dataset as a ``StudyArea`` (for the edge-effect filter of a layer)."""
    import shapely

    from geodata.ingest import StudyArea

    store.require_dataset(dataset)
    frame = store.query_df("SELECT name, geometry_wkb FROM areas WHERE layer = ? AND feature_id = ?",
                           [DATASET_LAYER, dataset])
    if frame.empty:
        raise NotStored(f"dataset '{dataset}' has no stored study area")
    geom = shapely.from_wkb(bytes(frame["geometry_wkb"].iloc[0]))
    return StudyArea(bbox=tuple(geom.bounds), polygon=geom, name=f"study area of dataset {dataset}")


# ------------------------------------------------------------------------------------------ bundled sample
POI = SAMPLE_DIR / "poi"
OSM = "© OpenStreetMap contributors, ODbL 1.0 (https://www.openstreetmap.org/copyright)"


@dataclass(frozen=True)
class SampleLayer:
    name: str
    file: str
    type: str
    licence: str
    attribution: str
    where: tuple[tuple[str, str], ...] = ()


SAMPLE_LAYERS: tuple[SampleLayer, ...] = (
    SampleLayer("osm_pubs", "essex_osm_pubs.csv", "pub", "ODbL 1.0",
                OSM + "; via mlj/uk-pub-names (Geofabrik extracts 2022-01-28). Nodes only: about half of pubs "
                "(those mapped as building outlines) are missing."),
    SampleLayer("rail_stations", "essex_railway_stations.csv", "railway station", "ODbL 1.0",
                "davwheat/uk-railway-stations, derived from trainline-eu/stations; ODbL 1.0"),
    SampleLayer("fhrs_pubs", "chelmsford_fhrs_pubs_restaurants.csv", "pub/bar/nightclub", "OGL v3.0",
                "Food Standards Agency Food Hygiene Rating Scheme open data, Open Government Licence v3.0 "
                "(central Chelmsford only; via RutterIsGit/VodkaPusher)", (("business_type", "Pub"),)),
    SampleLayer("fhrs_restaurants", "chelmsford_fhrs_pubs_restaurants.csv", "restaurant/cafe", "OGL v3.0",
                "Food Standards Agency Food Hygiene Rating Scheme open data, Open Government Licence v3.0 "
                "(central Chelmsford only; via RutterIsGit/VodkaPusher)", (("business_type", "Restaurant"),)),
)


def load_sample_layers(store: Store, area=None, study_area: str | None = None) -> list[dict]:
    """Store the bundled ``sample/poi`` layers (kept within 400 m of ``area``), with their attribution."""
    out = []
    for s in SAMPLE_LAYERS:
        layer = load_layer(POI / s.file, s.name, s.type, area=area, buffer_m=DEFAULT_BUFFER_M, licence=s.licence,
                           where={k: v for k, v in s.where} or None)
        out.append(save_layer(store, layer, attribution=s.attribution, study_area=study_area,
                              buffer_m=DEFAULT_BUFFER_M if area is not None else None))
    return out
