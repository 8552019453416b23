"""Harm weights: the Cambridge Crime Harm Index (or any table of days per offence) turned into weights.

A :class:`WeightsTable` resolves a record's harm in this order:

1. its Home Office code (``ho_code``), when the table has that code — **exact**;
2. its offence group (e.g. ``wounding_intent``), the median of the table's codes in that group — approximate;
3. its data.police.uk category, the expected weight of a record of that category given the national
   offence mix (ONS police recorded crime counts by subgroup) — approximate.

Anti-social behaviour is not a crime and has no CCHI value: weight 0 and excluded from harm by default.
See docs/harm-weights.md for the derivation and its caveats.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geodata.settings import DEFAULTS_DIR
from geodata.taxonomy import ASB, GROUP_CATEGORY, POLICEUK_CATEGORIES, groups_from_ho, normalise_ho_code

DEFAULTS = DEFAULTS_DIR  # shipped open tables
OPEN_TABLE_NAME = "harmspot-open-2026"


class WeightsError(ValueError):
    """A weights table could not be read."""


@dataclass(frozen=True)
class WeightsTable:
    name: str
    source: str
    licence: str
    by_ho: dict[str, float] = field(default_factory=dict)
    by_title: dict[str, str] = field(default_factory=dict)  # lower-case offence title -> HO code
    by_group: dict[str, float] = field(default_factory=dict)
    by_category: dict[str, float] = field(default_factory=dict)
    category_method: str = ""

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "licence": self.licence,
            "ho_codes": len(self.by_ho),
            "groups": dict(sorted(self.by_group.items())),
            "categories": dict(sorted(self.by_category.items())),
            "category_method": self.category_method,
        }

    def weigh(self, ho_code: pd.Series, group: pd.Series, category: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised weights (days) and an exactness flag for parallel series of keys."""
        w_ho = ho_code.map(self.by_ho).astype("Float64")
        w_group = group.map(self.by_group).astype("Float64")
        w_cat = category.map(self.by_category).astype("Float64")
        days = w_ho.fillna(w_group).fillna(w_cat).fillna(0.0).to_numpy(dtype=float)
        exact = w_ho.notna().to_numpy()
        days[(category == ASB).to_numpy(dtype=bool, na_value=False)] = 0.0
        return days, exact


def _subgroup_counts() -> pd.DataFrame:
    table = pd.read_csv(DEFAULTS / "prc_subgroup_counts.csv")
    table["groups"] = table["groups"].str.split(";")
    return table


def _category_weights(weights: dict[str, float], group_of: dict[str, str]) -> tuple[dict[str, float], str]:
    """Expected days per police.uk category = count-weighted mean of its subgroups' weights.

    ``weights`` maps keys (HO codes, or offence groups for a table without codes) to days and ``group_of``
    maps each key to its offence group; a subgroup's weight is the median over its keys.
    """
    sub = _subgroup_counts()
    rows = []
    for _, r in sub.iterrows():
        members = set(r["groups"])
        ws = [w for k, w in weights.items() if group_of.get(k) in members]
        if ws:
            rows.append((GROUP_CATEGORY[r["groups"][0]], float(np.median(ws)), float(r["national_count"])))
    frame = pd.DataFrame(rows, columns=["category", "w", "n"])
    out = (frame.assign(wn=frame.w * frame.n).groupby("category")[["wn", "n"]].sum())
    weights = (out.wn / out.n).round(2).to_dict()
    method = (
        "count-weighted mean over Home Office subgroups: each subgroup's weight is the median of the table's "
        "weights over the Home Office codes (or, without codes, the offence groups) in it, weighted by national police recorded crime counts "
        "(ONS, year ending March 2025)"
    )
    return {c: weights[c] for c in POLICEUK_CATEGORIES if c in weights}, method


def load_open_default() -> WeightsTable:
    """harmspot's own open table (weights per offence group with Sentencing Council basis)."""
    frame = pd.read_csv(DEFAULTS / "harmspot_open_weights.csv")
    by_group = {r.key: float(r.days) for r in frame.itertuples() if r.key_type == "group"}
    by_cat, method = _category_weights(by_group, {g: g for g in by_group})
    explicit = {r.key: float(r.days) for r in frame.itertuples() if r.key_type == "category"}
    by_cat.update(explicit)
    method += f"; set explicitly in the table for: {', '.join(sorted(explicit))}"
    return WeightsTable(
        name=OPEN_TABLE_NAME,
        source="harmspot open default: Sentencing Council starting points per offence group (geodata/defaults)",
        licence="MIT (harmspot)",
        by_group=by_group,
        by_category=by_cat,
        category_method=method,
    )


def _read_cchi(path: Path, name: str) -> WeightsTable:
    frame = pd.read_csv(path, dtype=str, encoding="utf-8", encoding_errors="replace")
    frame = frame[frame["NOTIFIABLE"].str.strip().str.lower() == "notifiable"].copy()
    frame["days"] = pd.to_numeric(frame["CCHI Score"], errors="coerce")
    frame["ho"] = normalise_ho_code(frame["HOME_OFFICE_CLASSIFICATION"])
    frame = frame.dropna(subset=["days", "ho"])
    # Several CCHI rows share one HO code (attempts, assaults on police...): the base offence is the least
    # severe variant and the most common, so a code takes the lowest value among its rows.
    by_ho = frame.groupby("ho")["days"].min().to_dict()
    titles: dict[str, str] = {}
    for col in ("FULL_OFFENCE_TITLE", "SHORT_TITLE"):
        for t, code in zip(frame[col].fillna("").str.strip().str.lower(), frame["ho"]):
            if t:
                titles.setdefault(t, code)
    codes = pd.Series(list(by_ho), dtype="string")
    groups = groups_from_ho(codes)
    by_group = pd.DataFrame({"g": groups, "w": [by_ho[c] for c in codes]}).groupby("g")["w"].median().to_dict()
    by_cat, method = _category_weights(by_ho, dict(zip(codes, groups)))
    return WeightsTable(
        name=name,
        source=f"Cambridge Crime Harm Index values sheet read from {path.name}",
        licence="Cambridge Centre for Evidence-Based Policing; no open licence (read from a local path)",
        by_ho=by_ho,
        by_title=titles,
        by_group={k: float(v) for k, v in by_group.items()},
        by_category=by_cat,
        category_method=method,
    )


def _read_simple(path: Path, name: str) -> WeightsTable:
    """A user table: columns ``ho_code`` or ``group`` or ``category`` (one of them per row) and ``days``."""
    frame = pd.read_csv(path, dtype=str)
    cols = {c.strip().lower(): c for c in frame.columns}
    if "days" not in cols:
        raise WeightsError(f"{path.name}: a weights table needs a 'days' column (found {list(frame.columns)})")
    days = pd.to_numeric(frame[cols["days"]], errors="coerce")
    bad = days.isna() | (days < 0)
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise WeightsError(f"{path.name} line {line}: 'days' must be a non-negative number")
    by_ho: dict[str, float] = {}
    by_group: dict[str, float] = {}
    by_cat: dict[str, float] = {}
    if "ho_code" in cols:
        codes = normalise_ho_code(frame[cols["ho_code"]])
        by_ho = {c: float(d) for c, d in zip(codes, days) if isinstance(c, str)}
    if "group" in cols:
        by_group = {g.strip(): float(d) for g, d in zip(frame[cols["group"]], days) if isinstance(g, str) and g.strip()}
    if "category" in cols:
        by_cat = {c.strip(): float(d) for c, d in zip(frame[cols["category"]], days) if isinstance(c, str) and c.strip()}
    if not (by_ho or by_group or by_cat):
        raise WeightsError(f"{path.name}: no rows keyed by 'ho_code', 'group' or 'category'")
    group_of = {g: g for g in by_group}
    keyed = dict(by_group)
    if by_ho:
        codes = pd.Series(list(by_ho), dtype="string")
        code_groups = groups_from_ho(codes)
        if not by_group:
            by_group = pd.DataFrame({"g": code_groups, "w": list(by_ho.values())}).groupby("g")["w"].median().to_dict()
        group_of, keyed = dict(zip(codes, code_groups)), by_ho
    method = "given in the table"
    if not by_cat and keyed:
        by_cat, method = _category_weights(keyed, group_of)
    return WeightsTable(name=name, source=f"user table {path.name}", licence="as supplied by the user",
                        by_ho=by_ho, by_group=by_group, by_category=by_cat, category_method=method)


def load_weights_file(path: Path, name: str | None = None) -> WeightsTable:
    """Read a CCHI values sheet (detected by its columns) or a simple ``key,days`` table."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        header = next(csv.reader(fh), [])
    name = name or path.stem
    if "CCHI Score" in header and "HOME_OFFICE_CLASSIFICATION" in header:
        return _read_cchi(path, name)
    return _read_simple(path, name)
