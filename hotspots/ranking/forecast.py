"""Forecast: expected harm per cell in the period after the look-back, from records up to its end only.

The model is a shrinkage of two estimates of a cell's harm rate, each an exponentially decayed average over
every month of the look-back (all history by default), so recent months count most but no month is dropped:

* own harm      sum over the cell's selected offences of w(age) x harm, over the decayed exposure
* record harm   the same decayed sum over ALL the cell's records (every crime type and anti-social behaviour,
                as counts), times the study area's decayed harm per record

``forecast = (1 - records_weight) x own harm + records_weight x record harm``, scaled to the next period (a month
for month-only data, 14 days for dated data). w(age) = 0.5 ** (age / half_life), age in months from the record
to the end of the look-back. Harm in one cell-month is very noisy (one violent offence is worth ~215 CCHI days,
so a single record moves a cell up the ranking); the all-record count marks the same places with far less
variance, and the shrinkage towards it is what lets the forecast beat prior harm and prior counts.

Parameters (docs/hotspots.md#forecast says how they were chosen):

* ``half_life_months`` = 6: chosen by the rolling-origin backtest on the Leicestershire file (2019-12..2022-10,
  23 origins; half-lives 2, 3, 4, 6, 9, 12, 24 months and no decay tried) and checked on the Essex file, where
  only 1-3 months of history exist and the half-life hardly matters.
* ``records_weight`` = 0.5: equal weight to two estimates of the same rate (not tuned). Fitting it by least
  squares on each origin's own past origins was tried and did no better on Leicestershire (docs/statistics.md).

The functions here take plain arrays (any executor or the backtest can call them); nothing reads the store.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from geodata.settings import DEFAULTS_DIR

DAYS_PER_MONTH = 30.4375  # mean Gregorian month
DATED_HORIZON_DAYS = 14  # the next period for dated data: the observed ranking's default window

FORECAST_COLUMNS = ["forecast_harm", "forecast_own_harm", "forecast_records", "forecast_records_harm"]
FORECAST_FIELDS: dict[str, str] = {
    "forecast_harm": "expected harm (days, per the weights table) in the forecast period: the blend below",
    "forecast_own_harm": "part 1: the cell's own decayed harm rate, scaled to the forecast period",
    "forecast_records": "the cell's decayed rate of ALL records (every crime type and ASB), per forecast period",
    "forecast_records_harm": "part 2: forecast_records x the study area's decayed harm per record",
}

# Measured skill: written by the committed backtest run (bench/backtest_leicestershire.py, which also writes
# docs/backtest-leicestershire.md); the response carries it so a planner sees what the method has been shown to
# do. /evaluation?methods=forecast,... measures it on the caller's own data.
SKILL_FILE = DEFAULTS_DIR / "forecast_skill.json"


@dataclass(frozen=True)
class ForecastParams:
    half_life_months: float = 6.0
    records_weight: float = 0.5

    def describe(self) -> dict:
        return asdict(self)


DEFAULT_PARAMS = ForecastParams()


def decay(age_months: np.ndarray, half_life_months: float) -> np.ndarray:
    """w = 0.5 ** (age / half-life)."""
    return np.power(0.5, np.asarray(age_months, dtype=float) / half_life_months)


def record_age_months(times, end: datetime) -> np.ndarray:
    """Age of each record (its occurred_from) at the end of the look-back, in months."""
    t = pd.to_datetime(pd.Series(times)).to_numpy(dtype="datetime64[ns]")
    return (np.datetime64(pd.Timestamp(end)) - t) / np.timedelta64(1, "D") / DAYS_PER_MONTH


def exposure_months(start: datetime, end: datetime, month_only: bool, half_life_months: float) -> float:
    """Decayed length of the look-back in months: the sum of w(age) over its months (month-only data: each record
    sits at its month's start) or over its days / 30.4375 (dated data). Dividing a decayed sum by it gives a
    decayed mean per month."""
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if end <= start:
        return 0.0
    if month_only:
        months = pd.date_range(start.to_period("M").to_timestamp(), end - pd.Timedelta(microseconds=1), freq="MS")
        return float(decay(record_age_months(months, end), half_life_months).sum())
    days = pd.date_range(start.normalize(), end - pd.Timedelta(microseconds=1), freq="D")
    return float(decay(record_age_months(days, end), half_life_months).sum() / DAYS_PER_MONTH)


def horizon(end: datetime, month_only: bool) -> tuple[datetime, datetime, float]:
    """The forecast period after ``end``: (start, exclusive end, its length in months)."""
    end = pd.Timestamp(end)
    if month_only:  # one month, as each month of the look-back counts one month of exposure
        nxt = end + pd.DateOffset(months=1)
        return end.to_pydatetime(), nxt.to_pydatetime(), 1.0
    nxt = end + pd.Timedelta(days=DATED_HORIZON_DAYS)
    return end.to_pydatetime(), nxt.to_pydatetime(), DATED_HORIZON_DAYS / DAYS_PER_MONTH


def blend(decayed_harm: np.ndarray, decayed_records: np.ndarray,
          params: ForecastParams = DEFAULT_PARAMS) -> tuple[np.ndarray, np.ndarray, float]:
    """(forecast score, record-harm part, harm per record) from per-cell decayed sums, in the units of the
    inputs. The harm per record is the study area's (all cells given): sum of decayed harm / sum of decayed
    records. Used by the API (then scaled to a period) and by the backtest (ranking only)."""
    h = np.asarray(decayed_harm, dtype=float)
    a = np.asarray(decayed_records, dtype=float)
    total_a = a.sum()
    per_record = float(h.sum() / total_a) if total_a > 0 else 0.0
    records_harm = a * per_record
    lam = params.records_weight
    return (1 - lam) * h + lam * records_harm, records_harm, per_record


def forecast_cells(cells: np.ndarray, age_months: np.ndarray, harm: np.ndarray, records: np.ndarray,
                   exposure: float, horizon_months: float,
                   params: ForecastParams = DEFAULT_PARAMS) -> tuple[pd.DataFrame, float]:
    """Per-cell forecast from grouped rows (one row per cell and time bucket, say): ``harm`` of the selected
    offences and ``records`` (count of every record) at ``age_months``. Returns (frame with ``cell`` and
    FORECAST_COLUMNS, harm per record) for every cell with any record."""
    cells = np.asarray(cells, dtype=np.uint64)
    uniq, inv = np.unique(cells, return_inverse=True)
    w = decay(age_months, params.half_life_months)
    dh = np.bincount(inv, weights=w * np.asarray(harm, dtype=float), minlength=len(uniq))
    da = np.bincount(inv, weights=w * np.asarray(records, dtype=float), minlength=len(uniq))
    scale = horizon_months / exposure if exposure > 0 else 0.0
    score, records_harm, per_record = blend(dh, da, params)
    frame = pd.DataFrame({"cell": uniq, "forecast_harm": score * scale, "forecast_own_harm": dh * scale,
                          "forecast_records": da * scale, "forecast_records_harm": records_harm * scale})
    return frame, per_record


def skill(resolution: int) -> dict:
    """The measured backtest skill at ``resolution`` (from the committed benchmark run), or a note saying why not."""
    if not SKILL_FILE.exists():
        return {"note": "no committed backtest of the forecast (run bench/backtest_leicestershire.py)"}
    data = json.loads(SKILL_FILE.read_text(encoding="utf-8"))
    by_res = data.get("by_resolution", {})
    out = {k: v for k, v in data.items() if k != "by_resolution"}
    got = by_res.get(str(resolution))
    if got is None:
        out["note"] = f"not measured at resolution {resolution}; measured at {sorted(int(r) for r in by_res)}"
    else:
        out.update(resolution=resolution, **got)
    return out
