"""What a dataset is to its users: the listing, the stable default dataset, and its coverage (first and last
day or month of its records), which every result repeats so a period outside the data is never silent.

Plain functions over a :class:`~geodata.store.Store`; values are Python scalars (no NaN, no numpy), so any
door can put them in JSON as they are.
"""
from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from geodata.store import NotStored, Store


def _py(v):
    """A store value as Python: missing (None/NaN/NaT/NA) -> None, numpy scalars -> int/float."""
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v.item() if hasattr(v, "item") else v


def default_dataset(store: Store, configured: str | None = None) -> tuple[str | None, str]:
    """(the dataset used when a request names none, the rule that chose it).

    The configured name (``HARMSPOT_DEFAULT_DATASET``) when that dataset is loaded, else the first dataset
    loaded (oldest ``created_at``, then name): a later upload never changes the default."""
    def compute():
        names = store.query_df("SELECT name FROM datasets ORDER BY created_at, name")["name"].tolist()
        if configured and configured in names:
            return configured, "configured (HARMSPOT_DEFAULT_DATASET)"
        if not names:
            return None, "no datasets loaded"
        rule = "first dataset loaded"
        if configured:
            rule += f" (HARMSPOT_DEFAULT_DATASET '{configured}' is not loaded)"
        return names[0], rule

    return store.cached(("default_dataset", configured), compute)


def coverage(store: Store, dataset: str) -> dict:
    """First and last day (and month) the dataset's records cover, their time precision, and the months with
    no records inside that span.  data.police.uk months count whole: 2024-01..2024-04 is 2024-01-01..2024-04-30."""
    return store.cached(("coverage", dataset), lambda: _coverage(store, dataset))


def _coverage(store: Store, dataset: str) -> dict:
    store.require_dataset(dataset)
    info = store.query_df("""SELECT min(occurred_from) AS first, max(occurred_to) AS last_exclusive, count(*) AS n,
                                    list(DISTINCT precision) AS precisions,
                                    list(DISTINCT strftime(occurred_from, '%Y-%m')) AS months
                             FROM offences WHERE dataset = ?""", [dataset]).iloc[0]
    first, last_ex = _py(info["first"]), _py(info["last_exclusive"])
    precisions = sorted(p for p in (info["precisions"] if info["precisions"] is not None else []) if isinstance(p, str))
    if first is None or last_ex is None:
        return {"dataset": dataset, "records": 0, "first_day": None, "last_day": None, "first_month": None,
                "last_month": None, "time_precision": [], "month_only": False, "months_without_records": [],
                "note": "the dataset holds no records"}
    first_day = pd.Timestamp(first).date()
    last_day = (pd.Timestamp(last_ex) - pd.Timedelta(microseconds=1)).date()
    months = [m for m in info["months"] if isinstance(m, str)]
    span = pd.period_range(first_day, last_day, freq="M").strftime("%Y-%m").tolist()
    missing = sorted(set(span) - set(months))
    month_only = precisions == ["month"]
    return {
        "dataset": dataset, "records": int(info["n"]),
        "first_day": first_day.isoformat(), "last_day": last_day.isoformat(),
        "first_month": first_day.strftime("%Y-%m"), "last_month": last_day.strftime("%Y-%m"),
        "time_precision": precisions, "month_only": month_only,
        "months_without_records": missing[:120],
        "note": (f"records cover {first_day.strftime('%Y-%m')} to {last_day.strftime('%Y-%m')} (whole months, no "
                 "day or time)" if month_only else f"records cover {first_day} to {last_day}"),
    }


def period_note(cov: dict, start: date, end_exclusive: date) -> str | None:
    """A sentence when the period [start, end_exclusive) lies partly or wholly outside the coverage."""
    if not cov.get("first_day"):
        return "the dataset holds no records"
    first, last = date.fromisoformat(cov["first_day"]), date.fromisoformat(cov["last_day"])
    last_req = end_exclusive - timedelta(days=1)
    unit = ("month", "first_month", "last_month") if cov.get("month_only") else ("day", "first_day", "last_day")
    cover = f"{cov[unit[1]]} to {cov[unit[2]]}"
    if last_req < first or start > last:
        return (f"the period {start} to {last_req} is outside the data: dataset '{cov['dataset']}' covers {cover}")
    if start < first or last_req > last:
        return (f"the period {start} to {last_req} is only partly covered: dataset '{cov['dataset']}' covers {cover}")
    return None


def listing(store: Store, configured_default: str | None = None) -> dict:
    """GET /datasets: every dataset with counts, coverage and precision, and which one is the default."""
    frame = store.datasets()
    default, rule = default_dataset(store, configured_default)
    out = []
    for r in frame.to_dict("records"):
        name = str(r["name"])
        precisions = r["precisions"] if r["precisions"] is not None else []
        first, last_ex = _py(r["first"]), _py(r["last_exclusive"])
        out.append({
            "name": name, "default": name == default,
            "offences": int(_py(r["offences"]) or 0), "batches": int(_py(r["batches"]) or 0),
            "rejects": int(_py(r["rejects"]) or 0),
            "study_area": _py(r["study_area"]), "description": _py(r["description"]) or "",
            "created_at": None if _py(r["created_at"]) is None else pd.Timestamp(r["created_at"]).isoformat(),
            "first": None if first is None else pd.Timestamp(first).date().isoformat(),
            "last_exclusive": None if last_ex is None else pd.Timestamp(last_ex).date().isoformat(),
            "time_precision": sorted(p for p in precisions if isinstance(p, str)),
            "coverage": coverage(store, name) if first is not None else None,
        })
    return {"datasets": out, "default": default, "default_rule": rule}


def require_default(store: Store, configured: str | None = None) -> str:
    name, _ = default_dataset(store, configured)
    if name is None:
        raise NotStored("unknown dataset: no datasets loaded (POST /datasets first)")
    return name
