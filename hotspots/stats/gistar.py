"""Getis-Ord Gi* on the H3 grid, with Benjamini-Hochberg FDR and optional conditional permutation inference.

Plain library: numpy/scipy/h3ronpy in, a typed :class:`GiStarResult` out. Never imports ``app``.

* Weights: binary, the cell itself plus every cell of its k-ring (``grid_disk``) that lies in the domain
  (Getis & Ord 1992; Ord & Getis 1995 for the Gi* "star" form that includes the cell itself).
* Domain: *every* cell of the study area, zero cells included. Gi* compares a neighbourhood sum with the mean
  and variance over the whole domain, so leaving out empty cells would inflate the mean and hide hot spots.
* Analytic z and p (normal approximation), identical to esda ``G_Local(y, w, transform="B", star=True).Zs``.
* Optional conditional randomisation (Anselin 1995): the cell's own value is held fixed and its neighbours'
  values are drawn without replacement from the other n-1 cells; 999 permutations when asked.
* Benjamini & Hochberg (1995) q-values over all domain cells; classes by q (99/95/90 % confidence tiers after
  FDR, as in ESRI's Gi_Bin field). One-sided "hot" by default.
* A cell that is "hot" only because its neighbours are - its own value is zero - is classed
  ``neighbourhood_hot`` ("hot neighbourhood, nothing in the cell"), not ``hot_*``, and is never a patrol
  candidate (``patrol_candidate`` is true for ``hot_*`` cells with a value of their own).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from scipy import stats

from geodata.cells import cell_area_km2, cell_centres, lonlat_to_bng, unique_cells

Tail = Literal["hot", "cold", "both"]

ASSUMPTIONS = [
    "Binary weights: the cell itself and its k-ring neighbours inside the domain (Gi*, Ord & Getis 1995).",
    "Analytic p-values use the normal approximation of Gi*; it is poor for very skewed, zero-inflated values "
    "and small neighbourhoods (Ord & Getis 1995) - prefer permutation inference or a log/cap transform "
    "for harm.",
    "Benjamini-Hochberg FDR assumes independent or positively dependent tests; neighbouring Gi* values share "
    "cells, so q-values are approximate (Caldas de Castro & Singer 2006).",
]
NEIGHBOURHOOD_CLASS = "neighbourhood_hot"
CLASS_Q_LEVELS = {"hot_99": 0.01, "hot_95": 0.05, "hot_90": 0.10}  # FDR q at or below which each tier is given


def class_labels(value_name: str = "harm") -> dict[str, str]:
    """Planner-readable meaning of every class (``value_name``: what the Gi* was computed on)."""
    none = "no harm" if value_name == "harm" else "no offences"
    return {"hot_99": "hot spot, 99 % confidence after FDR (q <= 0.01)",
            "hot_95": "hot spot, 95 % confidence after FDR (q <= 0.05)",
            "hot_90": "hot spot, 90 % confidence after FDR (q <= 0.10)",
            NEIGHBOURHOOD_CLASS: f"hot neighbourhood, {none} in the cell (hot because its neighbours are: not a "
                                 "place to patrol)",
            "cold_99": "cold spot, 99 %", "cold_95": "cold spot, 95 %", "cold_90": "cold spot, 90 %",
            "not_significant": "not significant", "outside_domain": "outside the study domain"}


CAVEATS = [
    "police.uk locations are snapped to anonymous map points (street centroids/POIs): many offences share a "
    "point, so a cell's value partly reflects where snap points lie, not exact addresses.",
    "Month-only data (police.uk) cannot resolve patterns within a month.",
    "Harm is zero-inflated and heavy-tailed: one rare, very harmful offence (e.g. a homicide, 5,475 days) "
    "can make a single-event hot spot. Consider transform='log' or 'cap' and read counts alongside harm.",
    "Cold spots on zero-inflated harm are rarely meaningful (most cells are zero); 'hot' is one-sided by "
    "default.",
]


# --------------------------------------------------------------------------------------------------- domain


@dataclass(frozen=True)
class Domain:
    """The cells Gi* is computed over (sorted, unique uint64 H3 ids, one resolution)."""

    cells: np.ndarray
    resolution: int
    source: str  # "polygon" | "hull" | "cells"
    description: str = ""

    def __post_init__(self):
        cells = unique_cells(np.asarray(self.cells, dtype=np.uint64))
        object.__setattr__(self, "cells", cells)

    def __len__(self) -> int:
        return len(self.cells)

    def index_of(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into domain, inside mask) for each given cell."""
        cells = np.asarray(cells, dtype=np.uint64)
        if len(self.cells) == 0:
            return np.zeros(len(cells), dtype=np.int64), np.zeros(len(cells), dtype=bool)
        idx = np.searchsorted(self.cells, cells)
        idx_c = np.minimum(idx, len(self.cells) - 1)
        inside = self.cells[idx_c] == cells
        return idx_c, inside

    def describe(self) -> dict:
        return {"source": self.source, "cells": int(len(self.cells)), "resolution": self.resolution,
                "description": self.description}

    # Per-cell values that depend on the cells alone, computed once per domain (the doors keep a domain per study
    # area and resolution: hotspots.stats.for_query.study_domain) and read-only, since every caller shares them.
    # Exact H3 area is the costliest (~3 us a cell: ~0.9 s for the Essex sample's 275,731 res-10 cells).
    @cached_property
    def area_km2(self) -> np.ndarray:
        """Each cell's area in km2 (H3's exact area, ``geodata.cells.cell_area_km2``), in domain order."""
        return _frozen(cell_area_km2(self.cells))

    @cached_property
    def centres_bng(self) -> np.ndarray:
        """(n, 2) British National Grid x/y in metres of the cell centres, in domain order."""
        lat, lon = cell_centres(self.cells)
        x, y = lonlat_to_bng(lon, lat)
        return _frozen(np.column_stack([x, y]))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _resolution(cells: np.ndarray) -> int:
    from h3ronpy import cells_resolution

    if len(cells) == 0:
        raise ValueError("no cells")
    res = np.unique(np.asarray(pa.array(cells_resolution(pa.array(cells[:1000], type=pa.uint64())))))
    if len(res) != 1:
        raise ValueError(f"cells mix H3 resolutions {res.tolist()}")
    return int(res[0])


def domain_from_cells(cells: np.ndarray, description: str = "given cells") -> Domain:
    cells = unique_cells(np.asarray(cells, dtype=np.uint64))
    return Domain(cells, _resolution(cells), "cells", description)


def domain_from_polygon(geom_wkb: bytes | list[bytes], resolution: int, description: str = "study-area polygon",
                        include_cells: np.ndarray | None = None) -> Domain:
    """Every cell whose centre lies inside the (multi)polygon(s) (WGS84 WKB), optionally plus given cells."""
    from geodata.cells import polygon_cells

    wkbs = [geom_wkb] if isinstance(geom_wkb, (bytes, bytearray)) else list(geom_wkb)
    parts = polygon_cells(wkbs, resolution)
    if include_cells is not None:
        parts.append(np.asarray(include_cells, dtype=np.uint64))
    cells = unique_cells(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
    return Domain(cells, resolution, "polygon", description)


def domain_from_hull(data_cells: np.ndarray, buffer_m: float = 0.0) -> Domain:
    """Every cell whose centre lies inside the convex hull of the data cells' centres (computed in British
    National Grid metres, optionally buffered), plus the data cells themselves."""
    import shapely

    from geodata.cells import bng_to_lonlat, cell_centres, lonlat_to_bng, polygon_cells

    data_cells = unique_cells(np.asarray(data_cells, dtype=np.uint64))
    res = _resolution(data_cells)
    lat, lon = cell_centres(data_cells)
    x, y = lonlat_to_bng(lon, lat)
    hull = shapely.convex_hull(shapely.multipoints(np.column_stack([x, y])))
    if buffer_m:
        hull = hull.buffer(buffer_m)
    if hull.geom_type != "Polygon":  # fewer than 3 distinct points: the data cells are the domain
        return Domain(data_cells, res, "hull", "data cells (too few to form a hull)")
    hull_ll = shapely.transform(hull, lambda xy: np.column_stack(bng_to_lonlat(xy[:, 0], xy[:, 1])))
    inside = polygon_cells([shapely.to_wkb(hull_ll)], res)[0]
    cells = unique_cells(np.concatenate([inside, data_cells]))
    desc = "convex hull of the data cells" + (f" buffered {buffer_m:g} m" if buffer_m else "")
    return Domain(cells, res, "hull", desc)


# ------------------------------------------------------------------------------------------------- weights


def neighbour_matrix(cells: np.ndarray, k: int = 1, include_self: bool = True) -> sp.csr_matrix:
    """Binary CSR matrix W[i, j] = 1 when domain cell j is within grid distance k of cell i (vectorised via
    h3ronpy ``grid_disk``). Neighbours outside ``cells`` are dropped. ``cells`` must be sorted and unique."""
    from h3ronpy import grid_disk

    cells = np.asarray(cells, dtype=np.uint64)
    n = len(cells)
    if n == 0:
        return sp.csr_matrix((0, 0))
    if k < 0:
        raise ValueError("k must be >= 0")
    disks = pa.array(grid_disk(pa.array(cells, type=pa.uint64()), int(k)))
    offsets = np.asarray(disks.offsets.to_numpy(), dtype=np.int64)
    vals = disks.flatten().to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    cols = np.searchsorted(cells, vals)
    cols_c = np.minimum(cols, n - 1)
    keep = cells[cols_c] == vals
    if not include_self:
        keep &= cols_c != rows
    rows, cols_c = rows[keep], cols_c[keep]
    w = sp.csr_matrix((np.ones(len(rows), dtype=float), (rows, cols_c)), shape=(n, n))
    w.sum_duplicates()
    w.data[:] = 1.0
    return w


# ------------------------------------------------------------------------------------------------ statistics


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values (q-values), NaN-safe (NaN -> 1)."""
    p = np.asarray(p, dtype=float)
    p = np.where(np.isfinite(p), p, 1.0)
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="mergesort")
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(ranked, 1.0)
    return q


def gistar_z(y: np.ndarray, w: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Gi* statistic and analytic z for binary weights with self included (esda's star=True formulas).
    ``y`` may be a vector or an (n, T) matrix of T independent fields (e.g. time slices)."""
    y = np.asarray(y, dtype=float)
    n = y.shape[0]
    ysum = y.sum(axis=0)
    lag = w @ y
    card = np.asarray(w.sum(axis=1)).ravel()
    if y.ndim == 2:
        card = card[:, None]
    mean = ysum / n
    var = (y * y).sum(axis=0) / n - mean**2
    var = np.where(var > 1e-12 * mean**2, var, 0.0)  # a constant field has no variance (not rounding noise)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = lag / ysum
        ev = card / n
        vg = card * (n - card) / (n - 1) / n**2 * var / mean**2
        z = (g - ev) / np.sqrt(vg)
    bad = ~np.isfinite(z)
    if bad.any():
        z[bad] = 0.0  # constant field (e.g. all zero), or a cell whose neighbourhood is the whole domain
    return g, z


def distinct_sample_rows(rng: np.random.Generator, n_pool: int, perms: int, k: int) -> np.ndarray:
    """perms x k indices into range(n_pool), distinct within each row (draws without replacement)."""
    if k == 0:
        return np.zeros((perms, 0), dtype=np.int64)
    if n_pool < 50 * k * k + 1000:
        return np.argsort(rng.random((perms, n_pool)), axis=1)[:, :k].astype(np.int64)
    out = rng.integers(0, n_pool, size=(perms, k))
    while True:
        s = np.sort(out, axis=1)
        dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
        if not dup.any():
            return out
        out[dup] = rng.integers(0, n_pool, size=(int(dup.sum()), k))


def permutation_counts(y: np.ndarray, w: sp.csr_matrix, permutations: int = 999, seed: int | None = None,
                       chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Conditional randomisation counts for binary Gi*: for each cell, how many of ``permutations``
    random neighbourhoods have a neighbour sum >= (and <=) the observed one, holding the cell's own value fixed.

    Like esda's ``crand`` one set of random index rows (``permutations`` x max neighbours, drawn without
    replacement from n-1) is shared by all cells, and for cell i the pool is the other n-1 values (an index
    r >= i maps to r+1). Because the weights are binary, the simulated sum for cell i only depends on how many
    of the row's sorted indices fall below i, so it is precomputed per row and the per-cell work is a lookup:
    O(permutations x (segments + cells)) without a loop over cells.
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    rng = np.random.default_rng(seed)
    diag = w.diagonal()
    lag = w @ y
    t = lag - diag * y  # observed neighbour sum, self excluded
    card = np.diff(w.indptr) - (diag != 0).astype(np.int64)  # neighbours excluding self
    kmax = int(card.max()) if n else 0
    ge = np.zeros(n, dtype=np.int64)
    le = np.zeros(n, dtype=np.int64)
    if n < 2 or kmax == 0:
        return ge, le
    rids = distinct_sample_rows(rng, n - 1, permutations, kmax)
    y_next = np.append(y[1:], 0.0)  # value at r+1 (r <= n-2 always)
    tol = 1e-9 * max(1.0, float(np.abs(y).sum()))
    for c in np.unique(card):
        if c == 0:
            continue
        cells_c = np.flatnonzero(card == c)
        r = np.sort(rids[:, :c], axis=1)  # perms x c
        # s[p, m] = sum of y[r_j] for the m smallest indices (below i) + sum of y[r_j + 1] for the rest
        a = np.concatenate([np.zeros((permutations, 1)), np.cumsum(y[r], axis=1)], axis=1)
        b_rev = np.cumsum(y_next[r][:, ::-1], axis=1)[:, ::-1]
        b = np.concatenate([b_rev, np.zeros((permutations, 1))], axis=1)
        s = a + b  # perms x (c+1)
        # segments of the cell index axis within which every row's m is constant
        bounds = np.unique(r.ravel() + 1)
        seg = np.searchsorted(bounds, cells_c, side="right")
        useg, inv = np.unique(seg, return_inverse=True)
        reps = np.empty(len(useg), dtype=np.int64)
        reps[inv] = cells_c  # any cell of the segment represents it
        # a chunk of segments at a time, then the cells of those segments (inv is non-decreasing: cells_c is
        # sorted), so memory stays chunk x permutations whatever the domain (segments x permutations at once
        # was 8 GB at res 10 on a county with 9,999 permutations)
        step = max(1, min(chunk, 50_000_000 // (permutations * (c + 1))))  # ~50 M elements per temporary
        for lo in range(0, len(useg), step):
            hi = min(lo + step, len(useg))
            rep = reps[lo:hi]
            m = (r[None, :, :] < rep[:, None, None]).sum(axis=2)  # segments x perms
            vals = np.take_along_axis(s, m.T, axis=1).T
            first, last = np.searchsorted(inv, [lo, hi])
            for a in range(first, last, step):
                cells_sel = cells_c[a:min(a + step, last)]
                rows = vals[inv[a:min(a + step, last)] - lo]  # cells x perms
                ti = t[cells_sel][:, None]
                ge[cells_sel] = (rows >= ti - tol).sum(axis=1)
                le[cells_sel] = (rows <= ti + tol).sum(axis=1)
    return ge, le


# --------------------------------------------------------------------------------------------------- result


@dataclass
class GiStarResult:
    """Gi* per domain cell. ``cells`` columns: cell (uint64), value (after transform), raw (before), g, z, p,
    q, class ('hot_99'|'hot_95'|'hot_90'|'neighbourhood_hot'|'cold_*'|'not_significant'), significant
    (q <= q_level), patrol_candidate (a hot_* cell with a value of its own)."""

    cells: pd.DataFrame
    domain: dict
    k: int
    tail: str
    inference: str  # "analytic" | "permutation"
    permutations: int
    q_level: float
    transform: str
    transform_note: str
    dropped_outside_domain: int
    n_significant: int
    assumptions: list[str] = field(default_factory=lambda: list(ASSUMPTIONS))
    caveats: list[str] = field(default_factory=lambda: list(CAVEATS))

    def summary(self, value_name: str = "harm") -> dict:
        counts = self.cells["class"].value_counts().to_dict()
        return {"domain": self.domain, "k": self.k, "tail": self.tail, "inference": self.inference,
                "permutations": self.permutations, "q_level": self.q_level,
                "q_level_note": f"`significant` and n_significant use FDR q <= {self.q_level:g}; the classes are "
                                "tiers of q: hot_99 q <= 0.01, hot_95 q <= 0.05, hot_90 q <= 0.10",
                "class_q_levels": CLASS_Q_LEVELS, "class_labels": class_labels(value_name),
                "n_patrol_candidates": int(self.cells["patrol_candidate"].sum()) if "patrol_candidate" in self.cells
                else None,
                "transform": self.transform,
                "transform_note": self.transform_note, "dropped_outside_domain": self.dropped_outside_domain,
                "n_cells": int(len(self.cells)), "n_significant": self.n_significant,
                "classes": {str(k): int(v) for k, v in counts.items()},
                "assumptions": self.assumptions, "caveats": self.caveats}


def classify(z: np.ndarray, q: np.ndarray, tail: Tail = "hot") -> np.ndarray:
    """ESRI Gi_Bin-style tiers after FDR: q <= 0.01 -> 99 %, <= 0.05 -> 95 %, <= 0.10 -> 90 %."""
    out = np.full(len(z), "not_significant", dtype=object)
    for level, name in ((0.10, "90"), (0.05, "95"), (0.01, "99")):
        sig = q <= level
        if tail in ("hot", "both"):
            out[sig & (z > 0)] = f"hot_{name}"
        if tail in ("cold", "both"):
            out[sig & (z < 0)] = f"cold_{name}"
    return out


def apply_transform(values: np.ndarray, transform: str | None, cap: float | None = None,
                    cap_quantile: float = 0.99) -> tuple[np.ndarray, str, str]:
    """None | 'log' (log1p) | 'cap' (winsorise at ``cap`` or at the ``cap_quantile`` of the non-zero values)."""
    v = np.asarray(values, dtype=float)
    if transform in (None, "none"):
        return v, "none", "values used as given"
    if transform == "log":
        return np.log1p(np.maximum(v, 0.0)), "log", "log(1 + value) applied before Gi* to damp extreme harm"
    if transform == "cap":
        nz = v[v > 0]
        limit = float(cap) if cap is not None else (float(np.quantile(nz, cap_quantile)) if len(nz) else 0.0)
        n_capped = int((v > limit).sum())
        how = f"cap={limit:g}" if cap is not None else f"the {cap_quantile:.0%} quantile of non-zero cells = {limit:g}"
        return np.minimum(v, limit), "cap", f"values capped at {how} ({n_capped} cells capped) before Gi*"
    raise ValueError(f"unknown transform {transform!r}; use None, 'log' or 'cap'")


def gistar(cells: np.ndarray, values: np.ndarray, domain: Domain | None = None, *, k: int = 1,
           tail: Tail = "hot", q_level: float = 0.05, transform: str | None = None, cap: float | None = None,
           cap_quantile: float = 0.99, permutations: int = 0, seed: int | None = None,
           weights: sp.csr_matrix | None = None) -> GiStarResult:
    """Gi* over every cell of ``domain`` (default: the convex hull of the data cells).

    ``cells``/``values``: the non-zero cells (uint64 H3 ids, duplicates are summed) and their harm or counts.
    ``permutations``: 0 for analytic p only; e.g. 999 for conditional permutation p-values.
    ``weights``: a precomputed :func:`neighbour_matrix` of the domain (for repeated runs on one domain).
    """
    if tail not in ("hot", "cold", "both"):
        raise ValueError("tail must be 'hot', 'cold' or 'both'")
    cells = np.asarray(cells, dtype=np.uint64)
    values = np.asarray(values, dtype=float)
    if cells.shape != values.shape:
        raise ValueError("cells and values must have the same length")
    if domain is None:
        if len(cells) == 0:
            raise ValueError("no data cells and no domain")
        domain = domain_from_hull(cells)
    n = len(domain)
    idx, inside = domain.index_of(cells)
    raw = np.bincount(idx[inside], weights=values[inside], minlength=n).astype(float)
    y, tname, tnote = apply_transform(raw, transform, cap, cap_quantile)
    w = weights if weights is not None else neighbour_matrix(domain.cells, k)
    if w.shape != (n, n):
        raise ValueError("weights do not match the domain")
    g, z = gistar_z(y, w)
    if permutations:
        ge, le = permutation_counts(y, w, permutations, seed)
        p_hot = (ge + 1) / (permutations + 1)
        p_cold = (le + 1) / (permutations + 1)
        inference = "permutation"
    else:
        p_hot = stats.norm.sf(z)
        p_cold = stats.norm.cdf(z)
        inference = "analytic"
    p = {"hot": p_hot, "cold": p_cold, "both": np.minimum(1.0, 2 * np.minimum(p_hot, p_cold))}[tail]
    q = bh_qvalues(p)
    cls = classify(z, q, tail)
    hot = np.char.startswith(cls.astype(str), "hot_")
    cls[hot & (raw <= 0)] = NEIGHBOURHOOD_CLASS  # hot only through its neighbours: nothing in the cell itself
    caveats = list(CAVEATS)
    if permutations and 1.0 / (permutations + 1) > q_level / max(n, 1):
        need = int(np.ceil(n / (permutations + 1) / q_level))
        caveats.insert(0, f"With {permutations} permutations the smallest p is 1/{permutations + 1}; over {n:,} cells "
                          f"Benjamini-Hochberg needs at least {need:,} cells at that p before any is significant. "
                          "Use analytic inference or more permutations for large domains.")
    frame = pd.DataFrame({"cell": domain.cells, "value": y, "raw": raw, "g": g, "z": z, "p": p, "q": q,
                          "class": cls, "significant": q <= q_level, "patrol_candidate": hot & (raw > 0)})
    return GiStarResult(cells=frame, domain=domain.describe(), k=k, tail=tail, inference=inference,
                        permutations=int(permutations), q_level=q_level, transform=tname, transform_note=tnote,
                        dropped_outside_domain=int((~inside).sum()), n_significant=int((q <= q_level).sum()),
                        caveats=caveats)
