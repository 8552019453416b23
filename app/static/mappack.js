/* "Offline map" beside the map's downloads: the harm spots on the map as one HTML file that opens with no server
 * and no internet (GET /map/export, app/map_export.py), with exactly the parameters of the CSV download. The
 * key date's own packs are linked from its panel (keydates.js). A map showing the forecast has no pack: the
 * link is disabled with the reason. */
(function () {
  "use strict";
  var el = function (id) { return document.getElementById(id); };

  function headers() {
    var h = {};
    try { var k = sessionStorage.getItem("harmspotKey"); if (k) h["X-API-Key"] = k; } catch (e) { /* none */ }
    return h;
  }
  function url() {  // the CSV download's query, at /map/export
    var csv = el("dl-csv");
    if (!csv || !csv.getAttribute("href") || csv.getAttribute("href") === "#") return null;
    var u = new URL(csv.href, window.location.href);
    u.searchParams.delete("format");
    return "/map/export?" + u.searchParams.toString();
  }
  function forecast() { return !!(el("method") && el("method").value === "forecast"); }
  function refresh(a) {
    var off = forecast();
    a.setAttribute("aria-disabled", off ? "true" : "false");
    a.style.opacity = off ? "0.45" : ""; a.style.cursor = off ? "not-allowed" : "";
    a.title = off ? "No offline map of a forecast: switch Map to 'Last period' (key dates have their own in the panel)"
      : "These harm spots as one HTML map that opens from disk with no server and no internet";
  }
  function download(ev) {
    ev.preventDefault();
    var a = ev.currentTarget, u = url(), status = el("status");
    if (!u || forecast()) return;
    a.dataset.busy = "1";
    fetch(u, { headers: headers() }).then(function (r) {
      if (!r.ok) {
        return r.json().catch(function () { return {}; }).then(function (b) {
          throw new Error((b.error && b.error.message) || ("HTTP " + r.status));
        });
      }
      var cd = r.headers.get("Content-Disposition") || "", m = /filename="([^"]+)"/.exec(cd);
      return r.blob().then(function (b) {
        var o = URL.createObjectURL(b), tmp = document.createElement("a");
        tmp.href = o; tmp.download = m ? m[1] : "harmspot-map.html"; document.body.appendChild(tmp); tmp.click();
        setTimeout(function () { URL.revokeObjectURL(o); tmp.remove(); }, 1000);
      });
    }).catch(function (e) {
      if (status) status.textContent = "Offline map: " + e.message;
    }).then(function () { delete a.dataset.busy; });
  }
  function init() {
    var csv = el("dl-csv");
    if (!csv || el("dl-pack")) return;
    var a = document.createElement("a");
    a.id = "dl-pack"; a.href = "#"; a.textContent = "Offline map";
    csv.parentNode.insertBefore(a, csv.nextSibling);
    a.addEventListener("click", download);
    if (el("method")) el("method").addEventListener("change", function () { refresh(a); });
    refresh(a);
  }
  window.harmspotMapPack = { url: url };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
