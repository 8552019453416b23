/* harmspot map: key-date layers (issue 15).
 *
 * For the key date chosen in the header: three switchable layers from GET /keydates/{set}/{date}/hotspots
 * (format=geojson, layer=all, one request) - the window AFTER the date (harm per day), the CHANGE against the
 * window before (harm per day after minus before, diverging colours: red = more harm after, blue = less), and the
 * analogue FORECAST - each with its legend and the key date's label, in the side panel. Dates whose windows are
 * not in the dataset's data are marked in the selector ("· forecast only" / "· no change"). The selector shows
 * dates only (the label is in its tooltip and in the panel) and takes the subtitle's place beside the title, so it
 * adds no width and no header row; editing From/To clears it. map.js hands the key-date control over to this file when it is loaded (window.harmspotKeyDates).
 */
(function () {
  "use strict";
  var VIRIDIS = ["#c2df23", "#5ec962", "#21918c", "#3b528b", "#440154"];
  var DIVERGING = ["#2166ac", "#67a9cf", "#d1e5f0", "#fddbc7", "#ef8a62", "#b2182b"];  // RdBu, 6: no neutral class
  var FIT_TOP = 30;  // fit the map to the strongest cells of a layer (the top 200 spread over a whole force)
  var PURPLES = ["#dadaeb", "#bcbddc", "#9e9ac8", "#756bb1", "#54278f"];
  var MODES = {
    after: { title: "After", prop: "harm_per_day_after", unit: "harm per day after the date" },
    change: { title: "Change", prop: "change_per_day", unit: "change in harm per day, after − before" },
    forecast: { title: "Forecast", prop: "forecast_harm_per_day", unit: "forecast harm per day (analogue)" }
  };
  var el = function (id) { return document.getElementById(id); };
  var kd = { sets: {}, current: null, body: null, layers: {}, mode: null, token: 0, panel: null, breaks: {} };

  function hs() { return window.harmspot; }
  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(x, d) {
    if (x == null || isNaN(x)) return "–";
    return Number(x).toLocaleString("en-GB", { maximumFractionDigits: d == null ? 1 : d, minimumFractionDigits: 0 });
  }
  function headers() {
    var h = { Accept: "application/json" };
    try { var k = sessionStorage.getItem("harmspotKey"); if (k) h["X-API-Key"] = k; } catch (e) { /* none */ }
    return h;
  }
  function getJSON(url) {
    return fetch(url, { headers: headers() }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
        return body;
      });
    });
  }

  // ------------------------------------------------------------------ classes
  function quantiles(values, k) {
    var v = values.filter(function (x) { return x != null && !isNaN(x); }).sort(function (a, b) { return a - b; });
    var out = [];
    for (var i = 1; i < k; i++) {
      var q = v[Math.min(v.length - 1, Math.floor(i * v.length / k))];
      if (q != null && (out.length === 0 || q > out[out.length - 1])) out.push(q);
    }
    return out;
  }
  function classOf(v, breaks) {
    var i = 0;
    while (i < breaks.length && v >= breaks[i]) i++;
    return i;
  }
  function divergingBreaks(values) {  // symmetric around 0: three classes of size each side (terciles of |change|)
    var mags = values.filter(function (x) { return x != null && x !== 0; }).map(Math.abs);
    var q = quantiles(mags, 3);
    if (!q.length) q = [1];
    if (q.length < 2) q.push(q[0] * 2);
    return [-q[1], -q[0], 0, q[0], q[1]];  // 6 classes
  }
  function colourFor(mode, v) {
    var b = kd.breaks[mode];
    if (mode === "change") return DIVERGING[classOf(v, b)];
    var pal = mode === "forecast" ? PURPLES : VIRIDIS;
    return pal[Math.min(pal.length - 1, Math.round(classOf(v, b) * (pal.length - 1) / Math.max(b.length, 1)))];
  }

  // ------------------------------------------------------------------ layers
  function popup(mode, p) {
    var m = kd.body.metadata || {};
    var rows = mode === "forecast" ?
      [["Forecast harm/day", fmt(p.forecast_harm_per_day, 2)], ["Analogue share", fmt(100 * p.analogue_share, 2) + " %"],
       ["Recent share", fmt(100 * p.recent_share, 2) + " %"], ["Forecast rank", p.rank]] :
      [["Harm/day after", fmt(p.harm_per_day_after, 2)], ["Harm/day before", fmt(p.harm_per_day_before, 2)],
       ["Change/day", fmt(p.change_per_day, 2)], ["Change", p.change_pct == null ? "new" : fmt(p.change_pct, 0) + " %"],
       ["Harm after", fmt(p.harm_after)], ["Offences after", fmt(p.count_after, 0)], ["Rank after", p.rank]];
    var off = (p.top_offences || []).map(function (o) { return "<li>" + esc(o.offence) + " (" + o.count + ")</li>"; });
    return "<div class='kd-popup'><strong>" + esc(m.key_date ? m.key_date.date + " " + m.key_date.label : "") +
      "</strong><br><small>" + esc(MODES[mode].title) + " · cell " + esc(p.h3) + "</small><table>" +
      rows.map(function (r) { return "<tr><td>" + esc(r[0]) + "</td><td>" + esc(r[1]) + "</td></tr>"; }).join("") +
      "</table>" + (off.length ? "<ul>" + off.join("") + "</ul>" : "") + "</div>";
  }
  function build(body) {
    var groups = { after: [], change: [], forecast: [] };
    (body.features || []).forEach(function (f) { if (groups[f.properties.layer]) groups[f.properties.layer].push(f); });
    Object.keys(kd.layers).forEach(function (m) { hs().map.removeLayer(kd.layers[m]); });
    kd.layers = {};
    Object.keys(MODES).forEach(function (mode) {
      var prop = MODES[mode].prop;
      var values = groups[mode].map(function (f) { return f.properties[prop]; });
      kd.breaks[mode] = mode === "change" ? divergingBreaks(values) : quantiles(values, 5);
      kd.layers[mode] = L.geoJSON({ type: "FeatureCollection", features: groups[mode] }, {
        style: function (f) { return styleOf(mode, f.properties[prop]); },
        onEachFeature: function (f, l) { l.bindPopup(function () { return popup(mode, f.properties); }, { maxWidth: 320 }); }
      });
      kd.layers[mode].count = groups[mode].length;
    });
  }
  function styleOf(mode, v) {
    // hexagons are ~130 m across: at force or district zoom a thick outline in the fill colour keeps them visible
    var fill = colourFor(mode, v), far = hs().map.getZoom() < 13;
    return { color: far ? fill : (mode === "forecast" ? "#3f007d" : "#222"), weight: far ? 4 : 0.8,
             fillOpacity: 0.8, fillColor: fill };
  }
  function fitTo(layer) {
    var fs = layer.getLayers();
    if (!fs.length) return;
    var group = L.featureGroup(fs.slice(0, FIT_TOP));
    hs().map.fitBounds(group.getBounds(), { padding: [30, 30], maxZoom: 14 });
  }
  function legendHtml(mode) {
    var m = kd.body.metadata || {}, b = kd.breaks[mode] || [], n = kd.layers[mode] ? kd.layers[mode].count : 0;
    var html = "<strong>" + esc(MODES[mode].unit) + "</strong>";
    if (!n) return html + "<div class='kd-none'>" + esc(emptyReason(mode, m)) + "</div>";
    var pal = mode === "change" ? DIVERGING : (mode === "forecast" ? PURPLES : VIRIDIS);
    var k = mode === "change" ? DIVERGING.length : b.length + 1;
    for (var i = 0; i < k; i++) {
      var lo = i === 0 ? null : b[i - 1], hi = i < b.length ? b[i] : null;
      var colour = mode === "change" ? pal[i] : pal[Math.min(pal.length - 1, Math.round(i * (pal.length - 1) / Math.max(b.length, 1)))];
      var text = lo == null ? "under " + fmt(hi, 2) : (hi == null ? fmt(lo, 2) + " and over" : fmt(lo, 2) + " – " + fmt(hi, 2));
      if (mode === "change") text = (i < 3 ? "less: " : "more: ") + text;
      html += "<div class='row'><span class='swatch' style='background:" + colour + "'></span>" + esc(text) + "</div>";
    }
    var note = mode === "change" ? "red = more harm per day after the date, blue = less; top " + n + " cells by size of change" :
      mode === "forecast" ? "top " + n + " cells; " + (m.analogue ? "analogue " + m.analogue.date + " " + m.analogue.label +
      ", blend " + m.blend : "no analogue: recent data only") : "top " + n + " cells by harm after the date";
    return html + "<div><small>" + esc(note) + "</small></div>";
  }
  function emptyReason(mode, m) {
    var d = (m.key_date || {}).date || "";
    if (mode === "after") return "The window after " + d + " is not in the data: no observed spots (see Forecast).";
    if (mode === "change") return "The windows before and after " + d + " are not both in the data: no change.";
    return "No forecast for this selection.";
  }
  function win(w) {
    if (!w) return "–";
    return w.months ? w.months.join(", ") : w.from + " to " + w.to;
  }
  function renderPanel() {
    var m = kd.body.metadata || {}, s = m.summary || {}, k = m.key_date || {};
    var radios = ["harm spots"].concat(Object.keys(MODES)).map(function (mode) {
      var label = mode === "harm spots" ? "Map (From–To)" : MODES[mode].title;
      var n = mode === "harm spots" ? "" : " <small>(" + (kd.layers[mode] ? kd.layers[mode].count : 0) + ")</small>";
      return "<label><input type='radio' name='kd-mode' value='" + mode + "'" +
        ((kd.mode || "harm spots") === mode ? " checked" : "") + "> " + esc(label) + n + "</label>";
    }).join("");
    var status = kd.current && kd.current.status && kd.current.status !== "in data" ?
      "<div class='kd-outside'>" + esc(kd.current.status) + "</div>" : "";
    kd.panel.innerHTML = "<div class='kd-head'><strong>" + esc(k.date) + "</strong> " + esc(k.label || "") +
      "</div>" + status + "<div class='kd-modes' role='radiogroup' aria-label='Key-date layer'>" + radios + "</div>" +
      "<div class='kd-windows'><small>before " + esc(win(m.before)) + " · after " + esc(win(m.after)) +
      (s.change_pct != null ? " · total harm/day " + (s.change_pct > 0 ? "+" : "") + fmt(s.change_pct, 1) + " %" : "") +
      "</small></div>" + (kd.mode && MODES[kd.mode] ? "<div id='kd-legend' class='kd-legend'>" + legendHtml(kd.mode) + "</div>" : "") +
      exportLinks();
    Array.prototype.forEach.call(kd.panel.querySelectorAll("input[name=kd-mode]"), function (r) {
      r.addEventListener("change", function () { show(r.value === "harm spots" ? null : r.value); });
    });
    Array.prototype.forEach.call(kd.panel.querySelectorAll(".kd-export a"), function (a) {
      a.addEventListener("click", keyedDownload);
    });
  }
  // offline map packs (GET /map/export): this date's three layers in one HTML file, or every date of the set zipped
  function exportUrl(whole) {
    var q = params(), c = kd.current || {};
    q.delete("format"); q.delete("layer");
    q.set("keydate", whole ? c.set : c.set + "/" + c.date);
    return "/map/export?" + q.toString();
  }
  function exportLinks() {
    var c = kd.current || {}, ds = (el("dataset") && el("dataset").value) || "data";
    if (!c.set || !c.date) return "";
    return "<div class='kd-export'><small>Offline map (no server, no internet): <a id='kd-export-date' href='" +
      esc(exportUrl(false)) + "' download='harmspot-" + esc(ds) + "-" + esc(c.date) + ".html'>this date (HTML)</a> · " +
      "<a id='kd-export-set' href='" + esc(exportUrl(true)) + "' download='harmspot-" + esc(ds) + "-" + esc(c.set) +
      ".zip'>every date (zip)</a></small></div>";
  }
  function keyedDownload(ev) {  // with an API key the link goes through fetch so the header is sent
    var a = ev.currentTarget;
    if (!headers()["X-API-Key"]) return;
    ev.preventDefault();
    fetch(a.href, { headers: headers() }).then(function (r) { return r.blob(); }).then(function (b) {
      var u = URL.createObjectURL(b), tmp = document.createElement("a");
      tmp.href = u; tmp.download = a.getAttribute("download"); document.body.appendChild(tmp); tmp.click();
      setTimeout(function () { URL.revokeObjectURL(u); tmp.remove(); }, 1000);
    });
  }
  function caption(mode) {  // the key date and layer on the map itself (screenshots, print view)
    if (!kd.caption) {
      kd.caption = L.control({ position: "bottomleft" });
      kd.caption.onAdd = function () { var d = L.DomUtil.create("div", "kd-caption"); return d; };
    }
    var m = (kd.body && kd.body.metadata) || {}, k = m.key_date || {};
    if (!mode || !MODES[mode]) { kd.caption.remove(); return; }
    kd.caption.addTo(hs().map);
    var w = mode === "change" ? win(m.before) + " → " + win(m.after) : mode === "after" ? win(m.after) :
      "for " + win(m.after) + (m.analogue ? " (analogue " + m.analogue.date + ")" : " (recent data only)");
    kd.caption.getContainer().innerHTML = "<strong>" + esc(k.date) + " · " + esc(k.label || "") + "</strong><br>" +
      esc(MODES[mode].title) + ": " + esc(MODES[mode].unit) + " · " + esc(w);
  }
  function show(mode) {
    var h = hs();
    Object.keys(kd.layers).forEach(function (m) { h.map.removeLayer(kd.layers[m]); });
    kd.mode = mode;
    if (mode && kd.layers[mode]) {
      if (h.map.hasLayer(h.hexes)) h.map.removeLayer(h.hexes);
      kd.layers[mode].addTo(h.map);
      fitTo(kd.layers[mode]);
    } else if (!h.map.hasLayer(h.hexes)) {
      h.hexes.addTo(h.map);
    }
    document.body.dataset.keydateMode = mode || "";
    caption(mode);
    if (kd.body) renderPanel();
  }

  // ------------------------------------------------------------------ selection
  function params() {
    var q = new URLSearchParams({ format: "geojson", layer: "all" });
    ["dataset", "preset", "resolution"].forEach(function (k) { if (el(k) && el(k).value) q.set(k, el(k).value); });
    var top = parseInt((el("top") && el("top").value) || "200", 10);
    q.set("top", String(Math.max(1, Math.min(isNaN(top) ? 200 : top, 2000))));
    return q;
  }
  function select(value, keepMode) {
    var token = ++kd.token;
    if (!value) { clear(); return Promise.resolve(); }
    var parts = value.split("|"), set = parts[0], day = parts[1];
    kd.current = kd.sets[value] || { set: set, date: day };
    kd.panel.hidden = false;
    kd.panel.innerHTML = "<em>Loading key date " + esc(day) + "…</em>";
    document.body.dataset.keydateLoading = "1";
    return getJSON("/keydates/" + encodeURIComponent(set) + "/" + day + "/hotspots?" + params().toString()).then(function (body) {
      if (token !== kd.token) return;
      kd.body = body;
      build(body);
      var m = body.metadata || {}, a = m.after || {};
      if (a.from) {  // the main map (and its downloads) follow the window after the date, as before
        el("from").value = a.months ? a.months[0] : a.from;
        el("to").value = a.months ? a.months[a.months.length - 1] : a.to;
      }
      var mode = keepMode && kd.mode ? kd.mode : (kd.layers.after.count ? "after" : "forecast");
      return hs().reload(false).then(function () { show(mode); });
    }).catch(function (e) {
      if (token !== kd.token) return;
      kd.panel.innerHTML = "<div class='kd-outside'>Key date: " + esc(e.message) + "</div>";
    }).then(function () {
      if (token === kd.token) delete document.body.dataset.keydateLoading;
    });
  }
  function clear() {
    kd.current = null; kd.body = null;
    show(null);
    kd.panel.hidden = true;
    kd.panel.innerHTML = "";
  }
  function fill(sets) {
    var sel = el("keydate");
    kd.sets = hs().fillKeyDates(sets);  // map.js builds the select
    var cur = kd.current ? kd.current.set + "|" + kd.current.date : "";
    sel.value = kd.sets[cur] ? cur : "";
    sel.title = sel.value && kd.sets[sel.value] ? kd.sets[sel.value].label : "Key dates (lockdown easing, events)";
  }
  function loadSets() {
    var ds = el("dataset") && el("dataset").value;
    return getJSON("/keydates" + (ds ? "?dataset=" + encodeURIComponent(ds) : "")).then(function (body) {
      fill((body.sets || []).filter(function (s) { return s && s.dates && s.dates.length; }));
    }).catch(function () {
      el("keydate-wrap").hidden = true;
      if (el("subtitle")) el("subtitle").hidden = false;
    });
  }

  /** Called by map.js at start-up instead of its own key-date selector. */
  function init() {
    hs().map.on("zoomend", function () {
      if (kd.mode && kd.layers[kd.mode]) {
        var mode = kd.mode, prop = MODES[mode].prop;
        kd.layers[mode].setStyle(function (f) { return styleOf(mode, f.properties[prop]); });
      }
    });
    kd.panel = document.createElement("div");
    kd.panel.id = "keydate-panel";
    kd.panel.hidden = true;
    var side = el("side"), legend = el("legend");
    side.insertBefore(kd.panel, legend);
    el("keydate").addEventListener("change", function () {
      var v = el("keydate").value;
      el("keydate").title = v && kd.sets[v] ? kd.sets[v].label : "Key dates (lockdown easing, events)";
      select(v, false);
    });
    ["from", "to"].forEach(function (k) {  // a hand-edited period is no longer the key date's window
      el(k).addEventListener("input", function () {
        if (!el("keydate").value) return;
        el("keydate").value = "";  // back to "Key date…", its tooltip with it
        el("keydate").title = "Key dates (lockdown easing, events)";
        clear();
      });
    });
    ["preset", "resolution"].forEach(function (k) {
      el(k).addEventListener("change", function () { if (el("keydate").value) select(el("keydate").value, true); });
    });
    el("dataset").addEventListener("change", function () {
      loadSets().then(function () { if (el("keydate").value) select(el("keydate").value, true); else clear(); });
    });
    return loadSets();
  }

  window.harmspotKeyDates = { init: init, select: select, show: show, state: kd };
})();
