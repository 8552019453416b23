"""Boundary layers loaded by users: BNG GeoPackage, zipped Shapefile, an invalid ring, a replace, the guesses,
the OGC layer's single geometry type in GDAL, and hostile files against the real service process."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from tests.conftest import SHARED, need
from tests.live_server import LiveServer, server_env

BOUNDARY = "harmspot-areas-test-4c1d"
LSOA = SHARED / "boundaries" / "leicestershire_lsoa2011.geojson"
WARDS = SHARED / "boundaries" / "leicestershire_wards2013.geojson"


def areas_body(filename: str, data: bytes, **fields: str) -> tuple[bytes, str]:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture(scope="module")
def districts_bng_gpkg(tmp_path_factory) -> bytes:
    """Leicestershire districts in British National Grid, as a GeoPackage (dissolved from the shared LSOAs)."""
    import geopandas as gpd

    lsoa = gpd.read_file(need(LSOA))
    lsoa["geometry"] = lsoa.geometry.make_valid()
    lad = lsoa.dissolve("LAD_NAME", as_index=False)[["LAD_CODE", "LAD_NAME", "geometry"]]
    lad = lad.rename(columns={"LAD_CODE": "LAD11CD", "LAD_NAME": "LAD11NM"}).to_crs(27700)
    path = tmp_path_factory.mktemp("gpkg") / "districts.gpkg"
    lad.to_file(path, driver="GPKG", layer="districts")
    return path.read_bytes()


@pytest.fixture(scope="module")
def wards_shp_zip(tmp_path_factory) -> bytes:
    import geopandas as gpd

    wards = gpd.read_file(need(WARDS))[["WD13CD", "WD13NM", "LAD_NAME", "geometry"]].to_crs(27700)
    folder = tmp_path_factory.mktemp("shp")
    wards.to_file(folder / "wards.shp")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"Leics_wards/{p.name}")
    return buf.getvalue()


def bowtie_geojson() -> bytes:
    """Three features: a self-intersecting 'bow tie' ring (repairable), a line (rejected), a good square."""
    sq = [[-1.14, 52.63], [-1.13, 52.63], [-1.13, 52.64], [-1.14, 52.64], [-1.14, 52.63]]
    bow = [[-1.12, 52.63], [-1.11, 52.64], [-1.11, 52.63], [-1.12, 52.64], [-1.12, 52.63]]
    feats = [{"type": "Feature", "properties": {"code": "B1", "name": "Bow tie"},
              "geometry": {"type": "Polygon", "coordinates": [bow]}},
             {"type": "Feature", "properties": {"code": "L1", "name": "A line"},
              "geometry": {"type": "LineString", "coordinates": sq[:3]}},
             {"type": "Feature", "properties": {"code": "S1", "name": "Square"},
              "geometry": {"type": "Polygon", "coordinates": [sq]}}]
    return json.dumps({"type": "FeatureCollection", "features": feats}).encode()


# ------------------------------------------------------------------------------------------ engine
def test_bng_geopackage_is_reprojected_and_fields_are_guessed(store, districts_bng_gpkg):
    from geodata import boundaries as bd

    rep = bd.add_layer(store, "districts", districts_bng_gpkg, "districts.gpkg")
    assert rep["features"] == 9 and rep["geometry_type"] == "MultiPolygon"
    assert "27700" in rep["source_crs"]
    assert rep["fields"] == {"name_field": "LAD11NM", "id_field": "LAD11CD", "district_field": "LAD11NM"}
    assert set(rep["guessed"]) == {"name_field", "id_field", "district_field"}
    areas = store.areas("districts")
    import shapely

    g = shapely.from_wkb(bytes(areas.loc[areas["name"] == "Leicester", "geometry_wkb"].iloc[0]))
    assert -1.25 < g.centroid.x < -1.05 and 52.58 < g.centroid.y < 52.68  # WGS84 lon/lat, Leicester city
    assert set(areas["feature_id"]) >= {"E06000016", "E07000130"}


def test_zipped_shapefile_with_district_field(store, wards_shp_zip):
    from geodata import boundaries as bd

    rep = bd.add_layer(store, "wards", wards_shp_zip, "wards.zip")
    assert rep["features"] == 171
    assert rep["fields"]["name_field"] == "WD13NM" and rep["fields"]["id_field"] == "WD13CD"
    assert rep["fields"]["district_field"] == "LAD_NAME"
    assert (store.areas("wards")["district"] == "Charnwood").sum() > 10


def test_invalid_ring_repaired_line_rejected_with_index(store):
    from geodata import boundaries as bd

    rep = bd.add_layer(store, "beats", bowtie_geojson(), "beats.geojson", name_field="name", id_field="code")
    assert rep["features"] == 2
    assert rep["repaired"][0]["index"] == 0 and "Self-intersection" in rep["repaired"][0]["reason"]
    assert rep["rejected"] == [{"index": 1, "id": "L1", "reason": "geometry type LineString: not a polygon"}]
    import shapely

    for b in store.areas("beats")["geometry_wkb"]:
        g = shapely.from_wkb(bytes(b))
        assert g.geom_type == "MultiPolygon" and g.is_valid


def test_replace_is_whole_and_a_refused_file_changes_nothing(store, districts_bng_gpkg):
    from geodata import boundaries as bd

    bd.add_layer(store, "beats", bowtie_geojson(), "beats.geojson", name_field="name", id_field="code")
    rep = bd.add_layer(store, "beats", districts_bng_gpkg, "d.gpkg")
    assert rep["replaced_features"] == 2 and rep["features"] == 9
    assert sorted(store.areas("beats")["feature_id"])[0] == "E06000016"  # the bow tie and square are gone
    assert not store.scalar("SELECT count(*) FROM area_cells WHERE layer = 'beats' AND feature_id IN ('B1', 'S1')")
    with pytest.raises(bd.BoundaryError):
        bd.add_layer(store, "beats", b'{"type": "FeatureCollection", "features": []}', "empty.geojson")
    assert len(store.areas("beats")) == 9  # the refused file left the layer as it was


def test_layer_names(store):
    from geodata import boundaries as bd

    for bad in ("lad", "lsoa", "lad-x", "Districts", "a b", "x@y", "", "__dataset__"):
        with pytest.raises(bd.BoundaryError):
            bd.check_layer_name(bad)


def test_json_depth_is_exact_and_bounded():
    from geodata.boundaries import json_depth as depth

    assert depth(b'{"a": "[[[[[", "b": [[1]]}') == 3
    assert depth(b'{"a": "x\\\\", "b": [1]}') == 2
    assert depth(b'{"a": "x\\"[[[[", "b": 1}') == 1
    text = b"[" * 500 + b"]" * 500
    assert depth(text, chunk=7) == 500


# ------------------------------------------------------------------------------------------ the service
@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data = tmp_path_factory.mktemp("areas-live")
    server = LiveServer(data, server_env(data, max_upload_mb=40)).start()
    yield server
    server.stop()


def post_areas(live: LiveServer, filename: str, data: bytes, **fields: str):
    body, ctype = areas_body(filename, data, **fields)
    return live.request("POST", "/areas", body, {"Content-Type": ctype})


def test_service_loads_replaces_lists_and_deletes(live, districts_bng_gpkg, wards_shp_zip):
    r = post_areas(live, "districts.gpkg", districts_bng_gpkg, layer="districts")
    assert r.status == 201, r.body[:500]
    assert r.json()["guessed"]["name_field"].startswith("LAD11NM")
    r = post_areas(live, "wards.zip", wards_shp_zip, layer="wards", name_field="WD13NM", id_field="WD13CD")
    assert r.status == 201 and r.json()["features"] == 171
    listing = live.request("GET", "/areas").json()
    assert {"districts", "wards"} <= {x["name"] for x in listing["layers"]}
    r = live.request("DELETE", "/areas/wards")
    assert r.status == 200 and r.json()["deleted_features"] == 171
    assert live.request("DELETE", "/areas/wards").status == 404
    assert live.request("DELETE", "/areas/lad").status == 409  # an automatic layer: rebuilt by ingest, not deleted


def test_ogc_layer_of_a_loaded_layer_has_one_geometry_type_in_gdal(live, districts_bng_gpkg, tmp_path):
    import pyogrio

    assert post_areas(live, "districts.gpkg", districts_bng_gpkg, layer="districts").status == 201
    if "OAPIF" in pyogrio.list_drivers():  # GDAL's OGC API Features driver, keyed like any client
        headers = tmp_path / "headers.txt"  # the OAPIF driver sends GDAL_HTTP_HEADER_FILE, not GDAL_HTTP_HEADERS
        headers.write_text(f"X-API-Key: {live.key}\n")
        pyogrio.set_gdal_config_options({"GDAL_HTTP_HEADER_FILE": str(headers)})
        try:
            layers = dict(pyogrio.list_layers(f"OAPIF:{live.base}/"))
            frame = pyogrio.read_dataframe(f"OAPIF:{live.base}/", layer="districts")
        finally:
            pyogrio.set_gdal_config_options({"GDAL_HTTP_HEADER_FILE": None})
        assert layers["districts"] == "MultiPolygon"
        assert len(frame) == 9 and set(frame.geometry.geom_type) == {"MultiPolygon"}
    # GDAL's GeoJSON driver on the items document: one geometry type for the whole layer
    r = live.request("GET", "/collections/districts/items?f=json&limit=1000")
    info = pyogrio.read_info(io.BytesIO(r.body))
    assert info["geometry_type"] == "MultiPolygon" and info["features"] == 9


def _zip(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _bomb_zip(inflated_mb: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("layer.shp", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(inflated_mb):
                f.write(block)
        zf.writestr("layer.shx", b"\0" * 100)
        zf.writestr("layer.dbf", b"\0" * 100)
    return buf.getvalue()


HOSTILE = {
    "empty file": ("empty.geojson", b"", 422, "empty"),
    "not a boundary format": ("notes.txt", b"hello, this is text", 422, "not a GeoJSON"),
    "no features": ("none.geojson", b'{"type":"FeatureCollection","features":[]}', 422, "no features"),
    "deeply nested JSON": ("deep.geojson", b'{"type":"FeatureCollection","features":' + b"[" * 5000 + b"]" * 5000
                           + b"}", 422, "nested"),
    "broken JSON": ("broken.geojson", b'{"type":"FeatureCollection","features":[{"type":"Feat', 422, "GDAL"),
    "points only": ("pts.geojson", json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Point", "coordinates": [-1.1, 52.6]}}]}
        ).encode(), 422, "no usable polygon"),
    "bad CRS (metres declared as WGS84)": ("bng-as-wgs84.geojson", json.dumps({"type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"name": "x"}, "geometry": {"type": "Polygon", "coordinates": [[
            [458000, 304000], [459000, 304000], [459000, 305000], [458000, 304000]]]}}]}).encode(), 422, "CRS"),
    "zip without a shapefile": ("x.zip", _zip({"readme.txt": b"nothing here"}), 422, "exactly one .shp"),
    "zip with two shapefiles": ("x.zip", _zip({"a.shp": b"0", "a.shx": b"0", "a.dbf": b"0", "b.shp": b"0"}), 422,
                                "exactly one .shp"),
    "zip in a zip": ("x.zip", _zip({"inner.zip": b"PK\x03\x04", "a.shp": b"0"}), 422, "archives inside"),
    "shapefile without .dbf": ("x.zip", _zip({"a.shp": b"0", "a.shx": b"0"}), 422, "lacks"),
    "not really a zip": ("x.zip", b"PK\x03\x04 this is not a zip at all", 422, "zip"),
    "reserved layer name": ("ok.geojson", bowtie_geojson(), 422, "reserved"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_boundary_files_are_4xx_with_a_reason_and_store_nothing(live, case):
    filename, data, status, words = HOSTILE[case]
    layer = "lad" if case == "reserved layer name" else "hostile"
    r = post_areas(live, filename, data, layer=layer, name_field="name" if b"name" in data else "")
    assert r.status == status, (case, r.status, r.body[:300])
    err = r.json()["error"]
    assert words.lower() in err["message"].lower(), (case, err)
    assert "hostile" not in {x["name"] for x in live.request("GET", "/areas").json()["layers"]}
    assert live.request("GET", "/health").status == 200


def test_zip_bomb_in_a_shapefile_zip_is_refused_with_bounded_memory(live):
    bomb = _bomb_zip(300)  # 300 MB of zeros in a ~300 kB zip
    assert len(bomb) < 2_000_000
    live.reset_peak()
    before = live.rss_mb()
    r = post_areas(live, "bomb.zip", bomb, layer="hostile")
    assert r.status == 413 and "inflates" in r.json()["error"]["message"]
    assert live.peak_rss_mb() - before < 150  # inflated in 1 MB pieces and stopped, never held whole
    assert "hostile" not in {x["name"] for x in live.request("GET", "/areas").json()["layers"]}


def test_analyst_may_load_only_admin_may_delete(live, districts_bng_gpkg):
    made = live.request("POST", "/keys", json.dumps({"role": "analyst", "name": "areas-analyst"}).encode(),
                        {"Content-Type": "application/json"})
    key = made.json()["key"]
    body, ctype = areas_body("d.gpkg", districts_bng_gpkg, layer="analyst-layer")
    import urllib.error
    import urllib.request

    def call(method, path, data=None, headers=None):
        req = urllib.request.Request(live.base + path, data=data, method=method,
                                     headers={"X-API-Key": key, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    assert call("POST", "/areas", body, {"Content-Type": ctype}) == 201
    assert call("DELETE", "/areas/analyst-layer") == 403
    assert live.request("DELETE", "/areas/analyst-layer").status == 200


# ------------------------------------------------------------------------------------------ road layers
LEICS_CRIME = SHARED / "crime" / "leicestershire_street_2019-12_to_2022-10.csv.gz"


def record_roads(max_streets: int = 400):
    """A road layer made from real records: for each of the commonest Leicester-area street names, a line
    through that name's distinct snap points (sorted west to east), in British National Grid. Not a survey
    of the streets: enough to check the door and to draw something an officer recognises on the sheet."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    df = pd.read_csv(need(LEICS_CRIME), usecols=["Longitude", "Latitude", "Location"]).dropna()
    df["name"] = df["Location"].str.replace(r"^On or near\s*", "", regex=True).str.strip()
    df = df[(df["name"] != "") & ~df["name"].isin(["No Location", "Parking Area", "Supermarket", "Petrol Station"])]
    df = df[df["Longitude"].between(-1.25, -1.03) & df["Latitude"].between(52.56, 52.70)]  # Leicester and around
    pts = df.drop_duplicates(["name", "Longitude", "Latitude"]).copy()
    # one street per name and ~1 km square (a "High Street" in every town is not one line across the county)
    pts["gx"], pts["gy"] = (pts["Longitude"] // 0.015).astype(int), (pts["Latitude"] // 0.009).astype(int)
    sizes = pts.groupby(["name", "gx", "gy"]).size()
    keys = sizes[sizes >= 2].sort_values(ascending=False).index[:max_streets]
    lines = []
    for key, g in pts.set_index(["name", "gx", "gy"]).loc[list(keys)].groupby(level=[0, 1, 2]):
        xy = g[["Longitude", "Latitude"]].to_numpy()
        axis = 0 if np.ptp(xy[:, 0]) * 0.61 >= np.ptp(xy[:, 1]) else 1  # along the longer side (lon ~0.61 of lat)
        lines.append({"name": key[0], "geometry": shapely.LineString(xy[np.argsort(xy[:, axis], kind="stable")])})
    return gpd.GeoDataFrame(lines, geometry="geometry", crs=4326).to_crs(27700)


@pytest.fixture(scope="module")
def roads_gpkg(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("roads") / "roads.gpkg"
    record_roads().to_file(path, driver="GPKG", layer="roads")
    return path.read_bytes()


def roads_mixed_geojson() -> bytes:
    feats = [{"type": "Feature", "properties": {"road_name": "High Street"},
              "geometry": {"type": "LineString", "coordinates": [[-1.13, 52.63], [-1.12, 52.64]]}},
             {"type": "Feature", "properties": {"road_name": "A field"},
              "geometry": {"type": "Polygon", "coordinates": [[[-1.14, 52.63], [-1.13, 52.63], [-1.13, 52.64],
                                                               [-1.14, 52.63]]]}},
             {"type": "Feature", "properties": {"road_name": "London Road"},
              "geometry": {"type": "MultiLineString", "coordinates": [[[-1.12, 52.62], [-1.11, 52.63]],
                                                                      [[-1.11, 52.63], [-1.10, 52.635]]]}}]
    return json.dumps({"type": "FeatureCollection", "features": feats}).encode()


def test_road_layer_reprojected_named_and_replaced(store, roads_gpkg):
    from geodata import roads as rd
    from geodata.boundaries import BoundaryError

    rep = rd.add_roads(store, "roads", roads_gpkg, "roads.gpkg")
    assert rep["features"] > 300 and rep["rejected"] == 0 and rep["geometry_type"] == "MultiLineString"
    assert rep["name_field"] == "name" and rep["name_field_guessed"] and "27700" in rep["source_crs"]
    minx, miny, maxx, maxy = rep["bbox"]
    assert -1.3 < minx < maxx < -1.0 and 52.5 < miny < maxy < 52.75  # WGS84 after reprojection
    frame, matched = rd.roads_in_bbox(store, (-1.14, 52.63, -1.13, 52.64))
    assert 0 < matched < rep["features"] and {g.geom_type for g in frame["geometry"]} == {"MultiLineString"}
    mixed = rd.add_roads(store, "roads", roads_mixed_geojson(), "mixed.geojson")  # replaces the layer whole
    assert mixed["features"] == 2 and mixed["name_field"] == "road_name"
    assert mixed["rejects"] == [{"index": 1, "reason": "not a line (Polygon)"}]
    assert [r["features"] for r in rd.list_roads(store)] == [2]
    with pytest.raises(BoundaryError, match="name_field 'nope'"):
        rd.add_roads(store, "roads", roads_gpkg, "roads.gpkg", name_field="nope")
    assert [r["features"] for r in rd.list_roads(store)] == [2]  # a refused file changed nothing
    assert rd.delete_roads(store, "roads") == 2 and rd.list_roads(store) == []


ROAD_HOSTILE = {
    "empty file": ("empty.geojson", b"", "empty"),
    "polygons only": ("p.geojson", bowtie_geojson().replace(b'"LineString"', b'"Point"'), "no line features"),
    "broken JSON": ("broken.geojson", b'{"type":"FeatureCollection","features":[{"type":"Feat', "GDAL"),
    "deeply nested JSON": ("deep.geojson", b'{"type":"FeatureCollection","features":' + b"[" * 5000 + b"]" * 5000
                           + b"}", "nested"),
    "zip without a shapefile": ("x.zip", _zip({"readme.txt": b"nothing here"}), "exactly one .shp"),
}


def test_road_layers_on_the_service(live, roads_gpkg):
    """POST /roads (hostile files 4xx with a reason, nothing stored), GET /roads, the OGC collection of
    MultiLineStrings, DELETE /roads (admin)."""
    for case, (filename, data, words) in ROAD_HOSTILE.items():
        body, ctype = areas_body(filename, data, layer="hostile-roads")
        r = live.request("POST", "/roads", body, {"Content-Type": ctype})
        assert r.status == 422 and words.lower() in r.json()["error"]["message"].lower(), (case, r.body[:300])
    assert live.request("GET", "/roads").json()["layers"] == []
    body, ctype = areas_body("roads.gpkg", roads_gpkg, layer="streets")
    r = live.request("POST", "/roads", body, {"Content-Type": ctype})
    assert r.status == 201 and r.json()["collection"] == "roads-streets"
    assert [x["layer"] for x in live.request("GET", "/roads").json()["layers"]] == ["streets"]
    fc = live.request("GET", "/collections/roads-streets/items?f=json&limit=1000&bbox=-1.15,52.62,-1.12,52.65").json()
    assert fc["features"] and {f["geometry"]["type"] for f in fc["features"]} == {"MultiLineString"}
    assert all(f["properties"]["name"] for f in fc["features"])
    coll = live.request("GET", "/collections/roads-streets?f=json").json()
    assert coll["harmspot:kind"] == "lines"
    assert live.request("DELETE", "/roads/streets").status == 200
    assert live.request("DELETE", "/roads/streets").status == 404
