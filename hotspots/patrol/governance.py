"""Weekly compliance for governance (the tasking meeting): planned against delivered visits and minutes per area
and per team, and the share of spots reaching the dose, as tables and a small PNG chart.

Built on :func:`hotspots.patrol.patrols.compliance` (per spot per ISO week against a saved pack) and the patrol
log (hand-entered and GPS-derived rows alike). A visit reaches the **dose** when it lasts at least
``dose_minutes`` (the pack's ``visit_minutes``, 15 by default: the Koper curve). A patrol counts in the ISO week
(Monday-Sunday) its start falls in, inside the pack's plan dates only.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from hotspots.patrol.patrols import Compliance, compliance, patrols

ALL_AREAS = "All areas"
AREA_FIELDS: dict[str, str] = {
    "week": "ISO week, its Monday",
    "area_name": "patrol area of the pack ('All areas' = every spot of the pack)",
    "spots": "spots of the pack in the area",
    "plan_days": "days of the plan in that week",
    "planned_visits": "visits_per_day x plan days x spots",
    "visits": "patrols at the area's spots starting that week (hand-entered and GPS)",
    "gps_visits": "of which measured from GPS",
    "visits_pct": "100 x visits / planned visits (over 100 = more than planned)",
    "capped_visits_pct": "100 x sum over spots of min(visits, planned) / planned: extra visits at one spot cannot "
                         "hide a shortfall at another",
    "planned_minutes": "planned visits x visit minutes",
    "minutes": "patrol minutes (GPS: time inside the spot)",
    "minutes_pct": "100 x minutes / planned minutes",
    "dosed_visits": "visits lasting at least dose_minutes",
    "spots_visited": "spots with at least one visit",
    "spots_dosed": "spots with at least one visit of dose_minutes or more",
    "spots_dosed_share": "spots_dosed / spots (the share of spots reaching the dose)",
    "spots_fully_dosed": "spots whose dosed visits reached their planned visits",
}
TEAM_FIELDS: dict[str, str] = {
    "week": "ISO week, its Monday",
    "team": "team (GPS: the unit id)",
    "visits": "patrols at the pack's spots starting that week",
    "gps_visits": "of which measured from GPS",
    "minutes": "patrol minutes",
    "dosed_visits": "visits lasting at least dose_minutes",
    "dosed_share": "dosed_visits / visits",
    "spots_visited": "distinct spots visited",
    "areas": "areas of the spots visited ('; '-separated)",
    "share_of_week": "visits / all visits at the pack's spots that week",
    "unplanned_visits": "patrols that week at spots not in the pack (not counted above)",
}
TEAM_PLAN_NOTE = ("planned visits are per spot, not per team (the pack plans places, not who goes): teams are "
                  "compared on delivery and dose only")


def _week(ts: pd.Series) -> pd.Series:
    ts = pd.to_datetime(ts)
    return (ts - pd.to_timedelta(ts.dt.day_of_week, unit="D")).dt.normalize().dt.date.astype(str)


def _plan_log(comp: Compliance, log: pd.DataFrame, spots: pd.DataFrame, dose_minutes: float) -> pd.DataFrame:
    done = log[log["spot_id"].isin(set(spots["spot_id"]))].copy()
    done["week"] = _week(done["start_at"])
    done["dosed"] = done["minutes"] >= dose_minutes - 1e-9
    done["gps"] = done["source"].eq("gps")
    return done.merge(spots[["spot_id", "area_name"]], on="spot_id", how="left")


def weekly_by_area(comp: Compliance, log: pd.DataFrame, spots: pd.DataFrame, dose_minutes: float) -> pd.DataFrame:
    """One row per area per week, plus an 'All areas' row per week."""
    done = _plan_log(comp, log, spots, dose_minutes)
    per_spot = (done.groupby(["spot_id", "week"]).agg(dosed_visits=("dosed", "sum"), gps_visits=("gps", "sum"))
                .reset_index())
    w = comp.weeks.merge(per_spot, on=["spot_id", "week"], how="left").fillna({"dosed_visits": 0, "gps_visits": 0})
    w["capped"] = np.minimum(w["visits"], w["planned_visits"])
    w["visited"] = w["visits"] > 0
    w["dosed"] = w["dosed_visits"] > 0
    w["fully"] = w["dosed_visits"] >= w["planned_visits"]

    def summarise(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        g = frame.groupby(keys, sort=True).agg(
            spots=("spot_id", "nunique"), plan_days=("plan_days", "max"), planned_visits=("planned_visits", "sum"),
            visits=("visits", "sum"), gps_visits=("gps_visits", "sum"), capped=("capped", "sum"),
            planned_minutes=("planned_minutes", "sum"), minutes=("minutes", "sum"),
            dosed_visits=("dosed_visits", "sum"), spots_visited=("visited", "sum"), spots_dosed=("dosed", "sum"),
            spots_fully_dosed=("fully", "sum")).reset_index()
        return g

    areas = summarise(w, ["week", "area_name"])
    total = summarise(w, ["week"]).assign(area_name=ALL_AREAS)
    out = pd.concat([areas, total], ignore_index=True)
    out["visits_pct"] = 100 * out["visits"] / out["planned_visits"]
    out["capped_visits_pct"] = 100 * out["capped"] / out["planned_visits"]
    out["minutes_pct"] = 100 * out["minutes"] / out["planned_minutes"]
    out["spots_dosed_share"] = out["spots_dosed"] / out["spots"]
    for c in ("visits", "gps_visits", "dosed_visits", "spots_visited", "spots_dosed", "spots_fully_dosed", "spots",
              "plan_days"):
        out[c] = out[c].astype(int)
    out["minutes"] = out["minutes"].round(2)
    order = {a: i for i, a in enumerate(sorted(set(areas["area_name"])))} | {ALL_AREAS: 10**6}
    out = out.sort_values(["week", "area_name"], key=lambda s: s.map(order) if s.name == "area_name" else s)
    return out[list(AREA_FIELDS)].reset_index(drop=True)


def weekly_by_team(comp: Compliance, log: pd.DataFrame, spots: pd.DataFrame, dose_minutes: float) -> pd.DataFrame:
    """One row per team per week (delivery and dose; teams have no plan of their own)."""
    done = _plan_log(comp, log, spots, dose_minutes)
    cols = list(TEAM_FIELDS)
    unplanned = comp.unplanned.assign(week=_week(comp.unplanned["start_at"])) if len(comp.unplanned) else None
    if done.empty and unplanned is None:
        return pd.DataFrame(columns=cols)
    if done.empty:
        out = pd.DataFrame(columns=["week", "team"])
    else:
        out = done.groupby(["week", "team"]).agg(
            visits=("patrol_id", "size"), gps_visits=("gps", "sum"), minutes=("minutes", "sum"),
            dosed_visits=("dosed", "sum"), spots_visited=("spot_id", "nunique"),
            areas=("area_name", lambda a: "; ".join(sorted(set(a.dropna()))))).reset_index()
    if unplanned is not None:
        extra = unplanned.groupby(["week", "team"]).size().rename("unplanned_visits").reset_index()
        out = out.merge(extra, on=["week", "team"], how="outer")
    out = out.fillna({"visits": 0, "gps_visits": 0, "minutes": 0.0, "dosed_visits": 0, "spots_visited": 0,
                      "areas": "", "unplanned_visits": 0}) if len(out) else out
    if "unplanned_visits" not in out:
        out["unplanned_visits"] = 0
    for c in ("visits", "gps_visits", "dosed_visits", "spots_visited", "unplanned_visits"):
        out[c] = out[c].astype(int)
    out["dosed_share"] = np.where(out["visits"] > 0, out["dosed_visits"] / out["visits"].where(out["visits"] > 0, 1),
                                  np.nan)
    week_total = out.groupby("week")["visits"].transform("sum")
    out["share_of_week"] = np.where(week_total > 0, out["visits"] / week_total.where(week_total > 0, 1), np.nan)
    out["minutes"] = out["minutes"].astype(float).round(2)
    return out.sort_values(["week", "visits", "team"], ascending=[True, False, True])[cols].reset_index(drop=True)


def weekly(store, pack: dict, spots: pd.DataFrame, by: str = "area", dose_minutes: float | None = None
           ) -> tuple[pd.DataFrame, dict]:
    """The governance table (``by`` = 'area' or 'team') of a saved pack, and its meta."""
    if by not in ("area", "team"):
        raise ValueError("by must be 'area' or 'team'")
    dose = float(dose_minutes if dose_minutes is not None else pack["visit_minutes"])
    comp = compliance(store, pack, spots)
    plan_from = pd.Timestamp(pack["plan_from"]).to_pydatetime()
    plan_to = (pd.Timestamp(pack["plan_to"]) + pd.Timedelta(days=1)).to_pydatetime()
    log = patrols(store, plan_from, plan_to)
    table = (weekly_by_area if by == "area" else weekly_by_team)(comp, log, spots, dose)
    meta = {"pack": {k: pack[k] for k in ("pack_id", "dataset", "plan_from", "plan_to", "visits_per_day",
                                          "visit_minutes") if k in pack},
            "by": by, "dose_minutes": dose, "summary": comp.summary,
            "sources": log["source"].value_counts().to_dict() if len(log) else {},
            "fields": AREA_FIELDS if by == "area" else TEAM_FIELDS,
            "rules": {"week": "ISO week (Monday-Sunday) of the patrol's start, plan dates only",
                      "dose": f"a visit of at least {dose:g} minutes (Koper curve: ~15) reaches the dose",
                      "gps": "GPS visits: minutes = time inside the spot (cell + buffer ring), see POST /patrols/gps"}}
    if by == "team":
        meta["rules"]["plan"] = TEAM_PLAN_NOTE
    return table, meta


def chart_png(table: pd.DataFrame, meta: dict) -> bytes:
    """A small chart for the tasking meeting: per week, delivered as % of planned visits (capped) and the share
    of spots reaching the dose, per area (by='area'); visits and dosed visits per team (by='team')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weeks = sorted(table["week"].unique()) if len(table) else []
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), dpi=100)
    title = (f"Pack {meta['pack'].get('pack_id')} · plan {meta['pack'].get('plan_from')} to "
             f"{meta['pack'].get('plan_to')} · dose {meta['dose_minutes']:g} min")
    if meta["by"] == "area":
        areas = [a for a in dict.fromkeys(table["area_name"]) if a != ALL_AREAS] + [ALL_AREAS]
        _grouped_bars(axes[0], table, weeks, areas, "capped_visits_pct", "visits delivered, % of planned (capped)")
        axes[0].axhline(100, color="#333", lw=0.8, ls="--")
        _grouped_bars(axes[1], table.assign(v=100 * table["spots_dosed_share"]), weeks, areas, "v",
                      f"spots with a {meta['dose_minutes']:g}-min visit, %")
        for ax in axes:
            ax.set_ylim(0, max(110, float(np.nanmax(table["capped_visits_pct"])) + 5 if len(table) else 110))
    else:
        teams = list(dict.fromkeys(table.sort_values("visits", ascending=False)["team"]))[:10]
        _grouped_bars(axes[0], table, weeks, teams, "visits", "visits at pack spots")
        _grouped_bars(axes[1], table, weeks, teams, "dosed_visits", f"visits of {meta['dose_minutes']:g}+ min")
        from matplotlib.ticker import MaxNLocator

        for ax in axes:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1 if handles else 0, 1, 0.94))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _grouped_bars(ax, table: pd.DataFrame, weeks: list[str], groups: list[str], col: str, title: str) -> None:
    key = "area_name" if "area_name" in table else "team"
    width = 0.8 / max(len(groups), 1)
    colours = [f"C{i % 10}" for i in range(len(groups))]
    for i, g in enumerate(groups):
        sub = table[table[key] == g].set_index("week")[col].reindex(weeks)
        colour = "#444" if g == ALL_AREAS else colours[i]
        xs = np.arange(len(weeks)) + (i - (len(groups) - 1) / 2) * width
        values = sub.to_numpy(float)
        ax.bar(xs, np.nan_to_num(values), width, label=g, color=colour)
        for x, v in zip(xs[~(values > 0)], values[~(values > 0)]):  # a zero (or no row) must not read as missing
            ax.annotate("0" if v == 0 else "–", (x, 0), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7, color=colour)
    ax.set_xticks(np.arange(len(weeks)), [f"w/c {w}" for w in weeks], fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
