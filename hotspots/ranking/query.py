"""One query model for every door: /hotspots, the map, tasking, key dates and the backtest."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from pydantic import BaseModel, Field, field_validator, model_validator

from hotspots.ranking.presets import PRESETS

PERIOD_PATTERN = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")
# Every period HotspotQuery accepts, as one regular expression: the OpenAPI ``pattern`` of the from/to parameters
# (so a generated or hand-written value the pattern allows is one the validator accepts): YYYY-MM or a real
# calendar day YYYY-MM-DD, years 1900-2999 (leap days included). tests/test_openapi.py checks it against the
# validator day by day.
_YEAR = r"(19|2[0-9])[0-9]{2}"
_MONTH_DAY = (r"((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)")
_LEAP_YEAR = r"((19|2[0-9])(0[48]|[2468][048]|[13579][26])|(20|24|28)00)"
DAY_REGEX = rf"({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"  # a real calendar day, unanchored
PERIOD_REGEX = rf"^({_YEAR}-(0[1-9]|1[0-2])|{DAY_REGEX})$"
MAX_TOP = 100_000
METHODS = ("observed", "forecast")  # see HotspotQuery.method


def period_start(text: str) -> datetime:
    """``YYYY-MM`` -> first day of the month; ``YYYY-MM-DD`` -> that day (00:00)."""
    if len(text) == 7:
        return datetime.strptime(text + "-01", "%Y-%m-%d")
    return datetime.strptime(text, "%Y-%m-%d")


def period_end_exclusive(text: str) -> datetime:
    """Inclusive ``to``: a month means its whole month, a day its whole day."""
    start = period_start(text)
    if len(text) == 7:
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


class HotspotQuery(BaseModel):
    """What to map. Every field has a default chosen for a patrol planner; see docs/hotspots.md."""

    dataset: str = Field(..., description="Dataset name (see GET /datasets).", examples=["essex-sample"])
    date_from: str | None = Field(None, alias="from", description="Start, YYYY-MM or YYYY-MM-DD. Default: the "
                                  "last full month of data (month-only data) or the last 14 days (dated data).")
    date_to: str | None = Field(None, alias="to", description="End, inclusive: a month means its whole month.")
    preset: str | None = Field("op-ark", description=f"Offence selection: one of {sorted(PRESETS)}.")
    offences: list[str] | None = Field(None, description="Explicit offence list (police.uk categories or offence "
                                       "groups); overrides the preset.")
    days: list[int] | None = Field(None, description="Days of week to keep (0 = Monday); needs timed records.")
    hours: list[int] | None = Field(None, description="Hours of day to keep (0-23); needs timed records.")
    bbox: tuple[float, float, float, float] | None = Field(None, description="minLon,minLat,maxLon,maxLat (WGS84).")
    area: str | None = Field(None, description="An area from a loaded boundary layer: layer:feature_id, a "
                             "feature name, or a district name.")
    resolution: int = Field(10, ge=7, le=11, description="H3 resolution 7-11; 10 is about 15,000 m2, an Op Ark spot.")
    weights: str | None = Field(None, description="Harm weights table name (GET /harm-weights); default: the "
                                "service's default table.")
    top: int | None = Field(50, ge=1, le=MAX_TOP, description="Return the N highest-harm cells (all when null).")
    include_asb: bool = Field(False, description="Count anti-social behaviour (it carries no harm).")
    rank_by: str = Field("harm", description="Order cells by 'harm' (days under the weights table) or 'count'.")
    method: str | None = Field(None, description="'observed': cells ranked by what happened in the period "
                               "(from/to). 'forecast': cells ranked by expected harm in the period after 'to', "
                               "from records up to 'to' only ('from' starts the look-back; default all history); "
                               "see docs/hotspots.md#forecast. Default (null): each door's own default - "
                               "observed for /hotspots and the OGC collection, forecast for tasking.")

    model_config = {"populate_by_name": True}

    @field_validator("date_from", "date_to")
    @classmethod
    def _period(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        if not PERIOD_PATTERN.match(v):
            raise ValueError("use YYYY-MM or YYYY-MM-DD")
        try:
            if not 1900 <= period_start(v).year <= 2999:
                raise ValueError(v)
        except ValueError as exc:
            raise ValueError(f"not a real date: {v}") from exc
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset '{v}'; choose one of {sorted(PRESETS)}")
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(d < 0 or d > 6 for d in v):
            raise ValueError("days are 0 (Monday) to 6 (Sunday)")
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(h < 0 or h > 23 for h in v):
            raise ValueError("hours are 0 to 23")
        return v

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, v):
        if v is None:
            return v
        minx, miny, maxx, maxy = v
        if not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90):
            raise ValueError("bbox values out of range for WGS84 lon/lat")
        # minLon > maxLon crosses the antimeridian (RFC 7946 s5.2); minLat > maxLat holds no point: both are
        # read by geodata.cells.bbox_parts wherever a bbox filters
        return v

    @field_validator("rank_by")
    @classmethod
    def _rank(cls, v: str) -> str:
        if v not in ("harm", "count"):
            raise ValueError("rank_by is 'harm' or 'count'")
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str | None) -> str | None:
        if v is not None and v not in METHODS:
            raise ValueError(f"method is one of {list(METHODS)}")
        return v

    def with_method(self, default: str) -> "HotspotQuery":
        """This query with ``method`` filled in by a door's default when the caller left it null."""
        return self if self.method is not None else self.model_copy(update={"method": default})

    @model_validator(mode="after")
    def _order(self) -> "HotspotQuery":
        if self.date_from and self.date_to and period_start(self.date_from) >= period_end_exclusive(self.date_to):
            raise ValueError(f"'from' ({self.date_from}) is after 'to' ({self.date_to})")
        return self


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None or text == "":
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError("bbox is minLon,minLat,maxLon,maxLat")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError as exc:
        raise ValueError("bbox values must be numbers") from exc
    return vals  # type: ignore[return-value]


def default_period(last_exclusive: datetime, finest_precision: str) -> tuple[datetime, datetime, str]:
    """The default window: last full month for month-only data, else the last 14 days of data."""
    if finest_precision == "month":
        end = last_exclusive.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if end == last_exclusive.replace(hour=0, minute=0, second=0, microsecond=0) and last_exclusive.day == 1:
            end = last_exclusive
        start = (end - timedelta(days=1)).replace(day=1)
        return start, end, "last full month of data"
    end = datetime.combine((last_exclusive - timedelta(microseconds=1)).date(), datetime.min.time()) + timedelta(days=1)
    return end - timedelta(days=14), end, "last 14 days of data"


def as_date(d: datetime) -> date:
    return d.date()
