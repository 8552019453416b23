"""Scrutiny reports: GET /reports/harm-trend (JSON, CSV, PNG chart, printable HTML) over hotspots.patrol.harmtrend."""
from __future__ import annotations

import base64
import html
import math
from datetime import datetime
from typing import Annotated, Literal

import pandas as pd
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from app.cache import cached_value
from app.deps import OFFENCES_SCHEMA, PRESET_SCHEMA, State
from app.errors import ApiError
from app.render import to_csv, to_json
from hotspots.patrol import harmtrend as ht
from hotspots.ranking.query import HotspotQuery

router = APIRouter(tags=["reports"])


def build_report(state, dataset: str, preset: str | None, offences: str | None, weights: str | None, by: str,
                 area_layer: str | None, types: int) -> tuple[ht.HarmTrend, tuple]:
    """The report, computed once per store state and (validated query, period, layer, types): every format and
    repeat shares it; returns it with its cache key (the chart is kept under the same key)."""
    try:
        q = HotspotQuery.model_validate({"dataset": dataset, "preset": preset, "weights": weights,
                                         "offences": offences.split(",") if offences else None})
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", str(exc).splitlines()[-1] if str(exc) else "invalid query") from exc
    layer = None if (area_layer or "").lower() in ("", "none") else area_layer
    key = ("harm-trend", q, by, layer, types)

    def compute() -> ht.HarmTrend:
        try:
            return ht.harm_trend(state.store, q, state.default_weights, by, layer, types)
        except ht.ReportError as exc:
            raise ApiError(422, "invalid_parameter", str(exc)) from exc

    return cached_value(state, key, compute), key


def report_chart(state, rep: ht.HarmTrend, key: tuple) -> bytes:
    """The report's PNG chart (``format=png`` and the one inside ``format=html``), drawn once per report."""
    return cached_value(state, (*key, "chart"), lambda: ht.chart_png(rep))


@router.get("/reports/harm-trend",
            summary="Harm-trend scrutiny report: harm per quarter or month and area, changes and whether beyond chance",
            description="Per whole period (`by` quarter or month) and area of `area_layer` (plus an 'All areas' row): "
            "combined harm, offences, counts of the main offence types, and the change against the previous period "
            "and the same period a year earlier. Harm changes (harm is heavy-tailed): beyond chance when p < 0.05 "
            "in a conditional randomisation test of equal harm per day (the pooled records of the two periods, "
            "each in this period with probability by days; exact for any weights), with a 95 % interval of the "
            "ratio of harm per day from a Poisson bootstrap over records; counts: exact conditional Poisson test, "
            "beyond chance when p < 0.05. `format=csv`, `png` "
            "(small multiples) or `html` (printable page with the chart, the sentence the quarterly report writes, "
            "and tables). Partial periods at either end of the data are left out (listed in the response).",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, "image/png": {}, "text/html": {}}}})
def get_harm_trend(
    state: State,
    dataset: Annotated[str, Query(description="Dataset name.")],
    preset: Annotated[str | None, Query(description="Offence selection preset (default all-crime).",
                                        json_schema_extra=PRESET_SCHEMA)] = "all-crime",
    offences: Annotated[str | None, Query(description="Comma-separated offence categories or groups (overrides "
                                          "the preset).", json_schema_extra=OFFENCES_SCHEMA)] = None,
    weights: Annotated[str | None, Query(description="Harm weights table (default: the service's).")] = None,
    by: Annotated[Literal["quarter", "month"], Query(description="Period: quarter or month (data.police.uk "
                                                     "records are month-only).")] = "quarter",
    area_layer: Annotated[str | None, Query(description="Boundary layer of the areas (e.g. districts, wards); "
                                            "'none' for the whole dataset only.")] = "districts",
    types: Annotated[int, Query(ge=0, le=15, description="Main offence types counted (most frequent).")] = 5,
    format: Annotated[Literal["json", "csv", "png", "html"], Query()] = "json",
) -> Response:
    rep, key = build_report(state, dataset, preset, offences, weights, by, area_layer, types)
    name = f"harm-trend-{dataset}-{by}"
    if format == "csv":
        return Response(to_csv(rep.rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    if format == "png":
        return Response(report_chart(state, rep, key), media_type="image/png",
                        headers={"Content-Disposition": f'inline; filename="{name}.png"'})
    if format == "html":  # rebuilt per request: it says when it was made
        return HTMLResponse(report_html(rep, state.settings.protective_marking, report_chart(state, rep, key)))
    return JSONResponse({**rep.meta, "rows": to_json({}, rep.rows)["cells"]})


_CSS = """
@page { size: A4 landscape; margin: 10mm; }
body { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 10px; color: #111; margin: 8px; }
h1 { font-size: 17px; margin: 0 0 4px; } h2 { font-size: 13px; margin: 12px 0 4px; page-break-after: avoid; }
.meta { color: #444; margin-bottom: 6px; } .caveat { color: #6a4a00; font-size: 9px; }
table { border-collapse: collapse; margin: 4px 0 8px; page-break-inside: avoid; }
th, td { border: 1px solid #bbb; padding: 2px 5px; text-align: right; white-space: nowrap; }
th { background: #eee; } td.l, th.l { text-align: left; }
.up { color: #b2182b; font-weight: bold; } .down { color: #2166ac; font-weight: bold; } .ns { color: #555; }
img { max-width: 100%; } ul.story li { margin-bottom: 3px; }
section.area { page-break-inside: avoid; }
.marking { text-align: center; color: #b00; font-weight: bold; letter-spacing: 0.08em; margin: 2px 0; }
"""


def _num(v, nd: int = 0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return "–"
    return f"{float(v):,.{nd}f}"


def _change(pct, flag) -> str:
    if pct is None or (isinstance(pct, float) and not math.isfinite(pct)):
        return "<td class='ns'>–</td>"
    cls = "ns" if flag is not True else ("up" if pct > 0 else "down")
    mark = " *" if flag is True else ""
    return f"<td class='{cls}'>{pct:+.0f} %{mark}</td>"


def report_html(rep: ht.HarmTrend, marking: str = "OFFICIAL", chart: bytes | None = None) -> str:
    """A printable page: the protective marking (top and bottom), header, chart (``chart``: the report's
    ``chart_png`` when already drawn), one sentence per area for the latest period, a table per area."""
    e = html.escape
    m = rep.meta
    png = base64.b64encode(chart if chart is not None else ht.chart_png(rep)).decode()
    order = {a: i for i, a in enumerate(ht.area_order(rep.rows))}  # the chart's order: All areas, then by harm
    rows = rep.rows.iloc[rep.rows["area_id"].map(order).argsort(kind="stable")]
    latest = m["periods"][-1]
    story = "".join(f"<li>{e(ht.narrative(r, m['by'], rep.types))}</li>"
                    for _, r in rows[rows["period"] == latest].iterrows())
    type_heads = "".join(f"<th>{e(t['label'])}</th>" for t in rep.types)
    sections = []
    for area_id, sub in rows.groupby("area_id", sort=False):
        body = []
        for _, r in sub.iterrows():
            types = "".join(f"<td>{_num(r[t['column']])}</td>" for t in rep.types)
            body.append(
                f"<tr><td class='l'>{e(r['period'])}</td><td>{_num(r['harm'])}</td>"
                f"{_change(r['harm_prev_change_pct'], r['harm_prev_beyond_chance'])}"
                f"{_change(r['harm_yoy_change_pct'], r['harm_yoy_beyond_chance'])}"
                f"<td>{_num(r['count'])}</td>"
                f"{_change(r['count_prev_change_pct'], r['count_prev_beyond_chance'])}"
                f"{_change(r['count_yoy_change_pct'], r['count_yoy_beyond_chance'])}"
                f"{types}</tr>")
        sections.append(f"""<section class="area"><h2>{e(str(sub['area_name'].iloc[0]))}</h2>
<table><tr><th class="l">{e(m['by'])}</th><th>harm</th><th>vs previous</th><th>vs year before</th><th>offences</th>
<th>vs previous</th><th>vs year before</th>{type_heads}</tr>{''.join(body)}</table></section>""")
    method = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in m["method"].items())
    caveats = "".join(f"<li>{e(c)}</li>" for c in m["caveats"])
    left_out = (f" · partial periods left out: {', '.join(m['partial_periods_left_out'])}"
                if m["partial_periods_left_out"] else "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>harmspot harm trend {e(m['dataset'])}</title>
<style>{_CSS}</style></head><body>
<div class="marking">{e(marking)}</div>
<h1>Harm trend · {e(m['dataset'])} · by {e(m['by'])}</h1>
<div class="meta">Offences: {e(m['preset'] or ', '.join(m['offences'] or []))} · weights {e(m['weights_table'])} ·
areas: {e(m['area_layer'] or 'whole dataset only')} · periods {e(m['periods'][0])} to {e(latest)}{e(left_out)} ·
made {datetime.now():%Y-%m-%d %H:%M}</div>
<h2>{e(latest)}</h2><ul class="story">{story}</ul>
<img alt="combined harm per {e(m['by'])} and area" src="data:image/png;base64,{png}">
<p>Changes marked <b>*</b> (red up, blue down) are beyond chance; others are within chance.</p>
{''.join(sections)}
<h2>Method</h2><ul>{method}</ul>
<h2>Caveats</h2><ul class="caveat">{caveats}</ul>
<div class="marking">{e(marking)}</div>
</body></html>"""
