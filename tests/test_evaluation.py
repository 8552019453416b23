"""Evaluation: a planted patrol effect is recovered by the matched DiD within its interval; the 48-hour check
finds a planted short-run drop with timed data and refuses month-only data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from geodata.cells import AREA_RESOLUTION, cell_centres, polygon_cells
from geodata.harm import load_open_default
from geodata.store import Store
from hotspots.patrol import evaluation, patrols
from hotspots.ranking.query import HotspotQuery
from patrol_data import ingest_rows, leics_store, two_districts

DS = "synthetic-timed"
BEFORE = pd.Timestamp("2023-01-01")
SPLIT = pd.Timestamp("2023-04-01")
END = pd.Timestamp("2023-07-01")
HIGH, LOW = 0.30, 0.05  # offences per cell per day
EFFECT = 0.6  # treated spots keep 60 % of their rate after patrols start: a 40 % fall
PER_DISTRICT_HIGH, TREATED_PER_DISTRICT = 200, 20


def _poisson_times(rng, cells: np.ndarray, rate: np.ndarray, start: pd.Timestamp, end: pd.Timestamp):
    days = (end - start).days
    n = rng.poisson(rate * days)
    cell = np.repeat(cells, n)
    t = start + pd.to_timedelta(rng.uniform(0, days * 1440, n.sum()).astype(int), unit="min")
    return cell, t


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rng = np.random.default_rng(42)
    store = Store(tmp_path_factory.mktemp("evaluation") / "harmspot.duckdb")
    weights = load_open_default()
    store.save_weights(weights)
    two_districts(store)
    boxes = store.query_df("SELECT feature_id, geometry_wkb FROM areas WHERE layer = 'districts' ORDER BY feature_id")
    high, low, treated = [], [], []
    for wkb in boxes["geometry_wkb"]:
        cells = polygon_cells([shapely.to_wkb(shapely.from_wkb(bytes(wkb)).buffer(-0.004))], AREA_RESOLUTION)[0]
        pick = rng.choice(cells, 2 * PER_DISTRICT_HIGH, replace=False)
        high.append(pick[:PER_DISTRICT_HIGH])
        low.append(pick[PER_DISTRICT_HIGH:])
        # treat every tenth high cell (spread out, so 1-ring buffers leave plenty of comparison cells)
        treated.append(pick[:PER_DISTRICT_HIGH][::PER_DISTRICT_HIGH // TREATED_PER_DISTRICT])
    high, low, treated = np.concatenate(high), np.concatenate(low), np.concatenate(treated)
    is_t = np.isin(high, treated)
    cells = np.concatenate([high, low])
    rate_b = np.concatenate([np.full(len(high), HIGH), np.full(len(low), LOW)])
    rate_a = rate_b.copy()
    rate_a[: len(high)][is_t] *= EFFECT
    c1, t1 = _poisson_times(rng, cells, rate_b, BEFORE, SPLIT)
    c2, t2 = _poisson_times(rng, cells, rate_a, SPLIT, END)
    cell = np.concatenate([c1, c2])
    t = t1.append(t2)
    lat, lon = cell_centres(cell.astype(np.uint64))
    rows = pd.DataFrame({"record_id": [f"r{i}" for i in range(len(cell))], "occurred": t.strftime("%Y-%m-%d %H:%M"),
                         "longitude": lon.round(6), "latitude": lat.round(6), "category": "Robbery",
                         "location": "On or near Test Street"})
    ingest_rows(store, DS, rows)
    yield {"store": store, "weights": weights, "treated": treated, "high": high,
           "spot_ids": ["HS-" + format(int(c), "x") for c in treated]}
    store.close()


def _query() -> HotspotQuery:
    return HotspotQuery(dataset=DS, preset="all-crime")


def test_planted_effect_recovered_within_interval(world):
    ev = evaluation.evaluate(world["store"], _query(), world["weights"], world["spot_ids"],
                             before=("2023-01", "2023-03"), after=("2023-04", "2023-06"), controls_per_spot=2)
    assert ev.n_treated == len(world["spot_ids"]) and ev.n_unmatched == 0
    true_count = (EFFECT - 1) * HIGH * evaluation.RATE_DAYS  # change per spot per 28 days: -3.36
    count = ev.effects["count"]
    lo, hi = count.ci_bootstrap
    assert lo <= true_count <= hi, (count.did, count.ci_bootstrap)
    assert hi < 0  # the fall is detected
    assert count.ci_t[0] <= true_count <= count.ci_t[1]
    # harm is counts x the category weight (every offence here is a robbery)
    w = ev.pairs["t_harm_b"].sum() / ev.pairs["t_count_b"].sum()
    harm = ev.effects["harm"]
    assert harm.ci_bootstrap[0] <= true_count * w <= harm.ci_bootstrap[1]
    assert abs(ev.balance["standardised_difference_harm"]) < 0.25
    # same district, not patrolled, not touching a patrolled spot
    controls = {c for cs in ev.pairs["controls"] for c in cs.split(";")}
    assert not controls & {s[3:] for s in world["spot_ids"]}


def test_no_effect_interval_covers_zero(world):
    """Spots that were never treated (untreated high-rate cells, picked without looking at outcomes)."""
    store = world["store"]
    untreated = world["high"][~np.isin(world["high"], world["treated"])]
    fake = untreated[3::9][:40]
    ev = evaluation.evaluate(store, _query(), world["weights"], ["HS-" + format(int(c), "x") for c in fake],
                             before=("2023-01", "2023-03"), after=("2023-04", "2023-06"))
    lo, hi = ev.effects["count"].ci_bootstrap
    assert lo <= 0 <= hi


def test_48_hour_check_with_times(world, tmp_path):
    """Patrols every three days at the treated spots; offences in the 48 h after a patrol are halved."""
    rng = np.random.default_rng(5)
    store = Store(tmp_path / "h48.duckdb")
    weights = world["weights"]
    store.save_weights(weights)
    two_districts(store)
    cells = world["treated"]
    ends = SPLIT + pd.to_timedelta(np.arange(0, 90, 3), unit="D") + pd.Timedelta(hours=20)
    c, t = _poisson_times(rng, cells, np.full(len(cells), 1.0), SPLIT, END)
    frame = pd.DataFrame({"cell": c, "t": t}).sort_values("t")
    last = pd.merge_asof(frame, pd.DataFrame({"last_end": ends}), left_on="t", right_on="last_end")
    after = (last["t"] - last["last_end"] < pd.Timedelta(hours=48)).fillna(False).to_numpy()
    keep = ~after | (rng.uniform(size=len(frame)) < 0.5)
    frame = frame[keep]
    lat, lon = cell_centres(frame["cell"].to_numpy(np.uint64))
    ingest_rows(store, DS, pd.DataFrame({
        "record_id": [f"x{i}" for i in range(len(frame))], "occurred": frame["t"].dt.strftime("%Y-%m-%d %H:%M"),
        "longitude": lon.round(6), "latitude": lat.round(6), "category": "Robbery", "location": "Test Street"}))
    rows = [{"spot_id": "HS-" + format(int(cell), "x"), "team": "A", "start": (e - pd.Timedelta(minutes=15)).isoformat(),
             "end": e.isoformat()} for cell in cells for e in ends]
    patrols.record(store, rows)
    log = patrols.patrols(store)
    out = evaluation.window_48h(store, HotspotQuery(dataset=DS, preset="all-crime"), weights, log,
                                (SPLIT.date(), END.date()))
    store.close()
    assert out["supported"]
    lo, hi = out["count_rate_ratio_ci95"]
    assert lo <= 0.5 <= hi and hi < 1.0, out
    assert 0.35 < out["harm_rate_ratio"] < 0.65


def test_48_hour_check_refuses_month_only(tmp_path_factory):
    store = leics_store(tmp_path_factory, "eval-leics")
    log = pd.DataFrame({"spot_id": ["HS-8a195cb62cc7fff"], "end_at": [pd.Timestamp("2021-06-10 12:00")]})
    out = evaluation.window_48h(store, HotspotQuery(dataset="leics"), load_open_default(), log,
                                (pd.Timestamp("2021-06-01").date(), pd.Timestamp("2021-07-01").date()))
    store.close()
    assert out["supported"] is False
    assert "month-only" in out["statement"] and "cannot" in out["statement"]
