"""Patrol log: record patrols (spot id, team, start, end) and measure dosage per spot per week against a pack.

Times are local wall-clock times (as offence records are); an aware timestamp is converted to Europe/London.
An upload is validated whole: if any row is invalid nothing is stored and every bad row comes back with its
line number and reason (one transaction, so a failed write leaves nothing half-written).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from geodata.store import Store, utc_now
from hotspots.patrol.tasking import SPOT_PREFIX, cell_of_spot

MAX_PATROL_HOURS = 12  # a single visit longer than a shift is almost certainly a typing error
LOCAL_TZ = "Europe/London"
COLUMN_ALIASES = {
    "spot_id": ("spot_id", "spot", "spot id", "hotspot", "hotspot_id"),
    "team": ("team", "unit", "officer", "callsign", "call_sign"),
    "start": ("start", "start_time", "started_at", "start_at", "from", "arrived"),
    "end": ("end", "end_time", "ended_at", "end_at", "to", "left"),
    "note": ("note", "notes", "comment"),
}

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS patrol_seq START 1;
CREATE SEQUENCE IF NOT EXISTS patrol_upload_seq START 1;
CREATE TABLE IF NOT EXISTS patrols (
    patrol_id BIGINT PRIMARY KEY, upload_id INTEGER, spot_id VARCHAR, h3 VARCHAR, team VARCHAR,
    start_at TIMESTAMP, end_at TIMESTAMP, minutes DOUBLE, note VARCHAR, created_at TIMESTAMP);
ALTER TABLE patrols ADD COLUMN IF NOT EXISTS source VARCHAR DEFAULT 'manual';
"""
SOURCES = ("manual", "gps")  # hand-entered rows; visits measured from GPS pings (hotspots.patrol.gps)
PATROL_COLUMNS = ["patrol_id", "upload_id", "spot_id", "h3", "team", "start_at", "end_at", "minutes", "note",
                  "created_at", "source"]


class PatrolError(ValueError):
    """Invalid patrol rows; ``errors`` lists {line, field, reason} for each."""

    def __init__(self, message: str, errors: list[dict]):
        super().__init__(message)
        self.errors = errors


@dataclass
class PatrolUpload:
    upload_id: int
    stored: int
    patrol_ids: list[int] = field(default_factory=list)
    minutes: float = 0.0

    def to_dict(self) -> dict:
        return {"upload_id": self.upload_id, "stored": self.stored, "minutes": round(self.minutes, 2),
                "first_patrol_id": self.patrol_ids[0] if self.patrol_ids else None,
                "last_patrol_id": self.patrol_ids[-1] if self.patrol_ids else None}


def ensure_schema(store: Store) -> None:
    store.ensure_schema(SCHEMA)  # once per store handle


def _parse_time(value) -> datetime:
    if isinstance(value, datetime):
        ts = pd.Timestamp(value)
    else:
        text = str(value or "").strip()
        if not text:
            raise ValueError("missing")
        ts = pd.Timestamp(text)  # ISO 8601, 'YYYY-MM-DD HH:MM', with or without offset
    if ts is pd.NaT:
        raise ValueError("missing")
    if ts.tzinfo is not None:
        ts = ts.tz_convert(LOCAL_TZ).tz_localize(None)
    if ts.hour == 0 and ts.minute == 0 and isinstance(value, str) and len(value.strip()) == 10:
        raise ValueError("a date without a time: give the time of day (YYYY-MM-DDTHH:MM)")
    return ts.to_pydatetime()


def validate(rows: list[dict], first_line: int = 1) -> tuple[pd.DataFrame, list[dict]]:
    """Check every row; return (valid rows, errors with line numbers). Lines count from ``first_line``."""
    good: list[dict] = []
    errors: list[dict] = []
    for i, r in enumerate(rows):
        line = r.get("_line", first_line + i)
        problems: list[tuple[str, str]] = []
        sid = str(r.get("spot_id") or "").strip()
        h3hex = None
        try:
            cell = cell_of_spot(sid)
            h3hex = format(cell, "x")
            sid = SPOT_PREFIX + h3hex
        except ValueError as exc:
            problems.append(("spot_id", str(exc) if sid else "missing"))
        team = str(r.get("team") or "").strip()
        if not team:
            problems.append(("team", "missing"))
        times: dict[str, datetime] = {}
        for f in ("start", "end"):
            try:
                times[f] = _parse_time(r.get(f))
            except (ValueError, TypeError) as exc:
                problems.append((f, f"not a date-time ({exc})" if str(exc) != "missing" else "missing"))
        if len(times) == 2:
            minutes = (times["end"] - times["start"]).total_seconds() / 60
            if minutes <= 0:
                problems.append(("end", "end is not after start"))
            elif minutes > MAX_PATROL_HOURS * 60:
                problems.append(("end", f"patrol longer than {MAX_PATROL_HOURS} hours"))
        for f, reason in problems:
            errors.append({"line": line, "field": f, "reason": reason})
        if not problems:
            good.append({"spot_id": sid, "h3": h3hex, "team": team, "start_at": times["start"],
                         "end_at": times["end"], "minutes": minutes, "note": str(r.get("note") or "") or None})
    return pd.DataFrame(good, columns=["spot_id", "h3", "team", "start_at", "end_at", "minutes", "note"]), errors


def parse_csv(data: bytes | str) -> list[dict]:
    """CSV rows (header with spot_id, team, start, end[, note]; aliases accepted) with their file line numbers."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise PatrolError("empty CSV", [{"line": 1, "field": None, "reason": "no header"}]) from None
    norm = [h.strip().lower().replace("-", "_") for h in header]
    index: dict[str, int] = {}
    for canon, aliases in COLUMN_ALIASES.items():
        for a in aliases:
            if a.replace(" ", "_") in norm:
                index[canon] = norm.index(a.replace(" ", "_"))
                break
    missing = [c for c in ("spot_id", "team", "start", "end") if c not in index]
    if missing:
        raise PatrolError(f"CSV header lacks {missing}", [{"line": 1, "field": m, "reason": "column missing"}
                                                           for m in missing])
    rows = []
    for n, rec in enumerate(reader, start=2):
        if not any(v.strip() for v in rec):
            continue
        rows.append({"_line": n, **{c: (rec[j] if j < len(rec) else "") for c, j in index.items()}})
    return rows


def record(store: Store, rows: list[dict], first_line: int = 1) -> PatrolUpload:
    """Validate and store hand-entered patrols, all or none."""
    if not rows:
        raise PatrolError("no patrols given", [])
    frame, errors = validate(rows, first_line)
    if errors:
        raise PatrolError(f"{len({e['line'] for e in errors})} of {len(rows)} patrol rows are invalid; nothing was "
                          "stored", errors)
    with store.transaction("patrols") as cur:
        upload, ids = insert_patrols(store, cur, frame, "manual")
    return PatrolUpload(upload, len(frame), ids, float(frame["minutes"].sum()))


def insert_patrols(store: Store, cur, frame: pd.DataFrame, source: str) -> tuple[int, list[int]]:
    """Insert validated rows (spot_id, h3, team, start_at, end_at, minutes, note) inside the caller's
    transaction ``cur``; returns the upload id and the patrol ids."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    ensure_schema(store)
    upload = int(cur.execute("SELECT nextval('patrol_upload_seq')").fetchall()[0][0])
    ids = (cur.execute("SELECT nextval('patrol_seq') AS id FROM range(?)", [len(frame)]).fetchnumpy()["id"]
           .astype(int).tolist() if len(frame) else [])
    staged = frame.assign(patrol_id=ids, upload_id=upload, created_at=utc_now(), source=source)
    cur.register("p", staged[PATROL_COLUMNS])
    cur.execute(f"INSERT INTO patrols ({', '.join(PATROL_COLUMNS)}) SELECT * FROM p")
    cur.unregister("p")
    return upload, ids


def patrols(store: Store, start: datetime | None = None, end: datetime | None = None,
            spot_ids: list[str] | None = None, source: str | None = None) -> pd.DataFrame:
    """The patrol log (hand-entered and GPS-derived rows; ``source`` tells them apart), by start time."""
    ensure_schema(store)
    sql, params = f"SELECT {', '.join(PATROL_COLUMNS)} FROM patrols WHERE 1=1", []
    if source is not None:
        sql += " AND source = ?"
        params.append(source)
    if start is not None:
        sql += " AND start_at >= ?"
        params.append(start)
    if end is not None:
        sql += " AND start_at < ?"
        params.append(end)
    df = store.query_df(sql + " ORDER BY start_at, patrol_id", params)
    if spot_ids is not None:
        df = df[df["spot_id"].isin(set(spot_ids))]
    return df.reset_index(drop=True)


# ------------------------------------------------------------------------------------------ compliance
@dataclass
class Compliance:
    pack: dict
    weeks: pd.DataFrame  # spot_id, h3, area_name, rank, week, plan_days, planned_visits, visits, ... pct
    summary: dict
    unplanned: pd.DataFrame  # patrols in the plan period at spots not in the pack

    def meta(self) -> dict:
        return {"pack": self.pack, "summary": self.summary,
                "unplanned_patrols": int(len(self.unplanned)),
                "rules": {
                    "week": "ISO week (Monday to Sunday); a patrol counts in the week its start falls in",
                    "plan": "planned visits = visits_per_day x plan days of the pack falling in that week; planned "
                            "minutes = planned visits x visit_minutes",
                    "visits_pct": "100 x visits / planned visits (over 100 = more than planned)",
                    "minutes_pct": "100 x patrol minutes / planned minutes",
                    "overall_capped_pct": "100 x sum(min(visits, planned)) / sum(planned): extra visits at one "
                                          "spot-week cannot hide a shortfall at another"}}


def compliance(store: Store, pack: dict, spots: pd.DataFrame) -> Compliance:
    """Dosage per spot per week against the pack's plan (pack header + spots from tasking.get_pack)."""
    plan_from = pd.Timestamp(pack["plan_from"]).normalize()
    plan_to_excl = pd.Timestamp(pack["plan_to"]).normalize() + pd.Timedelta(days=1)
    visits_per_day, visit_minutes = float(pack["visits_per_day"]), float(pack["visit_minutes"])
    days = pd.date_range(plan_from, plan_to_excl - pd.Timedelta(days=1), freq="D")
    week_of = lambda ts: (ts - pd.to_timedelta(ts.dt.day_of_week, unit="D")).dt.normalize()  # noqa: E731
    plan_weeks = pd.Series(week_of(pd.Series(days))).value_counts().sort_index()
    grid = pd.MultiIndex.from_product([spots["spot_id"].tolist(), plan_weeks.index], names=["spot_id", "week"])
    out = pd.DataFrame(index=grid).reset_index()
    out["plan_days"] = out["week"].map(plan_weeks).astype(int)
    out["planned_visits"] = visits_per_day * out["plan_days"]
    out["planned_minutes"] = out["planned_visits"] * visit_minutes
    log = patrols(store, plan_from.to_pydatetime(), plan_to_excl.to_pydatetime())
    in_pack = log["spot_id"].isin(set(spots["spot_id"]))
    done = log[in_pack]
    if len(done):
        agg = (done.assign(week=week_of(pd.to_datetime(done["start_at"])))
               .groupby(["spot_id", "week"]).agg(visits=("patrol_id", "size"), minutes=("minutes", "sum"),
                                                 teams=("team", lambda t: "; ".join(sorted(set(t)))))
               .reset_index())
        out = out.merge(agg, on=["spot_id", "week"], how="left")
    else:
        out = out.assign(visits=np.nan, minutes=np.nan, teams=None)
    out["visits"] = out["visits"].fillna(0).astype(int)
    out["minutes"] = out["minutes"].fillna(0.0)
    out["teams"] = out["teams"].fillna("")
    out["visits_pct"] = 100 * out["visits"] / out["planned_visits"]
    out["minutes_pct"] = 100 * out["minutes"] / out["planned_minutes"]
    info = spots.set_index("spot_id")[["h3", "area_name", "rank", "lat", "lon"]]
    out = out.join(info, on="spot_id")
    out["week"] = out["week"].dt.date.astype(str)
    planned = float(out["planned_visits"].sum())
    summary = {
        "spots": int(len(spots)), "weeks": int(len(plan_weeks)),
        "planned_visits": planned, "visits": int(out["visits"].sum()),
        "planned_minutes": float(out["planned_minutes"].sum()), "minutes": round(float(out["minutes"].sum()), 2),
        "visits_pct": round(100 * out["visits"].sum() / planned, 2) if planned else None,
        "minutes_pct": round(100 * out["minutes"].sum() / out["planned_minutes"].sum(), 2) if planned else None,
        "overall_capped_pct": round(100 * np.minimum(out["visits"], out["planned_visits"]).sum() / planned, 2)
        if planned else None,
        "spot_weeks_fully_dosed": int((out["visits"] >= out["planned_visits"]).sum()),
        "spot_weeks_unvisited": int((out["visits"] == 0).sum()),
    }
    cols = ["spot_id", "h3", "area_name", "rank", "week", "plan_days", "planned_visits", "visits", "visits_pct",
            "planned_minutes", "minutes", "minutes_pct", "teams", "lat", "lon"]
    return Compliance(pack, out[cols], summary, log[~in_pack].reset_index(drop=True))


def week_start(d: date) -> date:
    return d - timedelta(days=d.weekday())
