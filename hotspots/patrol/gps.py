"""GPS-measured dosage: officer location pings reduced to visits at the spots of a tasking pack.

A **visit** is a continuous stay of one unit in one spot (the spot's H3 cell of the plan, widened by
``buffer_rings`` rings of neighbours) lasting at least ``min_minutes``. Between two consecutive pings of a unit
the position is **interpolated** linearly in time (sub-samples every ``sample_seconds``), so the time in a spot
is measured, not the pings counted. A gap between pings is bridged only when it is short for that unit's ping
rate: at most ``gap_factor`` times the unit's median ping interval (2.5: one missing ping, with jitter) and never
more than ``max_gap_minutes``; a longer gap is unknown time and ends a stay. Two stays of the same unit in the
same spot separated by less than ``max_exit_minutes`` (GPS drift across the edge) are one visit.

Pings are checked row by row (unit, ISO 8601 timestamp, coordinates in WGS84 or British National Grid,
accuracy): bad rows are rejected with their line and reason and the rest is used. A ping that is reachable
from neither neighbour (both adjacent legs faster than ``max_speed_kmh``, beyond the GPS accuracy) is a
*teleport* and rejected; a remaining impossible leg is a jump and is not bridged. Everything runs on numpy /
pandas arrays over all pings at once; nothing loops over pings in Python.

Naive timestamps are UK wall-clock (Europe/London, as offence and patrol times); an offset is honoured. All
arithmetic is in UTC, so a stay across a clock change has its true length; visits are stored as local times.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import h3
import numpy as np
import pandas as pd
import pyarrow as pa
from h3ronpy.vector import coordinates_to_cells
from pydantic import BaseModel, Field

from geodata.cells import bng_to_lonlat

LOCAL_TZ = "Europe/London"
EARTH_RADIUS_M = 6_371_008.8
DEFAULT_ACCURACY_M = 15.0  # assumed handset error when a ping carries no accuracy (open-sky GPS: 5-15 m)
MAX_REJECTS_LISTED = 1000

COLUMNS = {
    "unit": ("unit", "unit_id", "callsign", "call_sign", "team", "officer", "device", "device_id"),
    "timestamp": ("timestamp", "time", "datetime", "date_time", "ts", "recorded_at", "fix_time"),
    "lon": ("lon", "lng", "long", "longitude"),
    "lat": ("lat", "latitude"),
    "easting": ("easting", "eastings", "bng_x"),
    "northing": ("northing", "northings", "bng_y"),
    "accuracy_m": ("accuracy_m", "accuracy", "hdop_m", "error_m"),
}
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?$")
_ISO_PAT = _ISO.pattern.replace("?P<tz>", "")
_DATE_ONLY = r"^\d{4}-\d{2}-\d{2}$"


class GpsError(ValueError):
    """The upload as a whole cannot be read (no header, wrong columns, too many pings...)."""

    def __init__(self, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.errors = errors or []


class GpsParams(BaseModel):
    """How pings become visits; every default is explained in docs/patrol-planning.md#gps-measured-dosage."""

    min_minutes: float = Field(10, ge=1, le=240, description="Shortest stay that counts as a visit (minutes).")
    buffer_rings: int = Field(1, ge=0, le=3, description="H3 rings of neighbours added to each spot's cell "
                              "(GPS error, and the street of the spot running past its hexagon).")
    gap_factor: float = Field(2.5, ge=1, le=10, description="A gap between pings is bridged (interpolated) when "
                              "it is at most this many times the unit's median ping interval.")
    max_gap_minutes: float = Field(15, gt=0, le=120, description="Never bridge a gap longer than this.")
    max_exit_minutes: float = Field(2, ge=0, le=30, description="Stays in the same spot separated by less than "
                                    "this are one visit.")
    max_speed_kmh: float = Field(250, gt=5, le=2000, description="Faster legs (beyond GPS error) are impossible: "
                                 "a ping unreachable from both neighbours is rejected as a teleport.")
    max_accuracy_m: float = Field(100, gt=0, le=10_000, description="Pings with a worse reported accuracy are "
                                  "rejected (a res-10 hexagon is ~130 m across).")
    sample_seconds: float = Field(5, ge=1, le=60, description="Interpolation step; raised automatically so that at "
                                  "most max_samples points are made.")
    max_samples: int = Field(5_000_000, ge=10_000, le=50_000_000, description="Memory bound of the interpolation.")


@dataclass
class PingTable:
    """Valid pings (sorted by unit, time) and the rejected rows."""

    pings: pd.DataFrame  # line, unit, t (int64 ns UTC), lon, lat, accuracy_m
    rejects: pd.DataFrame  # line, field, reason
    read: int
    coordinates: str  # "lonlat" or "bng"


@dataclass
class Detection:
    visits: pd.DataFrame  # unit, spot_id, h3, start_utc, end_utc, minutes, pings, start_at, end_at (local)
    runs: pd.DataFrame  # every in-spot stay before the minimum-length rule (for checks and diagnostics)
    units: pd.DataFrame  # unit, pings, median_interval_s, bridge_limit_s, gaps_not_bridged, jumps
    stats: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ parsing
def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        text = data
    else:
        codec = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as exc:
            raise GpsError(f"the file is not {codec.upper().replace('-SIG', '')} text (byte {exc.start}): save it "
                           "as UTF-8 CSV") from None
    if "\x00" in text:
        raise GpsError("the file holds NUL bytes: it is not a CSV text file")
    return text


def _column_map(header: list[str]) -> dict[str, str]:
    norm = {h.strip().lower().replace("-", "_").replace(" ", "_"): h for h in header}
    out = {}
    for canon, aliases in COLUMNS.items():
        for a in aliases:
            if a in norm:
                out[canon] = norm[a]
                break
    return out


def parse_pings(data: bytes | str, params: GpsParams | None = None, max_pings: int = 1_000_000,
                now: pd.Timestamp | None = None) -> PingTable:
    """Read a ping CSV (``unit,timestamp,lon,lat`` or ``unit,timestamp,easting,northing``, optional
    ``accuracy_m``) and check every row. Line numbers are file lines (header = line 1)."""
    params = params or GpsParams()
    text = _decode(data)
    if not text.strip():
        raise GpsError("empty file", [{"line": 1, "field": None, "reason": "no header"}])
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=False,
                          engine="c", nrows=max_pings + 1)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise GpsError(f"not a readable CSV: {str(exc).strip()[:300]}") from None
    cols = _column_map(list(raw.columns))
    has_ll, has_en = {"lon", "lat"} <= cols.keys(), {"easting", "northing"} <= cols.keys()
    missing = [c for c in ("unit", "timestamp") if c not in cols]
    if not (has_ll or has_en):
        missing.append("lon,lat or easting,northing")
    if missing:
        raise GpsError(f"CSV header lacks {missing} (got {list(raw.columns)[:12]})",
                       [{"line": 1, "field": m, "reason": "column missing"} for m in missing])
    if len(raw) > max_pings:
        raise GpsError(f"more than {max_pings:,} pings in one upload: split the file (by day or unit)")
    line = np.arange(2, len(raw) + 2, dtype=np.int64)
    blank = (raw == "").all(axis=1).to_numpy() if len(raw.columns) else np.zeros(len(raw), bool)
    raw, line = raw[~blank].reset_index(drop=True), line[~blank]
    n = len(raw)
    problems: list[pd.DataFrame] = []

    def flag(mask: np.ndarray, fld: str, reason: str | pd.Series | np.ndarray) -> None:
        if mask.any():
            r = reason[mask] if not isinstance(reason, str) else reason
            problems.append(pd.DataFrame({"line": line[mask], "field": fld, "reason": r}))

    unit = raw[cols["unit"]].str.strip()
    flag((unit == "").to_numpy(), "unit", "missing")
    flag((unit.str.len() > 100).to_numpy(), "unit", "longer than 100 characters")

    ts_text = raw[cols["timestamp"]].str.strip()
    t, t_problem = _parse_times(ts_text)
    flag(t_problem.notna().to_numpy(), "timestamp", t_problem.to_numpy())
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    future = (t > now + pd.Timedelta(days=1)).fillna(False).to_numpy(bool)
    flag(future, "timestamp", "in the future")

    if has_ll:
        lon = pd.to_numeric(raw[cols["lon"]].str.strip(), errors="coerce").to_numpy(float)
        lat = pd.to_numeric(raw[cols["lat"]].str.strip(), errors="coerce").to_numpy(float)
        bad_lon, bad_lat = ~np.isfinite(lon), ~np.isfinite(lat)
        flag(bad_lon, "lon", "not a number")
        flag(bad_lat, "lat", "not a number")
        flag(~bad_lon & (np.abs(np.nan_to_num(lon)) > 180), "lon", "outside -180..180")
        flag(~bad_lat & (np.abs(np.nan_to_num(lat)) > 90), "lat", "outside -90..90")
        coordinates = "lonlat"
    else:
        e = pd.to_numeric(raw[cols["easting"]].str.strip(), errors="coerce").to_numpy(float)
        nn = pd.to_numeric(raw[cols["northing"]].str.strip(), errors="coerce").to_numpy(float)
        bad_e, bad_n = ~np.isfinite(e), ~np.isfinite(nn)
        flag(bad_e, "easting", "not a number")
        flag(bad_n, "northing", "not a number")
        flag(~bad_e & ((np.nan_to_num(e) < 0) | (np.nan_to_num(e) > 700_000)), "easting",
             "outside British National Grid (0..700000 m)")
        flag(~bad_n & ((np.nan_to_num(nn) < 0) | (np.nan_to_num(nn) > 1_300_000)), "northing",
             "outside British National Grid (0..1300000 m)")
        ok = np.isfinite(e) & np.isfinite(nn)
        lon, lat = np.full(n, np.nan), np.full(n, np.nan)
        if ok.any():
            lon[ok], lat[ok] = bng_to_lonlat(e[ok], nn[ok])
        coordinates = "bng"

    if "accuracy_m" in cols:
        acc_text = raw[cols["accuracy_m"]].str.strip()
        acc = pd.to_numeric(acc_text, errors="coerce").to_numpy(float)
        given = (acc_text != "").to_numpy()
        flag(given & ~np.isfinite(acc), "accuracy_m", "not a number")
        flag(given & np.isfinite(acc) & (np.nan_to_num(acc) < 0), "accuracy_m", "negative")
        worse = given & np.isfinite(acc) & (np.nan_to_num(acc) > params.max_accuracy_m)
        why = np.full(n, None, dtype=object)
        why[worse] = [f"accuracy {a:g} m is worse than the {params.max_accuracy_m:g} m limit" for a in acc[worse]]
        flag(worse, "accuracy_m", why)
    else:
        acc = np.full(n, np.nan)

    rejects = (pd.concat(problems, ignore_index=True) if problems
               else pd.DataFrame({"line": pd.Series(dtype="int64"), "field": pd.Series(dtype=object),
                                  "reason": pd.Series(dtype=object)}))
    bad_lines = set() if rejects.empty else rejects["line"]
    keep = ~np.isin(line, np.asarray(list(bad_lines) if isinstance(bad_lines, set) else bad_lines.unique()))
    pings = pd.DataFrame({"line": line[keep], "unit": unit.to_numpy(object)[keep],
                          "t": t[keep].astype("int64").to_numpy() if keep.any() else np.empty(0, np.int64),
                          "lon": lon[keep], "lat": lat[keep], "accuracy_m": acc[keep]})
    pings = pings.sort_values(["unit", "t", "line"], kind="stable").reset_index(drop=True)
    dup = pings.duplicated(["unit", "t"], keep="first").to_numpy()
    if dup.any():
        first = pings.groupby(["unit", "t"])["line"].transform("first").to_numpy()
        problems_dup = pd.DataFrame({"line": pings["line"].to_numpy()[dup], "field": "timestamp",
                                     "reason": [f"duplicate ping: same unit and time as line {x}" for x in first[dup]]})
        rejects = pd.concat([rejects, problems_dup], ignore_index=True)
        pings = pings[~dup].reset_index(drop=True)
    pings, spikes = _drop_teleports(pings, params)
    if len(spikes):
        rejects = pd.concat([rejects, spikes], ignore_index=True)
    return PingTable(pings, rejects.sort_values(["line", "field"], kind="stable").reset_index(drop=True), n,
                     coordinates)


def _parse_times(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO 8601 date-times -> UTC timestamps (NaT where bad) and a reason per bad row (None where fine)."""
    reason = pd.Series(None, index=text.index, dtype=object)
    iso = text.str.match(_ISO_PAT)
    reason[(text == "")] = "missing"
    reason[(text != "") & text.str.match(_DATE_ONLY)] = "a date without a time: give the time of day"
    reason[reason.isna() & ~iso] = "not an ISO 8601 date-time (YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
    year = pd.to_numeric(text.str.slice(0, 4), errors="coerce")
    odd_year = iso & ((year < 1990) | (year > 2200))
    reason[odd_year] = "year outside 1990-2200"
    iso = iso & ~odd_year
    tz = text.str.extract(_ISO)["tz"].notna() & iso
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    aware = iso & tz
    if aware.any():
        out[aware] = pd.to_datetime(text[aware].str.replace(",", ".", regex=False), format="ISO8601", utc=True,
                                    errors="coerce").dt.as_unit("ns")
    naive = iso & ~tz
    if naive.any():
        local = pd.to_datetime(text[naive].str.replace(",", ".", regex=False), format="ISO8601", errors="coerce")
        unreal = local.isna()
        reason[unreal[unreal].index] = "not a real date-time"
        loc = local[~unreal]
        if len(loc):
            z = loc.dt.tz_localize(LOCAL_TZ, ambiguous="NaT", nonexistent="NaT")
            clock = z.isna()
            reason[clock[clock].index] = ("local time repeated or skipped by a clock change (Europe/London): "
                                          "give a UTC offset")
            out[z[~clock].index] = z[~clock].dt.tz_convert("UTC").dt.as_unit("ns")
    reason[reason.isna() & iso & out.isna()] = "not a real date-time"
    return out, reason


def _leg_speeds(p: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each ping i -> i+1 of the same unit: distance (m), seconds, speed beyond GPS error (m/s)."""
    lon, lat, t = p["lon"].to_numpy(), p["lat"].to_numpy(), p["t"].to_numpy()
    acc = np.nan_to_num(p["accuracy_m"].to_numpy(float), nan=DEFAULT_ACCURACY_M)
    same = p["unit"].to_numpy()[1:] == p["unit"].to_numpy()[:-1]
    dist = _metres(lon[:-1], lat[:-1], lon[1:], lat[1:])
    secs = (t[1:] - t[:-1]) / 1e9
    speed = np.maximum(dist - acc[:-1] - acc[1:], 0) / np.maximum(secs, 1.0)
    return np.where(same, dist, np.nan), np.where(same, secs, np.nan), np.where(same, speed, np.nan)


def _metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance (haversine), metres."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _drop_teleports(p: pd.DataFrame, params: GpsParams, passes: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reject pings whose legs to both neighbours are impossibly fast (a few vectorised passes)."""
    vmax = params.max_speed_kmh / 3.6
    dropped = []
    for _ in range(passes):
        if len(p) < 3:
            break
        _, _, speed = _leg_speeds(p)
        fast = np.nan_to_num(speed, nan=0.0) > vmax
        spike = np.zeros(len(p), bool)
        spike[1:-1] = fast[:-1] & fast[1:]
        if not spike.any():
            break
        kmh = np.full(len(p), np.nan)
        kmh[1:-1] = np.minimum(speed[:-1], speed[1:]) * 3.6
        dropped.append(pd.DataFrame({"line": p["line"].to_numpy()[spike], "field": "lon/lat",
                                     "reason": [f"impossible speed (teleport): {v:,.0f} km/h to and from its "
                                                f"neighbours (limit {params.max_speed_kmh:g} km/h)"
                                                for v in kmh[spike]]}))
        p = p[~spike].reset_index(drop=True)
    return p, (pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame(columns=["line", "field", "reason"]))


# ------------------------------------------------------------------------------------------ spots
def spot_lookup(spots: pd.DataFrame, buffer_rings: int) -> tuple[pd.DataFrame, int]:
    """cell -> spot for every cell within ``buffer_rings`` of a spot (nearest spot wins, then the better rank).
    ``spots`` has spot_id, h3, rank; all at one resolution. Loops over spots (tens), not over pings."""
    if spots.empty:
        raise GpsError("the tasking pack has no spots")
    res = {h3.get_resolution(x) for x in spots["h3"]}
    if len(res) != 1:
        raise GpsError(f"the pack's spots mix H3 resolutions {sorted(res)}")
    rows = []
    for sid, hexid, rank in zip(spots["spot_id"], spots["h3"], spots["rank"]):
        for d, ring in enumerate(h3.grid_ring(hexid, k) for k in range(buffer_rings + 1)):
            rows.extend((int(h3.str_to_int(c)), sid, hexid, d, int(rank)) for c in ring)
    table = (pd.DataFrame(rows, columns=["cell", "spot_id", "h3", "ring", "rank"])
             .sort_values(["cell", "ring", "rank"]).drop_duplicates("cell").reset_index(drop=True))
    table["cell"] = table["cell"].astype(np.uint64)
    return table, res.pop()


# ------------------------------------------------------------------------------------------ detection
def detect_visits(pings: pd.DataFrame, spots: pd.DataFrame, params: GpsParams | None = None) -> Detection:
    """Visits from clean pings (``parse_pings(...).pings``) to ``spots`` (spot_id, h3, rank)."""
    params = params or GpsParams()
    lookup, res = spot_lookup(spots, params.buffer_rings)
    p = pings.reset_index(drop=True)
    n = len(p)
    dist, secs, speed = _leg_speeds(p) if n > 1 else (np.empty(0), np.empty(0), np.empty(0))
    unit = p["unit"].to_numpy(object)
    same = ~np.isnan(secs)
    # per-unit median ping interval and the longest gap bridged for that unit
    seg_unit = unit[:-1] if n > 1 else np.empty(0, object)
    med = pd.Series(secs[same], index=seg_unit[same]).groupby(level=0).median()
    limit = np.minimum(params.gap_factor * med, params.max_gap_minutes * 60.0)
    seg_limit = pd.Series(seg_unit).map(limit).to_numpy(float) if n > 1 else np.empty(0)
    jump = same & (np.nan_to_num(speed) > params.max_speed_kmh / 3.6)
    bridged = same & ~jump & (secs <= seg_limit + 1e-9)
    # interpolate: each bridged leg i -> i+1 becomes k_i sub-samples at their mid-times
    total = float(np.nansum(np.where(bridged, secs, 0.0)))
    step = max(params.sample_seconds, total / params.max_samples) if total else params.sample_seconds
    k = np.where(bridged, np.maximum(np.ceil(np.nan_to_num(secs) / step), 1), 0).astype(np.int64)
    seg = np.repeat(np.arange(len(k)), k)
    j = np.arange(len(seg)) - np.repeat(np.cumsum(k) - k, k)
    frac = (j + 0.5) / k[seg]
    lon, lat, t = p["lon"].to_numpy(), p["lat"].to_numpy(), p["t"].to_numpy()
    s_lon = lon[seg] + frac * (lon[seg + 1] - lon[seg])
    s_lat = lat[seg] + frac * (lat[seg + 1] - lat[seg])
    width = secs[seg] / k[seg]  # seconds each sample stands for
    s_start = t[seg] / 1e9 + j * width  # seconds since epoch (UTC)
    cells = (np.asarray(pa.array(coordinates_to_cells(np.ascontiguousarray(s_lat), np.ascontiguousarray(s_lon), res)),
                        dtype=np.uint64) if len(seg) else np.empty(0, np.uint64))
    pos = pd.Index(lookup["cell"].to_numpy(np.uint64)).get_indexer(cells) if len(seg) else np.empty(0, np.int64)
    # runs of consecutive samples in the same spot; a non-bridged leg or a new unit breaks a run
    contiguous = np.zeros(len(seg), bool)
    if len(seg) > 1:
        contiguous[1:] = (seg[1:] == seg[:-1]) | ((seg[1:] == seg[:-1] + 1) & (unit[seg[1:]] == unit[seg[:-1]]))
    new_run = ~contiguous
    new_run[1:] |= pos[1:] != pos[:-1]
    run = np.cumsum(new_run) - 1
    inside = pos >= 0
    frame = pd.DataFrame({"run": run[inside], "pos": pos[inside], "seg": seg[inside], "start": s_start[inside],
                          "end": s_start[inside] + width[inside], "secs": width[inside]})
    runs = frame.groupby("run", sort=True).agg(pos=("pos", "first"), seg_first=("seg", "first"),
                                               start=("start", "min"), end=("end", "max"), secs=("secs", "sum"))
    runs["unit"] = unit[runs["seg_first"].to_numpy()] if len(runs) else pd.Series(dtype=object)
    runs["spot_id"] = lookup["spot_id"].to_numpy()[runs["pos"].to_numpy()] if len(runs) else pd.Series(dtype=object)
    runs["h3"] = lookup["h3"].to_numpy()[runs["pos"].to_numpy()] if len(runs) else pd.Series(dtype=object)
    runs = runs.sort_values(["unit", "start"]).reset_index(drop=True)
    # one visit from stays of the same unit and spot separated by a short exit
    if len(runs):
        prev_end = runs.groupby("unit")["end"].shift()
        prev_spot = runs.groupby("unit")["spot_id"].shift()
        new_visit = (prev_spot != runs["spot_id"]) | ((runs["start"] - prev_end) > params.max_exit_minutes * 60 + 1e-6)
        runs["visit"] = np.cumsum(new_visit.to_numpy()) - 1
        visits = (runs.groupby("visit").agg(unit=("unit", "first"), spot_id=("spot_id", "first"), h3=("h3", "first"),
                                            start=("start", "min"), end=("end", "max"), secs=("secs", "sum"),
                                            stays=("start", "size")).reset_index(drop=True))
    else:
        visits = pd.DataFrame(columns=["unit", "spot_id", "h3", "start", "end", "secs", "stays"])
    visits["minutes"] = visits["secs"].astype(float) / 60.0
    all_stays = visits.copy()
    visits = visits[visits["minutes"] >= params.min_minutes - 1e-9].reset_index(drop=True)
    visits["pings"] = _pings_within(p, visits)
    visits["start_utc"] = pd.to_datetime(visits["start"].astype(float), unit="s", utc=True).dt.round("s")
    visits["end_utc"] = pd.to_datetime(visits["end"].astype(float), unit="s", utc=True).dt.round("s")
    visits["start_at"] = visits["start_utc"].dt.tz_convert(LOCAL_TZ).dt.tz_localize(None)
    visits["end_at"] = visits["end_utc"].dt.tz_convert(LOCAL_TZ).dt.tz_localize(None)
    visits["median_interval_s"] = visits["unit"].map(med).astype(float)
    units = pd.DataFrame({"pings": p.groupby("unit").size()})
    units["median_interval_s"] = med
    units["bridge_limit_s"] = limit
    units["gaps_not_bridged"] = pd.Series(same & ~bridged & ~jump, index=seg_unit).groupby(level=0).sum() if n > 1 else 0
    units["jumps"] = pd.Series(jump, index=seg_unit).groupby(level=0).sum() if n > 1 else 0
    units = units.fillna({"gaps_not_bridged": 0, "jumps": 0}).reset_index(names="unit")
    stats = {"pings": int(n), "units": int(len(units)), "legs_bridged": int(bridged.sum()),
             "gaps_not_bridged": int((same & ~bridged & ~jump).sum()), "jumps_not_bridged": int(jump.sum()),
             "samples": int(len(seg)), "sample_seconds": round(step, 3), "stays_in_spots": int(len(all_stays)),
             "stays_too_short": int((all_stays["minutes"] < params.min_minutes - 1e-9).sum()),
             "visits": int(len(visits)), "spot_resolution": int(res), "buffer_rings": params.buffer_rings}
    cols = ["unit", "spot_id", "h3", "start_at", "end_at", "start_utc", "end_utc", "minutes", "pings", "stays",
            "median_interval_s"]
    return Detection(visits[cols], all_stays, units, stats)


def _pings_within(p: pd.DataFrame, visits: pd.DataFrame) -> np.ndarray:
    """Number of real pings of the visit's unit between its start and end (searchsorted per visit)."""
    if visits.empty:
        return np.empty(0, np.int64)
    codes, uniques = pd.factorize(p["unit"])
    key = codes.astype(np.float64) * 1e11 + p["t"].to_numpy() / 1e9  # pings are sorted by unit, then time
    vcode = pd.Index(uniques).get_indexer(visits["unit"]).astype(np.float64) * 1e11
    lo = np.searchsorted(key, vcode + visits["start"].to_numpy(float) - 1e-6, side="left")
    hi = np.searchsorted(key, vcode + visits["end"].to_numpy(float) + 1e-6, side="right")
    return (hi - lo).astype(np.int64)


# ------------------------------------------------------------------------------------------ storing
GPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS gps_uploads (
    upload_id INTEGER PRIMARY KEY, pack_id INTEGER, created_at TIMESTAMP, units INTEGER, pings_read INTEGER,
    pings_used INTEGER, pings_rejected INTEGER, visits INTEGER, duplicates_skipped INTEGER, pings_kept INTEGER,
    params VARCHAR, stats VARCHAR);
CREATE TABLE IF NOT EXISTS gps_pings (
    upload_id INTEGER, unit VARCHAR, t_utc TIMESTAMP, lon DOUBLE, lat DOUBLE, accuracy_m DOUBLE,
    received_at TIMESTAMP);
"""


@dataclass
class GpsUpload:
    upload_id: int | None
    pack: dict
    table: PingTable
    detection: Detection
    stored: int
    duplicates: int
    pings_kept: int
    retention_days: int
    dry_run: bool

    def to_dict(self) -> dict:
        rej = self.table.rejects
        v = self.detection.visits
        plan_from, plan_to = str(self.pack.get("plan_from")), str(self.pack.get("plan_to"))
        day = v["start_at"].dt.date.astype(str) if len(v) else pd.Series(dtype=str)
        return {
            "upload_id": self.upload_id, "dry_run": self.dry_run, "pack_id": self.pack.get("pack_id"),
            "pings_read": self.table.read, "pings_used": int(len(self.table.pings)),
            "pings_rejected": int(rej["line"].nunique()) if len(rej) else 0,
            "rejects_by_reason": (rej["reason"].str.split(":").str[0].value_counts().to_dict() if len(rej) else {}),
            "rejects": rej.head(MAX_REJECTS_LISTED).to_dict(orient="records"),
            "rejects_listed": int(min(len(rej), MAX_REJECTS_LISTED)),
            "coordinates": self.table.coordinates,
            "visits_found": int(len(v)), "stored": self.stored, "duplicates_skipped": self.duplicates,
            "visits_outside_plan": int(((day < plan_from) | (day > plan_to)).sum()) if len(v) else 0,
            "minutes": round(float(v["minutes"].sum()), 2) if len(v) else 0.0,
            "visits": _visit_records(v),
            "units": self.detection.units.round(1).to_dict(orient="records"),
            "detection": self.detection.stats,
            "privacy": {"pings_kept": self.pings_kept, "retention_days": self.retention_days,
                        "rule": "pings are reduced to visits; raw pings are not stored" if self.retention_days == 0
                        else f"raw pings are kept {self.retention_days} days after upload, then deleted"},
        }


def _visit_records(v: pd.DataFrame, limit: int = 1000) -> list[dict]:
    out = v.head(limit)[["unit", "spot_id", "start_at", "end_at", "minutes", "pings", "median_interval_s"]].copy()
    out["start_at"] = out["start_at"].astype(str)
    out["end_at"] = out["end_at"].astype(str)
    out["minutes"] = out["minutes"].round(2)
    return out.to_dict(orient="records")


def ensure_schema(store) -> None:
    from hotspots.patrol.patrols import ensure_schema as patrol_schema

    patrol_schema(store)
    store.ensure_schema(GPS_SCHEMA)


def purge_expired_pings(store, retention_days: int, now: pd.Timestamp | None = None) -> int:
    """Delete stored pings older than the retention (all of them when it is 0); returns how many went."""
    ensure_schema(store)
    cutoff = (now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC").tz_localize(None) - pd.Timedelta(days=retention_days)
    n = int(store.scalar("SELECT count(*) FROM gps_pings WHERE received_at <= ? OR ? = 0", [cutoff, retention_days]))
    if n:
        with store.transaction("patrols") as cur:
            cur.execute("DELETE FROM gps_pings WHERE received_at <= ? OR ? = 0", [cutoff, retention_days])
    return n


def _existing_overlaps(store, visits: pd.DataFrame) -> np.ndarray:
    """Visits already logged from GPS (same unit, spot, overlapping times): a file uploaded twice counts once."""
    if visits.empty:
        return np.zeros(0, bool)
    old = store.query_df("""SELECT team AS unit, spot_id, start_at AS o_start, end_at AS o_end FROM patrols
                            WHERE source = 'gps' AND start_at <= ? AND end_at >= ?""",
                         [visits["end_at"].max().to_pydatetime(), visits["start_at"].min().to_pydatetime()])
    if old.empty:
        return np.zeros(len(visits), bool)
    m = visits[["unit", "spot_id", "start_at", "end_at"]].reset_index().merge(old, on=["unit", "spot_id"])
    hit = m[(m["start_at"] < m["o_end"]) & (m["end_at"] > m["o_start"])]["index"].unique()
    return np.isin(np.arange(len(visits)), hit)


def record_gps(store, data: bytes | str, pack: dict, spots: pd.DataFrame, params: GpsParams | None = None,
               retention_days: int = 0, max_pings: int = 1_000_000, dry_run: bool = False) -> GpsUpload:
    """Parse pings, detect visits to the pack's spots and log them (source 'gps') in one transaction."""
    from hotspots.patrol.patrols import insert_patrols

    params = params or GpsParams()
    table = parse_pings(data, params, max_pings)
    if table.pings.empty:
        raise GpsError(f"no valid pings among {table.read} rows; nothing was stored",
                       table.rejects.head(MAX_REJECTS_LISTED).to_dict(orient="records"))
    det = detect_visits(table.pings, spots, params)
    ensure_schema(store)
    dup = _existing_overlaps(store, det.visits)
    new = det.visits[~dup]
    upload_id, kept = None, 0
    if not dry_run:
        from datetime import datetime, timezone

        received = datetime.now(timezone.utc).replace(tzinfo=None)
        frame = pd.DataFrame({
            "spot_id": new["spot_id"], "h3": new["h3"], "team": new["unit"],
            "start_at": new["start_at"].dt.floor("s"), "end_at": new["end_at"].dt.floor("s"),
            "minutes": new["minutes"].round(3),
            "note": [f"GPS-derived: {p} pings, median interval {m:.0f} s, {s} stay(s)"
                     for p, m, s in zip(new["pings"], new["median_interval_s"], new["stays"])]})
        with store.transaction("patrols") as cur:
            upload_id, _ = insert_patrols(store, cur, frame, "gps")
            if retention_days > 0:
                pg = table.pings
                cur.register("gp", pd.DataFrame({
                    "upload_id": upload_id, "unit": pg["unit"],
                    "t_utc": pd.to_datetime(pg["t"], unit="ns"), "lon": pg["lon"], "lat": pg["lat"],
                    "accuracy_m": pg["accuracy_m"], "received_at": received}))
                cur.execute("INSERT INTO gps_pings SELECT * FROM gp")
                cur.unregister("gp")
                kept = len(pg)
            cur.execute("INSERT INTO gps_uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [upload_id, pack.get("pack_id"), received, int(det.stats["units"]), table.read,
                         int(len(table.pings)), int(table.rejects["line"].nunique()) if len(table.rejects) else 0,
                         int(len(new)), int(dup.sum()), kept, params.model_dump_json(),
                         pd.Series(det.stats).to_json()])
        purge_expired_pings(store, retention_days)
    return GpsUpload(upload_id, pack, table, det, 0 if dry_run else int(len(new)), int(dup.sum()), kept,
                     retention_days, dry_run)


def uploads(store) -> pd.DataFrame:
    """GPS uploads, newest first (counts and parameters; never pings)."""
    ensure_schema(store)
    return store.query_df("SELECT * FROM gps_uploads ORDER BY upload_id DESC")
