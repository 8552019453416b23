"""The resolved query plan (hotspots.ranking.plan): a query is resolved once, then each executor makes one scan."""
from __future__ import annotations

import pytest

from geodata.harm import load_open_default
from hotspots.ranking.harmspots import harm_spots, run_plan
from hotspots.ranking.plan import QueryPlan, resolve_plan
from hotspots.ranking.query import HotspotQuery


class Counting:
    """Counts the store round trips (cursors opened, query_df, scalar) made through a Store; a cursor that
    query_df or scalar opens for themselves is part of their round trip, not another."""

    def __init__(self, store, monkeypatch):
        self.calls: list[str] = []
        self.depth = 0
        for name in ("cursor", "query_df", "scalar"):
            real = getattr(store, name)

            def wrapped(*a, _real=real, _name=name, **kw):
                if self.depth == 0:
                    self.calls.append(_name)
                self.depth += 1
                try:
                    return _real(*a, **kw)
                finally:
                    self.depth -= 1

            monkeypatch.setattr(store, name, wrapped)


@pytest.mark.parametrize("spec", [{"preset": "op-ark"}, {"area": "districts:E06000033", "resolution": 9},
                                  {"method": "forecast", "bbox": (0.5, 51.5, 0.8, 51.7)}])
def test_a_warm_query_is_one_scan(loaded, monkeypatch, spec):
    w = load_open_default()
    q = HotspotQuery(dataset="essex", **spec)
    first = harm_spots(loaded, q, w)  # resolves the plan's look-ups once per store state
    counter = Counting(loaded, monkeypatch)
    again = harm_spots(loaded, q, w)
    # the observed ranking's scan also counts the returned cells' location texts (grouped by text); the
    # forecast's scan has none, so its street context is one more look-up restricted to those cells
    # (hotspots.ranking.context); nothing else
    expected = ["cursor", "cursor"] if spec.get("method") == "forecast" else ["cursor"]
    assert counter.calls == expected, counter.calls
    assert again.meta() == first.meta() and again.cells["h3"].tolist() == first.cells["h3"].tolist()


def test_a_cold_plan_is_a_few_lookups_and_the_plan_runs_as_given(loaded, monkeypatch):
    w = load_open_default()
    loaded._changed()  # a write would do this: every memo is stale
    counter = Counting(loaded, monkeypatch)
    plan = resolve_plan(loaded, HotspotQuery(dataset="essex", area="districts:E06000033"), w)
    # offence keys, period, domain and the area: the area's resolution (geodata.areas: does the loaded layer cover
    # the dataset, else its automatic districts) takes a few look-ups of its own. Bounded, and memoised per store
    # state (the warm tests above: none at all)
    assert isinstance(plan, QueryPlan) and len(counter.calls) <= 9, counter.calls
    assert plan.area_cells is not None and len(plan.area_cells) > 0 and plan.domain_cells > 0
    assert set(plan.keys.columns) >= {"offence_key", "days", "exact"} and plan.method == "observed"
    counter.calls.clear()
    res = run_plan(loaded, plan)
    # the scan (its groups carry the returned cells' selected texts), then, the first time after an ingest, the
    # dataset's per-cell location counts (geodata.cell_locations: a check that they are kept, then one read of
    # them into memory, kept until the offences change)
    assert counter.calls == ["cursor"] * 3 and res.domain_cells == plan.domain_cells
    assert res.domain_rule == plan.domain_rule == "area districts:E06000033"
    counter.calls.clear()
    loaded._changed()  # a write that is not an ingest (a patrol log, a key): the counts stay in memory
    run_plan(loaded, plan)
    assert counter.calls == ["cursor"], counter.calls
