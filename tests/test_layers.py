"""geodata.layers: CSV (lon/lat, easting/northing), GeoJSON, GeoPackage; bad rows; edge buffer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from geodata.ingest import StudyArea
from geodata.layers import LayerError, PointLayer, load_layer, plural_of

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "poi"


def test_lonlat_csv_with_bad_rows(tmp_path):
    p = tmp_path / "bars.csv"
    p.write_text("name,Latitude,Longitude\n"
                 "Good,51.73,0.47\n"
                 "Missing,\\N,\\N\n"
                 "Blank,,\n"
                 "Text,51.7,abc\n"
                 "Range,151.7,0.4\n"
                 "Swapped,0.47,51.73\n"
                 "Good2,51.74,0.48\n")
    lay = load_layer(p, "bars", "bar")
    assert len(lay) == 2 and lay.read == 7
    assert lay.coordinate_columns == ("Longitude", "Latitude")
    rej = dict(zip(lay.rejects["line"], lay.rejects["reason"]))
    assert set(rej) == {3, 4, 5, 6, 7}
    assert "missing coordinates" in rej[3] and "missing coordinates" in rej[4]
    assert "Longitude is not a number ('abc')" in rej[5]
    assert "out of range" in rej[6]
    assert "swapped" in rej[7]
    assert np.all((lay.x > 500_000) & (lay.x < 600_000))
    assert list(lay.labels) == ["Good", "Good2"]
    assert lay.plural == "bars"
    with pytest.raises(LayerError, match="line 3"):
        load_layer(p, "bars", "bar", strict=True)


def test_easting_northing_csv_and_no_columns(tmp_path):
    p = tmp_path / "stops.csv"
    p.write_text("id,Easting,Northing\n1,570000,206000\n2,570100,\n3,9999999,206000\n")
    lay = load_layer(p, "stops", "bus stop")
    assert len(lay) == 1 and lay.crs == "EPSG:27700"
    assert abs(lay.lat[0] - 51.73) < 0.05
    assert set(lay.rejects["line"]) == {3, 4}
    assert lay.plural == "bus stops"
    q = tmp_path / "nothing.csv"
    q.write_text("a,b\n1,2\n")
    with pytest.raises(LayerError, match="no coordinate columns"):
        load_layer(q)
    r = tmp_path / "allbad.csv"
    r.write_text("lat,lon\n,\n")
    with pytest.raises(LayerError, match="no row has usable coordinates"):
        load_layer(r)


def test_geojson_and_gpkg(tmp_path):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "A"}, "geometry": {"type": "Point", "coordinates": [0.47, 51.73]}},
        {"type": "Feature", "properties": {"name": "B"}, "geometry": None},
        {"type": "Feature", "properties": {"name": "C"}, "geometry": {
            "type": "Polygon", "coordinates": [[[0.48, 51.74], [0.481, 51.74], [0.481, 51.741], [0.48, 51.74]]]}},
    ]}
    p = tmp_path / "pubs.geojson"
    p.write_text(json.dumps(fc))
    lay = load_layer(p, "pubs", "pub")
    assert len(lay) == 2
    assert list(lay.rejects["reason"]) == ["missing geometry"]
    assert "non-point" in lay.source
    import geopandas as gpd

    g = gpd.GeoDataFrame({"name": ["x", "y"]}, geometry=gpd.points_from_xy([570000, 571000], [206000, 207000]),
                         crs=27700)
    gp = tmp_path / "atm.gpkg"
    g.to_file(gp, driver="GPKG")
    lay2 = load_layer(gp, "atm", "ATM")
    assert len(lay2) == 2 and np.allclose(lay2.x, [570000, 571000])


def test_edge_buffer_keeps_nearby_outside_points(tmp_path):
    # study area: a 2 km box; a point 300 m outside is kept (buffer 400 m), one 1 km outside is dropped
    lay0 = PointLayer.from_xy("p", "p", np.array([571000.0, 573300.0, 574000.0]), np.array([207000.0] * 3))
    from geodata.cells import bng_to_lonlat

    lon, lat = bng_to_lonlat(np.array([570000, 573000, 573000, 570000, 570000.0]),
                             np.array([206000, 206000, 208000, 208000, 206000.0]))
    area = StudyArea(bbox=(lon.min(), lat.min(), lon.max(), lat.max()),
                     polygon=shapely.Polygon(np.column_stack([lon, lat])), name="box")
    p = tmp_path / "p.csv"
    p.write_text("lon,lat\n" + "\n".join(f"{a},{b}" for a, b in zip(lay0.lon, lay0.lat)) + "\n")
    lay = load_layer(p, "p", "p", area=area, buffer_m=400)
    assert len(lay) == 2 and lay.outside == 1


def test_where_filter_and_headerless(tmp_path):
    p = tmp_path / "v.csv"
    p.write_text("name,business_type,lat,lon\nA,Pub,51.7,0.4\nB,Restaurant,51.7,0.41\n")
    assert len(load_layer(p, "pubs", "pub", where={"business_type": "Pub"})) == 1
    t = tmp_path / "names.tsv"
    t.write_text("A\t1\t51.7\t0.4\nB\t2\t\t\n")
    lay = load_layer(t, "pubs", "pub", columns=["name", "osm_id", "lat", "lon"])
    assert len(lay) == 1 and list(lay.rejects["line"]) == [2]
    assert plural_of("pub") == "pubs" and plural_of("nightclub") == "nightclubs" and plural_of("bus") == "buses"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/poi is absent (real POI files not mounted)")
def test_shared_poi_quirks():
    st = load_layer(SHARED / "essex_railway_stations.csv", "stations", "railway station")
    assert st.coordinate_columns == ("long", "lat") and len(st) == 74
    assert 51.4 < st.lat.min() and st.lon.max() < 1.4  # lat/long not swapped
    fh = load_layer(SHARED / "essex_fhrs_pubs_restaurants.csv", "fhrs", "venue")
    assert len(fh) + len(fh.rejects) == 2199 and len(fh.rejects) == 132
    assert fh.rejects["reason"].str.startswith("missing coordinates").all()
    pubs = load_layer(SHARED / "essex_osm_pubs.csv", "pubs", "pub")
    assert len(pubs) == 335 and pubs.coordinate_columns == ("lon", "lat")


def test_sample_poi_files_load():
    sample = Path(__file__).resolve().parents[1] / "sample" / "poi"
    v = load_layer(sample / "chelmsford_fhrs_pubs_restaurants.csv", "fhrs", "venue")
    assert len(v) == 291 and len(v.rejects) == 4
    assert load_layer(sample / "essex_railway_stations.csv", "st", "railway station").coordinate_columns == ("long", "lat")
