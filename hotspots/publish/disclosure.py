"""Disclosure control for maps shared outside the force ("public" output mode).

Rules (documented in docs/security.md, "Public output mode"):

1. **Coarsen**: the H3 resolution is capped at ``max_resolution`` (default 8, cells of about 0.74 km2, so a
   published cell covers many streets rather than a few addresses). Finer requests are answered at 8.
2. **Suppress small cells**: a cell with fewer than ``min_count`` offences (k, default 5) is withheld
   entirely. Suppression happens on the full ranked list *before* the top-N cut, so a suppressed cell never
   shows as a gap in the ranking. Totals, shares and the concentration curve are recomputed over the
   published cells only, so the withheld harm cannot be recovered by subtraction.
3. **Small offence breakdowns**: in each published cell, per-offence counts below k are withheld from
   ``top_offences`` (a cell of 12 offences does not say "Robbery (1)").
4. **Rounding**: harm is published to whole CCHI days.
5. **No differencing handles**: ``bbox``, ``days`` and ``hours`` cut offences inside cells and let two
   overlapping queries isolate single records by subtraction, so public mode refuses them; dates must be
   whole months (YYYY-MM). Areas (predefined boundaries) and presets remain available.

k = 5 follows common practice for small-number suppression in official statistics (e.g. ONS and NHS
guidance suppress counts below 5 or between 1 and 4); it is a setting (``HARMSPOT_PUBLIC_MIN_COUNT``).
Suppression does not protect against every differencing attack across different offence selections; publish
fixed products (a preset, a month) rather than an open query service if that matters.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from geodata.cells import cell_area_km2
from geodata.harm import WeightsTable
from geodata.store import Store
from hotspots.ranking.harmspots import HotspotResult, concentration_curve, harm_spots
from hotspots.ranking.query import HotspotQuery

DEFAULT_MIN_COUNT = 5
DEFAULT_MAX_RESOLUTION = 8


class DisclosureError(ValueError):
    """A public-mode request asks for something public mode does not publish."""


@dataclass(frozen=True)
class DisclosurePolicy:
    min_count: int = DEFAULT_MIN_COUNT
    max_resolution: int = DEFAULT_MAX_RESOLUTION

    def describe(self) -> dict:
        return {"mode": "public", "min_count": self.min_count, "max_resolution": self.max_resolution,
                "rules": ["cells with fewer than k offences are withheld before ranking",
                          "resolution capped", "per-offence counts below k withheld",
                          "harm rounded to whole days", "bbox/days/hours refused; whole months only"]}


@dataclass
class PublicHotspotResult(HotspotResult):
    disclosure: dict | None = None

    def meta(self) -> dict:
        return {**super().meta(), "disclosure": self.disclosure}


def public_query(q: HotspotQuery, policy: DisclosurePolicy) -> HotspotQuery:
    """Check a query is publishable and coarsen it; the engine then returns every cell (top applied later)."""
    refused = [name for name, value in (("bbox", q.bbox), ("days", q.days), ("hours", q.hours)) if value]
    if refused:
        raise DisclosureError(f"public mode does not accept {', '.join(refused)} (they allow isolating single "
                              "records by differencing two queries); use an area or the whole dataset")
    for name, value in (("from", q.date_from), ("to", q.date_to)):
        if value is not None and len(value) != 7:
            raise DisclosureError(f"public mode takes whole months: '{name}' must be YYYY-MM")
    return q.model_copy(update={"resolution": min(q.resolution, policy.max_resolution), "top": None})


def apply_disclosure(result: HotspotResult, policy: DisclosurePolicy, top: int | None,
                     requested_resolution: int) -> PublicHotspotResult:
    """Withhold small cells and small breakdowns, recompute totals over what is published, re-rank, cut top-N."""
    k = policy.min_count
    cells = result.cells
    keep = cells["count"].to_numpy() >= k
    pub = cells.loc[keep].copy().reset_index(drop=True)
    pub["harm"] = np.round(pub["harm"].to_numpy(float))
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
    pub["top_offences"] = [[{**o, "harm": float(round(o["harm"]))} for o in (offs or []) if o["count"] >= k]
                           for offs in pub["top_offences"]]
    q = result.query.model_copy(update={"top": top})
    disclosure = {**policy.describe(), "cells_withheld": int((~keep).sum()),
                  "resolution_requested": requested_resolution, "resolution_published": q.resolution}
    caveats = [*result.caveats, f"public output: cells with fewer than {k} offences withheld "
               f"({int((~keep).sum())} cells); totals and shares cover published cells only"]
    if requested_resolution != q.resolution:
        caveats.append(f"public output: resolution coarsened from {requested_resolution} to {q.resolution}")
    base = replace(result, query=q, cells=pub, total_harm=total_harm, total_count=total_count,
                   concentration=concentration_curve(pub["harm"].to_numpy(float), result.domain_cells),
                   caveats=caveats)
    return PublicHotspotResult(**{f: getattr(base, f) for f in base.__dataclass_fields__}, disclosure=disclosure)


def public_harm_spots(store: Store, q: HotspotQuery, default_weights: WeightsTable,
                      policy: DisclosurePolicy = DisclosurePolicy()) -> PublicHotspotResult:
    """``harm_spots`` for publication: coarsened, small cells withheld (see the module docstring)."""
    coarse = public_query(q, policy)
    return apply_disclosure(harm_spots(store, coarse, default_weights), policy, q.top, q.resolution)
