"""Key dates: harm spots after a date (e.g. a lockdown-easing step), the change against the window before, and
an analogue forecast from the comparable window after the previous similar date.

Windows keep the precision of the data (DESIGN: never invent days).  With day (or finer) precision the windows
are ``[date - N days, date)`` and ``[date, date + N days)``.  With month-only data (data.police.uk) the windows
are whole months: a key date on the 1st starts its month; a key date inside a month makes that month straddle
the date, and by default (``month_rule="exclude"``) the straddling month is dropped from both windows rather
than split, so 2021-05-17 compares April 2021 (before) with June 2021 (after).  ``month_rule="majority"``
instead gives the straddling month to the side holding most of its days.  See docs/patrol-planning.md.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from geodata.harm import WeightsTable
from geodata.settings import DEFAULTS_DIR
from geodata.store import DataCannotAnswer, Store, utc_now
from hotspots.ranking.harmspots import harm_spots
from hotspots.ranking.query import HotspotQuery

SHIPPED: dict[str, tuple[Path, str]] = {
    "england-2020-21": (DEFAULTS_DIR / "keydates_england_2020_21.csv",
                        "England Covid-19 lockdown easing, 2020-21 (hospitality reopening, end of the second "
                        "lockdown, and the 2021 roadmap steps 1a-4)"),
}
DEFAULT_WINDOW_DAYS = 28  # four weeks: two biweekly tasking cycles; a whole number of weeks keeps weekdays balanced
DEFAULT_BLEND = 0.5  # weight of the analogue pattern in the forecast; docs/patrol-planning.md explains the choice
MonthRule = Literal["exclude", "majority"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS keydate_sets (name VARCHAR PRIMARY KEY, description VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS keydates (set_name VARCHAR, date DATE, label VARCHAR, kind VARCHAR, analogue DATE);
"""


class KeyDateError(ValueError):
    """An invalid key-date set or an unknown set/date."""


@dataclass(frozen=True)
class KeyDate:
    date: date
    label: str
    kind: str = ""
    analogue: date | None = None  # explicit previous similar date; else the latest earlier date of the same kind

    def to_dict(self) -> dict:
        return {"date": self.date.isoformat(), "label": self.label, "kind": self.kind or None,
                "analogue": self.analogue.isoformat() if self.analogue else None}


@dataclass(frozen=True)
class KeyDateSet:
    name: str
    description: str
    dates: tuple[KeyDate, ...]
    shipped: bool = False

    def get(self, d: date) -> KeyDate:
        for k in self.dates:
            if k.date == d:
                return k
        raise KeyDateError(f"{d.isoformat()} is not a key date of set '{self.name}'; its dates: "
                           f"{[k.date.isoformat() for k in self.dates]}")

    def analogue_of(self, kd: KeyDate) -> KeyDate | None:
        """The explicit analogue if given, else the latest earlier date of the same kind, else none."""
        if kd.analogue is not None:
            return next((k for k in self.dates if k.date == kd.analogue), KeyDate(kd.analogue, "analogue"))
        earlier = [k for k in self.dates if k.kind and k.kind == kd.kind and k.date < kd.date]
        return max(earlier, key=lambda k: k.date) if earlier else None

    def to_dict(self) -> dict:
        out = []
        for k in self.dates:
            a = self.analogue_of(k)
            out.append({**k.to_dict(), "analogue_used": a.date.isoformat() if a else None})
        return {"name": self.name, "description": self.description, "shipped": self.shipped, "dates": out}


def _parse_date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(str(text).strip())
    except ValueError as exc:
        raise KeyDateError(f"{what}: '{text}' is not a date (YYYY-MM-DD)") from exc


def make_set(name: str, description: str, rows: list[dict], shipped: bool = False) -> KeyDateSet:
    """Validate rows of {date, label, kind?, analogue?} into a set (dates unique, analogues earlier)."""
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise KeyDateError("set name: use letters, digits, '-', '_' or '.'")
    if not rows:
        raise KeyDateError("a key-date set needs at least one date")
    dates = []
    for i, r in enumerate(rows, start=1):
        d = _parse_date(r.get("date", ""), f"date {i}")
        label = str(r.get("label") or "").strip()
        if not label:
            raise KeyDateError(f"date {i} ({d}): a label is required")
        a = r.get("analogue")
        ad = _parse_date(a, f"date {i} analogue") if a not in (None, "") else None
        if ad is not None and ad >= d:
            raise KeyDateError(f"date {i} ({d}): the analogue {ad} must be an earlier date")
        dates.append(KeyDate(d, label, str(r.get("kind") or "").strip(), ad))
    seen = [k.date for k in dates]
    if len(set(seen)) != len(seen):
        raise KeyDateError("each date may appear once in a set")
    return KeyDateSet(name, description, tuple(sorted(dates, key=lambda k: k.date)), shipped)


def shipped_set(name: str) -> KeyDateSet:
    path, description = SHIPPED[name]
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return make_set(name, description, rows, shipped=True)


def ensure_schema(store: Store) -> None:
    store.ensure_schema(SCHEMA)  # once per store handle (a transaction per read would end every cached result)


def save_set(store: Store, kset: KeyDateSet, replace: bool = False) -> None:
    """Store a user set in one transaction (all dates or none): the exists check and the write run in the same
    transaction under the write lock (Store.write), so parallel posts of one name give one 201 and 409s."""
    if kset.name in SHIPPED:
        raise KeyDateError(f"'{kset.name}' is a shipped set; choose another name")
    ensure_schema(store)
    frame = pd.DataFrame([{"set_name": kset.name, "date": k.date, "label": k.label, "kind": k.kind,
                           "analogue": k.analogue} for k in kset.dates])

    def write(cur) -> None:
        exists = cur.execute("SELECT count(*) FROM keydate_sets WHERE name = ?", [kset.name]).fetchall()[0][0]
        if exists and not replace:
            raise KeyDateError(f"key-date set '{kset.name}' already exists (replace=true to overwrite)")
        cur.execute("DELETE FROM keydates WHERE set_name = ?", [kset.name])
        cur.execute("DELETE FROM keydate_sets WHERE name = ?", [kset.name])
        cur.execute("INSERT INTO keydate_sets VALUES (?, ?, ?)", [kset.name, kset.description, utc_now()])
        cur.register("kd", frame)
        cur.execute("INSERT INTO keydates SELECT set_name, date, label, kind, analogue FROM kd")
        cur.unregister("kd")

    store.write(write, scope="keydates")


def list_sets(store: Store) -> list[KeyDateSet]:
    ensure_schema(store)
    out = [shipped_set(n) for n in SHIPPED]
    sets = store.query_df("SELECT name, description FROM keydate_sets ORDER BY name")
    rows = store.query_df("SELECT set_name, date, label, kind, analogue FROM keydates ORDER BY set_name, date")
    for s in sets.itertuples():
        part = rows[rows.set_name == s.name]
        out.append(make_set(s.name, s.description or "", [
            {"date": pd.Timestamp(r.date).date().isoformat(), "label": r.label, "kind": r.kind,
             "analogue": pd.Timestamp(r.analogue).date().isoformat() if pd.notna(r.analogue) else None}
            for r in part.itertuples()]))
    return out


def get_set(store: Store, name: str) -> KeyDateSet:
    for s in list_sets(store):
        if s.name == name:
            return s
    raise KeyDateError(f"unknown key-date set '{name}'; sets: {[s.name for s in list_sets(store)]}")


# ---------------------------------------------------------------------------------------------- windows
def _month_start(d: date) -> date:
    return d.replace(day=1)


def _add_months(d: date, n: int) -> date:
    m = d.year * 12 + (d.month - 1) + n
    return date(m // 12, m % 12 + 1, 1)


@dataclass(frozen=True)
class Window:
    start: date
    end_exclusive: date
    precision: str

    @property
    def days(self) -> int:
        return (self.end_exclusive - self.start).days

    def query_bounds(self) -> tuple[str, str]:
        """(from, to) strings for HotspotQuery: whole months for month windows, days otherwise."""
        last = self.end_exclusive - timedelta(days=1)
        if self.precision == "month":
            return self.start.strftime("%Y-%m"), last.strftime("%Y-%m")
        return self.start.isoformat(), last.isoformat()

    def to_dict(self) -> dict:
        last = self.end_exclusive - timedelta(days=1)
        out = {"from": self.start.isoformat(), "to": last.isoformat(), "days": self.days, "precision": self.precision}
        if self.precision == "month":
            out["months"] = pd.period_range(self.start, last, freq="M").astype(str).tolist()
        return out


@dataclass(frozen=True)
class KeyDateWindows:
    key_date: date
    precision: str
    before: Window
    after: Window
    straddle_month: str | None
    rule: str


def key_date_windows(key_date: date, precision: str, window_days: int = DEFAULT_WINDOW_DAYS,
                     month_rule: MonthRule = "exclude") -> KeyDateWindows:
    """The before/after windows around a key date at the data's precision ('month' or finer)."""
    if window_days < 1:
        raise KeyDateError("window_days must be at least 1")
    if precision != "month":
        return KeyDateWindows(
            key_date, "day", Window(key_date - timedelta(days=window_days), key_date, "day"),
            Window(key_date, key_date + timedelta(days=window_days), "day"), None,
            f"day windows: the {window_days} days before the key date and the {window_days} days from it")
    n = max(1, int(round(window_days / 30.4375)))
    month = _month_start(key_date)
    straddle = None
    if key_date.day == 1:
        after_start, before_end = month, month
        rule = "the key date is the 1st: its month starts the after window"
    else:
        straddle = month.strftime("%Y-%m")
        days_in = (_add_months(month, 1) - month).days
        before_days = key_date.day - 1
        if month_rule == "majority":
            to_after = days_in - before_days >= before_days
            after_start = month if to_after else _add_months(month, 1)
            before_end = after_start
            rule = (f"month-only data: {straddle} straddles the key date ({before_days} days before, "
                    f"{days_in - before_days} from it) and is assigned to the {'after' if to_after else 'before'} "
                    "window, the side holding most of its days (month_rule=majority)")
        elif month_rule == "exclude":
            after_start, before_end = _add_months(month, 1), month
            rule = (f"month-only data: {straddle} straddles the key date and is left out of both windows, not "
                    "split (month_rule=exclude; records carry no day)")
        else:
            raise KeyDateError("month_rule is 'exclude' or 'majority'")
    return KeyDateWindows(key_date, "month", Window(_add_months(before_end, -n), before_end, "month"),
                          Window(after_start, _add_months(after_start, n), "month"), straddle,
                          rule + f"; windows of {n} whole month{'s' if n > 1 else ''}")


# ---------------------------------------------------------------------------------------------- analysis
@dataclass
class KeyDateResult:
    set_name: str
    key_date: KeyDate
    analogue: KeyDate | None
    windows: KeyDateWindows
    analogue_windows: KeyDateWindows | None
    recent_window: Window
    cells: pd.DataFrame  # after-window cells ranked by harm, with before values and change
    forecast: pd.DataFrame  # analogue forecast cells ranked by forecast harm
    summary: dict
    forecast_check: dict | None
    blend: float
    weights_table: str
    time_precision: list[str]
    caveats: list[str] = field(default_factory=list)

    def meta(self) -> dict:
        w, a = self.windows, self.analogue_windows
        return {
            "set": self.set_name, "key_date": self.key_date.to_dict(),
            "analogue": self.analogue.to_dict() if self.analogue else None,
            "precision": w.precision, "window_rule": w.rule, "straddle_month": w.straddle_month,
            "before": w.before.to_dict(), "after": w.after.to_dict(),
            "analogue_before": a.before.to_dict() if a else None, "analogue_after": a.after.to_dict() if a else None,
            "recent": self.recent_window.to_dict(), "blend": self.blend, "summary": self.summary,
            "forecast_check": self.forecast_check, "weights_table": self.weights_table,
            "time_precision": self.time_precision, "caveats": self.caveats,
        }


def data_coverage(store: Store, dataset: str) -> tuple[date, date, str, list[str]]:
    """(first day, last day exclusive, window precision, precisions) of a dataset."""
    info = store.query_df("""SELECT min(occurred_from) AS first, max(occurred_to) AS last,
                             list(DISTINCT precision) AS precisions FROM offences WHERE dataset = ?""", [dataset])
    if info.empty or pd.isna(info["first"].iloc[0]):
        raise DataCannotAnswer(f"dataset '{dataset}' has no offences")
    precisions = sorted(str(p) for p in info["precisions"].iloc[0] if p is not None)
    return (pd.Timestamp(info["first"].iloc[0]).date(), pd.Timestamp(info["last"].iloc[0]).ceil("D").date(),
            "month" if precisions == ["month"] else "day", precisions)


def coverage(store: Store, dataset: str, kset: KeyDateSet, window_days: int = DEFAULT_WINDOW_DAYS,
             month_rule: MonthRule = "exclude") -> dict[date, dict]:
    """Per key date of the set: whether its before and after windows lie in the dataset's data (a date outside
    the data has no observed spots or no change, only a forecast)."""
    first, last_excl, precision, _ = data_coverage(store, dataset)
    out = {}
    for k in kset.dates:
        w = key_date_windows(k.date, precision, window_days, month_rule)
        a, b = _covered(w.after, first, last_excl), _covered(w.before, first, last_excl)
        status = ("in data" if a and b else "after window beyond the data: forecast only" if b and not a
                  else "before window not in the data: no change" if a else "outside the data: forecast only")
        out[k.date] = {"in_data": a and b, "after_in_data": a, "before_in_data": b, "status": status}
    return out


def _window_cells(store: Store, base: HotspotQuery, win: Window, weights: WeightsTable,
                  label_top: int) -> tuple[pd.DataFrame, dict]:
    """Every cell with harm in the window (offence labels only for the top ``label_top``: they cost a group-by)."""
    f, t = win.query_bounds()
    q = base.model_copy(update={"date_from": f, "date_to": t, "top": label_top})
    res = harm_spots(store, q, weights)
    cells = res.cells[["cell", "h3", "harm", "count", "lat", "lon", "top_offences"]].copy()
    cells["harm"] = cells["harm"].round(6)  # parallel float sums vary in the last bits: keep ties stable
    return cells, {"weights_table": res.weights_table, "time_precision": res.time_precision,
                   "caveats": res.caveats + res.not_applied}


def _covered(win: Window, first: date, last_exclusive: date) -> bool:
    return win.start >= first and win.end_exclusive <= last_exclusive


def key_date_hotspots(store: Store, base: HotspotQuery, weights: WeightsTable, kset: KeyDateSet, when: date,
                      window_days: int = DEFAULT_WINDOW_DAYS, month_rule: MonthRule = "exclude",
                      blend: float = DEFAULT_BLEND, top: int = 20) -> KeyDateResult:
    """Harm spots after a key date, change against before, and the analogue forecast.

    Forecast (per cell c, harm per day):  F_c = T * (blend * pA_c + (1 - blend) * pR_c), where pA is the cell's
    share of harm in the window after the analogue date, pR its share in the recent window (the window before
    the key date, or the last window of data when the key date lies beyond the data), and T the expected total
    rate = recent total rate x the analogue's uplift (after / before total rate; 1 when the analogue's before
    window is not in the data)."""
    if not 0.0 <= blend <= 1.0:
        raise KeyDateError("blend is between 0 and 1")
    kd = kset.get(when)
    first, last_excl, precision, precisions = data_coverage(store, base.dataset)
    wins = key_date_windows(kd.date, precision, window_days, month_rule)
    caveats: list[str] = []
    if precision == "month":
        caveats.append("data.police.uk records are month-only: key-date windows are whole months; " + wins.rule)
    elif "month" in precisions:
        caveats.append("month-only records in this dataset are not counted in day windows (their day is unknown)")

    empty = pd.DataFrame({"cell": pd.Series(dtype="uint64"), "h3": pd.Series(dtype=str), "harm": pd.Series(dtype=float),
                          "count": pd.Series(dtype=int), "lat": pd.Series(dtype=float), "lon": pd.Series(dtype=float),
                          "top_offences": pd.Series(dtype=object)})
    info: dict = {"weights_table": weights.name if not base.weights else base.weights, "time_precision": precisions}

    memo: dict[Window, pd.DataFrame] = {}

    def cells_for(win: Window) -> pd.DataFrame | None:
        if not _covered(win, first, last_excl):
            return None
        if win in memo:
            return memo[win]
        c, i = _window_cells(store, base, win, weights, max(top, 50))
        memo[win] = c
        info.update({k: v for k, v in i.items() if k != "caveats"})
        seen = {c.split(":")[0] for c in caveats}
        for cv in i["caveats"]:  # per-window not-applied counts differ: keep the first window's wording once
            if cv.split(":")[0] not in seen:
                caveats.append(cv)
        return c

    after = cells_for(wins.after)
    before = cells_for(wins.before)
    if after is None:
        caveats.append(f"the after window {wins.after.to_dict()['from']}..{wins.after.to_dict()['to']} is not (fully) "
                       f"in the data ({first}..{last_excl - timedelta(days=1)}): no observed spots, forecast only")
    if before is None:
        caveats.append("the before window is not (fully) in the data: no change can be computed")
    cells = _change_table(after if after is not None else empty, before if before is not None else empty,
                          wins.after.days, wins.before.days)

    # recent data: the before window, or the latest window of the same length when the key date is past the data
    if before is not None:
        recent_win, recent = wins.before, before
    else:
        if precision == "month":
            end = _month_start(last_excl) if last_excl.day != 1 else last_excl
            n = len(wins.before.to_dict().get("months", [1]))
            recent_win = Window(_add_months(end, -n), end, "month")
        else:
            recent_win = Window(last_excl - timedelta(days=wins.before.days), last_excl, "day")
        recent = cells_for(recent_win)
        if recent is None:
            recent = empty
    analogue = kset.analogue_of(kd)
    a_wins = key_date_windows(analogue.date, precision, window_days, month_rule) if analogue else None
    a_after = cells_for(a_wins.after) if a_wins else None
    a_before = cells_for(a_wins.before) if a_wins else None
    if analogue is None:
        caveats.append("no analogue date (no earlier date of the same kind): the forecast is recent data only")
    elif a_after is None:
        caveats.append(f"the window after the analogue {analogue.date} is not in the data: forecast is recent data only")
    forecast, uplift = _forecast(recent, recent_win.days, a_after, a_wins.after.days if a_wins else 1,
                                 a_before, a_wins.before.days if a_wins else 1, blend if a_after is not None else 0.0)
    check = _forecast_check(forecast, recent, a_after, after, top) if after is not None and len(after) else None

    tb = float(cells["harm_before"].sum())
    ta = float(cells["harm_after"].sum())
    rb = tb / wins.before.days if before is not None else None
    ra = ta / wins.after.days if after is not None else None
    summary = {
        "harm_before": round(tb, 3) if before is not None else None,
        "harm_after": round(ta, 3) if after is not None else None,
        "count_before": int(cells["count_before"].sum()) if before is not None else None,
        "count_after": int(cells["count_after"].sum()) if after is not None else None,
        "harm_per_day_before": round(rb, 3) if rb is not None else None,
        "harm_per_day_after": round(ra, 3) if ra is not None else None,
        "change_pct": round(100 * (ra - rb) / rb, 2) if ra is not None and rb else None,
        "top_spots_also_top_before": _overlap(cells, top),
        "analogue_uplift": round(uplift, 4) if uplift is not None else None,
    }
    return KeyDateResult(kset.name, kd, analogue, wins, a_wins, recent_win, cells, forecast.head(top), summary, check,
                         blend, info["weights_table"], info["time_precision"], caveats)


def _change_table(after: pd.DataFrame, before: pd.DataFrame, days_after: int, days_before: int) -> pd.DataFrame:
    a = after.rename(columns={"harm": "harm_after", "count": "count_after"})
    b = before[["cell", "h3", "harm", "count", "lat", "lon"]].rename(columns={"harm": "harm_before",
                                                                            "count": "count_before"})
    m = a.merge(b, on="cell", how="outer", suffixes=("", "_b"))
    for col in ("h3", "lat", "lon"):
        m[col] = m[col].where(m[col].notna(), m[f"{col}_b"])
    m = m.drop(columns=["h3_b", "lat_b", "lon_b"])
    for col in ("harm_after", "harm_before"):
        m[col] = m[col].astype(float).fillna(0.0)
    for col in ("count_after", "count_before"):
        m[col] = m[col].fillna(0).astype(int)
    m["harm_per_day_after"] = m["harm_after"] / max(days_after, 1)
    m["harm_per_day_before"] = m["harm_before"] / max(days_before, 1)
    m["change_per_day"] = m["harm_per_day_after"] - m["harm_per_day_before"]
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = 100 * m["change_per_day"] / m["harm_per_day_before"]
    m["change_pct"] = pct.where(m["harm_per_day_before"] > 0)
    m = m.sort_values(["harm_after", "harm_before", "h3"], ascending=[False, False, True], kind="mergesort")
    m = m.reset_index(drop=True)
    m.insert(0, "rank", np.arange(1, len(m) + 1))
    before_rank = m["harm_before"].rank(ascending=False, method="first")
    m["rank_before"] = before_rank.where(m["harm_before"] > 0).astype("Int64")
    m["top_offences"] = m["top_offences"].apply(lambda v: v if isinstance(v, list) else [])
    return m


def _overlap(cells: pd.DataFrame, top: int) -> int:
    return int(((cells["rank"] <= top) & (cells["rank_before"].fillna(10**9) <= top)).sum())


def _rates(frame: pd.DataFrame | None, days: int) -> pd.Series:
    if frame is None or frame.empty:
        return pd.Series(dtype=float)
    return pd.Series(frame["harm"].to_numpy(float) / max(days, 1), index=frame["cell"].to_numpy(np.uint64))


def _forecast(recent: pd.DataFrame, recent_days: int, a_after: pd.DataFrame | None, a_after_days: int,
              a_before: pd.DataFrame | None, a_before_days: int, blend: float) -> tuple[pd.DataFrame, float | None]:
    r = _rates(recent, recent_days)
    aa = _rates(a_after, a_after_days)
    ab = _rates(a_before, a_before_days)
    uplift = float(aa.sum() / ab.sum()) if len(aa) and len(ab) and ab.sum() > 0 else None
    total = float(r.sum()) * (uplift if uplift is not None else 1.0)
    idx = r.index.union(aa.index)
    pr = (r / r.sum()).reindex(idx, fill_value=0.0) if r.sum() > 0 else pd.Series(0.0, index=idx)
    pa = (aa / aa.sum()).reindex(idx, fill_value=0.0) if len(aa) and aa.sum() > 0 else pd.Series(0.0, index=idx)
    share = blend * pa + (1 - blend) * pr
    out = pd.DataFrame({"cell": idx.to_numpy(np.uint64), "forecast_harm_per_day": (total * share).to_numpy(),
                        "analogue_share": pa.to_numpy(), "recent_share": pr.to_numpy()})
    from geodata.cells import cell_centres, to_hex

    out = out.sort_values(["forecast_harm_per_day", "cell"], ascending=[False, True], kind="mergesort")
    out = out.reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    cells = out["cell"].to_numpy(np.uint64)
    lat, lon = cell_centres(cells)
    out["lat"], out["lon"], out["h3"] = lat, lon, to_hex(cells)
    return out, uplift


def _forecast_check(forecast: pd.DataFrame, recent: pd.DataFrame, a_after: pd.DataFrame | None,
                    actual: pd.DataFrame, top: int) -> dict:
    """Share of the observed after-window harm that fell in the top-N cells of each forecast (hindsight check)."""
    total = float(actual["harm"].sum())
    act = pd.Series(actual["harm"].to_numpy(float), index=actual["cell"].to_numpy(np.uint64))

    def capture(cells: np.ndarray) -> float | None:
        return round(float(act.reindex(cells, fill_value=0.0).sum() / total), 4) if total > 0 else None

    def top_of(frame: pd.DataFrame | None) -> np.ndarray:
        if frame is None or frame.empty:
            return np.empty(0, np.uint64)
        return frame.sort_values("harm", ascending=False, kind="mergesort")["cell"].to_numpy(np.uint64)[:top]

    return {"top": top, "observed_harm_after": round(total, 3),
            "captured_by_forecast": capture(forecast["cell"].to_numpy(np.uint64)[:top]),
            "captured_by_recent_only": capture(top_of(recent)),
            "captured_by_analogue_only": capture(top_of(a_after)) if a_after is not None else None,
            "captured_by_observed_top": capture(top_of(actual))}


def iso(d: datetime | date) -> str:
    return d.isoformat()


LAYER_NOTES = {
    "after": "top cells by harm in the window after the key date; harm_per_day_after = harm / days of the window",
    "change": "top cells by the size of the change in harm per day, after minus before (both windows must be in the "
              "data); change_per_day > 0 = more harm after",
    "forecast": "analogue forecast: harm per day expected after the date (blend of the analogue's after-window "
                "pattern and recent data)",
}


def layer_table(res: KeyDateResult, top: int, which: str = "all") -> pd.DataFrame:
    """The key-date layers as one table with a ``layer`` column - after (top cells by harm after the date),
    change (top cells by |change in harm per day|, when both windows are in the data), forecast - or one of them.
    The map (GET /keydates/...?layer=) and the offline map packs draw these."""
    s = res.summary
    parts = []
    if which in ("after", "all") and s["harm_after"] is not None:
        parts.append(res.cells.head(top).assign(layer="after"))
    if which in ("change", "all") and s["harm_after"] is not None and s["harm_before"] is not None:
        order = res.cells["change_per_day"].abs().sort_values(ascending=False, kind="mergesort").index
        parts.append(res.cells.loc[order].head(top).assign(layer="change"))
    if which in ("forecast", "all"):
        parts.append(res.forecast.head(top).assign(layer="forecast"))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else res.cells.head(0).assign(layer=None)
