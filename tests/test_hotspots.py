"""Harm spots on the real Essex sample: hand-checked harm, ranking, presets' caveats, concentration, areas."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geodata.harm import load_open_default
from geodata.store import StoreError
from hotspots.ranking.harmspots import concentration_curve, harm_spots
from hotspots.ranking.query import HotspotQuery
from tests.conftest import SAMPLE


def test_hand_checked_harm_for_a_small_slice(loaded):
    """Southend town centre, March 2024, robbery + drugs: count by hand from the raw CSV, weigh by hand."""
    bbox = (0.70, 51.535, 0.725, 51.548)
    raw = pd.read_csv(SAMPLE, dtype={"Longitude": float, "Latitude": float})
    sl = raw[(raw.Month == "2024-03") & raw.Longitude.between(bbox[0], bbox[2]) & raw.Latitude.between(bbox[1], bbox[3])]
    n_rob = int((sl["Crime type"] == "Robbery").sum())
    n_drugs = int((sl["Crime type"] == "Drugs").sum())
    assert n_rob > 0 and n_drugs > 0
    # open table: Robbery 365 days; Drugs = (135,651 x 3 + 66,504 x 548) / 202,155 = 182.29 days
    expected = n_rob * 365 + n_drugs * 182.29
    q = HotspotQuery(dataset="essex", date_from="2024-03", date_to="2024-03", offences=["robbery", "drugs"],
                     bbox=bbox, top=None)
    r = harm_spots(loaded, q, load_open_default())
    assert r.total_count == n_rob + n_drugs
    assert r.total_harm == pytest.approx(expected, abs=0.01)
    assert r.cells["harm"].sum() == pytest.approx(expected, abs=0.01)
    assert r.weights_exact == "approximate" and r.time_precision == ["month"]


def test_cells_ranked_by_harm_and_shares(loaded):
    r = harm_spots(loaded, HotspotQuery(dataset="essex", preset="all-crime", top=20), load_open_default())
    cells = r.top_cells
    assert list(cells["rank"]) == list(range(1, 21))
    assert (np.diff(cells["harm"].to_numpy()) <= 0).all()
    assert r.cells["harm_share"].sum() == pytest.approx(1.0)
    assert ((cells["area_km2"] > 0.012) & (cells["area_km2"] < 0.017)).all()  # res 10 ~ 15,000 m2
    assert all(len(x) >= 1 for x in cells["top_offences"])
    assert r.period_rule == "last full month of data" and r.meta()["from"] == "2024-04-01"


def test_presets_say_what_they_could_not_apply(loaded):
    w = load_open_default()
    ark = harm_spots(loaded, HotspotQuery(dataset="essex", preset="op-ark"), w)
    assert any("public-place" in s for s in ark.not_applied)
    near = harm_spots(loaded, HotspotQuery(dataset="essex", preset="near-miss"), w)
    assert near.total_count == 0 and any("cannot identify any near-miss" in s for s in near.not_applied)
    # an hour window on month-only data is refused with the reason (it would match nothing)
    with pytest.raises(StoreError, match="month-only.*hour filter cannot be applied"):
        harm_spots(loaded, HotspotQuery(dataset="essex", preset="all-crime", hours=[22, 23]), w)
    mid = harm_spots(loaded, HotspotQuery(dataset="essex", preset="all-crime", **{"from": "2024-03-10"}), w)
    assert "2024-03 is left out" in mid.caveats[0] and "from=2024-03" in mid.caveats[0]


def test_asb_excluded_from_harm_but_countable(loaded):
    w = load_open_default()
    without = harm_spots(loaded, HotspotQuery(dataset="essex", preset="all-crime"), w)
    with_asb = harm_spots(loaded, HotspotQuery(dataset="essex", preset="all-crime", include_asb=True), w)
    assert with_asb.total_count > without.total_count
    assert with_asb.total_harm == pytest.approx(without.total_harm)
    asb_only = harm_spots(loaded, HotspotQuery(dataset="essex", offences=["anti-social-behaviour"]), w)
    assert asb_only.total_count > 0 and asb_only.total_harm == 0  # asked for by name: counted, no harm


def test_area_filter_and_resolution(loaded):
    w = load_open_default()
    all_r = harm_spots(loaded, HotspotQuery(dataset="essex", preset="all-crime", top=None), w)
    sth = harm_spots(loaded, HotspotQuery(dataset="essex", preset="all-crime", area="districts:E06000033", top=None), w)
    assert 0 < sth.total_count < all_r.total_count
    assert sth.domain_cells < all_r.domain_cells
    coarse = harm_spots(loaded, HotspotQuery(dataset="essex", preset="all-crime", resolution=8, top=None), w)
    assert coarse.total_harm == pytest.approx(all_r.total_harm)
    assert len(coarse.cells) < len(all_r.cells)


def test_concentration_curve():
    harm = np.array([50.0, 30, 10, 5, 5] + [0] * 95)
    c = concentration_curve(harm, domain_cells=100)
    assert c["of_all_cells_in_area"]["top_1pct"] == 0.5
    assert c["of_all_cells_in_area"]["top_5pct"] == 1.0
    assert c["of_cells_with_harm"]["top_1pct"] == 0.5  # ceil(1% of 5 cells) = 1 cell
    assert c["cells_with_harm"] == 5


def test_query_validation():
    with pytest.raises(ValueError):
        HotspotQuery(dataset="x", resolution=15)
    with pytest.raises(ValueError, match="after"):
        HotspotQuery(dataset="x", date_from="2024-05", date_to="2024-01")
    # across the antimeridian (minLon > maxLon) and upside down (selects nothing): accepted, read by bbox_parts
    assert HotspotQuery(dataset="x", bbox=(179, 50, -179, 51)).bbox == (179, 50, -179, 51)
    with pytest.raises(ValueError, match="out of range"):
        HotspotQuery(dataset="x", bbox=(0, 91, 1, 92))
    with pytest.raises(ValueError, match="unknown preset"):
        HotspotQuery(dataset="x", preset="nope")


def test_memoised_lookups_follow_every_write(store, essex_parsed):
    """Period bounds, key weights and the domain are memoised per store state: a later ingest must show."""
    parsed, area = essex_parsed
    table = parsed.table
    months = table.column("occurred_from").to_numpy()
    early = table.filter(months < np.datetime64("2024-03-01"))
    store.ingest("essex", type(parsed)(early, parsed.rejects.iloc[:0], early.num_rows, parsed.kind, parsed.files))
    q = HotspotQuery(dataset="essex", preset="all-crime", top=5)
    before = harm_spots(store, q, load_open_default())
    assert before.meta()["from"] == "2024-02-01" and before.meta()["to"] == "2024-02-29"
    before_whole = harm_spots(store, HotspotQuery(dataset="essex", date_from="2024-01", date_to="2024-04",
                                                  preset="all-crime", top=5), load_open_default())
    store.ingest("essex", parsed, area)
    after = harm_spots(store, q, load_open_default())
    assert after.meta()["from"] == "2024-04-01" and after.meta()["to"] == "2024-04-30"
    whole = HotspotQuery(dataset="essex", date_from="2024-01", date_to="2024-04", preset="all-crime", top=5)
    assert harm_spots(store, whole, load_open_default()).total_count > before_whole.total_count
    with pytest.raises(Exception, match="unknown dataset"):
        harm_spots(store, HotspotQuery(dataset="later", top=5), load_open_default())
    store.ingest("later", parsed, area)
    assert harm_spots(store, HotspotQuery(dataset="later", preset="all-crime", top=5),
                      load_open_default()).total_count == after.total_count
    assert store.scalar("SELECT count(*) FROM datasets") == 2


def test_scan_columns_and_flags_by_precision_match_pandas():
    """The scan's Arrow result read into numpy (precision as codes, NULL numbers as 0, location kept as Arrow)
    and the per-precision flag counts, against a plain pandas groupby of the same rows."""
    import duckdb

    from hotspots.ranking.harmspots import FLAG_COLUMNS, flags_by_precision, scan_columns

    table = duckdb.sql("""SELECT * FROM (VALUES
        (1::UBIGINT, 'month', 5, 'On or near A', 3::BIGINT, 1::BIGINT), (2::UBIGINT, 'minute', 5, NULL, 2, 0),
        (1::UBIGINT, NULL, 7, 'B', 4, 4), (3::UBIGINT, 'day', 7, 'C', 1, NULL), (4::UBIGINT, 'month', 9, 'A', 6, 2))
        t(cell, precision, offence_key, location, count, no_public)""").to_arrow_table()
    per, precisions, locations = scan_columns(table)
    assert per["cell"].tolist() == [1, 2, 1, 3, 4] and per["no_public"].tolist() == [1, 0, 4, 0, 2]
    assert [precisions[c] if c >= 0 else None for c in per["precision_code"]] == ["month", "minute", None, "day", "month"]
    assert locations.to_pylist() == ["On or near A", None, "B", "C", "A"] and "location" not in per
    for c in FLAG_COLUMNS:
        per.setdefault(c, np.zeros(5, dtype=np.int64))
    flags = flags_by_precision(per, precisions)
    df = table.to_pandas().dropna(subset=["precision"]).fillna({"no_public": 0})
    expected = df.groupby("precision").agg(n=("count", "sum"), no_public=("no_public", "sum")).reset_index()
    assert flags["precision"].tolist() == expected["precision"].tolist() == ["day", "minute", "month"]
    assert flags["n"].tolist() == expected["n"].tolist() and flags["no_public"].tolist() == expected["no_public"].tolist()


def test_month_only_scan_matches_the_grouped_precision_scan(loaded):
    """A month-only dataset's scan takes its precision as a constant instead of grouping by the column: the same
    result as the general scan, which groups by it (what a dataset with timed records gets)."""
    import dataclasses

    from hotspots.ranking.harmspots import run_plan
    from hotspots.ranking.plan import resolve_plan

    q = HotspotQuery(dataset="essex", preset="op-ark", top=None)
    plan = resolve_plan(loaded, q, load_open_default())
    assert plan.dataset.month_only
    general = dataclasses.replace(plan, dataset=dataclasses.replace(plan.dataset, month_only=False))
    a, b = run_plan(loaded, plan), run_plan(loaded, general)
    assert len(a.cells) > 100 and a.time_precision == b.time_precision == ["month"]
    pd.testing.assert_frame_equal(a.cells, b.cells)
    assert a.not_applied == b.not_applied and a.caveats == b.caveats
