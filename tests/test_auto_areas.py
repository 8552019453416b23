"""Automatic districts and LSOAs from the records (no boundary file), checked against the real boundaries.

Leicestershire is ingested WITHOUT its boundaries; the ONS/OS boundaries in ../shared/data are used only as an
independent check of what the records gave: the district names, which district each record cell falls in,
and how well the approximate outlines overlap the true districts.
"""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import shapely

from tests.conftest import LEICS, SHARED, need

MONTHS = ("2022-09", "2022-10")


def leics_csv(months=MONTHS) -> bytes:
    with gzip.open(need(LEICS), "rt", encoding="utf-8") as fh:
        header = fh.readline()
        rows = [line for line in fh if line.split(",", 2)[1] in months]
    return (header + "".join(rows)).encode()


@pytest.fixture(scope="module")
def leics_store(tmp_path_factory):
    from geodata.harm import load_open_default
    from geodata.ingest import parse_files
    from geodata.store import Store

    s = Store(tmp_path_factory.mktemp("auto") / "s.duckdb")
    s.save_weights(load_open_default())
    s.ingest("leics", parse_files([("leics.csv", leics_csv())]))
    yield s
    s.close()


@pytest.fixture(scope="module")
def true_lads():
    import geopandas as gpd

    lsoa = gpd.read_file(need(SHARED / "boundaries" / "leicestershire_lsoa2011.geojson"))
    lsoa["geometry"] = lsoa.geometry.make_valid()
    return lsoa.dissolve("LAD_NAME").reset_index()[["LAD_NAME", "geometry"]]


def test_lad_name_from_lsoa_name():
    from geodata.auto_areas import lad_from_lsoa_name

    got = lad_from_lsoa_name(pd.Series(["Maidstone 012A", "King's Lynn and West Norfolk 001B", "Bristol 060F",
                                        "Cardiff 049C", "no code", None]))
    assert got.tolist()[:4] == ["Maidstone", "King's Lynn and West Norfolk", "Bristol", "Cardiff"]
    assert got.isna().tolist()[4:] == [True, True]


def test_districts_named_from_the_records_match_the_real_ones(leics_store, true_lads):
    areas = leics_store.areas("lad@leics")
    assert sorted(areas["name"]) == sorted(true_lads["LAD_NAME"])  # the 9 districts, nothing stray
    geoms = shapely.from_wkb(np.array([bytes(b) for b in areas["geometry_wkb"]], dtype=object))
    assert set(shapely.get_type_id(geoms)) == {6}  # MultiPolygon only
    assert all(shapely.is_valid(geoms))


def test_record_cells_fall_in_the_right_district(leics_store, true_lads):
    """Each record cell's automatic district against point-in-polygon on the true district boundaries."""
    from geodata.cells import cell_centres

    ac = leics_store.query_df("""SELECT a.h3_10, a.feature_id FROM area_cells a
        WHERE a.layer = 'lad@leics' AND a.h3_10 IN (SELECT DISTINCT h3_10 FROM offences WHERE dataset = 'leics')""")
    lat, lon = cell_centres(ac["h3_10"].to_numpy(np.uint64))
    pts = shapely.points(lon, lat)
    truth = np.full(len(pts), None, dtype=object)
    for name, g in zip(true_lads["LAD_NAME"], true_lads.geometry):
        truth[shapely.contains(g, pts)] = name
    inside = pd.notna(truth)
    agree = (ac["feature_id"].to_numpy()[inside] == truth[inside]).mean()
    assert inside.mean() > 0.98 and agree > 0.98, (inside.mean(), agree)  # measured: 0.999 and 0.997


def test_outlines_overlap_the_true_districts(leics_store, true_lads):
    """Approximate outlines: drawn from records, clipped to the data's hull; each district's outline overlaps its
    true polygon far more than any other district's (intersection over union, in BNG metres)."""
    import geopandas as gpd

    areas = leics_store.areas("lad@leics")
    auto = gpd.GeoDataFrame(areas[["name"]], geometry=shapely.from_wkb(
        np.array([bytes(b) for b in areas["geometry_wkb"]], dtype=object)), crs=4326).to_crs(27700)
    true = true_lads.to_crs(27700).set_index("LAD_NAME").geometry
    for name, g in zip(auto["name"], auto.geometry):
        t = true[name]
        iou = g.intersection(t).area / g.union(t).area
        others = max(g.intersection(true[o]).area / g.area for o in true.index if o != name)
        assert iou > 0.65 and others < 0.25, (name, iou, others)  # measured IoU 0.71 (Rutland) .. 0.89


def test_lsoa_grouping(leics_store):
    lsoa = leics_store.areas("lsoa@leics")
    assert len(lsoa) > 500  # Leicestershire has 611 LSOAs (2011); two months of records touch most of them
    assert lsoa["feature_id"].str.match(r"^E0\d{7}$").all()
    assert lsoa["name"].str.match(r"^.+ \d{3}[A-Z]$").all()
    assert lsoa["district"].notna().all()
    # each record cell belongs to one LSOA and one district
    dup = leics_store.scalar("SELECT count(*) - count(DISTINCT h3_10) FROM area_cells WHERE layer = 'lsoa@leics'")
    assert dup == 0


def test_layer_choice_falls_back_to_automatic_districts(leics_store):
    from geodata.areas import choose_layer, resolve_area

    c = choose_layer(leics_store, "leics", "districts")
    assert (c.name, c.stored, c.approximate) == ("lad", "lad@leics", True)
    assert "no 'districts' layer is loaded" in c.rule
    layer, ids, _ = resolve_area(leics_store, "districts:Charnwood", "leics")
    assert (layer, ids) == ("lad@leics", ["Charnwood"])
    some = leics_store.areas("lsoa@leics").iloc[0]
    assert resolve_area(leics_store, some["name"], "leics") == ("lsoa@leics", [some["feature_id"]], some["name"])
    with pytest.raises(ValueError, match="automatic layers belong"):
        choose_layer(leics_store, "leics", "lad@other")


def test_extract_with_a_district_column(store):
    """A force extract mapped with a beat/district column builds the layer from that column."""
    from geodata.areas import choose_layer
    from geodata.ingest import parse_files

    rng = np.random.default_rng(1)
    n = 400
    beats = np.where(rng.random(n) < 0.5, "Beat North", "Beat South")
    lat = np.where(beats == "Beat North", 52.70, 52.60) + rng.normal(0, 0.01, n)
    lon = -1.13 + rng.normal(0, 0.01, n)
    csv = "urn,occurred,lon,lat,category,beat_code\n" + "".join(
        f"R{i},2024-03-0{1 + i % 9} 10:00,{lon[i]:.5f},{lat[i]:.5f},burglary,{beats[i]}\n" for i in range(n))
    store.ingest("extract", parse_files([("x.csv", csv.encode())], mapping={"district": "beat_code"}))
    c = choose_layer(store, "extract", "districts")
    areas = store.areas(c.stored)
    assert sorted(areas["name"]) == ["Beat North", "Beat South"]
    meta = store.query_df("SELECT source FROM area_layer_meta WHERE layer = ?", [c.stored])
    assert meta["source"].iloc[0] == "the records' district column"
