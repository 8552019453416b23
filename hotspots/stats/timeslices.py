"""Consecutive time slices for the space-time engines (emerging hot spots, spikes, backtest).

Month-only data (police.uk: ``precision == 'month'``) is sliced by calendar month and never split into days or
weeks; dated data (``day`` / ``minute``) by fixed-length day windows, 14 days by default. Slices are aligned so
the last one ends at ``end`` (exclusive), by default the end of the data, so the most recent slice is complete.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from geodata.store import DataCannotAnswer


@dataclass(frozen=True)
class Slices:
    unit: str  # "month" | "day"
    length: int  # months or days per slice
    starts: pd.DatetimeIndex
    ends: pd.DatetimeIndex  # exclusive
    precision: str  # coarsest precision of the input ("month", "day", "minute")

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def label(self) -> str:
        return f"{self.length} month{'s' if self.length > 1 else ''}" if self.unit == "month" else f"{self.length} days"

    def labels(self) -> list[str]:
        if self.unit == "month" and self.length == 1:
            return [s.strftime("%Y-%m") for s in self.starts]
        return [f"{s.date()}/{(e - pd.Timedelta(days=1)).date()}" for s, e in zip(self.starts, self.ends)]

    def assign(self, times: pd.Series | np.ndarray) -> np.ndarray:
        """Slice index per time (-1 outside every slice)."""
        t = pd.to_datetime(pd.Series(times)).to_numpy(dtype="datetime64[ns]")
        starts = self.starts.to_numpy(dtype="datetime64[ns]")
        ends = self.ends.to_numpy(dtype="datetime64[ns]")
        idx = np.searchsorted(starts, t, side="right") - 1
        ok = (idx >= 0) & (t < ends[np.clip(idx, 0, len(ends) - 1)])
        return np.where(ok, idx, -1)

    def describe(self) -> dict:
        return {"unit": self.unit, "length": self.length, "slices": len(self), "precision": self.precision,
                "first": str(self.starts[0].date()) if len(self) else None,
                "last_end": str(self.ends[-1].date()) if len(self) else None}


_PRECISION_ORDER = {"minute": 0, "hour": 0, "day": 1, "week": 2, "month": 3}


def coarsest_precision(precision: pd.Series | str | None) -> str:
    if precision is None:
        return "day"
    if isinstance(precision, str):
        return precision
    vals = pd.Series(precision).dropna().astype(str).unique()
    if len(vals) == 0:
        return "day"
    return max(vals, key=lambda v: _PRECISION_ORDER.get(v, 1))


def parse_slice(slice_: str | int | None, precision: str) -> tuple[str, int]:
    """'14D', '7d', '2W', '1M', 14 (days) or None (default: 1 month for month-only data, else 14 days)."""
    if slice_ is None or (isinstance(slice_, str) and not slice_.strip()):  # an empty form value: the default
        return ("month", 1) if precision == "month" else ("day", 14)
    if isinstance(slice_, (int, np.integer)):
        unit, length = "day", int(slice_)
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([DdWwMm])\w*\s*", str(slice_))
        if not m:
            raise ValueError(f"slice {slice_!r}: use e.g. '14D', '2W' or '1M'")
        length, u = int(m.group(1)), m.group(2).upper()
        unit, length = ("month", length) if u == "M" else ("day", length * (7 if u == "W" else 1))
    if length < 1:
        raise ValueError("slice length must be positive")
    if precision == "month" and unit != "month":
        raise DataCannotAnswer(f"the data are month-only; a {length}-day slice would invent days. Use a whole number of "
                         "months (e.g. '1M').")
    return unit, length


def make_slices(times: pd.Series, precision: pd.Series | str | None = None, slice_: str | int | None = None,
                end: str | pd.Timestamp | None = None, n: int | None = None,
                start: str | pd.Timestamp | None = None) -> Slices:
    """Consecutive slices ending at ``end`` (exclusive; default: just after the last event) going back ``n``
    slices (default: as many whole slices as fit after ``start`` or the first event)."""
    prec = coarsest_precision(precision)
    unit, length = parse_slice(slice_, prec)
    t = pd.to_datetime(pd.Series(times))
    if len(t) == 0 and (end is None or (n is None and start is None)):
        raise ValueError("no events to slice")
    first = pd.Timestamp(start) if start is not None else t.min()
    if unit == "month":
        last_end = (pd.Timestamp(end) if end is not None
                    else (t.max().to_period("M") + 1).to_timestamp())
        last_end = last_end.to_period("M").to_timestamp() if last_end.day != 1 or last_end != last_end.normalize() \
            else last_end
        total = (last_end.to_period("M") - first.to_period("M")).n
        count = n if n is not None else max(total // length, 0)
        ends = pd.DatetimeIndex([(last_end.to_period("M") - length * i).to_timestamp() for i in range(count)][::-1])
        starts = pd.DatetimeIndex([(e.to_period("M") - length).to_timestamp() for e in ends])
    else:
        last_end = pd.Timestamp(end).normalize() if end is not None else t.max().normalize() + pd.Timedelta(days=1)
        span = (last_end - first.normalize()).days
        count = n if n is not None else max(span // length, 0)
        ends = pd.DatetimeIndex([last_end - pd.Timedelta(days=length * i) for i in range(count)][::-1])
        starts = ends - pd.Timedelta(days=length)
    return Slices(unit=unit, length=length, starts=starts, ends=ends, precision=prec)


def cube(unit_index: np.ndarray, slice_index: np.ndarray, n_units: int, n_slices: int,
         weights: np.ndarray | None = None) -> np.ndarray:
    """(n_units, n_slices) sums of ``weights`` (counts when None); entries with an index of -1 are ignored."""
    ok = (unit_index >= 0) & (slice_index >= 0)
    flat = unit_index[ok].astype(np.int64) * n_slices + slice_index[ok]
    w = None if weights is None else np.asarray(weights, dtype=float)[ok]
    return np.bincount(flat, weights=w, minlength=n_units * n_slices).astype(float).reshape(n_units, n_slices)
