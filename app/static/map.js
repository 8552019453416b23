/* harmspot map: a thin client of the same API the tasking script and GIS use.
 *
 * Harm spots come from the OGC API - Features collection /collections/harm-spots/items, which runs the same
 * query as GET /hotspots (one data path); the download buttons link to /hotspots.geojson and
 * /hotspots?format=csv with exactly the parameters of the cells on the map.  Boundaries and any later
 * collection (Gi*, RTM risk, priority places, POI...) are listed from /collections and drawn when switched on.
 * Hand-built on vendored Leaflet (no CDN, no tile server needed): see docs/map.md.
 */
(function () {
  "use strict";
  // Colour-blind-safe sequential scheme: viridis, 5 classes, light = low harm, dark = high (readable on a
  // projector and in greyscale print).  Categorical layers use the Okabe-Ito palette.
  // The palest viridis yellow (#fde725) is replaced by the next stop (#c2df23) so low classes stay visible on
  // the light background and on a washed-out projector.
  var COLOURS = ["#c2df23", "#5ec962", "#21918c", "#3b528b", "#440154"];
  var CATEGORICAL = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"];
  var PARAMS = ["dataset", "from", "to", "preset", "method", "resolution", "top", "area"];
  var HOTSPOTS = "harm-spots";

  var el = function (id) { return document.getElementById(id); };
  var renderer = L.canvas({ padding: 0.3 });
  var map = L.map("map", { preferCanvas: true, renderer: renderer, zoomSnap: 0.25 }).setView([51.75, 0.6], 9);
  var hexes = L.geoJSON(null, { renderer: renderer, style: styleCell, onEachFeature: bindPopup }).addTo(map);
  // expanded, the layer list covers a third of a laptop's map: under 1500 px it is the layers button (hover or tap
  // opens it); on a wide screen it stays open.  Decided at load.
  var layerControl = L.control.layers(null, null, { collapsed: window.innerWidth < 1500, position: "topright" }).addTo(map);
  layerControl.addOverlay(hexes, "Harm spots");
  L.control.scale({ imperial: false }).addTo(map);
  var North = L.Control.extend({  // the map is web-Mercator, north up: a fixed arrow is true
    options: { position: "topleft" },
    onAdd: function () {
      var d = L.DomUtil.create("div", "north-arrow leaflet-bar");
      d.title = "North";
      d.innerHTML = '<svg width="16" height="20" viewBox="0 0 16 20" aria-hidden="true"><path d="M8 0 L15 20 L8 15 L1 20 Z" ' +
        'fill="#1b1b1b"/></svg>N';
      return d;
    }
  });
  new North().addTo(map);

  var state = {
    config: { max_limit: 10000 }, breaks: [], shown: null, meta: null, token: 0, presets: {},
    overlays: {}, extraLegends: {}, districts: null
  };
  map.createPane("roads").style.zIndex = 350;  // road layers under the hexagons (overlayPane is 400)
  var roadRenderer = L.canvas({ padding: 0.3, pane: "roads" });
  var districtGroup = L.layerGroup().addTo(map);  // the dataset's district layer (loaded, else automatic)
  var labels = L.layerGroup();  // street names of the top spots, shown at street zoom (LABEL_ZOOM and closer)
  var LABEL_ZOOM = 15, LABEL_TOP = 25;

  // ------------------------------------------------------------------ helpers
  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(x, d) {
    return x == null ? "–" : Number(x).toLocaleString("en-GB", { maximumFractionDigits: d == null ? 1 : d });
  }
  // When the service runs with API keys (docs/security.md) the page sends X-API-Key, asked once per browser
  // session and kept in sessionStorage (never in a URL).  In the local demo mode no key is needed.
  function apiKey() { try { return sessionStorage.getItem("harmspotKey"); } catch (e) { return null; } }
  function headers() {
    var h = { Accept: "application/json" }, k = apiKey();
    if (k) h["X-API-Key"] = k;
    return h;
  }
  var keyAsked = null;  // one prompt however many requests were refused at once
  function askKey() {
    if (!keyAsked) {
      keyAsked = Promise.resolve(window.prompt("This harmspot service needs an API key (X-API-Key):")).then(function (k) {
        if (k) { try { sessionStorage.setItem("harmspotKey", k.trim()); } catch (e) { /* private mode */ } }
        return k;
      });
    }
    return keyAsked;
  }
  function getJSON(url, retried) {
    return fetch(url, { headers: headers() }).then(function (r) {
      if (r.status === 401 && !retried) {
        return askKey().then(function (k) {
          if (k) return getJSON(url, true);
          throw new Error("an API key is needed");
        });
      }
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) { throw new Error(body && body.error ? body.error.message : ("HTTP " + r.status)); }
        return body;
      });
    });
  }
  /** Downloads are plain links; with a key they go through fetch so the header is sent. */
  function keyedDownload(ev) {
    var a = ev.currentTarget, k = apiKey();
    if (!k) return;
    ev.preventDefault();
    fetch(a.href, { headers: headers() }).then(function (r) { return r.blob(); }).then(function (b) {
      var u = URL.createObjectURL(b), tmp = document.createElement("a");
      tmp.href = u; tmp.download = a.getAttribute("download"); document.body.appendChild(tmp); tmp.click();
      setTimeout(function () { URL.revokeObjectURL(u); tmp.remove(); }, 1000);
    });
  }
  /** Fetch an OGC items URL and follow its rel=next links; resolves to {doc: first page, features}. */
  function fetchAllItems(url, cap) {
    var features = [], first = null;
    function page(u) {
      return getJSON(u).then(function (doc) {
        if (!first) first = doc;
        Array.prototype.push.apply(features, doc.features || []);
        var next = (doc.links || []).filter(function (l) { return l.rel === "next"; })[0];
        if (next && features.length < cap) return page(next.href);
        return { doc: first, features: features };
      });
    }
    return page(url);
  }

  // ------------------------------------------------------------------ classification and styles
  /** Quantile breaks (5 classes) over the cells shown; duplicate breaks collapse (ties at low harm). */
  function quantileBreaks(values, k) {
    var v = values.filter(function (x) { return x != null; }).sort(function (a, b) { return a - b; });
    if (!v.length) return [];
    var out = [];
    for (var i = 1; i < k; i++) {
      var b = v[Math.min(v.length - 1, Math.floor(i * v.length / k))];
      if (!out.length || b > out[out.length - 1]) out.push(b);
    }
    return out;
  }
  function classOf(value, breaks) {
    for (var i = 0; i < breaks.length; i++) { if (value < breaks[i]) return i; }
    return breaks.length;
  }
  /** Colour of class i of n: fewer classes (ties) still spread over the ramp, top class always darkest. */
  function classColour(i, n) {
    return COLOURS[n <= 1 ? COLOURS.length - 1 : Math.round(i * (COLOURS.length - 1) / (n - 1))];
  }
  function colourOf(value, breaks) { return classColour(classOf(value, breaks), breaks.length + 1); }
  /** The mapped value: expected harm next period on the forecast map, else the period's harm. */
  function cellValue(p) { return p.forecast_harm != null ? p.forecast_harm : p.harm; }
  /** Zoomed out, a 15,000 m² hexagon is under a pixel: draw it with a thick stroke of its own colour so every
   *  spot stays visible; zoomed in, a thin dark outline. */
  function styleCell(f) {
    var z = map.getZoom(), colour = colourOf(cellValue(f.properties), state.breaks);
    var far = z < 13;
    return { color: far ? colour : "#1b1b1b", weight: far ? (z < 11 ? 5 : 3) : 0.6, opacity: far ? 1 : 0.8,
             fillColor: colour, fillOpacity: 0.85 };
  }
  var lastFar = null;
  map.on("zoomend", function () {
    var z = map.getZoom(), far = z < 11 ? 2 : (z < 13 ? 1 : 0);
    if (far !== lastFar) { lastFar = far; hexes.setStyle(styleCell); }
  });

  // ------------------------------------------------------------------ popups
  function popupHtml(p) {
    var top = p.top_offences || [];
    var offences = (typeof top === "string"  // the OGC door sends "Offence (count); ..." as plain text (QGIS)
      ? top.split("; ").filter(Boolean).map(function (t) { return "<li>" + esc(t) + "</li>"; })
      : top.map(function (o) {
        return "<li>" + esc(o.offence) + ": " + esc(o.count) + " (" + fmt(o.harm) + " days)</li>";
      })).join("");
    var narrative = p.risk_narrative || p.narrative;
    var places = locations(p);
    return '<div class="hs-popup" data-h3="' + esc(p.h3) + '">' +
      "<strong>Rank <span class=\"rank\">" + esc(p.rank) + "</span></strong> <small>" + esc(p.h3) + "</small>" +
      (places.length ? '<div class="locations">On or near <b>' + places.map(esc).join("</b>, <b>") + "</b></div>" : "") +
      "<table>" +
      (p.forecast_harm != null ? '<tr><td>Expected harm next period</td><td class="forecast">' +
        fmt(p.forecast_harm) + " days</td></tr>" : "") +
      '<tr><td>Harm</td><td class="harm">' + fmt(p.harm) + " days</td></tr>" +
      '<tr><td>Offences</td><td class="count">' + esc(p.count) + "</td></tr>" +
      "<tr><td>Share of harm</td><td>" + fmt(100 * (p.harm_share || 0), 2) + "%</td></tr>" +
      "<tr><td>Harm per km²</td><td>" + fmt(p.harm_per_km2, 0) + "</td></tr>" +
      (p.gi_class ? '<tr><td>Gi* class</td><td class="gi">' + esc(p.gi_class) + "</td></tr>" : "") +
      (p.emerging_class ? "<tr><td>Trend</td><td>" + esc(p.emerging_class) + "</td></tr>" : "") +
      (p.police_station_share ? '<tr><td>At a police station point</td><td class="station">' +
        fmt(100 * p.police_station_share, 0) + "% of offences</td></tr>" : "") +
      (p.generic_point_share ? '<tr><td>At generic points</td><td>' + fmt(100 * p.generic_point_share, 0) +
        "% (car park, supermarket…)</td></tr>" : "") +
      "</table>" +
      (offences ? '<div>Top offences:</div><ul class="offences">' + offences + "</ul>" : "") +
      (narrative ? '<p class="narrative">' + esc(narrative) + "</p>" : "") +
      "</div>";
  }
  /** The cell's location texts: a list from JSON, "a; b; c" text from the OGC door (flattened for QGIS). */
  function locations(p) {
    var v = p.top_locations;
    if (typeof v === "string") return v.split("; ").filter(Boolean);
    return Array.isArray(v) ? v.filter(Boolean) : [];
  }
  function bindPopup(f, layer) {
    layer.bindPopup(function () { return popupHtml(f.properties); }, { maxWidth: 340 });
  }

  // ------------------------------------------------------------------ query parameters
  function formParams() {
    var q = new URLSearchParams();
    PARAMS.forEach(function (k) {
      var v = el(k).value.trim();
      if (v) q.set(k, v);
    });
    return q;
  }
  function withParams(path, q, extra) {
    var out = new URLSearchParams(q.toString());
    Object.keys(extra || {}).forEach(function (k) { out.set(k, extra[k]); });
    return path + "?" + out.toString();
  }

  // ------------------------------------------------------------------ legend and summary
  function legend(meta, n) {
    var table = meta && meta.weights_table ? " · " + esc(meta.weights_table) : "";
    var what = meta && meta.method === "forecast" ? "Expected harm next period" : "Harm";
    var html = "<strong>" + what + " per hexagon (days" + table + ")</strong>" +
      "<div><small>" + (state.breaks.length + 1) + " quantile classes of the " + fmt(n, 0) +
      " cells shown</small></div>";
    var lo = null;
    for (var i = 0; i <= state.breaks.length; i++) {
      var hi = i < state.breaks.length ? state.breaks[i] : null;
      var colour = classColour(i, state.breaks.length + 1);
      html += '<div class="row"><span class="swatch" style="background:' + colour + '"></span>' +
        (lo == null ? "under " + fmt(hi) : (hi == null ? fmt(lo) + " and over" : fmt(lo) + " – " + fmt(hi))) + "</div>";
      lo = hi;
    }
    if (!n) html = "<strong>No harm spots for this selection</strong>";
    if (!map.hasLayer(hexes)) html = "<div><small>Harm spots hidden (layer control)</small></div>";
    Object.keys(state.extraLegends).forEach(function (k) { html += state.extraLegends[k]; });
    el("legend").innerHTML = html;
  }
  function summary(meta, n, expected) {
    var c = meta.concentration || {};
    var fc = !!meta.forecast;  // forecast map: the response's totals are the look-back's OBSERVED harm and count
    var top = c.of_cells_with_harm || {};
    var preset = state.presets[meta.preset] || meta.preset || (meta.offences || []).join(", ");
    el("summary").innerHTML = "<table>" +
      "<tr><td>" + (meta.forecast ? "Look-back" : "Period") + "</td><td id=\"period\">" + esc(meta.from) + " to " +
        esc(meta.to) + "</td></tr>" +
      (meta.forecast ? "<tr><td>Forecast for</td><td id=\"forecast-period\">" + esc(meta.forecast.forecast_period.from) +
        " to " + esc(meta.forecast.forecast_period.to) + "</td></tr>" : "") +
      "<tr><td>Offences</td><td>" + esc(preset) + "</td></tr>" +
      "<tr><td>Cells shown</td><td>" + fmt(n, 0) + " of " + fmt(meta.cells_with_offences, 0) + "</td></tr>" +
      (fc && expected != null ? "<tr><td>Expected harm next period (cells shown)</td><td id=\"expected-harm\">" +
        fmt(expected) + " days</td></tr>" : "") +
      "<tr><td>" + (fc ? "Observed harm in look-back" : "Total harm") + "</td><td id=\"total-harm\">" +
        fmt(meta.total_harm) + " days</td></tr>" +
      "<tr><td>" + (fc ? "Offences in look-back" : "Offence count") + "</td><td>" + fmt(meta.total_count, 0) +
        "</td></tr>" +
      "<tr><td>Top 5% of cells" + (fc ? " (look-back)" : "") + "</td><td>" + fmt(100 * (top.top_5pct || 0), 1) + "% of harm</td></tr>" +
      "<tr><td>Weights</td><td>" + esc(meta.weights_table) + " (" + esc(meta.weights_exact) + ")</td></tr>" +
      "<tr><td>Time precision</td><td>" + esc((meta.time_precision || []).join(", ")) + "</td></tr></table>";
    el("weights-name").textContent = meta.weights_table || "";
    el("caveat-list").innerHTML = (meta.not_applied || []).concat(meta.caveats || []).map(function (t) {
      return "<li>" + esc(t) + "</li>";
    }).join("");
  }

  // ------------------------------------------------------------------ harm spots
  function load(fit) {
    var token = ++state.token;
    var q = formParams();
    var max = state.config.max_limit || 10000;
    var top = parseInt(q.get("top") || "50", 10);
    el("status").textContent = "Loading…";
    document.body.dataset.loading = "1";
    var t0 = performance.now();
    var url = withParams("/collections/" + HOTSPOTS + "/items", q, { f: "json", limit: String(Math.min(top, max)) });
    return fetchAllItems(url, top).then(function (res) {
      if (token !== state.token) return;  // a newer request superseded this one
      var fc = { type: "FeatureCollection", features: res.features };
      var meta = res.doc.metadata || {};
      state.breaks = quantileBreaks(res.features.map(function (f) { return cellValue(f.properties); }), COLOURS.length);
      hexes.clearLayers();
      hexes.addData(fc);
      state.meta = meta;
      streetLabels(res.features);
      emptyNote(res.features.length ? null : (meta.no_records || meta.period_note || null));
      state.shown = q;
      legend(meta, res.features.length);
      summary(meta, res.features.length, meta.forecast ? res.features.reduce(function (t, f) {
        return t + (f.properties.forecast_harm || 0); }, 0) : null);
      el("dl-geojson").href = withParams("/hotspots.geojson", q);
      el("dl-csv").href = withParams("/hotspots", q, { format: "csv" });
      el("status").textContent = res.features.length ? fmt(res.features.length, 0) + " harm spots" :
        (meta.no_records ? "No records for this selection" : "No harm spots for this selection");
      history.replaceState(null, "", "?" + q.toString());
      if (fit && res.features.length) { map.fitBounds(hexes.getBounds(), { padding: [20, 20] }); }
      else if (fit) fitDataset();  // nothing to show: the dataset's districts, not an empty view elsewhere
      requestAnimationFrame(function () {
        document.body.dataset.cells = String(res.features.length);
        document.body.dataset.query = q.toString();
        document.body.dataset.renderMs = String(Math.round(performance.now() - t0));
        delete document.body.dataset.loading;
        if (performance.mark) performance.mark("harmspot-rendered");
      });
    }).catch(function (e) {
      if (token !== state.token) return;
      el("status").textContent = "Error: " + e.message;
      document.body.dataset.error = e.message;
      delete document.body.dataset.loading;
    });
  }

  // ------------------------------------------------------------------ street labels, empty result
  /** The LABEL_TOP highest-ranked spots labelled with their main location text, drawn at street zoom only. */
  function streetLabels(features) {
    labels.clearLayers();
    features.filter(function (f) { return f.properties.rank <= LABEL_TOP && locations(f.properties).length; })
      .forEach(function (f) {
        var centre = L.latLng(f.properties.lat, f.properties.lon);
        labels.addLayer(L.tooltip({ permanent: true, direction: "right", offset: [8, 0], className: "street-label" })
          .setLatLng(centre).setContent(esc(f.properties.rank) + " " + esc(locations(f.properties)[0])));
      });
    showLabels();
  }
  function showLabels() {
    var want = map.getZoom() >= LABEL_ZOOM && map.hasLayer(hexes);
    if (want && !map.hasLayer(labels)) map.addLayer(labels);
    if (!want && map.hasLayer(labels)) map.removeLayer(labels);
  }
  map.on("zoomend overlayadd overlayremove", showLabels);
  /** A period with no records says so on the map itself, not as an empty map. */
  function emptyNote(text) {
    var box = el("empty-note");
    box.hidden = !text;
    box.textContent = text || "";
  }

  // ------------------------------------------------------------------ districts (selector and outlines)
  /** The dataset's district layer (GET /areas/districts.geojson: the loaded 'districts' layer when it covers
   *  the dataset, else its automatic districts named from the records), fetched directly rather than through
   *  the layer control's overlayadd event, so the District selector always fills. Keeps a bookmarked area. */
  function loadDistricts(wanted, keepUnknown) {
    var ds = el("dataset").value;
    var sel = el("area");
    while (sel.options.length > 1) sel.remove(1);
    districtGroup.clearLayers();
    state.districts = null;
    return getJSON("/areas/districts.geojson?" + new URLSearchParams(ds ? { dataset: ds } : {}).toString())
      .then(function (fc) {
        state.districts = fc;
        var feats = (fc.features || []).slice().sort(function (a, b) {
          return String(a.properties.name).localeCompare(String(b.properties.name));
        });
        feats.forEach(function (f) { option(sel, "districts:" + f.properties.id, f.properties.name); });
        var approx = fc.metadata && fc.metadata.layer && fc.metadata.layer.approximate;
        el("area-label").textContent = approx ? "District (approx.)" : "District";
        sel.title = (fc.metadata && fc.metadata.layer && fc.metadata.layer.rule) || "";
        var outline = L.geoJSON(fc, {
          renderer: renderer, interactive: false,
          style: { color: "#4d4d4d", weight: 1.6, dashArray: approx ? "6 4" : null, fill: true, fillColor: "#ffffff",
                   fillOpacity: 0.55 }
        });
        districtGroup.addLayer(outline);
        feats.forEach(function (f) {
          var centre = L.geoJSON(f).getBounds().getCenter();
          districtGroup.addLayer(L.tooltip({ permanent: true, direction: "center", className: "district-label" })
            .setLatLng(centre).setContent(esc(f.properties.name)));
        });
        if (wanted) {  // a bookmarked ?area= (or the area chosen before a dataset change)
          var found = Array.prototype.some.call(sel.options, function (o) { return o.value === wanted; });
          if (!found && keepUnknown) option(sel, wanted, wanted);  // a bookmarked ward or other layer: as given
          if (found || keepUnknown) sel.value = wanted;
        }
        document.body.dataset.districts = String(feats.length);
      }).catch(function () {  // no district layer for this dataset: the selector offers 'All' (and a bookmark)
        if (wanted && keepUnknown) { option(sel, wanted, wanted); sel.value = wanted; }
        document.body.dataset.districts = "0";
      });
  }
  /** The layer control's name of the district outlines: whose, and approximate when automatic. */
  function districtTitle() {
    var m = (state.districts && state.districts.metadata) || {}, layer = m.layer || {};
    return "Districts of " + esc(m.dataset || el("dataset").value) + (layer.approximate ? " (automatic, approximate)" : "");
  }
  /** Fit the map to the dataset's districts; false when there are none to fit. */
  function fitDataset() {
    var b = null;
    districtGroup.eachLayer(function (l) { if (l.getBounds) b = b ? b.extend(l.getBounds()) : l.getBounds(); });
    if (!b || !b.isValid()) return false;
    map.fitBounds(b, { padding: [10, 10] });
    return true;
  }

  // ------------------------------------------------------------------ other collections
  /** A layer's readable class names, when its response carries them (metadata.class_labels or one level down,
   *  e.g. the Gi* collection's metadata.gistar.class_labels): {class id: label}; {} when none. */
  function classLabels(doc) {
    var m = (doc && doc.metadata) || {};
    if (m.class_labels && typeof m.class_labels === "object") return m.class_labels;
    for (var k in m) {
      if (Object.prototype.hasOwnProperty.call(m, k) && m[k] && typeof m[k] === "object" && m[k].class_labels &&
          typeof m[k].class_labels === "object") return m[k].class_labels;
    }
    return {};
  }
  function classText(names, v) { return Object.prototype.hasOwnProperty.call(names, v) ? names[v] : v; }
  function addCollectionLayer(c) {
    var kind = c["harmspot:kind"], style = c["harmspot:style"] || {};
    var group = L.layerGroup();
    var entry = { collection: c, group: group, loaded: null };
    state.overlays[c.id] = entry;
    layerControl.addOverlay(group, esc(c.title));
    if (kind === "lines") map.addLayer(group);  // road layers: on by default, drawn under the hexagons
    return entry;
  }
  function loadOverlay(entry) {
    var c = entry.collection, style = c["harmspot:style"] || {};
    var kind = c["harmspot:kind"];
    var q = kind === "areas" || kind === "lines" ? new URLSearchParams() :
      new URLSearchParams((state.shown || formParams()).toString());
    var key = q.toString();
    if (entry.loaded === key) return Promise.resolve();
    entry.loaded = key;
    var url = withParams("/collections/" + encodeURIComponent(c.id) + "/items", q,
                         { f: "json", limit: String(state.config.max_limit || 10000) });
    return fetchAllItems(url, 100000).then(function (res) {
      entry.group.clearLayers();
      var layer;
      if (kind === "lines") {  // streets: thin grey lines in their own pane under the hexagons, names on hover
        layer = L.geoJSON({ type: "FeatureCollection", features: res.features }, {
          renderer: roadRenderer, pane: "roads",
          style: { color: "#8a8a8a", weight: 1.6, opacity: 0.9 },
          onEachFeature: function (f, l) { if (f.properties.name) l.bindTooltip(esc(f.properties.name), { sticky: true }); }
        });
        entry.group.addLayer(layer);
      } else if (style.type === "outline" || kind === "areas") {
        var district = c.id === "districts";
        layer = L.geoJSON({ type: "FeatureCollection", features: res.features }, {
          renderer: renderer, interactive: false,
          style: { color: district ? "#4d4d4d" : "#8c8c8c", weight: district ? 1.6 : 0.8, dashArray: district ? null : "3 3",
                   fill: district, fillColor: "#ffffff", fillOpacity: district ? 0.55 : 0 }
        });
        entry.group.addLayer(layer);
        if (district) {
          layer.bringToBack();
          res.features.forEach(function (f) {
            var centre = L.geoJSON(f).getBounds().getCenter();
            entry.group.addLayer(L.tooltip({ permanent: true, direction: "center", className: "district-label" })
              .setLatLng(centre).setContent(esc(f.properties.name)));
          });
        }
      } else {
        var prop = style.property, values = res.features.map(function (f) { return f.properties[prop]; });
        var cats = [], breaks = [], distinct = [], discrete = false, names = classLabels(res.doc);
        if (style.type === "categorical") {
          values.forEach(function (v) { if (v != null && cats.indexOf(v) < 0) cats.push(v); });
          var order = Object.keys(names);  // the response's class order (hot_99 before hot_95...) when it has one
          if (order.length) {
            cats.sort(function (a, b) {
              var i = order.indexOf(String(a)), j = order.indexOf(String(b));
              return (i < 0 ? order.length : i) - (j < 0 ? order.length : j);
            });
          }
        } else {
          distinct = values.filter(function (v) { return v != null; })
            .filter(function (v, i, a) { return a.indexOf(v) === i; }).sort(function (a, b) { return a - b; });
          // a few whole-number values (e.g. RTM risk classes 1-3): one class per value; else quantile classes
          discrete = distinct.length <= COLOURS.length && distinct.every(function (v) { return v === Math.round(v); });
          breaks = discrete ? distinct.slice(1) : quantileBreaks(values, COLOURS.length);
        }
        var colour = function (v) {
          return style.type === "categorical" ? CATEGORICAL[cats.indexOf(v) % CATEGORICAL.length] : colourOf(v, breaks);
        };
        layer = L.geoJSON({ type: "FeatureCollection", features: res.features }, {
          renderer: renderer, attribution: style.attribution ? esc(style.attribution) : null,
          style: function (f) { return { color: "#000", weight: 1.2, fillColor: colour(f.properties[prop]), fillOpacity: 0.6 }; },
          pointToLayer: function (f, ll) {
            return L.circleMarker(ll, { renderer: renderer, radius: 5, color: "#000", weight: 1,
                                        fillColor: colour(f.properties[prop]), fillOpacity: 0.9 });
          },
          onEachFeature: function (f, l) {
            l.bindPopup(function () {  // a risk narrative (RTM) leads the popup; other properties as a table
              var p = f.properties, narrative = p.narrative || p.risk_narrative;
              return "<strong>" + esc(c.title) + "</strong>" +
                (narrative ? '<p class="narrative">' + esc(narrative) + "</p>" : "") +
                "<table>" + Object.keys(p).filter(function (k) { return k !== "narrative" && k !== "risk_narrative" && p[k] !== null && p[k] !== undefined; }).map(function (k) {
                var v = p[k], text = typeof v === "object" ? JSON.stringify(v) : v;
                if (k === prop && classText(names, v) !== v) text = classText(names, v) + " (" + v + ")";
                return "<tr><td>" + esc(k) + "</td><td>" + esc(text) + "</td></tr>";
              }).join("") + "</table>";
            }, { maxWidth: 340 });
          }
        });
        entry.group.addLayer(layer);
        if (style.type === "categorical" && cats.length) {
          state.extraLegends[c.id] = "<div class=\"extra-legend\"><strong>" + esc(c.title) + "</strong>" +
            cats.map(function (v) {
              return '<div class="row" title="' + esc(v) + '"><span class="swatch" style="background:' + colour(v) +
                '"></span>' + esc(classText(names, v)) + "</div>";
            }).join("") + "</div>";
          legend(state.meta, hexes.getLayers().length);
        } else if (style.type !== "categorical" && values.length) {
          // sequential overlays (RTM risk class, priority places' recent harm): the classes as drawn
          var rows = [], lo = null;
          for (var i = 0; i <= breaks.length; i++) {
            var hi = i < breaks.length ? breaks[i] : null;
            var text = discrete ? fmt(distinct[i]) : breaks.length === 0 ? "all" : lo == null ? "under " + fmt(hi) :
              (hi == null ? fmt(lo) + " and over" : fmt(lo) + " – " + fmt(hi));
            rows.push('<div class="row"><span class="swatch" style="background:' + classColour(i, breaks.length + 1) +
              '"></span>' + text + "</div>");
            lo = hi;
          }
          state.extraLegends[c.id] = "<div class=\"extra-legend\"><strong>" + esc(c.title) + "</strong> <small>(" +
            esc(prop.replace(/_/g, " ")) + (style.labels ? ": " + esc(style.labels) : "") + ")</small>" +
            rows.join("") + "</div>";
          legend(state.meta, hexes.getLayers().length);
        }
      }
      return res;
    }).catch(function (e) {
      entry.loaded = null;
      el("status").textContent = c.title + ": " + e.message;
    });
  }
  map.on("overlayadd", function (ev) {
    Object.keys(state.overlays).forEach(function (id) {
      if (state.overlays[id].group === ev.layer) loadOverlay(state.overlays[id]);
    });
  });
  map.on("overlayadd overlayremove", function (ev) {
    if (ev.layer === hexes) legend(state.meta, hexes.getLayers().length);
  });
  map.on("overlayremove", function (ev) {
    Object.keys(state.overlays).forEach(function (id) {
      if (state.overlays[id].group === ev.layer && state.extraLegends[id]) {
        delete state.extraLegends[id];
        legend(state.meta, hexes.getLayers().length);
      }
    });
  });
  function refreshActiveOverlays() {
    Object.keys(state.overlays).forEach(function (id) {
      var e = state.overlays[id];
      if (map.hasLayer(e.group) && e.collection["harmspot:kind"] !== "areas") loadOverlay(e);
    });
  }

  // ------------------------------------------------------------------ key dates (only when /keydates responds)
  function keyDateSets(body) {
    var sets = Array.isArray(body) ? body : (body.sets || body.keydates || body.key_date_sets || []);
    return sets.filter(function (s) { return s && Array.isArray(s.dates) && s.dates.length; });
  }
  /** Fill the header's key-date select (#keydate) from GET /keydates sets: one optgroup a set, one option a date,
   *  shown as the date alone (marked when its windows are outside the data: "· forecast only" / "· no change"),
   *  its label in the tooltip; the select takes the subtitle's place when there are dates. The one builder of the
   *  select: initKeyDates here and keydates.js's fill use it. Returns {"set|date": {set, date, label, status}}. */
  function fillKeyDates(sets) {
    var sel = el("keydate"), entries = {};
    while (sel.options.length > 1) sel.remove(1);
    Array.prototype.slice.call(sel.querySelectorAll("optgroup")).forEach(function (g) { g.remove(); });
    sets.forEach(function (s) {
      var g = document.createElement("optgroup");
      g.label = s.name;
      s.dates.forEach(function (d) {
        var o = document.createElement("option");
        o.value = s.name + "|" + d.date;
        var mark = d.status == null || d.in_data ? "" : (d.after_in_data === false ? " · forecast only" : " · no change");
        o.textContent = d.date + mark;
        o.title = d.date + " " + (d.label || "") + (d.status ? " (" + d.status + ")" : "");
        if (mark) o.className = "kd-outside-data";
        entries[o.value] = { set: s.name, date: d.date, label: d.label, status: d.status };
        g.appendChild(o);
      });
      sel.appendChild(g);
    });
    el("keydate-wrap").hidden = !sets.length;
    if (el("subtitle")) el("subtitle").hidden = !!sets.length;
    return entries;
  }
  function initKeyDates() {
    return getJSON("/keydates").then(function (body) {
      fillKeyDates(keyDateSets(body));
    }).catch(function () { /* no key dates engine: the selector stays hidden */ });
  }
  function findWindow(obj) {
    if (!obj || typeof obj !== "object") return null;
    if (obj.after && obj.after.from && obj.after.to) return obj.after;
    for (var k in obj) {
      if (Object.prototype.hasOwnProperty.call(obj, k) && typeof obj[k] === "object") {
        var w = findWindow(obj[k]);
        if (w) return w;
      }
    }
    return null;
  }
  function onKeyDate() {
    var v = el("keydate").value;
    if (!v) return;
    var parts = v.split("|"), set = parts[0], day = parts[1];
    var q = new URLSearchParams({ top: "1" });
    if (el("dataset").value) q.set("dataset", el("dataset").value);
    getJSON("/keydates/" + encodeURIComponent(set) + "/" + day + "/hotspots?" + q.toString()).then(function (body) {
      return findWindow(body);
    }).catch(function () { return null; }).then(function (w) {
      if (!w) {  // fallback: the 14 days from the key date
        var end = new Date(day + "T00:00:00Z");
        end.setUTCDate(end.getUTCDate() + 13);
        w = { from: day, to: end.toISOString().slice(0, 10) };
      }
      el("from").value = w.from;
      el("to").value = w.to;
      load(false).then(refreshActiveOverlays);
    });
  }

  // ------------------------------------------------------------------ print view
  function printView(on) {
    document.body.classList.toggle("print-view", on);
    el("print").textContent = on ? "Exit print view" : "Print view";
    if (on) {
      var m = state.meta || {};
      el("print-head").innerHTML = '<div class="marking-line">' + esc(state.config.protective_marking || "OFFICIAL") +
        "</div><h2>Harm spots: " + esc(state.presets[m.preset] || m.preset || "selected offences") +
        "</h2><p>" + esc(m.from) + " to " + esc(m.to) + " · " + esc(m.dataset) + " · " +
        esc(el("area").selectedOptions[0] ? el("area").selectedOptions[0].textContent : "") + " · weights " +
        esc(m.weights_table) + " · printed " + esc(new Date().toLocaleString("en-GB")) + "</p>";
    }
    setTimeout(function () {
      map.invalidateSize();
      if (hexes.getLayers().length) map.fitBounds(hexes.getBounds(), { padding: [10, 10] });
      if (on && !navigator.webdriver) setTimeout(function () { window.print(); }, 300);
    }, 50);
  }

  // ------------------------------------------------------------------ start-up
  function tipSelected(id) {
    var o = el(id).selectedOptions[0];
    el(id).title = o ? o.textContent : "";
  }
  function option(select, value, text) {
    var o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o);
  }
  function init() {
    var initial = new URLSearchParams(location.search);
    Promise.all([
      getJSON("/map/config").catch(function () { return {}; }),
      getJSON("/datasets"),
      getJSON("/presets"),
      getJSON("/collections").catch(function () { return { collections: [] }; })
    ]).then(function (res) {
      state.config = Object.assign(state.config, res[0]);
      if (state.config.protective_marking) el("marking").textContent = state.config.protective_marking;
      if (state.config.tile_url) {
        L.tileLayer(state.config.tile_url, { maxZoom: 19, attribution: "tiles: configured by the force" }).addTo(map);
      }
      res[1].datasets.forEach(function (d) { option(el("dataset"), d.name, d.name + (d.default ? " (default)" : "")); });
      if (res[1].default) el("dataset").value = res[1].default;  // the service's stable default, not the list's first
      res[2].presets.forEach(function (p) { state.presets[p.name] = p.title; option(el("preset"), p.name, p.title); });
      el("preset").value = "op-ark";
      if (initial.get("dataset")) el("dataset").value = initial.get("dataset");
      return loadDistricts(initial.get("area"), true).then(function () {
        layerControl.addOverlay(districtGroup, districtTitle());
        var drawn = state.districts && state.districts.metadata ? state.districts.metadata.collection : null;
        (res[3].collections || []).forEach(function (c) {
          var auto = /^(lad|lsoa)-(.+)$/.exec(c.id);  // automatic layers: only the shown dataset's own
          if (c.id !== HOTSPOTS && c.id !== drawn && !(auto && auto[2] !== el("dataset").value)) addCollectionLayer(c);
        });
        PARAMS.forEach(function (k) { if (initial.get(k) && k !== "area") el(k).value = initial.get(k); });
        tipSelected("dataset"); tipSelected("preset");
        var fitted = !initial.get("area") && fitDataset();  // the dataset's whole extent first
        if (window.harmspotKeyDates) window.harmspotKeyDates.init(); else initKeyDates();  // keydates.js
        return load(!fitted);
      });
    }).catch(function (e) { el("status").textContent = "Error: " + e.message; });
    el("controls").addEventListener("submit", function (e) { e.preventDefault(); load(true).then(refreshActiveOverlays); });
    ["preset", "method", "resolution", "area"].forEach(function (k) {
      el(k).addEventListener("change", function () { load(k === "area").then(refreshActiveOverlays); });
    });
    el("dataset").addEventListener("change", function () {  // another dataset: its own districts, then its map
      var keep = el("area").value;
      loadDistricts(keep, false).then(function () {
        layerControl.removeLayer(districtGroup);
        layerControl.addOverlay(districtGroup, districtTitle());
        return load(!(!el("area").value && fitDataset()));  // the new dataset's extent (its districts)
      }).then(refreshActiveOverlays);
    });
    ["dataset", "preset"].forEach(function (k) {  // width-capped in the header: the chosen text in full on hover
      el(k).addEventListener("change", function () { tipSelected(k); });
    });
    if (!window.harmspotKeyDates) el("keydate").addEventListener("change", onKeyDate);
    el("dl-geojson").addEventListener("click", keyedDownload);
    el("dl-csv").addEventListener("click", keyedDownload);
    el("print").addEventListener("click", function () { printView(!document.body.classList.contains("print-view")); });
    window.addEventListener("afterprint", function () { if (document.body.classList.contains("print-view")) printView(false); });
  }

  /** For tests and the benchmark: the map, the hexagon layer, and the screen point of a cell's centre. */
  function cellPoint(h3, zoom) {
    var found = null;
    hexes.eachLayer(function (l) { if (l.feature.properties.h3 === h3) found = l; });
    if (!found) return null;
    var centre = found.getBounds().getCenter();
    map.setView(centre, zoom || 16, { animate: false });
    var p = map.latLngToContainerPoint(centre);
    var box = el("map").getBoundingClientRect();
    return { x: Math.round(box.left + p.x), y: Math.round(box.top + p.y) };
  }
  window.harmspot = { map: map, hexes: hexes, reload: load, layers: layerControl, state: state, cellPoint: cellPoint,
                      printView: printView, fillKeyDates: fillKeyDates };
  init();
})();
