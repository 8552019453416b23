"""Operationalise each risk factor at each distance: proximity and kernel density, vectorised.

For one layer, a single ``cKDTree.sparse_distance_matrix`` between feature points and cell centres (BNG
metres) up to the largest distance gives every (cell, feature, distance) pair once; every distance and both
operationalisations are then masks and ``np.bincount`` over those pairs.  No loop over cells or features.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_DISTANCES = tuple(float(d) for d in range(50, 401, 50))  # 50 m steps to 400 m
# RTMDx's default is half-block steps from 0.5 to 3 street-block lengths (Caplan & Kennedy 2016, ch. 5): used
# when a median block length is given (RTMConfig.block_length_m)
DEFAULT_BLOCK_MULTIPLES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
OPERATIONALISATIONS = ("proximity", "density")
DENSITY_SD = 2.0  # "dense" = kernel density above mean + 2 SD (RTMDx; Caplan & Kennedy 2016)


@dataclass(frozen=True)
class Variable:
    factor: str  # layer name
    kind: str  # "proximity" | "density"
    distance: float  # metres (proximity: nearest within d; density: quartic kernel bandwidth d)
    type: str = ""  # layer type, the noun for narratives
    plural: str = ""
    block_length: float | None = None  # metres: when distances were set in block lengths, say so in narratives

    @property
    def blocks(self) -> float | None:
        return round(self.distance / self.block_length, 3) if self.block_length else None

    @property
    def key(self) -> str:
        return f"{self.factor}:{self.kind}:{self.distance:g}"

    def phrase(self) -> str:
        noun = self.type or self.factor
        b = self.blocks
        dist = f"{self.distance:g} m" + (f" ({b:g} block{'' if b == 1 else 's'})" if b else "")
        if self.kind == "proximity":
            article = "an" if noun[:1].lower() in "aeiou" else "a"
            return f"within {dist} of {article} {noun}"
        return f"in a dense cluster of {self.plural or noun + 's'} within {dist}"

    def to_dict(self) -> dict:
        return {"factor": self.factor, "operationalisation": self.kind, "spatial_influence_m": self.distance,
                "spatial_influence_blocks": self.blocks, "type": self.type, "key": self.key}


@dataclass
class FeatureMatrix:
    X: np.ndarray  # uint8, cells x variables
    variables: list[Variable]
    nearest: dict[str, np.ndarray] = field(default_factory=dict)  # factor -> nearest distance per cell (inf > max)
    dropped: list[dict] = field(default_factory=list)  # constant variables left out, with the reason

    def column(self, key: str) -> np.ndarray:
        return self.X[:, [v.key for v in self.variables].index(key)]


def quartic_weight(dist: np.ndarray, radius: float) -> np.ndarray:
    """Quartic (biweight) kernel, per m²: 3/(pi r²) (1 - (d/r)²)² for d < r (the ArcGIS/RTMDx kernel)."""
    u = dist / radius
    return np.where(u < 1.0, (3.0 / (np.pi * radius * radius)) * (1.0 - u * u) ** 2, 0.0)


def build_features(cx: np.ndarray, cy: np.ndarray, layers, distances=DEFAULT_DISTANCES,
                   operationalisations=OPERATIONALISATIONS, density_sd: float = DENSITY_SD,
                   cell_tree: cKDTree | None = None, block_length: float | None = None) -> FeatureMatrix:
    """Binary variables for every layer x operationalisation x distance at cell centres (cx, cy) in BNG.

    block_length (metres), when the distances were chosen as multiples of it, is carried on each Variable for
    the factor table and the narratives; the distances themselves are always metres."""
    distances = tuple(sorted(float(d) for d in distances))
    for op in operationalisations:
        if op not in OPERATIONALISATIONS:
            raise ValueError(f"unknown operationalisation {op!r}; use {OPERATIONALISATIONS}")
    dmax = max(distances)
    n = len(cx)
    tree = cell_tree if cell_tree is not None else cKDTree(np.column_stack([cx, cy]))
    cols: list[np.ndarray] = []
    variables: list[Variable] = []
    dropped: list[dict] = []
    nearest: dict[str, np.ndarray] = {}
    for layer in layers:
        pts = np.column_stack([layer.x, layer.y])
        if len(pts):
            pairs = cKDTree(pts).sparse_distance_matrix(tree, dmax, output_type="ndarray")  # keeps zeros
            cell_idx, dist = pairs["j"].astype(np.int64), pairs["v"]
        else:
            cell_idx, dist = np.empty(0, np.int64), np.empty(0)
        near = np.full(n, np.inf)
        if len(dist):
            np.minimum.at(near, cell_idx, dist)
        nearest[layer.name] = near
        for op in operationalisations:
            for d in distances:
                var = Variable(layer.name, op, d, getattr(layer, "type", ""), getattr(layer, "plural", ""),
                               block_length)
                if op == "proximity":
                    col = near <= d
                else:
                    m = dist < d
                    dens = np.bincount(cell_idx[m], weights=quartic_weight(dist[m], d), minlength=n)
                    thr = dens.mean() + density_sd * dens.std()
                    col = (dens > thr) & (dens > 0)
                s = int(col.sum())
                if s == 0 or s == n:
                    dropped.append({**var.to_dict(), "reason": "no cell" if s == 0 else "every cell"})
                    continue
                cols.append(col.astype(np.uint8))
                variables.append(var)
    X = np.column_stack(cols) if cols else np.zeros((n, 0), dtype=np.uint8)
    return FeatureMatrix(X=X, variables=variables, nearest=nearest, dropped=dropped)
