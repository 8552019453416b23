"""Disclosure control for output that leaves the force ("public" output), built so that public responses cannot be
differenced into small counts. Rules (docs/security.md, "Public output mode"):

1. **One published grid**: every public response is at ONE H3 resolution (``resolution``, default 8, cells of
   about 0.74 km2). A second resolution would let a parent cell minus its published children reveal the withheld
   ones, so a request for another resolution is answered at this one (and says so).
2. **Fixed periods**: whole calendar months, or whole calendar quarters (``period``; one or the other per
   deployment, never both: a quarter minus two published months is the third). Any other window (Jan-Feb, a
   day range, a week) is refused, and so is a period the data does not yet cover completely (publishing a month
   twice while it fills would publish its late records by subtraction). No ``from``/``to``: the latest complete
   period.
3. **Fixed offence selections**: only the deployment's public presets (``presets``, default ``all-crime``), which
   must not share an offence group or category (checked when the policy is made), so no published selection is
   another one plus a remainder. Another preset is answered with the first public one (and says so); explicit
   offence lists, ``include_asb``, ``method=forecast`` and other weights tables are refused.
4. **Whole cells only**: ``days`` and ``hours`` (they cut offences inside cells) are refused; ``area`` and
   ``bbox`` select whole published cells by their centre and never cut one, so a cell has the same count in
   every public response that contains it.
5. **Small cells withheld**: a cell with fewer than ``min_count`` offences (k, default 5) is withheld, before
   ranking and the top-N cut, so no gap in the ranks shows it. Totals, shares and the concentration curve are
   recomputed over the published cells only.
6. **No small breakdowns**: in a published cell, an offence of ``top_offences`` is shown only with a count of at
   least k, and only while the cell's other offences (its count minus those shown) are 0 or at least k.
7. **Rounded harm**: harm to 2 significant figures (so a cell's harm does not spell out which weights, i.e.
   which offences, it adds up); record counts in explanatory notes are not published.
8. **No street context**: a cell's ``top_locations`` (location texts of its records: in a force extract they can
   be addresses) and its police-station / generic-point shares (sub-counts of the cell) are not published
   (null, and a caveat says so).

The guarantee and its limits are in docs/security.md. In short: between public responses of one store state,
every published count is a count of at least k offences of one fixed selection, in one fixed period and one
whole cell of the one grid; the responses partition the data, so no sum or difference of them isolates fewer
than k offences. It does NOT cover: the store changing between two queries (a new upload of a past period,
revised records: publish from a store whose published periods are final), two datasets in the store that hold
the same offences, or what a cell's rounded harm and count together say about the mix of offences in it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import pandas as pd

from geodata.cells import bbox_mask, cell_area_km2, cell_centres, cells_at_all_resolutions, parents, unique_cells
from geodata.harm import WeightsTable
from geodata.store import DataCannotAnswer, Store
from hotspots.ranking.context import CONTEXT_FIELDS
from hotspots.ranking.harmspots import HotspotResult, concentration_curve, harm_spots
from hotspots.ranking.presets import PRESETS
from hotspots.ranking.query import HotspotQuery, period_end_exclusive, period_start

DEFAULT_MIN_COUNT = 5
DEFAULT_RESOLUTION = 8
HARM_SIGNIFICANT_DIGITS = 2
PERIOD_MONTHS = {"month": 1, "quarter": 3}


class DisclosureError(ValueError):
    """A public-mode request asks for something public mode does not publish."""


def check_presets(names: tuple[str, ...]) -> None:
    """Public presets must exist and be pairwise disjoint (no offence group or police.uk category in common)."""
    if not names:
        raise ValueError("public output needs at least one preset")
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown public preset(s) {unknown}; presets: {sorted(PRESETS)}")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa_, pb = PRESETS[a], PRESETS[b]
            shared = (pa_.groups & pb.groups) | (pa_.categories_if_category_only & pb.categories_if_category_only)
            if shared or a == b:
                raise ValueError(f"public presets '{a}' and '{b}' overlap ({sorted(shared)[:5]}): one would be the "
                                 "other plus a remainder, so differencing them would reveal small counts")


@dataclass(frozen=True)
class DisclosurePolicy:
    min_count: int = DEFAULT_MIN_COUNT
    resolution: int = DEFAULT_RESOLUTION
    period: str = "month"  # month | quarter
    presets: tuple[str, ...] = ("all-crime",)
    forced_by: str | None = None  # None: asked for with mode=public; "key" (a public key) or "deployment"

    def __post_init__(self) -> None:
        if self.period not in PERIOD_MONTHS:
            raise ValueError("public period: month or quarter")
        check_presets(self.presets)

    def describe(self) -> dict:
        return {"mode": "public", "forced_by": self.forced_by, "min_count": self.min_count,
                "resolution": self.resolution, "period": self.period, "presets": list(self.presets),
                "rules": ["one published H3 resolution", f"whole calendar {self.period}s only, once complete in "
                          "the data", "fixed, non-overlapping presets only (no offence lists, no ASB, default "
                          "weights)", "days/hours refused; area and bbox select whole cells",
                          f"cells with fewer than {self.min_count} offences withheld before ranking",
                          f"offence breakdowns only where every part is 0 or >= {self.min_count}",
                          f"harm to {HARM_SIGNIFICANT_DIGITS} significant figures"]}


@dataclass
class PublicHotspotResult(HotspotResult):
    disclosure: dict | None = None

    def meta(self) -> dict:
        return {**super().meta(), "disclosure": self.disclosure}


@dataclass(frozen=True)
class CellFilter:
    """Whole published cells kept by their centre: inside an area's res-10 cells and/or a bbox."""

    area: str | None = None
    area_cells: np.ndarray | None = None  # res-10 cells of the area
    bbox: tuple[float, float, float, float] | None = None

    def keep(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        mask = np.ones(len(lat), dtype=bool)
        if self.bbox is not None:
            mask &= bbox_mask(lon, lat, self.bbox)
        if self.area_cells is not None and len(lat):
            mask &= np.isin(cells_at_all_resolutions(lat, lon)[10], self.area_cells)
        return mask


def _floor_period(t: datetime, months: int) -> datetime:
    """Start of the calendar period (months long, aligned on January) containing ``t``."""
    m0 = (t.month - 1) // months * months + 1
    return datetime(t.year, m0, 1)


def _add_months(t: datetime, n: int) -> datetime:
    y, m = divmod(t.month - 1 + n, 12)
    return datetime(t.year + y, m + 1, 1)


def public_period(policy: DisclosurePolicy, date_from: str | None, date_to: str | None,
                  last_exclusive: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the one published period the request names (the latest complete one by default)."""
    months = PERIOD_MONTHS[policy.period]
    complete_until = _floor_period(last_exclusive, 1)  # months that ended by the data's last record end
    if date_from is None and date_to is None:
        end = _floor_period(complete_until, months)
        return _add_months(end, -months), end
    start = period_start(date_from) if date_from else None
    end = period_end_exclusive(date_to) if date_to else None
    if start is None:
        start = _add_months(end, -months)  # type: ignore[arg-type]
    if end is None:
        end = _add_months(start, months)
    example = "from=2024-03&to=2024-03" if months == 1 else "from=2024-01&to=2024-03"
    if start != _floor_period(start, months) or end != _add_months(start, months):
        raise DisclosureError(f"public output is published for whole calendar {policy.period}s only (e.g. "
                              f"{example}): other windows could be differenced into small counts")
    if end > complete_until:
        raise DisclosureError(f"the {policy.period} from {start.date()} is not complete in the data yet (it ends "
                              f"{complete_until.date()}): public output covers complete {policy.period}s only")
    return start, end


def public_query(store: Store, q: HotspotQuery, policy: DisclosurePolicy,
                 default_weights: WeightsTable) -> tuple[HotspotQuery, CellFilter]:
    """Check a request is publishable; return the engine query (whole dataset, one period, one preset, the
    published resolution, every cell) and the whole-cell filter for its area/bbox."""
    refused = [name for name, value in (("days", q.days), ("hours", q.hours), ("offences", q.offences)) if value]
    if q.include_asb:
        refused.append("include_asb")
    if getattr(q, "method", None) == "forecast":  # its all-record part counts every cell, withheld ones too
        refused.append("method=forecast")
    if q.weights and q.weights != default_weights.name:
        refused.append(f"weights={q.weights}")
    if refused:
        raise DisclosureError(f"public output does not take {', '.join(refused)}: it publishes fixed offence "
                              f"selections ({', '.join(policy.presets)}) under the default weights, over whole "
                              "cells, so no two public answers can be differenced")
    # a preset that is not published is answered with the first public one (announced in the caveats and in
    # disclosure.preset_requested, as a resolution is): the answer is then a published product, never a new one
    preset = q.preset if q.preset in policy.presets else policy.presets[0]
    last = store.cached(("public_last", q.dataset), lambda: store.scalar(
        "SELECT max(occurred_to) FROM offences WHERE dataset = ?", [q.dataset]))
    if last is None or pd.isna(last):
        raise DataCannotAnswer(f"dataset '{q.dataset}' has no offences")
    start, end = public_period(policy, q.date_from, q.date_to, pd.Timestamp(last).to_pydatetime())
    area_cells = None
    if q.area:
        layer, ids, _ = store.resolve_area(q.area)
        area_cells = store.query_df(f"SELECT DISTINCT h3_10 FROM area_cells WHERE layer = ? AND feature_id IN "
                                    f"({','.join('?' * len(ids))})", [layer, *ids])["h3_10"].to_numpy(np.uint64)
    coarse = q.model_copy(update={
        "resolution": policy.resolution, "top": None, "preset": preset, "offences": None, "area": None,
        "bbox": None, "weights": None, "include_asb": False,
        "date_from": start.strftime("%Y-%m"), "date_to": _add_months(end, -1).strftime("%Y-%m")})
    return coarse, CellFilter(q.area, area_cells, q.bbox)


def _round_significant(x: np.ndarray, digits: int = HARM_SIGNIFICANT_DIGITS) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    nz = x > 0
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(x[nz])))
    out[nz] = np.round(x[nz] * scale) / scale
    return out


def _breakdown(offences: list[dict] | None, count: int, k: int) -> list[dict]:
    """Offences of a published cell that may be shown: each >= k, and the rest of the cell 0 or >= k (the
    smallest shown one is dropped until that holds)."""
    shown = [o for o in (offences or []) if o["count"] >= k]
    while shown and 0 < count - sum(o["count"] for o in shown) < k:
        shown = shown[:-1] if len(shown) == 1 else sorted(shown, key=lambda o: -o["count"])[:-1]
    return [{**o, "harm": float(_round_significant(np.array([o["harm"]]))[0])} for o in shown]


_RECORD_COUNTS = re.compile(r"not applied to \d+ of \d+ records")


def _area_domain(cf: CellFilter, resolution: int) -> int | None:
    """Cells of the published grid whose centre lies in the area (the area's domain for the concentration curve)."""
    if cf.area_cells is None:
        return None
    cand = unique_cells(parents(cf.area_cells, resolution))
    lat, lon = cell_centres(cand)
    return int(cf.keep(lat, lon).sum())


def apply_disclosure(result: HotspotResult, policy: DisclosurePolicy, q: HotspotQuery,
                     cell_filter: CellFilter = CellFilter()) -> PublicHotspotResult:
    """Withhold small cells and small breakdowns, keep whole cells of the area/bbox, round harm, recompute totals
    over what is published, re-rank, cut top-N."""
    k = policy.min_count
    cells = result.cells
    inside = cell_filter.keep(cells["lat"].to_numpy(float), cells["lon"].to_numpy(float))
    big = cells["count"].to_numpy() >= k
    pub = cells.loc[big & inside].copy().reset_index(drop=True)
    pub["harm"] = _round_significant(pub["harm"].to_numpy(float))
    order_col = "harm" if result.query.rank_by == "harm" else "count"
    other = "count" if order_col == "harm" else "harm"
    pub = pub.sort_values([order_col, other, "cell"], ascending=[False, False, True], kind="mergesort")
    pub = pub.reset_index(drop=True)
    total_harm = float(pub["harm"].sum())
    total_count = int(pub["count"].sum())
    pub["rank"] = np.arange(1, len(pub) + 1)
    pub["harm_share"] = pub["harm"] / total_harm if total_harm > 0 else 0.0
    pub["count_share"] = pub["count"] / total_count if total_count else 0.0
    area = cell_area_km2(pub["cell"].to_numpy(dtype=np.uint64)) if len(pub) else np.empty(0)
    pub["area_km2"] = area
    pub["harm_per_km2"] = pub["harm"] / area if len(pub) else pd.Series(dtype=float)
    pub["top_offences"] = [_breakdown(offs, int(n), k) for offs, n in zip(pub["top_offences"], pub["count"])]
    withheld_context = [c for c in CONTEXT_FIELDS if c in pub.columns]
    for c in withheld_context:  # location texts and sub-counts of a cell: finer than a published count (rule 8)
        pub[c] = None
    withheld = int((~big & inside).sum())
    published_q = result.query.model_copy(update={"top": q.top})
    disclosure = {**policy.describe(), "cells_withheld": withheld, "preset_requested": q.preset,
                  "preset_published": result.query.preset, "resolution_requested": q.resolution,
                  "resolution_published": policy.resolution, "area": cell_filter.area,
                  "bbox": list(cell_filter.bbox) if cell_filter.bbox else None}
    caveats = [*result.caveats, f"public output: cells with fewer than {k} offences withheld ({withheld} cells); "
               "totals and shares cover published cells only"]
    if withheld_context:
        caveats.append(f"public output: street context ({', '.join(withheld_context)}) is not published: location "
                       "texts and sub-counts of a cell are finer than its published count")
    if q.resolution != policy.resolution:
        caveats.append(f"public output: answered at resolution {policy.resolution} (the one published grid), "
                       f"not {q.resolution}")
    if cell_filter.area or cell_filter.bbox:
        caveats.append("public output: the area/bbox keeps whole cells whose centre lies inside it (a cell is "
                       "never cut), so edge cells cover some ground outside it")
    if result.query.preset != q.preset:
        caveats.append(f"public output: offence selection {result.query.preset}, a published preset ({q.preset} "
                       f"is not published; public presets: {', '.join(policy.presets)})")
    not_applied = [_RECORD_COUNTS.sub("not applied to records that lack the field", t) for t in result.not_applied]
    domain = _area_domain(cell_filter, policy.resolution)
    domain = result.domain_cells if domain is None else domain
    base = replace(result, query=published_q, cells=pub, total_harm=total_harm, total_count=total_count,
                   concentration=concentration_curve(pub["harm"].to_numpy(float), domain), domain_cells=domain,
                   domain_rule=(f"cells of the published grid centred in {cell_filter.area}" if cell_filter.area
                                else result.domain_rule), caveats=caveats, not_applied=not_applied)
    return PublicHotspotResult(**{f: getattr(base, f) for f in base.__dataclass_fields__}, disclosure=disclosure)


def public_harm_spots(store: Store, q: HotspotQuery, default_weights: WeightsTable,
                      policy: DisclosurePolicy = DisclosurePolicy()) -> PublicHotspotResult:
    """``harm_spots`` for publication (see the module docstring): checked, run over the whole dataset for one
    published period and preset at the published resolution, then disclosure-controlled."""
    coarse, cell_filter = public_query(store, q, policy, default_weights)
    return apply_disclosure(harm_spots(store, coarse, default_weights), policy, q, cell_filter)
