"""Key dates on the map (app/static/keydates.js) in headless Chromium, on the Leicestershire file: the after,
change and forecast layers for 2021-05-17 match GET /keydates/.../hotspots, each with its legend and the key
date's label; a date beyond the data is marked and shows the forecast only; the compact selector does not add a
header row and the header is at most two rows (<= 110 px) at 1280x720 and 1400x760 (issue 15); editing
From/To puts the select back to "Key date…". The offline map packs (GET /map/export, app/map_export.py) of the same
server: a key date's pack opened from file:// with Chromium's network off draws its hexagons and switches layers;
a period pack and a set's zip; hostile parameters.

Set HARMSPOT_SCREENSHOTS=docs/screenshots to refresh docs/screenshots/keydates-map-2021-05-17-*.png and
map-export-2021-05-17-*.png.
"""
from __future__ import annotations

import functools
import io
import json
import re
import shutil
import time
import urllib.request
import zipfile

import pytest

from patrol_data import leics_store
from tests import live
from tests.live import screenshot

wait_for = functools.partial(live.wait_for, timeout=120)  # the Leicestershire key-date layers take longer
pytestmark = pytest.mark.browser
KD = "england-2020-21|2021-05-17"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live.need_browser()
    store = leics_store(tmp_path_factory, "kdmap")
    path = store.path
    store.close()
    data = tmp_path_factory.mktemp("kdmap-data")
    shutil.copyfile(path, data / "harmspot.duckdb")
    srv, _ = live.start(data, data / "server.log", {"HARMSPOT_LOAD_SAMPLE": "false"})
    made = srv.post("/keydates", json.dumps({"name": "later", "dates": [
        {"date": "2023-05-01", "label": "A date after the data ends (2022-10)", "kind": "test"}]}),
        content_type="application/json")
    assert made.status == 201, made.body
    yield srv
    live.stop(srv.proc)


@pytest.fixture(scope="module")
def driver(server, tmp_path_factory):
    d = live.chromium(1280, 720, profile=tmp_path_factory.mktemp("chromium"), page_load_timeout=120)
    yield d
    d.quit()


def choose(driver, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "keydate")).select_by_value(value)


LAYER = """var prop = arguments[1];
return window.harmspotKeyDates.state.layers[arguments[0]].getLayers().map(function (l) {
  return [l.feature.properties.h3, l.options.fillColor, l.feature.properties[prop]]; });"""


def test_key_date_layers_on_leicestershire(server, driver):
    driver.get(server.base + "/map?dataset=leics&preset=all-crime&top=200")
    wait_for(driver, "return document.body.dataset.cells && !document.body.dataset.loading")
    wait_for(driver, "return !document.getElementById('keydate-wrap').hidden && "
                     "document.getElementById('keydate').options.length > 8")
    # the compact selector: dates only, labels in tooltips; it adds no header row
    texts = driver.execute_script("return Array.from(document.getElementById('keydate').options).map(o => [o.text, o.title])")
    assert all(len(t) <= 26 for t, _ in texts), texts
    assert any("indoor hospitality" in title for _, title in texts)
    assert ["2023-05-01 · forecast only", "2023-05-01 A date after the data ends (2022-10) (outside the data: "
            "forecast only)"] in texts
    for width, height in ((1024, 720), (1280, 720), (1400, 760), (1600, 720), (1920, 720)):  # the key date beside
        driver.set_window_size(width, height)                                                # the title adds no row
        time.sleep(0.3)
        shown = driver.execute_script("return document.getElementById('bar').getBoundingClientRect().height")
        if width in (1280, 1400):  # issue 15: two rows at most (it was three, 121 px, before the compact header)
            assert shown <= 110, (width, shown)
        hidden = driver.execute_script(
            "var w = document.getElementById('keydate-wrap'), s = document.getElementById('subtitle'); "
            "w.hidden = true; s.hidden = false; var h = document.getElementById('bar').getBoundingClientRect().height; "
            "w.hidden = false; s.hidden = true; return h;")
        assert abs(shown - hidden) < 3, (width, shown, hidden)  # inside the form it added a ~40 px row
    driver.set_window_size(1280, 720)

    choose(driver, KD)
    wait_for(driver, "return document.body.dataset.keydateMode === 'after' && !document.body.dataset.keydateLoading")
    time.sleep(0.5)
    panel = driver.find_element("id", "keydate-panel").text
    assert "2021-05-17" in panel and "indoor hospitality" in panel and "harm per day after the date" in panel
    assert "before 2021-04" in panel and "after 2021-06" in panel
    assert driver.execute_script("return [document.getElementById('from').value, document.getElementById('to').value]") \
        == ["2021-06", "2021-06"]
    assert not driver.execute_script("return window.harmspot.map.hasLayer(window.harmspot.hexes)")
    screenshot(driver, "keydates-map-2021-05-17-after.png")
    # the panel offers the offline map pack of this date (and of the whole set), same dataset, preset, hex size, top
    href = driver.execute_script("return document.getElementById('kd-export-date').getAttribute('href')")
    assert href.startswith("/map/export?") and "keydate=england-2020-21%2F2021-05-17" in href
    assert "dataset=leics" in href and "preset=all-crime" in href and "top=200" in href and "format=" not in href
    assert "keydate=england-2020-21&" in driver.execute_script(
        "return document.getElementById('kd-export-set').getAttribute('href')") + "&"
    got = driver.execute_async_script("var cb = arguments[arguments.length - 1]; fetch(arguments[0]).then("
                                      "r => r.text().then(t => cb([r.status, t.includes('Roadmap step 3')])))", href)
    assert got == [200, True]

    with urllib.request.urlopen(f"{server.base}/keydates/england-2020-21/2021-05-17/hotspots?dataset=leics"
                                "&preset=all-crime&resolution=10&top=200&format=geojson&layer=all") as r:
        api = json.loads(r.read())
    by_layer: dict[str, list] = {}
    for f in api["features"]:
        by_layer.setdefault(f["properties"]["layer"], []).append(f["properties"])
    after = driver.execute_script(LAYER, "after", "harm_per_day_after")
    assert [a[0] for a in after] == [p["h3"] for p in by_layer["after"]] and len(after) == 200
    assert [a[2] for a in after] == pytest.approx([p["harm_per_day_after"] for p in by_layer["after"]])
    # per-day rates as /keydates computes them: June 2021 has 30 days
    assert by_layer["after"][0]["harm_per_day_after"] == pytest.approx(by_layer["after"][0]["harm_after"] / 30)

    driver.execute_script("window.harmspotKeyDates.show('change')")
    time.sleep(0.8)
    change = driver.execute_script(LAYER, "change", "change_per_day")
    reds, blues = {"#fddbc7", "#ef8a62", "#b2182b"}, {"#2166ac", "#67a9cf", "#d1e5f0"}
    assert len(change) == 200 and all((c in reds) if v > 0 else (c in blues) for _, c, v in change)
    assert {c for _, c, v in change if v > 0} and {c for _, c, v in change if v < 0}  # both directions present
    mags = [abs(p["change_per_day"]) for p in by_layer["change"]]
    assert mags == sorted(mags, reverse=True)  # the biggest changes, up or down
    assert "after − before" in driver.find_element("id", "kd-legend").text
    assert "2021-05-17" in driver.find_element("css selector", ".kd-caption").text
    screenshot(driver, "keydates-map-2021-05-17-change.png")

    driver.execute_script("window.harmspotKeyDates.show('forecast')")
    time.sleep(0.8)
    fc = driver.execute_script(LAYER, "forecast", "forecast_harm_per_day")
    assert [f[0] for f in fc] == [p["h3"] for p in by_layer["forecast"]]
    legend = driver.find_element("id", "kd-legend").text
    assert "forecast harm per day" in legend and "analogue 2020-07-04" in legend
    screenshot(driver, "keydates-map-2021-05-17-forecast.png")

    # a hand-edited period is no longer the key date's window: the select is back to "Key date…" (issue 15)
    assert "indoor hospitality" in driver.execute_script("return document.getElementById('keydate').title")
    driver.find_element("id", "from").send_keys("x")
    wait_for(driver, "return document.getElementById('keydate').value === '' && "
                     "window.harmspot.map.hasLayer(window.harmspot.hexes)")
    assert driver.execute_script("return document.getElementById('keydate-panel').hidden")
    sel = driver.execute_script("var s = document.getElementById('keydate'); return [s.selectedOptions[0].text, s.title]")
    assert sel[0] == "Key date…" and "indoor hospitality" not in sel[1], sel
    assert not driver.find_elements("css selector", ".kd-caption")


def test_key_date_beyond_the_data(server, driver):
    driver.get(server.base + "/map?dataset=leics&preset=all-crime&top=50")
    wait_for(driver, "return document.body.dataset.cells && !document.body.dataset.loading")
    wait_for(driver, "return document.getElementById('keydate').options.length > 8")
    choose(driver, "later|2023-05-01")
    wait_for(driver, "return document.body.dataset.keydateMode === 'forecast' && !document.body.dataset.keydateLoading")
    panel = driver.find_element("id", "keydate-panel").text
    assert "outside the data: forecast only" in panel
    counts = driver.execute_script("var l = window.harmspotKeyDates.state.layers; "
                                   "return [l.after.count, l.change.count, l.forecast.count];")
    assert counts[0] == 0 and counts[1] == 0 and counts[2] == 50
    driver.execute_script("window.harmspotKeyDates.show('after')")
    assert "not in the data" in driver.find_element("id", "kd-legend").text


# ------------------------------------------------------------------------------------------ offline map packs
EXPORT = "/map/export?dataset=leics&preset=all-crime&resolution=10&top=200"


def offline(driver, on: bool) -> None:
    """Chromium's network off (every request fails) or back on, for the pages that follow."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": on, "latency": 0,
                                                                "downloadThroughput": -1, "uploadThroughput": -1})


def test_map_export_key_date_opens_from_disk_with_no_network(server, driver, tmp_path):
    r = server.get(EXPORT + "&keydate=england-2020-21/2021-05-17")
    assert r.status == 200, r.body[:300]
    assert r.headers["content-type"].startswith("text/html")
    assert 'filename="harmspot-leics-2021-05-17.html"' in r.headers["content-disposition"]
    page = r.body.decode()
    # nothing fetched from anywhere: no external script, stylesheet, image or tile URL
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"?https?:", page), "external asset"
    hosts = set(re.findall(r"https?://([a-zA-Z0-9.-]+)", page))  # Leaflet's own comments, its attribution link
    assert hosts <= {"www.w3.org", "leafletjs.com", "bugzilla.mozilla.org", "bugs.chromium.org"}, hosts
    path = tmp_path / "pack.html"
    path.write_bytes(r.body)
    with urllib.request.urlopen(f"{server.base}/keydates/england-2020-21/2021-05-17/hotspots?dataset=leics"
                                "&preset=all-crime&resolution=10&top=200&format=geojson&layer=all") as api_r:
        api = json.loads(api_r.read())
    want = {name: [f["properties"]["h3"] for f in api["features"] if f["properties"]["layer"] == name]
            for name in ("after", "change", "forecast")}
    offline(driver, True)
    try:
        from selenium.common.exceptions import WebDriverException

        with pytest.raises(WebDriverException, match="INTERNET_DISCONNECTED"):  # the network really is off
            driver.get("http://example.com/")
        driver.get(path.as_uri())
        n = int(wait_for(driver, "return document.body.dataset.hexagons", timeout=60))
        assert n == len(want["after"]) == 200
        assert driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                                     ".filter(u => !u.startsWith('data:') && !u.startsWith('file:'))") == []
        text = driver.find_element("css selector", ".hs-panel").text
        assert "2021-05-17" in text and "indoor hospitality" in text and "Harm per day after the date" in text
        assert [e.text for e in driver.find_elements("css selector", ".hs-marking")] == ["OFFICIAL", "OFFICIAL"]
        assert len(driver.find_elements("css selector", ".hs-district")) == 9  # Leicestershire's districts
        drawn = driver.execute_script(
            "return Array.from(document.querySelectorAll('path.leaflet-interactive')).length")
        assert drawn == 200
        screenshot(driver, "map-export-2021-05-17-after.png")
        # the layer control switches to the change layer and its diverging legend
        radios = driver.find_elements("css selector", ".leaflet-control-layers-base input")
        labels = [e.text for e in driver.find_elements("css selector", ".leaflet-control-layers-base label")]
        assert labels == ["After (200)", "Change (200)", "Forecast (200)"]
        radios[1].click()
        time.sleep(0.5)
        assert driver.execute_script("return document.getElementById('legend-change').style.display") == "block"
        assert driver.execute_script("return document.getElementById('legend-after').style.display") == "none"
        assert "after − before" in driver.find_element("id", "legend-change").text
        fills = driver.execute_script("return Array.from(document.querySelectorAll('path.leaflet-interactive'))"
                                      ".map(p => p.getAttribute('fill'))")
        assert len(fills) == len(want["change"]) and {"#b2182b", "#2166ac"} <= set(fills)  # both directions
        screenshot(driver, "map-export-2021-05-17-change.png")
        # a popup: escaped table with the street names of the cell's records
        driver.execute_script("document.querySelector('path.leaflet-interactive').dispatchEvent("
                              "new MouseEvent('click', {bubbles: true, clientX: 600, clientY: 300}))")
        time.sleep(0.5)
        popup = driver.find_element("css selector", ".leaflet-popup-content").text
        assert "Change/day" in popup and "Streets" in popup and "Cell" in popup
    finally:
        offline(driver, False)


def test_offline_map_button_exports_the_maps_query(server, driver):
    """mappack.js: 'Offline map' beside the downloads fetches GET /map/export with the CSV download's query."""
    driver.get(server.base + "/map?dataset=leics&preset=all-crime&top=30")
    wait_for(driver, "return document.body.dataset.cells && !document.body.dataset.loading")
    assert driver.find_element("id", "dl-pack").text == "Offline map"
    url = driver.execute_script("return window.harmspotMapPack.url()")
    csv = driver.execute_script("return document.getElementById('dl-csv').getAttribute('href')")
    assert url.startswith("/map/export?") and "format=" not in url and "top=30" in url and "dataset=leics" in url
    assert sorted(url.split("?", 1)[1].split("&")) == sorted(p for p in csv.split("?", 1)[1].split("&")
                                                             if not p.startswith("format="))
    got = driver.execute_async_script("var cb = arguments[arguments.length - 1]; fetch(arguments[0]).then("
                                      "r => r.text().then(t => cb([r.status, (t.match(/\"popup\": \"/g) || []).length])))",
                                      url)
    assert got == [200, 30]
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "method")).select_by_value("forecast")
    assert driver.find_element("id", "dl-pack").get_attribute("aria-disabled") == "true"


def test_map_export_period_and_key_date_zip(server, tmp_path):
    r = server.get("/map/export?dataset=leics&preset=all-crime&from=2021-06&to=2021-06&top=50")
    assert r.status == 200, r.body[:300]
    page = r.body.decode()
    assert "2021-06-01 to 2021-06-30" in page and page.count('class="hs-marking') == 2
    popups = re.findall(r'"popup": "([^"]*)"', page)
    assert len(popups) == 50
    assert sum("Streets" in p for p in popups) >= 45  # police.uk locations: nearly every cell has one
    # a whole set: one map per date and an index; a date beyond the data is marked and has the forecast only
    z = server.get("/map/export?dataset=leics&preset=all-crime&top=20&keydate=later")
    assert z.status == 200 and z.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.body)) as zf:
        assert sorted(zf.namelist()) == ["index.html", "later-2023-05-01.html"]
        index = zf.read("index.html").decode()
        one = zf.read("later-2023-05-01.html").decode()
    assert "href='later-2023-05-01.html'" in index and "outside the data: forecast only" in index
    assert "OFFICIAL" in index
    assert "the window after the date is not in the data" in one and "Forecast (20)" in one


@pytest.mark.parametrize("query, status", [
    ("&keydate=../../etc/passwd", 422), ("&keydate=england-2020-21/2021-13-01", 422),
    ("&keydate=england-2020-21/2021-02-30", 422), ("&keydate=" + "x" * 200, 422),
    ("&keydate=nope/2021-05-17", 404), ("&keydate=england-2020-21/2021-05-18", 404),
    ("&keydate=england-2020-21/2021-05-17&from=2021-01", 422), ("&top=5001", 422), ("&top=0", 422),
    ("&from=2030-01&to=2030-02", 422), ("&dataset=nope", 404), ("&resolution=99", 422),
    ("&keydate=%00%ff", 422), ("&keydate=england-2020-21&top=5000", 422),
    ("&from=2021-06&to=2021-06&method=forecast", 422),  # 7 maps x 5000 cells: too big a zip
])
def test_map_export_hostile_parameters(server, query, status):
    from app.security import required_role

    assert required_role("GET", "/map/export") == "viewer"  # keyed mode: any key; never open
    r = server.get("/map/export?preset=all-crime" + ("" if "dataset=" in query else "&dataset=leics") + query)
    assert r.status == status, (query, r.status, r.body[:300])
    body = r.json()
    assert body["error"]["code"] and body["error"]["message"]
