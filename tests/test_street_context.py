"""Street context per cell (top_locations, police-station and generic-point shares) and honest periods, on real
Leicestershire data.police.uk records; cross-checked against a plain pandas count of the same records."""
from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from geodata.harm import load_open_default
from geodata.locations import GENERIC_POINTS, POLICE_STATION
from geodata.store import StoreError
from hotspots.patrol import tasking
from hotspots.ranking.harmspots import harm_spots
from hotspots.ranking.query import HotspotQuery
from patrol_data import LEICS, leics_store


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    store = leics_store(tmp_path_factory, "context")
    yield store, load_open_default()
    store.close()


def _records(store, res: int, cells, start: str, end: str) -> pd.DataFrame:
    """The period's records of ``cells``, independently of the engine (a plain read and pandas)."""
    df = store.query_df(f"SELECT o.h3_{res} AS cell, o.location, k.category FROM offences o JOIN offence_keys k "
                        "USING (offence_key) WHERE o.dataset = ? AND o.occurred_from >= ? AND o.occurred_from < ?",
                        [LEICS, start, end])
    df = df[~df["category"].str.lower().str.contains("anti-social", na=False)]
    df["cell"] = df["cell"].to_numpy(np.uint64)
    return df[df["cell"].isin(cells)]


@pytest.mark.parametrize("resolution", [11, 10, 8])  
def test_top_locations_and_shares_match_a_pandas_count(env, resolution):
    store, w = env
    q = HotspotQuery(dataset=LEICS, preset="all-crime", top=40, resolution=resolution,
                     **{"from": "2022-01", "to": "2022-06"})
    res = harm_spots(store, q, w)
    cells = res.top_cells
    assert {"top_locations", "police_station_share", "generic_point_share"} <= set(cells.columns)
    recs = _records(store, resolution, set(cells["cell"].tolist()), "2022-01-01", "2022-07-01")
    clean = lambda s: s.fillna("").str.replace(r"^On or near\s*", "", regex=True).str.strip()  # noqa: E731
    recs["loc"] = clean(recs["location"])
    every = store.query_df(f"SELECT h3_{resolution} AS cell, location FROM offences WHERE dataset = ?", [LEICS])
    every["cell"] = every["cell"].to_numpy(np.uint64)
    every = every[every["cell"].isin(set(cells["cell"].tolist()))]
    n_all = every.assign(loc=clean(every["location"])).groupby(["cell", "loc"]).size().to_dict()
    for row in cells.itertuples():
        mine = recs[recs["cell"] == row.cell]
        assert len(mine) == row.count
        texts = mine[(mine["loc"] != "") & (mine["loc"] != "No Location")]["loc"].value_counts()
        # ties: by how often the text occurs among all the dataset's records in the cell, then by name
        expected = sorted(texts.items(), key=lambda kv: (-kv[1], -n_all[(row.cell, kv[0])], kv[0]))[:3]
        assert row.top_locations == [k for k, _ in expected]
        assert not any(t.startswith("On or near") for t in row.top_locations)
        assert row.police_station_share == pytest.approx((mine["loc"] == POLICE_STATION).mean(), abs=1e-4)
        assert row.generic_point_share == pytest.approx(mine["loc"].isin(GENERIC_POINTS).mean(), abs=1e-4)
    # real data has generic-point cells among the top ones (car parks, supermarkets)
    assert (cells["generic_point_share"] > 0).any()


@pytest.mark.parametrize("spec", [{"preset": "op-ark", "resolution": 10}, {"preset": "all-crime", "resolution": 11},
                                  {"preset": "community-violence", "rank_by": "count", "resolution": 8},
                                  {"offences": ["robbery", "drugs"], "bbox": (-1.2, 52.6, -1.1, 52.66)},
                                  {"preset": "all-crime", "top": None, "resolution": 9}])
def test_context_from_the_ranking_scan_equals_the_context_read(env, spec):
    """The observed ranking counts its returned cells' texts in its own scan (grouped by location); the same
    cells' context read separately from the store (what the forecast and the Dask executor do) is identical."""
    from hotspots.ranking.context import street_context
    from hotspots.ranking.plan import resolve_plan

    store, w = env
    q = HotspotQuery(dataset=LEICS, **{"top": 50, **spec}, **{"from": "2021-03", "to": "2021-11"})
    res = harm_spots(store, q, w)
    cells = res.top_cells
    assert len(cells) > 0
    read = street_context(store, resolve_plan(store, q, w), cells["cell"].to_numpy(np.uint64))
    pd.testing.assert_frame_equal(cells[["cell", "top_locations", "police_station_share", "generic_point_share"]]
                                  .reset_index(drop=True), read, check_dtype=False)


def test_clean_location_is_the_sql_cleaning(env):
    """geodata.locations.clean_location (Python, on grouped texts) equals clean_location_sql (DuckDB) on every
    distinct stored text, and on edge cases."""
    from geodata.locations import clean_location, clean_location_sql

    store, _ = env
    edge = ["On or near", "On or near  High Street ", "on or near\tX", " On or near X", "On or nearby", "",
            "No Location", "Station Road\n"]
    df = store.query_df(f"SELECT loc, {clean_location_sql('loc')} AS clean FROM (SELECT DISTINCT location AS loc "
                        "FROM offences UNION ALL SELECT unnest(?::VARCHAR[]) UNION ALL SELECT NULL)", [edge])
    assert len(df) > 1000
    assert [clean_location(v if isinstance(v, str) else None) for v in df["loc"]] == df["clean"].tolist()


def test_police_station_cells_left_out_of_tasking_by_default(env):
    store, w = env
    q = HotspotQuery(dataset=LEICS, method="observed", preset="all-crime", **{"from": "2019-12", "to": "2022-10"})
    params = dict(plan_from=date(2022, 11, 1), spots_per_area=40)
    default = tasking.build_pack(store, q, w, tasking.TaskingParams(**params))
    kept = tasking.build_pack(store, q, w, tasking.TaskingParams(include_police_stations=True, **params))
    n = default.meta()["police_stations"]["cells"]
    assert n > 0 and default.meta()["police_stations"]["included"] is False  # Leicestershire has station cells
    assert not default.spots["streets"].str.startswith(POLICE_STATION).any()
    assert kept.spots["streets"].str.startswith(POLICE_STATION).any()
    assert any("police station left out" in c for c in default.meta()["caveats"])
    assert {"police_station_share", "generic_point_share"} <= set(default.spots.columns)


def test_stale_lookback_is_warned_on_pack_and_sheet(env):
    from app.routes.patrol import patrol_sheet_html

    store, w = env
    q = HotspotQuery(dataset=LEICS, method="observed")
    fresh = tasking.build_pack(store, q, w, tasking.TaskingParams(plan_from=date(2022, 11, 1), spots_per_area=1))
    assert fresh.meta()["warnings"] == []
    stale = tasking.build_pack(store, q, w, tasking.TaskingParams(plan_from=date(2023, 3, 1), spots_per_area=1))
    warn = stale.meta()["warnings"]
    assert len(warn) == 1 and "STALE DATA" in warn[0] and "2022-10-31" in warn[0] and "121 days" in warn[0]
    assert stale.meta()["caveats"][0] == warn[0]
    page = patrol_sheet_html(stale, "OFFICIAL-SENSITIVE")
    assert "STALE DATA" in page and page.count("OFFICIAL-SENSITIVE") >= 2 * len(stale.spots["area_id"].unique())
    wide = tasking.build_pack(store, HotspotQuery(dataset=LEICS, preset="all-crime"), w,
                              tasking.TaskingParams(plan_from=date(2022, 11, 1), spots_per_area=60))
    n_generic = int((wide.spots["generic_point_share"] >= 0.5).sum())
    assert n_generic > 0 and patrol_sheet_html(wide).count("at generic points") == n_generic


def test_period_outside_the_data_says_so(env):
    store, w = env
    res = harm_spots(store, HotspotQuery(dataset=LEICS, **{"from": "2025-01", "to": "2025-03"}), w)
    meta = res.meta()
    assert res.total_count == 0 and meta["coverage"]["first_month"] == "2019-12"
    assert meta["coverage"]["last_month"] == "2022-10" and meta["coverage"]["month_only"] is True
    assert "outside the data" in meta["period_note"] and "2019-12 to 2022-10" in meta["no_records"]
    part = harm_spots(store, HotspotQuery(dataset=LEICS, **{"from": "2022-09", "to": "2022-12"}), w).meta()
    assert "only partly covered" in part["period_note"] and part["no_records"] is None
    inside = harm_spots(store, HotspotQuery(dataset=LEICS, **{"from": "2022-09", "to": "2022-10"}), w).meta()
    assert inside["period_note"] is None
    with pytest.raises(StoreError, match="month-only"):
        harm_spots(store, HotspotQuery(dataset=LEICS, days=[5]), w)


def test_patrol_sheet_draws_a_road_layer(env):
    from app.routes.patrol import patrol_sheet_html, sheet_roads
    from geodata import roads as rd
    from tests.test_boundaries import record_roads

    store, w = env
    pack = tasking.build_pack(store, HotspotQuery(dataset=LEICS, method="observed"), w,
                              tasking.TaskingParams(plan_from=date(2022, 11, 1), spots_per_area=3))
    assert sheet_roads(store) is None  # no road layer: the sheet draws none
    plain = patrol_sheet_html(pack)
    assert 'stroke="#9a9a9a"' not in plain
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "roads.gpkg"
        record_roads().to_file(path, driver="GPKG", layer="roads")
        rd.add_roads(store, "roads", path.read_bytes(), "roads.gpkg")
    page = patrol_sheet_html(pack, "OFFICIAL", sheet_roads(store))
    assert page.count('stroke="#9a9a9a"') >= 1  # the Leicester sheet at least (the roads cover Leicester)
    rd.delete_roads(store, "roads")


def test_every_format_carries_the_street_context(api):
    """JSON (list), CSV and the OGC door ('; '-joined text, for QGIS) carry the context fields; meta coverage."""
    import csv
    import io

    params = {"dataset": "essex-sample", "preset": "all-crime", "top": 20}
    body = api.get("/hotspots", params=params).json()
    assert body["coverage"]["first_month"] and body["coverage"]["month_only"] is True
    cell = body["cells"][0]
    assert isinstance(cell["top_locations"], list) and cell["top_locations"]
    assert 0 <= cell["police_station_share"] <= 1 and 0 <= cell["generic_point_share"] <= 1
    rows = list(csv.DictReader(io.StringIO(api.get("/hotspots", params={**params, "format": "csv"}).text)))
    assert rows[0]["top_locations"] == "; ".join(cell["top_locations"])
    assert {"police_station_share", "generic_point_share"} <= set(rows[0])
    gj = api.get("/hotspots.geojson", params=params).json()
    assert gj["features"][0]["properties"]["top_locations"] == cell["top_locations"]
    ogc = api.get("/collections/harm-spots/items", params={**params, "f": "json", "limit": 20}).json()
    assert ogc["features"][0]["properties"]["top_locations"] == "; ".join(cell["top_locations"])
    refused = api.get("/hotspots", params={**params, "hours": "20-23"})
    assert refused.status_code == 409 and "month-only" in refused.json()["error"]["message"]


CELLS = "h3_7, h3_8, h3_9, h3_10, h3_11"


def _direct_location_counts(store) -> pd.DataFrame:
    df = store.query_df(f"SELECT dataset, {CELLS}, location, count(*) AS n FROM offences GROUP BY ALL")
    return df.sort_values(["dataset", *CELLS.split(", "), "location"], na_position="first").reset_index(drop=True)


def _kept_location_counts(store) -> pd.DataFrame:
    df = store.query_df(f"SELECT dataset, {CELLS}, location, sum(n)::BIGINT AS n FROM cell_locations GROUP BY ALL")
    return df.sort_values(["dataset", *CELLS.split(", "), "location"], na_position="first").reset_index(drop=True)


def test_cell_locations_count_every_stored_record(tmp_path, essex_parsed):
    """The per-cell location counts kept at ingest (geodata.cell_locations) equal a direct count of the stored
    offences: after one batch, after a second batch of duplicates (none stored, none counted) and another
    dataset, and for a store made before the table existed (counted once when opened for writing)."""
    from dataclasses import replace

    from geodata.store import Store

    parsed, area = essex_parsed
    store = Store(tmp_path / "s.duckdb")
    store.save_weights(load_open_default())
    store.ingest("essex", parsed, area)
    pd.testing.assert_frame_equal(_kept_location_counts(store), _direct_location_counts(store), check_dtype=False)
    half = parsed.table.slice(0, parsed.table.num_rows // 2)  # every row a duplicate of a stored one
    again = store.ingest("essex", replace(parsed, table=half, rejects=parsed.rejects.iloc[:0]))
    assert again.stored == 0 and again.duplicates == half.num_rows
    store.ingest("other", parsed, area)
    pd.testing.assert_frame_equal(_kept_location_counts(store), _direct_location_counts(store), check_dtype=False)
    assert int(store.scalar("SELECT sum(n) FROM cell_locations WHERE dataset = 'essex'")) == \
        int(store.scalar("SELECT count(*) FROM offences WHERE dataset = 'essex'"))
    # an older store: no counts and no stamp; opened for writing, it is counted once
    with store.write_lock, store.transaction() as cur:
        cur.execute("DELETE FROM cell_locations")
        cur.execute("DELETE FROM store_meta WHERE key = 'cell_locations'")
    store.close()
    reopened = Store(tmp_path / "s.duckdb")
    try:
        assert reopened.has_cell_locations()
        pd.testing.assert_frame_equal(_kept_location_counts(reopened), _direct_location_counts(reopened),
                                      check_dtype=False)
    finally:
        reopened.close()


@pytest.mark.parametrize("resolution", [11, 10, 8])
def test_street_context_without_kept_counts_is_the_same(tmp_path, essex_parsed, resolution):
    """An older store opened read-only (no kept counts, and none can be written) gives the same context,
    counted from the offences."""
    from geodata.store import Store
    from hotspots.ranking.context import street_context
    from hotspots.ranking.plan import resolve_plan

    parsed, area = essex_parsed
    path = tmp_path / "s.duckdb"
    store = Store(path)
    w = load_open_default()
    store.save_weights(w)
    store.ingest("essex", parsed, area)
    q = HotspotQuery(dataset="essex", preset="all-crime", top=30, resolution=resolution)
    cells = harm_spots(store, q, w).top_cells["cell"].to_numpy(np.uint64)
    kept = street_context(store, resolve_plan(store, q, w), cells)
    with store.write_lock, store.transaction() as cur:
        cur.execute("DELETE FROM store_meta WHERE key = 'cell_locations'")
    store.close()
    old = Store(path, read_only=True)
    try:
        assert not old.has_cell_locations()
        direct = street_context(old, resolve_plan(old, q, w), cells)
    finally:
        old.close()
    pd.testing.assert_frame_equal(direct, kept)
    assert kept["top_locations"].map(len).gt(0).all()


@pytest.mark.parametrize("resolution", [7, 10, 11])
def test_kept_centres_are_the_computed_centres(env, resolution):
    """The ranked cells' lat/lon come from the location index's kept centres (geodata.cell_locations): the same
    values as computing them (geodata.cells.cell_centres), for the dataset's cells and for cells it lacks."""
    from geodata.cell_locations import location_index
    from geodata.cells import cell_centres

    store, w = env
    res = harm_spots(store, HotspotQuery(dataset=LEICS, preset="all-crime", resolution=resolution, top=20), w)
    ids = res.cells["cell"].to_numpy(np.uint64)
    lat, lon = cell_centres(ids)
    np.testing.assert_array_equal(res.cells["lat"].to_numpy(float), lat)
    np.testing.assert_array_equal(res.cells["lon"].to_numpy(float), lon)
    index = location_index(store, LEICS, resolution)
    import h3

    elsewhere = np.array([h3.str_to_int(h3.latlng_to_cell(51.5, -0.12, resolution))], dtype=np.uint64)  # London
    mixed = np.concatenate([elsewhere, ids[:5], elsewhere])
    got = index.centres(mixed)
    want = cell_centres(mixed)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
