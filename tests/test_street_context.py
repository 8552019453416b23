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


@pytest.mark.parametrize("resolution", [10, 8])  # 10: from kept cell records; 8: one direct scan
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


def test_cell_records_hold_every_column_the_plan_tests(env):
    """The street context applies the plan's own WHERE to the cells' kept records (CellRecords): every column
    scope_sql and selection_sql can name must be kept, for every preset and every optional filter."""
    import dataclasses
    import re

    from hotspots.ranking.context import PLAN_COLUMNS
    from hotspots.ranking.plan import resolve_plan
    from hotspots.ranking.presets import PRESETS

    store, w = env
    for name in PRESETS:
        plan = resolve_plan(store, HotspotQuery(dataset=LEICS, preset=name), w)
        q = plan.query.model_copy(update={"days": [1], "hours": [2], "bbox": (-1.2, 52.6, -1.1, 52.7)})
        plan = dataclasses.replace(plan, query=q, area_cells=np.array([1], dtype=np.uint64))
        used = set(re.findall(r"\bo\.([a-z_0-9]+)", plan.scope_sql()[0] + " " + plan.selection_sql()))
        assert used and used <= set(PLAN_COLUMNS), used - set(PLAN_COLUMNS)


def test_street_context_from_kept_cell_records_is_the_direct_count(env):
    """Kept cell records (second query, nothing read from the offences) give what the first query read; a query
    whose cells were prefetched by another gives the same as a cold store state."""
    from hotspots.ranking.context import CellRecords, street_context
    from hotspots.ranking.plan import resolve_plan

    store, w = env
    q = HotspotQuery(dataset=LEICS, preset="op-ark", top=25, **{"from": "2021-03", "to": "2021-08"})
    plan = resolve_plan(store, q, w)
    cells = harm_spots(store, q, w).cells["cell"].to_numpy(np.uint64)
    kept = store.cached(("street_context_cell_records",), CellRecords)
    cold = street_context(store, plan, cells[:25], prefetch=cells[25:100])
    fetches = kept.stats["fetches"]
    warm = street_context(store, plan, cells[:25])
    later = street_context(store, plan, cells[30:60])  # prefetched by the first call
    assert kept.stats["fetches"] == fetches  # nothing read from the offences for these
    pd.testing.assert_frame_equal(cold, warm)
    kept.__init__()  # forget every cell: the same frames from a fresh read
    pd.testing.assert_frame_equal(street_context(store, plan, cells[30:60]), later)
    pd.testing.assert_frame_equal(street_context(store, plan, cells[:25]), cold)
