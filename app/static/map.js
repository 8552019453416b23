/* harmspot map: a thin client of the same API the tasking script uses (GET /hotspots?format=geojson). */
(function () {
  "use strict";
  // Colour-blind-safe sequential scheme (viridis, 5 classes), light = low harm, dark = high.
  var COLOURS = ["#fde725", "#5ec962", "#21918c", "#3b528b", "#440154"];
  var map = L.map("map", { preferCanvas: true, zoomSnap: 0.25 }).setView([51.75, 0.6], 9);
  var tileUrl = document.body.dataset.tiles;
  if (tileUrl) { L.tileLayer(tileUrl, { maxZoom: 19 }).addTo(map); }
  var boundaries = L.layerGroup().addTo(map);
  var hexes = L.geoJSON(null, { style: styleCell, onEachFeature: bindPopup }).addTo(map);
  var overlays = { "Harm spots": hexes, "Districts": boundaries };
  var layerControl = L.control.layers(null, overlays, { collapsed: false }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);
  var breaks = [];
  var el = function (id) { return document.getElementById(id); };

  function fmt(x, d) { return x == null ? "–" : Number(x).toLocaleString("en-GB", { maximumFractionDigits: d == null ? 1 : d }); }

  function classify(values) {
    var v = values.slice().sort(function (a, b) { return a - b; });
    if (!v.length) return [];
    var out = [];
    for (var i = 1; i < COLOURS.length; i++) { out.push(v[Math.min(v.length - 1, Math.floor(i * v.length / COLOURS.length))]); }
    return out;
  }
  function colourFor(h) {
    for (var i = 0; i < breaks.length; i++) { if (h < breaks[i]) return COLOURS[i]; }
    return COLOURS[COLOURS.length - 1];
  }
  function styleCell(f) {
    return { color: "#222", weight: 0.6, fillColor: colourFor(f.properties.harm), fillOpacity: 0.8 };
  }
  function bindPopup(f, layer) {
    var p = f.properties;
    var offences = (p.top_offences || []).map(function (o) {
      return "<li>" + o.offence + ": " + o.count + " (" + fmt(o.harm) + " days)</li>";
    }).join("");
    layer.bindPopup(
      "<strong>Rank " + p.rank + "</strong> <small>" + p.h3 + "</small><table>" +
      "<tr><td>Harm</td><td>" + fmt(p.harm) + " CCHI days</td></tr>" +
      "<tr><td>Offences</td><td>" + p.count + "</td></tr>" +
      "<tr><td>Share of harm</td><td>" + fmt(100 * p.harm_share, 2) + "%</td></tr>" +
      (p.gi_class ? "<tr><td>Gi* class</td><td>" + p.gi_class + "</td></tr>" : "") +
      "</table><div>Top offences:</div><ul>" + offences + "</ul>"
    );
  }

  function params() {
    var q = new URLSearchParams();
    ["dataset", "from", "to", "preset", "resolution", "top", "area"].forEach(function (k) {
      var v = el(k).value.trim();
      if (v) q.set(k, v);
    });
    return q;
  }
  function url(path, extra) {
    var q = params();
    Object.keys(extra || {}).forEach(function (k) { q.set(k, extra[k]); });
    return path + "?" + q.toString();
  }

  function legend(meta) {
    var html = "<strong>Harm (CCHI days) per hexagon</strong><div><small>quintiles of the cells shown</small></div>";
    var lo = 0;
    for (var i = 0; i < COLOURS.length; i++) {
      var hi = i < breaks.length ? breaks[i] : null;
      html += '<div class="row"><span class="swatch" style="background:' + COLOURS[i] + '"></span>' +
        fmt(lo) + (hi == null ? "+" : " – " + fmt(hi)) + "</div>";
      if (hi != null) lo = hi;
    }
    el("legend").innerHTML = html;
  }
  function summary(meta, n) {
    var c = meta.concentration || {};
    var top = (c.of_cells_with_harm || {});
    el("summary").innerHTML = "<table>" +
      "<tr><td>Period</td><td>" + meta.from + " to " + meta.to + "</td></tr>" +
      "<tr><td>Cells shown</td><td>" + n + " of " + meta.cells_with_offences + "</td></tr>" +
      "<tr><td>Total harm</td><td>" + fmt(meta.total_harm) + " days</td></tr>" +
      "<tr><td>Offences</td><td>" + fmt(meta.total_count, 0) + "</td></tr>" +
      "<tr><td>Top 5% of cells</td><td>" + fmt(100 * (top.top_5pct || 0), 1) + "% of harm</td></tr>" +
      "<tr><td>Weights</td><td>" + meta.weights_table + " (" + meta.weights_exact + ")</td></tr>" +
      "<tr><td>Time precision</td><td>" + (meta.time_precision || []).join(", ") + "</td></tr></table>";
    el("weights-name").textContent = meta.weights_table;
    el("caveat-list").innerHTML = (meta.not_applied || []).concat(meta.caveats || []).map(function (t) {
      return "<li>" + t + "</li>";
    }).join("");
  }

  function load(fit) {
    el("status").textContent = "Loading…";
    el("dl-geojson").href = url("/hotspots.geojson");
    el("dl-csv").href = url("/hotspots", { format: "csv" });
    fetch(url("/hotspots.geojson")).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (res) {
      if (!res.ok) { throw new Error(res.body.error ? res.body.error.message : "request failed"); }
      var fc = res.body;
      breaks = classify(fc.features.map(function (f) { return f.properties.harm; }));
      hexes.clearLayers();
      hexes.addData(fc);
      legend(fc.metadata);
      summary(fc.metadata, fc.features.length);
      el("status").textContent = fc.features.length + " harm spots";
      document.body.dataset.cells = String(fc.features.length);
      if (fit && fc.features.length) { map.fitBounds(hexes.getBounds(), { padding: [20, 20] }); }
    }).catch(function (e) {
      el("status").textContent = "Error: " + e.message;
    });
  }

  function loadBoundaries() {
    fetch("/areas/districts.geojson").then(function (r) { return r.ok ? r.json() : null; }).then(function (fc) {
      if (!fc) return;
      var layer = L.geoJSON(fc, { style: { color: "#555", weight: 1.2, fill: true, fillColor: "#ffffff", fillOpacity: 0.6 },
        interactive: false });
      boundaries.addLayer(layer);
      layer.bringToBack();
      fc.features.forEach(function (f) {
        var b = L.geoJSON(f).getBounds().getCenter();
        boundaries.addLayer(L.tooltip({ permanent: true, direction: "center", className: "district-label" })
          .setLatLng(b).setContent(f.properties.name));
        var o = document.createElement("option");
        o.value = "districts:" + f.properties.id; o.textContent = f.properties.name;
        el("area").appendChild(o);
      });
    });
  }

  function init() {
    Promise.all([
      fetch("/datasets").then(function (r) { return r.json(); }),
      fetch("/presets").then(function (r) { return r.json(); })
    ]).then(function (res) {
      res[0].datasets.forEach(function (d) {
        var o = document.createElement("option"); o.value = d.name; o.textContent = d.name; el("dataset").appendChild(o);
      });
      res[1].presets.forEach(function (p) {
        var o = document.createElement("option"); o.value = p.name; o.textContent = p.title; el("preset").appendChild(o);
      });
      el("preset").value = "op-ark";
      loadBoundaries();
      load(true);
    });
    el("controls").addEventListener("submit", function (e) { e.preventDefault(); load(true); });
    el("preset").addEventListener("change", function () { load(false); });
    el("print").addEventListener("click", function () { window.print(); });
  }
  window.harmspot = { map: map, hexes: hexes, reload: load, layers: layerControl };
  init();
})();
