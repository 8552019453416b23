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


# ---------------------------------------------------------------- bounded memory on a national layout (issue 14)

def national_layout_csv(offsets=((0.0, 0.0), (0.0, -1.0), (0.0, 1.0), (-1.5, 0.5))) -> bytes:
    """One month of Leicestershire copied to four places far apart, each copy keeping its LSOA codes and names
    (fresh Crime IDs), as bench/bench_national.py lays the real rows over England and Wales: one district or
    LSOA name occurs in several places, so a feature's cells are far apart and a district is several counties."""
    import io

    df = pd.read_csv(io.BytesIO(leics_csv(("2022-10",))), dtype=str, keep_default_na=False)
    lon, lat = pd.to_numeric(df["Longitude"], errors="coerce"), pd.to_numeric(df["Latitude"], errors="coerce")
    parts = []
    for k, (dx, dy) in enumerate(offsets):
        p = df.copy()
        p["Longitude"] = (lon + dx).map(lambda v: "" if pd.isna(v) else f"{v:.6f}")
        p["Latitude"] = (lat + dy).map(lambda v: "" if pd.isna(v) else f"{v:.6f}")
        p["Crime ID"] = [f"copy{k}-{i}" if cid else "" for i, cid in enumerate(p["Crime ID"])]
        parts.append(p)
    return pd.concat(parts).to_csv(index=False).encode()


def _layers(s, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    cells = s.query_df("SELECT layer, feature_id, h3_10, lat, lon FROM area_cells WHERE layer LIKE ? ORDER BY rowid",
                       [f"%@{dataset}"])
    areas = s.query_df("SELECT * FROM areas WHERE layer LIKE ? ORDER BY layer, feature_id", [f"%@{dataset}"])
    return cells, areas


def test_automatic_areas_are_built_in_bounded_slices(tmp_path, monkeypatch):
    """The fill grid's hexagons and res-10 children are made a slice at a time, the study area is read a slice
    at a time, and the layers are the same whatever the slice: with slices of 2,048 cells (so every district here
    is dissolved in several slices) the stored cells are identical, row for row, to those built with the default
    slices; LSOA outlines are the same point sets and the smoothed district outlines agree to 0.1 % of their area."""
    import geodata.auto_areas as aa
    from geodata.harm import load_open_default
    from geodata.ingest import parse_files
    from geodata.store import Store

    csv = national_layout_csv()

    def build(name: str):
        s = Store(tmp_path / f"{name}.duckdb")
        s.save_weights(load_open_default())
        s.ingest("nat", parse_files([("nat.csv", csv)]))
        return s

    whole = build("whole")
    small = 2048
    seen: dict[str, list[int]] = {"_hexagons": [], "_children_paired": [], "parents": []}
    for name in seen:
        fn = getattr(aa, name)

        def spy(cells, *a, _fn=fn, _name=name, **k):
            seen[_name].append(len(cells))
            return _fn(cells, *a, **k)
        monkeypatch.setattr(aa, name, spy)
    monkeypatch.setattr(aa, "SLICE", small)
    monkeypatch.setattr(aa, "GRID_SLICE", small)
    monkeypatch.setattr(aa, "HEX_SLICE", small)
    sliced = build("sliced")
    try:
        lad_cells = sliced.scalar("SELECT count(*) FROM area_cells WHERE layer = 'lad@nat'")
        assert lad_cells > 50 * small  # the layers are far larger than a slice ...
        assert len(seen["_children_paired"]) > 10 and len(seen["_hexagons"]) > 10
        # ... yet no step was handed more than a slice (the record cells' parents are one call, in the grid)
        assert max(seen["_hexagons"]) <= small and max(seen["_children_paired"]) <= small
        assert sorted(seen["parents"])[-2] <= small
        (c1, a1), (c2, a2) = _layers(whole, "nat"), _layers(sliced, "nat")
        pd.testing.assert_frame_equal(c1, c2)
        pd.testing.assert_frame_equal(a1.drop(columns="geometry_wkb"), a2.drop(columns="geometry_wkb"))
        g1 = shapely.from_wkb(np.array([bytes(b) for b in a1["geometry_wkb"]], dtype=object))
        g2 = shapely.from_wkb(np.array([bytes(b) for b in a2["geometry_wkb"]], dtype=object))
        lsoa = (a1["layer"] == "lsoa@nat").to_numpy()
        assert shapely.equals(g1[lsoa], g2[lsoa]).all()
        diff = shapely.area(shapely.symmetric_difference(g1[~lsoa], g2[~lsoa])) / shapely.area(g1[~lsoa])
        assert (diff < 1e-3).all(), diff
        assert sliced.areas("lad@nat")["name"].tolist() == sorted(whole.areas("lad@nat")["name"])
    finally:
        whole.close()
        sliced.close()


def test_automatic_areas_memory_follows_the_slices(tmp_path, monkeypatch):
    """Python's peak memory (tracemalloc: NumPy, pandas and Python objects; GEOS hexagons are not traced) while
    rebuilding the layers of the national layout, with slices of 4,096 cells, stays under 12 bytes per res-10 cell
    of the study area (the fill grid's candidates: one res-9 id, its BNG centre and a key per 7 study cells): no
    step holds the study area's res-10 cells, a layer's cells with their centres or its hexagons at once. Measured: 21.6 MB = 9.3 bytes per study cell; the code before the issue 14 fix,
    which held the study area, each layer's cells with centres and its hexagons whole, 106 MB = 46 bytes."""
    import tracemalloc

    import geodata.auto_areas as aa
    from geodata.harm import load_open_default
    from geodata.ingest import parse_files
    from geodata.store import Store

    monkeypatch.setattr(aa, "SLICE", 4096)
    monkeypatch.setattr(aa, "GRID_SLICE", 4096)
    monkeypatch.setattr(aa, "HEX_SLICE", 4096)
    s = Store(tmp_path / "s.duckdb")
    s.save_weights(load_open_default())
    s.ingest("nat", parse_files([("nat.csv", national_layout_csv())]))
    try:
        cells = s.scalar("SELECT count(*) FROM area_cells WHERE layer = 'lad@nat'")
        study = s.scalar("SELECT count(*) FROM area_cells WHERE layer = '__dataset__'")
        with s.write_lock, s.transaction() as cur:
            tracemalloc.start()
            try:
                summary = aa.derive_auto_areas(cur, "nat")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert cur.execute("SELECT count(*) FROM area_cells WHERE layer = 'lad@nat'").fetchall()[0][0] == cells
        assert summary["lad"] > 3 and summary["lsoa"] > 100
        assert peak < 12 * study, (peak, study, peak / study)
    finally:
        s.close()
