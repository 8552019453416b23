"""Tasking pack on real data (Leicestershire, data.police.uk): stable ids, capacity, statuses, CSV columns."""
from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geodata.harm import load_open_default
from geodata.store import NotStored
from hotspots.patrol import tasking as tasking
from hotspots.ranking.query import HotspotQuery
from patrol_data import LEICS, leics_store

DOC = Path(__file__).resolve().parent.parent / "docs" / "patrol-planning.md"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    store = leics_store(tmp_path_factory, "tasking")
    yield store, load_open_default()
    store.close()


def _params(**kw) -> tasking.TaskingParams:
    return tasking.TaskingParams(plan_from=date(2022, 11, 1), **kw)


def test_pack_respects_capacity_and_has_stable_ids(env):
    store, w = env
    q = HotspotQuery(dataset=LEICS, method="observed")
    pack = tasking.build_pack(store, q, w, _params(spots_per_area=4))
    s = pack.spots
    assert pack.meta()["lookback"] == {"from": "2022-10-01", "to": "2022-10-31", "rule": "last full month of data"}
    assert s.groupby("area_id").size().max() <= 4
    assert len(s) == 9 * 4  # nine districts, each with enough harm cells
    assert s["spot_id"].str.fullmatch(r"HS-[0-9a-f]{15}").all() and s["spot_id"].is_unique
    assert (s["spot_id"] == "HS-" + s["h3"]).all()
    assert (s["area_rank"] <= 4).all() and sorted(s["rank"]) == list(range(1, len(s) + 1))
    assert s["streets"].str.len().gt(0).mean() > 0.9 and not s["streets"].str.contains("On or near").any()
    assert (s["peak_hours"] == tasking.MONTH_ONLY_PEAK).all()  # police.uk: no times, and it says so
    assert (s["visits_planned"] == 28).all() and (s["minutes_planned"] == 420).all()
    # the same data gives the same ids
    again = tasking.build_pack(store, q, w, _params(spots_per_area=4))
    assert again.spots["spot_id"].tolist() == s["spot_id"].tolist()


def test_pack_ranks_by_the_forecast_by_default(env):
    """Tasking plans the next period: its spots are the forecast's unless method=observed is asked for."""
    from hotspots.ranking.harmspots import harm_spots

    store, w = env
    pack = tasking.build_pack(store, HotspotQuery(dataset=LEICS), w, _params(spots_per_area=3))
    meta, s = pack.meta(), pack.spots
    assert meta["method"] == "forecast" and meta["forecast"]["forecast_period"] == {"from": "2022-11-01",
                                                                                   "to": "2022-11-30"}
    assert meta["lookback"]["from"] == "2019-12-01" and meta["lookback"]["to"] == "2022-10-31"
    assert meta["capacity"]["ranked_by"] == "forecast_harm" and (s["forecast_harm"] > 0).all()
    # inside each area the spots are the area's highest forecast cells, in order
    fc = harm_spots(store, HotspotQuery(dataset=LEICS, method="forecast", top=None), w).cells
    for area_id, g in s.groupby("area_id"):
        g = g.sort_values("area_rank")
        assert (np.diff(g["forecast_harm"].to_numpy()) <= 1e-9).all()
    top = fc.iloc[0]
    assert top["h3"] in set(s["h3"])  # the force's highest forecast cell is tasked
    observed = tasking.build_pack(store, HotspotQuery(dataset=LEICS, method="observed"), w, _params(spots_per_area=3))
    assert observed.meta()["method"] == "observed" and observed.spots["forecast_harm"].isna().all()
    assert set(observed.spots["h3"]) != set(s["h3"])


def test_total_minutes_cut_is_round_robin(env):
    store, w = env
    per_spot = 2 * 14 * 15
    pack = tasking.build_pack(store, HotspotQuery(dataset=LEICS), w, _params(total_minutes=per_spot * 12 + 100))
    s = pack.spots
    assert len(s) == 12 and pack.capacity["minutes_planned"] <= per_spot * 12 + 100
    assert s["area_id"].nunique() == 9  # every area keeps its #1 before any area gets a #2
    assert (s["area_rank"] <= 2).all()
    # a valid budget below one spot's dose: a pack with no spots that says why (not a refusal)
    none = tasking.build_pack(store, HotspotQuery(dataset=LEICS), w, _params(total_minutes=100))
    assert none.spots.empty and none.capacity["max_spots_by_minutes"] == 0
    assert any("less than one spot" in m for m in none.warnings)


def test_new_continuing_dropped_against_last_saved_pack(env):
    store, w = env
    first = tasking.build_pack(store, HotspotQuery(dataset=LEICS, **{"from": "2022-09", "to": "2022-09"}), w, _params())
    assert set(first.spots["status"]) == {"new"} and first.previous_pack_id is None
    pid = tasking.save_pack(store, first)
    second = tasking.build_pack(store, HotspotQuery(dataset=LEICS), w, _params())
    assert second.previous_pack_id == pid
    prev, now = set(first.spots["spot_id"]), set(second.spots["spot_id"])
    assert set(second.spots.loc[second.spots["status"] == "continuing", "spot_id"]) == prev & now
    assert set(second.spots.loc[second.spots["status"] == "new", "spot_id"]) == now - prev
    assert set(second.dropped["spot_id"]) == prev - now and (second.dropped["status"] == "dropped").all()
    assert (second.dropped["visits_planned"] == 0).all()
    counts = second.meta()["status_counts"]
    assert counts["continuing"] + counts["new"] == len(now) and counts["dropped"] == len(prev - now)


def test_csv_columns_are_documented(env):
    from app.routes.patrol import tasking_csv

    store, w = env
    pack = tasking.build_pack(store, HotspotQuery(dataset=LEICS), w, _params(spots_per_area=2))
    text = tasking_csv(pack)
    header = text.splitlines()[0].split(",")
    assert header == list(tasking.TASKING_FIELDS)
    frame = pd.read_csv(pd.io.common.StringIO(text))
    assert len(frame) == len(pack.rows)
    doc = DOC.read_text()
    for col in header:
        assert re.search(rf"\|\s*`{col}`\s*\|", doc), f"column {col} not documented in {DOC.name}"


def test_unknown_layer_is_a_clear_error(env):
    store, w = env
    with pytest.raises(NotStored, match="no area layer 'beats'"):  # the API answers 404
        tasking.build_pack(store, HotspotQuery(dataset=LEICS), w, _params(area_layer="beats"))
