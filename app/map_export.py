"""Map packs: one self-contained HTML map per period or key date, that opens from disk with no server and no
internet (folium, with the vendored Leaflet and every asset inlined), and a zip of one map per key date of a set
with an index page.

folium writes a Leaflet page and by default links Leaflet, jQuery, Bootstrap and Font Awesome from CDNs; here the
map drops those links and inlines the vendored Leaflet 1.9.4 (app/static/vendor/leaflet, its images as data URIs)
instead: the page needs nothing but itself. Hexagons, district outlines, legends, popups (with the cells'
streets), period, offences, weights, caveats and the protective marking are baked in. Popups are escaped HTML
(folium would otherwise put property values into the page as markup).
"""
from __future__ import annotations

import base64
import html
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import folium
import numpy as np
import pandas as pd
import shapely
from branca.element import Element, MacroElement, Template

from app.render import to_geojson
from geodata.areas import DISTRICTS, choose_layer
from geodata.harm import WeightsTable
from geodata.store import Store, StoreError
from hotspots.patrol import keydates as kd
from hotspots.ranking.context import street_context
from hotspots.ranking.harmspots import harm_spots
from hotspots.ranking.plan import resolve_plan
from hotspots.ranking.presets import PRESETS
from hotspots.ranking.query import HotspotQuery

VENDOR = Path(__file__).resolve().parent / "static" / "vendor" / "leaflet"
VIRIDIS = ["#c2df23", "#5ec962", "#21918c", "#3b528b", "#440154"]
DIVERGING = ["#2166ac", "#67a9cf", "#d1e5f0", "#fddbc7", "#ef8a62", "#b2182b"]
PURPLES = ["#dadaeb", "#bcbddc", "#9e9ac8", "#756bb1", "#54278f"]
FIT_TOP = 30
MAX_CELLS = 5000  # cells per layer in a pack: a file a laptop browser opens in a second or two
MAX_ZIP_DATES = 40  # maps in one zip (a user set may hold 500 dates): about a second each to make
MAX_ZIP_CELLS = 20_000  # dates x top in one zip: bounds the zip held in memory (~1 MB of HTML per 200-cell map)


class ExportError(ValueError):
    """The pack cannot be made (nothing to map, a malformed key date, key date with from/to...)."""


class NotFound(LookupError):
    """No such key-date set, or the date is not in it."""


@dataclass
class Layer:
    name: str
    title: str  # legend heading
    cells: pd.DataFrame  # h3, lat, lon, value + popup fields
    value: str
    palette: list[str]
    breaks: list[float]
    note: str = ""


@dataclass
class Pack:
    title: str
    subtitle: str
    layers: list[Layer]
    meta: dict
    caveats: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ assets
@lru_cache(maxsize=1)
def leaflet_inline() -> tuple[str, str]:
    """The vendored Leaflet CSS (its images as data URIs) and JS."""
    css = (VENDOR / "leaflet.css").read_text(encoding="utf-8")

    def data_uri(m: re.Match) -> str:
        png = (VENDOR / m.group(1)).read_bytes()
        return f"url(data:image/png;base64,{base64.b64encode(png).decode()})"

    css = re.sub(r"url\((images/[^)]+\.png)\)", data_uri, css)
    return css, (VENDOR / "leaflet.js").read_text(encoding="utf-8")


def _offline_map(bounds: tuple[float, float, float, float]) -> folium.Map:
    minx, miny, maxx, maxy = bounds
    m = folium.Map(location=[(miny + maxy) / 2, (minx + maxx) / 2], zoom_start=11, tiles=None, control_scale=True)
    m.default_js, m.default_css = [], []  # no CDN: Leaflet is inlined below
    css, js = leaflet_inline()
    root = m.get_root()
    root.header.add_child(Element(f"<style>{css}</style>"), name="leaflet_css_inline", index=0)
    root.header.add_child(Element(f"<script>{js}</script>"), name="leaflet_js_inline", index=1)
    root.header.add_child(Element(f"<style>{_PACK_CSS}</style>"), name="harmspot_css")
    return m


# ------------------------------------------------------------------------------------------ data
def _quantiles(values: np.ndarray, k: int) -> list[float]:
    v = np.sort(values[np.isfinite(values)])
    out: list[float] = []
    for i in range(1, k):
        if len(v):
            q = float(v[min(len(v) - 1, int(i * len(v) / k))])
            if not out or q > out[-1]:
                out.append(q)
    return out


def _diverging(values: np.ndarray) -> list[float]:
    mags = np.abs(values[np.isfinite(values) & (values != 0)])
    q = _quantiles(mags, 3) or [1.0]
    if len(q) < 2:
        q.append(q[0] * 2)
    return [-q[1], -q[0], 0.0, q[0], q[1]]


def _colour(value: float, breaks: list[float], palette: list[str]) -> str:
    i = int(np.searchsorted(np.asarray(breaks), value, side="right")) if breaks else 0
    if len(palette) == len(breaks) + 1:
        return palette[i]
    return palette[min(len(palette) - 1, round(i * (len(palette) - 1) / max(len(breaks), 1)))]


def _offences(v) -> str:
    return ", ".join(f"{o['offence']} ({o['count']})" for o in v) if isinstance(v, list) else ""


def period_pack(store: Store, q: HotspotQuery, weights: WeightsTable) -> Pack:
    """The harm spots of the query's period (the top ``q.top`` cells)."""
    res = harm_spots(store, q, weights)
    cells = res.top_cells.copy()
    if cells.empty:
        raise ExportError(f"no harm spots in {res.period_from.date()}..{res.period_to_exclusive.date()} for this "
                          "selection: nothing to map")
    m = res.meta()
    cells["value"] = cells["harm"]
    cells["streets"] = cells["top_locations"].map(_joined)  # the street context of /hotspots (ranking.context)
    cells["popup"] = [_popup([("Rank", f"{r.rank}"), ("Harm", f"{r.harm:,.1f} days"), ("Offences", f"{r.count:,}"),
                              ("Main offences", _offences(r.top_offences)), ("Streets", r.streets),
                              ("Cell", r.h3)]) for r in cells.itertuples()]
    layer = Layer("harm", f"Harm per hexagon (days, {m['weights_table']})", cells, "value", VIRIDIS,
                  _quantiles(cells["value"].to_numpy(float), 5), f"{len(cells)} cells; 5 quantile classes")
    preset = PRESETS[q.preset].title if q.preset and not q.offences else ", ".join(q.offences or [])
    meta = {"dataset": q.dataset, "period": f"{m['from']} to {m['to']}", "period_rule": m["period_rule"],
            "offences": preset, "weights": f"{m['weights_table']} ({m['weights_exact']})",
            "resolution": q.resolution, "area": q.area or "all", "cells": len(cells),
            "total_harm": m["total_harm"], "total_count": m["total_count"]}
    return Pack(f"Harm spots · {q.dataset}", f"{m['from']} to {m['to']} · {preset}", [layer], meta,
                [*m["not_applied"], *m["caveats"]])


def keydate_pack(store: Store, q: HotspotQuery, weights: WeightsTable, kset: kd.KeyDateSet, when: date,
                 top: int = 200) -> Pack:
    """The key date's after / change / forecast layers (as the map draws them, kd.layer_table)."""
    kset.get(when)  # KeyDateError when the date is not in the set
    res = kd.key_date_hotspots(store, q, weights, kset, when, top=top)
    rows = kd.layer_table(res, top, "all")
    meta_kd = res.meta()
    k = meta_kd["key_date"]
    layers = []
    for name, value, title, palette in (("after", "harm_per_day_after", "Harm per day after the date", VIRIDIS),
                                        ("change", "change_per_day", "Change in harm per day, after − before",
                                         DIVERGING),
                                        ("forecast", "forecast_harm_per_day", "Forecast harm per day (analogue)",
                                         PURPLES)):
        cells = rows[rows["layer"] == name].copy()
        if cells.empty:  # e.g. no after window in the data: the table holds the forecast's columns only
            cells = cells.reindex(columns=[*cells.columns, "value", "streets", "popup"])
            layers.append(Layer(name, title, cells, "value", palette, [], _EMPTY_NOTES[name]))
            continue
        cells["value"] = cells[value].astype(float)
        w = res.recent_window if name == "forecast" else res.windows.after  # streets: by count in this window
        _add_streets(store, q, weights, cells, w.start, w.end_exclusive)
        if name == "forecast":
            cells["popup"] = [_popup([("Forecast rank", f"{r.rank}"), ("Forecast harm/day", f"{r.value:,.2f}"),
                                      ("Analogue share", f"{100 * r.analogue_share:.2f} %"),
                                      ("Recent share", f"{100 * r.recent_share:.2f} %"), ("Streets", r.streets),
                                      ("Cell", r.h3)]) for r in cells.itertuples()]
        else:
            cells["popup"] = [_popup([("Rank after", f"{r.rank}"), ("Harm/day after", f"{r.harm_per_day_after:,.2f}"),
                                      ("Harm/day before", f"{r.harm_per_day_before:,.2f}"),
                                      ("Change/day", f"{r.change_per_day:+,.2f}"),
                                      ("Change", "new" if pd.isna(r.change_pct) else f"{r.change_pct:+.0f} %"),
                                      ("Main offences", _offences(r.top_offences)), ("Streets", r.streets),
                                      ("Cell", r.h3)]) for r in cells.itertuples()]
        vals = cells["value"].to_numpy(float)
        breaks = _diverging(vals) if name == "change" else _quantiles(vals, 5)
        layers.append(Layer(name, title, cells, "value", palette, breaks, kd.LAYER_NOTES[name]))
    win = lambda w: ", ".join(w["months"]) if w.get("months") else f"{w['from']} to {w['to']}"  # noqa: E731
    preset = PRESETS[q.preset].title if q.preset and not q.offences else ", ".join(q.offences or [])
    meta = {"dataset": q.dataset, "key_date": f"{k['date']} {k['label']}", "set": kset.name,
            "before": win(meta_kd["before"]), "after": win(meta_kd["after"]), "offences": preset,
            "weights": meta_kd["weights_table"], "resolution": q.resolution,
            "analogue": f"{meta_kd['analogue']['date']} {meta_kd['analogue']['label']}" if meta_kd["analogue"] else "none",
            "total harm per day, after vs before": (None if meta_kd["summary"]["change_pct"] is None
                                                    else f"{meta_kd['summary']['change_pct']:+.1f} %"),
            "window_rule": meta_kd["window_rule"]}
    return Pack(f"{k['date']} · {k['label']}", f"{q.dataset} · before {meta['before']} · after {meta['after']} · "
                f"{preset}", layers, meta, meta_kd["caveats"])


_EMPTY_NOTES = {"after": "the window after the date is not in the data: no observed spots",
                "change": "the windows before and after the date are not both in the data: no change",
                "forecast": "no forecast (no records in the analogue's or the recent windows)"}


def _add_streets(store: Store, q: HotspotQuery, weights: WeightsTable, cells: pd.DataFrame, start: date,
                 end_exclusive: date) -> None:
    """The cells' street context as /hotspots gives it (hotspots.ranking.context: the most frequent location
    texts of the selected records in the window [start, end_exclusive), else of all the cell's records)."""
    if cells.empty:
        cells["streets"] = pd.Series(dtype=str)
        return
    qw = q.model_copy(update={"date_from": start.isoformat(),
                              "date_to": (end_exclusive - timedelta(days=1)).isoformat()})
    ctx = street_context(store, resolve_plan(store, qw, weights), cells["cell"].to_numpy(np.uint64))
    cells["streets"] = ctx["top_locations"].map(_joined).to_numpy()


def _joined(v) -> str:
    return "; ".join(v) if isinstance(v, list | np.ndarray) else ""


def _popup(rows: list[tuple[str, str]]) -> str:
    e = html.escape
    return "<table class='hs'>" + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows
                                          if v not in (None, "")) + "</table>"


# ------------------------------------------------------------------------------------------ rendering
def render(pack: Pack, districts: Outlines | None, marking: str) -> str:
    """The self-contained HTML page of a pack, with the outlines of ``districts`` near its cells."""
    frames = [ly.cells for ly in pack.layers if len(ly.cells)]
    if not frames:
        raise ExportError("nothing to map")
    allc = pd.concat(frames)
    m = _offline_map((allc["lon"].min(), allc["lat"].min(), allc["lon"].max(), allc["lat"].max()))
    if districts is not None and len(districts.frame):
        pack.meta["districts"] = districts.rule
        _districts(m, districts.frame, shapely.box(allc["lon"].min(), allc["lat"].min(), allc["lon"].max(),
                                             allc["lat"].max()).buffer(0.05))
    groups = []
    for i, ly in enumerate(pack.layers):
        g = folium.FeatureGroup(name=f"{ly.name.title()} ({len(ly.cells)})", overlay=len(pack.layers) == 1,
                                show=i == 0 or len(pack.layers) == 1)
        if len(ly.cells):
            fc = to_geojson({}, ly.cells[["h3", "value", "popup"]], ["h3", "value", "popup"])
            fc.pop("metadata", None)
            for f in fc["features"]:
                f["properties"]["fill"] = _colour(f["properties"]["value"], ly.breaks, ly.palette)
            folium.GeoJson(fc, name=ly.name, style_function=lambda f: {
                "fillColor": f["properties"]["fill"], "color": "#222", "weight": 0.8, "fillOpacity": 0.8},
                popup=folium.GeoJsonPopup(fields=["popup"], labels=False, max_width=360)).add_to(g)
        g.add_to(m)
        groups.append(g)
    first = next((ly for ly in pack.layers if len(ly.cells)), pack.layers[0])
    top = first.cells.head(FIT_TOP)
    m.fit_bounds([[top["lat"].min() - 0.004, top["lon"].min() - 0.006], [top["lat"].max() + 0.004,
                                                                         top["lon"].max() + 0.006]])
    folium.LayerControl(collapsed=False, position="topright").add_to(m)
    m.get_root().html.add_child(Element(_panel_html(pack, marking)))
    m.add_child(_Switcher([ly.name for ly in pack.layers], [g.get_name() for g in groups]))
    out = m.get_root().render()
    return out.replace("<head>", f"<head><title>{html.escape(pack.title)}</title>", 1)


def _districts(m: folium.Map, districts: pd.DataFrame, around: shapely.Geometry) -> None:
    """The outlines (and names) of the districts near the pack's cells: a national layer adds only its few."""
    geoms = shapely.from_wkb([bytes(g) for g in districts["geometry_wkb"]])
    near = shapely.intersects(geoms, around)
    districts, geoms = districts[near], list(geoms[near])
    simple = [g.simplify(0.001, preserve_topology=True) for g in geoms]  # ~100 m: outlines, not survey lines
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": str(n)}, "geometry": shapely.geometry.mapping(g)}
        for n, g in zip(districts["name"], simple)]}
    grp = folium.FeatureGroup(name="Districts", overlay=True, show=True)
    folium.GeoJson(fc, style_function=lambda f: {"fill": False, "color": "#333", "weight": 1.6}, interactive=False
                   ).add_to(grp)
    for n, g in zip(districts["name"], geoms):
        p = g.representative_point()
        folium.Marker([p.y, p.x], icon=folium.DivIcon(html=f"<div class='hs-district'>{html.escape(str(n))}</div>",
                                                      icon_size=(160, 18), icon_anchor=(80, 9))).add_to(grp)
    grp.add_to(m)


class _Switcher(MacroElement):
    """Shows the legend of the layer chosen in the layer control (key-date packs switch between three)."""

    _template = Template("""
{% macro script(this, kwargs) %}
(function () {
  var names = {{ this.names | tojson }}, groups = [{{ this.groups | join(", ") }}];
  function legend(name) {
    names.forEach(function (n) {
      var el = document.getElementById("legend-" + n); if (el) el.style.display = (n === name) ? "block" : "none";
    });
  }
  {{ this._parent.get_name() }}.on("baselayerchange", function (e) {
    groups.forEach(function (g, i) { if (g === e.layer) legend(names[i]); });
  });
  legend(names[0]);
  // hexagons are ~130 m across: at force or district zoom a thick outline in the fill colour keeps them visible
  var map = {{ this._parent.get_name() }};
  function restyle() {
    var far = map.getZoom() < 13;
    groups.forEach(function (g) {
      g.eachLayer(function (gj) {
        if (!gj.setStyle) return;
        gj.setStyle(function (f) {
          var fill = f.properties.fill;
          return { fillColor: fill, color: far ? fill : "#222", weight: far ? 4 : 0.8, fillOpacity: 0.8 };
        });
      });
    });
  }
  map.on("zoomend", restyle);
  restyle();
  document.body.dataset.hexagons = String(document.querySelectorAll("path.leaflet-interactive").length);
})();
{% endmacro %}
""")

    def __init__(self, names: list[str], groups: list[str]):
        super().__init__()
        self._name = "HarmspotSwitcher"
        self.names, self.groups = names, groups


def _legend_html(ly: Layer) -> str:
    e = html.escape
    if not len(ly.cells):
        return f"<div class='legend' id='legend-{ly.name}'><b>{e(ly.title)}</b><div class='none'>{e(ly.note)}</div></div>"
    rows = []
    b = ly.breaks
    k = len(ly.palette) if len(ly.palette) == len(b) + 1 else len(b) + 1
    for i in range(k):
        lo, hi = (b[i - 1] if i > 0 else None), (b[i] if i < len(b) else None)
        text = f"under {hi:,.2f}" if lo is None else (f"{lo:,.2f} and over" if hi is None else f"{lo:,.2f} – {hi:,.2f}")
        if ly.name == "change":
            text = ("less: " if i < 3 else "more: ") + text
        colour = _colour((lo if lo is not None else (hi or 0) - 1), b, ly.palette)
        rows.append(f"<div class='row'><span class='sw' style='background:{colour}'></span>{e(text)}</div>")
    return (f"<div class='legend' id='legend-{ly.name}'><b>{e(ly.title)}</b>{''.join(rows)}"
            f"<div class='note'>{e(ly.note)}</div></div>")


def _panel_html(pack: Pack, marking: str) -> str:
    e = html.escape
    facts = "".join(f"<tr><th>{e(k.replace('_', ' '))}</th><td>{e(str(v))}</td></tr>" for k, v in pack.meta.items()
                    if v not in (None, ""))
    caveats = "".join(f"<li>{e(c)}</li>" for c in pack.caveats)
    legends = "".join(_legend_html(ly) for ly in pack.layers)
    made = datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""
<div class="hs-marking top">{e(marking)}</div><div class="hs-marking bottom">{e(marking)}</div>
<div class="hs-panel"><h1>{e(pack.title)}</h1><div class="sub">{e(pack.subtitle)}</div>
{legends}
<details><summary>Period, weights, caveats</summary><table class="facts">{facts}
<tr><th>made</th><td>{e(made)} by harmspot (offline map pack: no server, no internet)</td></tr></table>
<ul>{caveats}</ul>
<p class="attr">Contains public sector information licensed under the Open Government Licence v3.0 (data.police.uk;
ONS/OS boundaries). Map: Leaflet (BSD-2-Clause), folium (MIT).</p></details></div>"""


_PACK_CSS = """
html, body { font-family: system-ui, 'Segoe UI', Arial, sans-serif; }
.hs-marking { position: fixed; left: 50%; transform: translateX(-50%); z-index: 1100; background: #fff;
  color: #b00; font-weight: 700; letter-spacing: 0.08em; padding: 1px 10px; border: 1px solid #b00; font-size: 13px; }
.hs-marking.top { top: 4px; } .hs-marking.bottom { bottom: 4px; }
.hs-panel { position: fixed; left: 10px; bottom: 56px; z-index: 1000; background: rgba(255,255,255,0.95);
  border: 1px solid #1d2a3a; padding: 6px 9px; max-width: 330px; max-height: 70vh; overflow-y: auto; font-size: 13px; }
.hs-panel h1 { font-size: 15px; margin: 0; } .hs-panel .sub { color: #333; margin-bottom: 4px; }
.hs-panel .legend .row { display: flex; align-items: center; gap: 6px; margin: 1px 0; }
.hs-panel .sw { width: 22px; height: 12px; border: 1px solid #333; flex: none; }
.hs-panel .note, .hs-panel .none { color: #555; font-size: 12px; } .hs-panel .none { color: #6a4a00; }
.hs-panel table.facts th { text-align: left; padding-right: 6px; vertical-align: top; }
.hs-panel ul { padding-left: 16px; margin: 4px 0; font-size: 12px; color: #6a4a00; }
.hs-panel .attr { font-size: 11px; color: #444; }
table.hs th { text-align: left; padding-right: 6px; vertical-align: top; } table.hs td { max-width: 220px; }
.hs-district { font-weight: 700; font-size: 12px; color: #333; text-align: center; text-shadow: 0 0 3px #fff, 0 0 3px #fff; }
@media print { .leaflet-control-layers { display: none; } }
"""


# ------------------------------------------------------------------------------------------ a set of key dates
def keydate_zip(store: Store, q: HotspotQuery, weights: WeightsTable, kset: kd.KeyDateSet, districts, marking: str,
                top: int = 200) -> bytes:
    """One map per key date of the set and an index page, zipped (relative links work from a folder)."""
    cov = kd.coverage(store, q.dataset, kset)
    buf = io.BytesIO()
    items = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k in kset.dates:
            name = f"{kset.name}-{k.date.isoformat()}.html"
            try:
                page = render(keydate_pack(store, q, weights, kset, k.date, top), districts, marking)
            except (kd.KeyDateError, ExportError) as exc:  # e.g. windows that month-only data cannot cut
                items.append((None, k, f"no map: {exc}"))
                continue
            z.writestr(name, page)
            items.append((name, k, cov[k.date]["status"]))
        e = html.escape
        rows = "".join(f"<tr><td>{f'<a href={chr(39)}{e(n)}{chr(39)}>' if n else ''}{e(k.date.isoformat())}"
                       f"{'</a>' if n else ''}</td><td>{e(k.label)}</td><td>{e(s)}</td></tr>" for n, k, s in items)
        z.writestr("index.html", f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{e(kset.name)} · {e(q.dataset)}</title><style>body {{ font-family: system-ui, Arial, sans-serif; margin: 16px; }}
.m {{ color: #b00; font-weight: 700; }} td, th {{ padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left; }}</style>
</head><body><div class="m">{e(marking)}</div><h1>Key-date maps · {e(kset.name)} · {e(q.dataset)}</h1>
<p>{e(kset.description or '')} One offline map per key date (after / change / forecast layers); open from this
folder, no server or internet needed.</p><table><tr><th>date</th><th>label</th><th>data</th></tr>{rows}</table>
<div class="m">{e(marking)}</div></body></html>""")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ context
@dataclass
class Outlines:
    frame: pd.DataFrame  # feature_id, name, geometry_wkb
    rule: str  # which layer and why (geodata.areas.choose_layer)


def district_outlines(store: Store, q: HotspotQuery) -> Outlines | None:
    """The dataset's patrol districts, as tasking and the map choose them (geodata.areas.choose_layer): the
    loaded ``districts`` layer when it covers the dataset, else the automatic one built from the records' LSOA
    names (approximate outlines); None when the dataset has neither."""
    try:
        choice = choose_layer(store, q.dataset, DISTRICTS)
    except StoreError:
        return None
    return Outlines(store.areas(choice.stored)[["feature_id", "name", "geometry_wkb"]], choice.rule)



def parse_keydate(text: str) -> tuple[str, date | None]:
    """'SET/DATE' or 'SET' -> (set name, date or None)."""
    m = re.fullmatch(r"([A-Za-z0-9_.-]{1,60})(?:/(\d{4}-\d{2}-\d{2}))?", text.strip())
    if not m:
        raise ExportError("keydate is SET/YYYY-MM-DD (one map) or SET (a zip of one map per date)")
    try:
        return m.group(1), date.fromisoformat(m.group(2)) if m.group(2) else None
    except ValueError as exc:
        raise ExportError(f"keydate: {exc}") from exc


def make(store: Store, weights: WeightsTable, marking: str, q: HotspotQuery, keydate: str | None
         ) -> tuple[str, str, bytes]:
    """(file name, media type, bytes) of the pack GET /map/export or `harmspot map export` asks for: the key
    date's layers (``keydate`` SET/DATE), a zip of one map per date of a set (``keydate`` SET), else the harm
    spots of the query's period."""
    if q.method == "forecast":
        raise ExportError("method=forecast: a map pack draws recorded harm (or, for a key date, its analogue "
                          "forecast layer); leave method out or use method=observed")
    districts = district_outlines(store, q)
    if keydate:
        if q.date_from or q.date_to:
            raise ExportError("give keydate or from/to, not both")
        set_name, when = parse_keydate(keydate)
        try:
            kset = kd.get_set(store, set_name)
            if when is not None:
                kset.get(when)
        except kd.KeyDateError as exc:
            raise NotFound(str(exc)) from exc
        top = q.top or 50
        if when is None:
            n = len(kset.dates)
            if n > MAX_ZIP_DATES or n * top > MAX_ZIP_CELLS:
                raise ExportError(f"a zip holds at most {MAX_ZIP_DATES} dates and {MAX_ZIP_CELLS:,} cells per layer "
                                  f"in all (dates x top): set '{set_name}' has {n} dates x top {top}; lower top or "
                                  "export dates one by one (keydate=SET/DATE)")
            return (f"harmspot-{q.dataset}-{set_name}.zip", "application/zip",
                    keydate_zip(store, q, weights, kset, districts, marking, top))
        pack = keydate_pack(store, q, weights, kset, when, top)
        return f"harmspot-{q.dataset}-{when}.html", "text/html; charset=utf-8", render(pack, districts, marking).encode()
    pack = period_pack(store, q, weights)
    tag = pack.meta["period"].replace(" to ", "_")
    return f"harmspot-{q.dataset}-{tag}.html", "text/html; charset=utf-8", render(pack, districts, marking).encode()
