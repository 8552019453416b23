"""FastAPI dependencies: the service state and the shared hotspot query parameters.

FastAPI runs a plain ``def`` dependency in the threadpool: one thread hop each, about a quarter of a
millisecond of CPU under load, which on a cached response is most of the work. The cheap ones (no store, no
I/O) are therefore wrapped with :func:`on_loop` and run on the event loop; the hotspot query resolves its one
store look-up (the default dataset) in the threadpool, and only when ``dataset`` is left out.
"""
from __future__ import annotations

import functools
import inspect
from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from app.cache import resolved_signature
from app.errors import ApiError
from app.state import ServiceState
from geodata.datasets import default_dataset as stable_default
from hotspots.publish.disclosure import DisclosurePolicy
from hotspots.ranking.presets import PRESETS, offence_names
from hotspots.ranking.query import PERIOD_REGEX, HotspotQuery, parse_bbox

# What the shared query parameters accept, stated in the OpenAPI document (``json_schema_extra``: the routes'
# own validators keep their messages, and tests/test_openapi.py checks each rule against its validator), so a
# request the document allows is one the service takes (issue 13 item 14).
PERIOD_SCHEMA = {"pattern": PERIOD_REGEX}
PRESET_SCHEMA = {"enum": sorted(PRESETS)}
_OFFENCE = "|".join(offence_names())
OFFENCES_SCHEMA = {"pattern": rf"^(|({_OFFENCE})(,({_OFFENCE}))*)$"}
_DAY, _HOUR = "[0-6]", "(1?[0-9]|2[0-3])"
DAYS_SCHEMA = {"pattern": rf"^(|{_DAY}(-{_DAY})?(,{_DAY}(-{_DAY})?)*)$"}
HOURS_SCHEMA = {"pattern": rf"^(|{_HOUR}(-{_HOUR})?(,{_HOUR}(-{_HOUR})?)*)$"}
_DECIMALS = r"(\.[0-9]{1,12})?"
LON_REGEX = rf"-?((1[0-7][0-9]|[1-9]?[0-9]){_DECIMALS}|180(\.0{{1,12}})?)"
LAT_REGEX = rf"-?([1-8]?[0-9]{_DECIMALS}|90(\.0{{1,12}})?)"
BBOX_SCHEMA = {"pattern": rf"^(|{LON_REGEX},{LAT_REGEX},{LON_REGEX},{LAT_REGEX})$"}


def on_loop(fn):
    """``fn`` (a cheap, non-blocking dependency: no store, no I/O) as an async dependency run on the event loop.
    The signature is ``fn``'s, so FastAPI reads the same parameters."""
    @functools.wraps(fn)
    async def dependency(*args, **kwargs):
        return fn(*args, **kwargs)
    dependency.__signature__ = resolved_signature(fn)
    return dependency


def get_state(request: Request) -> ServiceState:
    return request.app.state.harmspot


State = Annotated[ServiceState, Depends(on_loop(get_state))]
Format = Literal["json", "csv", "geojson"]


def int_list(text: str | None, name: str) -> list[int] | None:
    if not text:
        return None
    out: list[int] = []
    top = 23 if name == "hours" else 6
    for part in text.split(",")[:200]:
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = (int(x) for x in part.split("-", 1))
                if not (0 <= a <= top and 0 <= b <= top):  # bound the range before expanding it
                    raise ApiError(422, "invalid_parameter", f"{name}: range '{part}' outside 0-{top}")
                out.extend(range(a, b + 1) if a <= b else [*range(a, 24 if name == "hours" else 7), *range(0, b + 1)])
            else:
                out.append(int(part))
        except ValueError as exc:
            raise ApiError(422, "invalid_parameter", f"{name}: '{part}' is not a number or a range like 20-3") from exc
    return out


def hotspot_query(
    state: State,
    dataset: Annotated[str | None, Query(description="Dataset name; default: HARMSPOT_DEFAULT_DATASET, else the "
                                         "first dataset loaded (GET /datasets marks it).",
                                         examples=["essex-sample"])] = None,
    date_from: Annotated[str | None, Query(alias="from", description="Start, YYYY-MM or YYYY-MM-DD. Default: last "
                                           "full month (month-only data) or last 14 days. Years 1900-2999; a "
                                           "`from` after `to` is refused (422).", examples=["2024-03"],
                                           json_schema_extra=PERIOD_SCHEMA)] = None,
    date_to: Annotated[str | None, Query(alias="to", description="End, inclusive (a month = its whole month).",
                                         examples=["2024-04"], json_schema_extra=PERIOD_SCHEMA)] = None,
    preset: Annotated[str | None, Query(description=f"Offence selection: {', '.join(sorted(PRESETS))}.",
                                        json_schema_extra=PRESET_SCHEMA)] = "op-ark",
    offences: Annotated[str | None, Query(description="Comma-separated police.uk categories (slugs, e.g. "
                                          "vehicle-crime, or their names in any case) or offence groups (e.g. "
                                          "drug_trafficking); overrides the preset.", examples=["robbery,drugs"],
                                          json_schema_extra=OFFENCES_SCHEMA)] = None,
    days: Annotated[str | None, Query(description="Days of week, 0=Mon, e.g. 4,5 or 4-6 (timed data only; "
                                                "refused with 409 on a month-only dataset).",
                                      json_schema_extra=DAYS_SCHEMA)] = None,
    hours: Annotated[str | None, Query(description="Hours, e.g. 20-3 (wraps midnight; timed data only; "
                                                 "refused with 409 on a month-only dataset).",
                                       json_schema_extra=HOURS_SCHEMA)] = None,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (WGS84). minLon > maxLon: "
                                      "a box across the antimeridian (RFC 7946 5.2); minLat > maxLat holds no "
                                      "point (nothing is selected).",
                                      examples=["0.6,51.5,0.8,51.6"], json_schema_extra=BBOX_SCHEMA)] = None,
    area: Annotated[str | None, Query(description="Area: layer:feature_id, a ward/district name.",
                                      examples=["districts:Southend-on-Sea"])] = None,
    resolution: Annotated[int, Query(ge=7, le=11, description="H3 resolution 7-11 (10 ≈ 15,000 m²).")] = 10,
    weights: Annotated[str | None, Query(description="Harm weights table (GET /harm-weights).")] = None,
    top: Annotated[int | None, Query(ge=1, le=100_000, description="Number of cells (highest harm first).")] = 50,
    include_asb: Annotated[bool, Query(description="Count anti-social behaviour (no harm).")] = False,
    rank_by: Annotated[Literal["harm", "count"], Query(description="Order by harm or by count.")] = "harm",
    method: Annotated[Literal["observed", "forecast"] | None, Query(
        description="observed: cells ranked by what was recorded in from/to. forecast: cells ranked by expected "
        "harm in the period after `to` (next month for month-only data, next 14 days otherwise), from records up "
        "to `to` only; `from` starts the look-back (default: all history). Default: observed on /hotspots and "
        "the harm-spots collection, forecast on /tasking. docs/hotspots.md#forecast.")] = None,
) -> HotspotQuery:
    if dataset is None:
        dataset = default_dataset(state)
    try:
        return HotspotQuery.model_validate({
            "dataset": dataset, "from": date_from, "to": date_to, "preset": preset,
            "offences": [o for o in offences.split(",") if o.strip()] if offences else None,
            "days": int_list(days, "days"), "hours": int_list(hours, "hours"), "bbox": parse_bbox(bbox),
            "area": area, "resolution": resolution, "weights": weights, "top": top, "include_asb": include_asb,
            "rank_by": rank_by, "method": method})
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        errors = getattr(exc, "errors", lambda: [])()
        msg = "; ".join((f"{'.'.join(str(x) for x in e['loc'])}: " if e["loc"] else "")
                        + str(e["msg"]).removeprefix("Value error, ") for e in errors) or str(exc)
        raise ApiError(422, "invalid_parameter", msg, errors and [{"loc": e["loc"], "msg": e["msg"]} for e in errors]) from exc


def default_dataset(state: ServiceState) -> str:
    """HARMSPOT_DEFAULT_DATASET when loaded, else the first dataset loaded (geodata.datasets.default_dataset);
    a store query: call it in the threadpool."""
    name, _ = stable_default(state.store, state.settings.default_dataset)
    if name is None:
        raise ApiError(404, "not_found", "no datasets loaded: POST /datasets first")
    return name


@functools.wraps(hotspot_query)
async def hotspot_query_on_loop(*args, **kwargs) -> HotspotQuery:
    """:func:`hotspot_query` as a route dependency: validation on the loop, the default dataset (a store query)
    looked up in the threadpool."""
    if kwargs.get("dataset") is None:
        kwargs["dataset"] = await run_in_threadpool(default_dataset, kwargs["state"])
    return hotspot_query(*args, **kwargs)


Query_ = Annotated[HotspotQuery, Depends(hotspot_query_on_loop)]


async def hotspot_query_observed(*args, **kwargs) -> HotspotQuery:
    """:func:`hotspot_query_on_loop` without the ``method`` parameter, for a route whose own ``method`` means
    something else (/spikes: poisson or negbin) and that ranks nothing by forecast."""
    return await hotspot_query_on_loop(*args, **kwargs)


_sig = inspect.signature(hotspot_query)
hotspot_query_observed.__signature__ = _sig.replace(  # type: ignore[attr-defined]
    parameters=[p for p in _sig.parameters.values() if p.name != "method"])
ObservedQuery_ = Annotated[HotspotQuery, Depends(hotspot_query_observed)]


def forced_public(request: Request) -> str | None:
    """Why this request must get public output whatever it asks: "key" (a public key), "deployment"
    (HARMSPOT_DISCLOSURE=public), or None. Set by the access middleware (app/security.py)."""
    return getattr(request.state, "harmspot_public", None)


def disclosure_policy(
    request: Request,
    state: State,
    mode: Annotated[Literal["internal", "public"], Query(
        description="public: the disclosure-controlled output published outside the force (docs/security.md"
        "#public-output-mode): one H3 resolution (8), whole calendar months (or quarters), the public presets "
        "only (another preset is answered with the first public one), cells with fewer than k=5 offences withheld, harm to 2 significant figures; days, hours, offence "
        "lists, ASB and other weights refused, area/bbox keep whole cells. Available to every role (preview); a "
        "public key or a HARMSPOT_DISCLOSURE=public deployment always gets it, whatever this says.")] = "internal",
) -> DisclosurePolicy | None:
    """The one hook of public output on every door that has it (/hotspots, its GeoJSON, OGC harm-spot items)."""
    forced = forced_public(request)
    if mode == "internal" and not forced:
        return None
    s = state.settings
    return DisclosurePolicy(s.public_min_count, s.public_resolution, s.public_period, s.public_preset_list,
                            forced_by=forced)


Disclosure = Annotated[DisclosurePolicy | None, Depends(on_loop(disclosure_policy))]


class GiStarParams:
    """Optional Getis-Ord Gi* columns on /hotspots (docs/statistics.md#gi-on-hotspots)."""

    def __init__(self, stats: str = "none", value: str = "harm", transform: str = "none", permutations: int = 0):
        self.stats, self.value, self.transform, self.permutations = stats, value, transform, permutations

    @property
    def on(self) -> bool:
        return self.stats == "gistar"

    def key(self) -> tuple | None:
        """What changes the output (a result-cache key part): nothing when Gi* is off."""
        return (self.value, self.transform, self.permutations) if self.on else None


def gistar_params(
    stats: Annotated[Literal["none", "gistar"], Query(
        description="gistar: add Getis-Ord Gi* z, p, FDR q and class (hot_99/95/90; neighbourhood_hot: hot "
        "only through its neighbours, nothing in the cell; not_significant) to "
        "every cell, computed over every cell of the study area (zero cells included), and the Gi* "
        "assumptions to the response. Off by default: it adds ~85 ms at res 10 on the sample (~0.7 s for "
        "the first query of a study area, ~4 s at res 11).")] = "none",
    gi_value: Annotated[Literal["harm", "count"], Query(description="Gi* on harm (days under the weights table) "
                                                                    "or on offence counts.")] = "harm",
    transform: Annotated[Literal["none", "log", "cap"], Query(
        description="Transform before Gi*: log = log(1 + harm), cap = winsorise at the 99th percentile of "
        "non-zero cells; damps single very harmful offences.")] = "none",
    permutations: Annotated[int, Query(ge=0, le=9999, description="0: analytic p (normal approximation); "
                                       "e.g. 999: conditional permutation p-values.")] = 0,
) -> GiStarParams:
    # a function, not the class itself, as the dependency: FastAPI before 0.12x cannot resolve the postponed
    # annotations of a class's __init__ (no __globals__ on a class), and pyproject allows fastapi>=0.110
    return GiStarParams(stats, gi_value, transform, permutations)


GiStar = Annotated[GiStarParams, Depends(on_loop(gistar_params))]
