"""End to end in headless Chromium (Debian chromium + chromium-driver, driven by Selenium).

Starts the real service (`harmspot serve` in a subprocess, tests.live.start, a fresh store with the bundled
sample) on a free loopback port, opens the map, checks the hexagons against GET /hotspots, changes the preset,
opens a popup by clicking on a hexagon and checks its values, and downloads the GeoJSON of what is shown.
Skipped (reported as skipped) only when chromium, chromedriver or selenium are absent (tests.live.need_browser).

Set HARMSPOT_SCREENSHOTS=docs/screenshots to refresh the screenshots in the docs.
"""
from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests import live
from tests.live import screenshot, wait_for

pytestmark = pytest.mark.browser


def get_json(url: str, timeout: float = 60) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live.need_browser()
    with live.serving(tmp_path_factory.mktemp("browser"), {"HARMSPOT_LOAD_SAMPLE": "true"}) as srv:
        yield srv.base


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(server, downloads):
    d = live.chromium(1400, 900, downloads=downloads)
    yield d
    d.quit()


def shown(driver) -> list[dict]:
    return driver.execute_script(
        "return window.harmspot.hexes.getLayers().map(function (l) { return l.feature.properties; });")


def hotspots(server: str, query: str) -> dict:
    return get_json(f"{server}/hotspots?{query}")


def test_map_end_to_end(server, driver, downloads):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # a browser asking for / gets the map
    driver.get(server + "/")
    assert driver.current_url.rstrip("/").endswith("/map") or "/map?" in driver.current_url
    wait_for(driver, "return document.body.dataset.cells && !document.body.dataset.loading")
    time.sleep(0.5)
    screenshot(driver, "map-default.png")

    # the default view: the same cells, in the same order, as GET /hotspots with the page's parameters
    query = driver.execute_script("return document.body.dataset.query")
    assert "preset=op-ark" in query and "top=200" in query
    api = hotspots(server, query)
    cells = shown(driver)
    assert len(cells) == len(api["cells"]) == int(driver.execute_script("return document.body.dataset.cells"))
    assert [c["h3"] for c in cells] == [c["h3"] for c in api["cells"]]
    legend = driver.find_element(By.ID, "legend").text
    assert "quantile classes" in legend and api["weights_table"] in legend
    # under 1500 px the layer control is collapsed to its button (it covered a third of the map); hovering opens it
    control = driver.find_element(By.CSS_SELECTOR, ".leaflet-control-layers")
    assert "leaflet-control-layers-expanded" not in control.get_attribute("class")
    ActionChains(driver).move_to_element(control).perform()
    wait_for(driver, "return document.querySelector('.leaflet-control-layers-expanded')", timeout=10)
    layers = control.text
    assert "Harm spots" in layers and "Districts of essex-sample" in layers and "Wards" in layers
    # the Gi* layer's legend names its classes in words (the response's gistar.class_labels), not by class id
    gi = [lab for lab in control.find_elements(By.CSS_SELECTOR, ".leaflet-control-layers-overlays label")
          if lab.text.strip() == "Gi* hot spots"]
    assert gi, layers
    gi[0].find_element(By.TAG_NAME, "input").click()
    wait_for(driver, "return document.querySelector('#legend .extra-legend')", timeout=120)
    gi_legend = driver.find_element(By.CSS_SELECTOR, "#legend .extra-legend").text
    assert "Gi* hot spots" in gi_legend and "hot spot, 9" in gi_legend, gi_legend
    assert "hot_9" not in gi_legend and "neighbourhood_hot" not in gi_legend, gi_legend
    time.sleep(0.5)
    screenshot(driver, "map-gistar-legend.png")
    gi[0].find_element(By.TAG_NAME, "input").click()  # off again: its cells would take the popup click below
    wait_for(driver, "return !document.querySelector('#legend .extra-legend')", timeout=10)
    assert driver.execute_script("return document.body.dataset.districts") == "14"  # the selector filled
    try:  # the key-date selector shows only when a key-dates engine answers GET /keydates
        has_keydates = bool(get_json(server + "/keydates"))
    except OSError:
        has_keydates = False
    hidden = driver.find_element(By.ID, "keydate-wrap").get_attribute("hidden")
    assert (hidden is None) == has_keydates

    # change the preset: the map reloads through the same query path
    Select(driver.find_element(By.ID, "preset")).select_by_value("all-crime")
    wait_for(driver, "return (document.body.dataset.query || '').indexOf('preset=all-crime') >= 0 "
                     "&& !document.body.dataset.loading")
    query = driver.execute_script("return document.body.dataset.query")
    api = hotspots(server, query)
    cells = shown(driver)
    assert len(cells) == len(api["cells"]) == 200
    assert [c["h3"] for c in cells] == [c["h3"] for c in api["cells"]]

    # click on the top harm spot: the popup shows its rank, harm, count and offences as /hotspots has them
    target = api["cells"][0]
    point = driver.execute_script("return window.harmspot.cellPoint(arguments[0], 16)", target["h3"])
    time.sleep(0.4)
    point = driver.execute_script("return window.harmspot.cellPoint(arguments[0], 16)", target["h3"])
    body = driver.find_element(By.TAG_NAME, "body")
    size = body.size
    ActionChains(driver).move_to_element_with_offset(body, point["x"] - size["width"] // 2,
                                                     point["y"] - size["height"] // 2).click().perform()
    wait_for(driver, "return document.querySelector('.leaflet-popup-content .hs-popup')", timeout=10)
    popup = driver.find_element(By.CSS_SELECTOR, ".leaflet-popup-content .hs-popup")
    assert popup.get_attribute("data-h3") == target["h3"]
    assert popup.find_element(By.CLASS_NAME, "rank").text == str(target["rank"]) == "1"
    harm_text = popup.find_element(By.CLASS_NAME, "harm").text.replace(",", "").replace(" days", "")
    assert abs(float(harm_text) - target["harm"]) <= 0.05 + 1e-9
    assert popup.find_element(By.CLASS_NAME, "count").text == str(target["count"])
    offences = popup.find_element(By.CLASS_NAME, "offences").text
    for o in target["top_offences"]:
        assert o["offence"] in offences
    time.sleep(0.5)  # the popup fades in
    screenshot(driver, "map-popup.png")

    # download the GeoJSON: exactly the cells on the map
    link = driver.find_element(By.ID, "dl-geojson")
    assert "/hotspots.geojson?" in link.get_attribute("href") and "preset=all-crime" in link.get_attribute("href")
    link.click()
    path = downloads / "harmspots.geojson"
    deadline = time.time() + 30
    while time.time() < deadline and not (path.exists() and path.stat().st_size > 0
                                          and not list(downloads.glob("*.crdownload"))):
        time.sleep(0.2)
    assert path.exists(), f"no download in {list(downloads.iterdir())}"
    fc = json.loads(path.read_text())
    assert fc["type"] == "FeatureCollection" and "crs" not in fc
    assert [f["properties"]["h3"] for f in fc["features"]] == [c["h3"] for c in cells]
    assert fc["metadata"]["preset"] == "all-crime"
    csv_href = driver.find_element(By.ID, "dl-csv").get_attribute("href")
    assert "format=csv" in csv_href and "preset=all-crime" in csv_href


def test_map_renders_5000_hexagons(server, driver):
    """5,000 cells on the canvas renderer: drawn, and the map still pans and zooms promptly."""
    q = urlencode({"preset": "all-crime", "resolution": 11, "top": 5000, "from": "2024-01", "to": "2024-04"})
    driver.get(f"{server}/map?{q}")
    wait_for(driver, "return document.body.dataset.query && document.body.dataset.query.indexOf('top=5000') >= 0 "
                     "&& !document.body.dataset.loading", timeout=60)
    n = int(driver.execute_script("return document.body.dataset.cells"))
    assert n == 5000
    assert driver.execute_script("return document.querySelectorAll('path.leaflet-interactive').length") == 0  # canvas
    elapsed = driver.execute_script("""
        var m = window.harmspot.map, t = performance.now();
        for (var i = 0; i < 5; i++) { m.setZoom(m.getZoom() + (i % 2 ? -1 : 1), {animate: false}); }
        m.panBy([200, 100], {animate: false});
        return performance.now() - t;""")
    assert elapsed < 5000, f"5 zooms and a pan took {elapsed:.0f} ms"


def test_print_view_and_config(server, driver):
    from selenium.webdriver.common.by import By

    driver.get(server + "/map")
    wait_for(driver, "return document.body.dataset.cells && !document.body.dataset.loading")
    driver.find_element(By.ID, "print").click()  # navigator.webdriver: the print dialog is not opened
    wait_for(driver, "return document.body.classList.contains('print-view')")
    head = driver.find_element(By.ID, "print-head").text
    assert "Harm spots" in head and "weights" in head
    assert not driver.find_element(By.ID, "controls").is_displayed()
    assert not driver.find_element(By.ID, "keydate-wrap").is_displayed()  # a select on paper: the panel says the date
    config = get_json(server + "/map/config")
    assert config["tile_url"] is None  # offline by default: no tile server
    tiles = driver.execute_script("return document.querySelectorAll('.leaflet-tile').length")
    assert tiles == 0


LEICS_CRIME = Path("/work/shared/data/crime/leicestershire_street_2019-12_to_2022-10.csv.gz")


def test_any_force_gets_automatic_districts_on_the_map(server, driver):
    """A force's data.police.uk file with no boundary file (Leicestershire, three months, POST /datasets): the
    District selector lists its districts named from the records, a bookmarked ?area= is kept, tasking names the
    same districts, popups and street-zoom labels carry location text, and a period outside the data says so."""
    import csv
    import gzip
    import io

    from selenium.webdriver.common.by import By

    from tests.live_server import multipart

    if not LEICS_CRIME.exists():
        pytest.skip(f"{LEICS_CRIME} not available")
    buf = io.StringIO()
    with gzip.open(LEICS_CRIME, "rt", newline="") as f:
        reader = csv.reader(f)
        writer = csv.writer(buf)
        header = next(reader)
        writer.writerow(header)
        month = header.index("Month")
        writer.writerows(r for r in reader if r[month] >= "2022-08")
    body, ctype = multipart([("leics.csv", buf.getvalue().encode())], {"dataset": "leics-auto"})
    req = urllib.request.Request(server + "/datasets", data=body, method="POST", headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=600) as r:
        assert r.status in (200, 201)
    listing = get_json(server + "/datasets")
    names = {d["name"] for d in listing["datasets"]}
    assert {"essex-sample", "leics-auto"} <= names and listing["default"] == "essex-sample"

    areas = get_json(server + "/areas/districts.geojson?dataset=leics-auto")
    assert areas["metadata"]["layer"]["name"] == "lad" and areas["metadata"]["layer"]["approximate"]
    by_name = {f["properties"]["name"]: f["properties"]["id"] for f in areas["features"]}
    assert {"Leicester", "Charnwood", "Blaby", "Hinckley and Bosworth"} <= set(by_name)
    pack = get_json(server + "/tasking?dataset=leics-auto&method=observed&plan_from=2022-11-01&spots_per_area=2")
    assert pack["area_layer"] == "lad" and {"Leicester", "Charnwood", "Blaby"} <= {c["area_name"] for c in pack["cells"]}
    # streets from the records' location texts (a few police.uk records carry an empty "On or near")
    assert sum(bool(c["streets"]) for c in pack["cells"]) >= 0.8 * len(pack["cells"])

    # the map: the dataset's own districts fill the selector; the whole county is in view
    driver.get(server + "/map?dataset=leics-auto&preset=all-crime")
    wait_for(driver, "return document.body.dataset.districts && document.body.dataset.cells "
                     "&& !document.body.dataset.loading && document.body.dataset.query.indexOf('leics-auto') >= 0")
    options = driver.execute_script("return Array.from(document.getElementById('area').options)"
                                    ".map(function (o) { return o.textContent; })")
    assert {"Leicester", "Charnwood", "Blaby"} <= set(options)
    assert driver.find_element(By.ID, "marking").text == "OFFICIAL"
    time.sleep(0.5)
    screenshot(driver, "map-automatic-districts.png")

    # a road layer made from the records' street names and snap points (tests/test_boundaries.record_roads)
    from tests.test_boundaries import areas_body, record_roads

    roads_path = Path(driver.capabilities.get("chrome", {}).get("userDataDir", "/tmp")).parent / "hs-roads.gpkg"
    record_roads(1500).to_file(roads_path, driver="GPKG", layer="roads")
    body, ctype = areas_body("roads.gpkg", roads_path.read_bytes(), layer="roads")
    roads_path.unlink()
    req = urllib.request.Request(server + "/roads", data=body, method="POST", headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=300) as r:
        assert r.status == 201

    # a bookmarked area is kept and applied
    area = "districts:" + by_name["Leicester"]
    driver.get(server + "/map?" + urlencode({"dataset": "leics-auto", "preset": "all-crime", "area": area}))
    wait_for(driver, "return document.body.dataset.cells && !document.body.dataset.loading "
                     "&& document.body.dataset.query.indexOf('area=') >= 0")
    assert driver.execute_script("return document.getElementById('area').value") == area
    query = driver.execute_script("return document.body.dataset.query")
    api = hotspots(server, query)
    cells = shown(driver)
    assert [c["h3"] for c in cells] == [c["h3"] for c in api["cells"]] and len(cells) > 0
    top = api["cells"][0]
    assert top["top_locations"]  # location texts of the top spot, in the API and in the popup
    # street zoom: the top spots are labelled with their main location text
    for _ in range(2):  # twice: the first may land while the fit to the area is still animating
        driver.execute_script("window.harmspot.cellPoint(arguments[0], 16)", top["h3"])
        time.sleep(0.6)
    label_texts = driver.execute_script("return Array.from(document.querySelectorAll('.street-label'))"
                                        ".map(function (e) { return e.textContent; })")
    assert any(top["top_locations"][0] in t for t in label_texts), (label_texts, driver.execute_script(
        "return [window.harmspot.map.getZoom(), document.querySelectorAll('.leaflet-tooltip').length, "
        "document.body.dataset.error || '', document.getElementById('status').textContent]"), top)
    popup = driver.execute_script("var l, h = arguments[0]; window.harmspot.hexes.eachLayer(function (x) { "
                                  "if (x.feature.properties.h3 === h) l = x; }); l.openPopup(); "
                                  "return document.querySelector('.hs-popup .locations').textContent;", top["h3"])
    assert top["top_locations"][0] in popup
    drawn = driver.execute_script("var e = window.harmspot.state.overlays['roads-roads']; var n = 0; "
                                  "e.group.eachLayer(function (l) { n += l.getLayers ? l.getLayers().length : 0; }); "
                                  "return n;")
    assert drawn > 100  # the road layer is on by default, under the hexagons
    time.sleep(0.4)
    screenshot(driver, "map-street-labels.png")

    # the printable patrol sheet draws the road layer in each area's small map
    driver.get(server + "/tasking?dataset=leics-auto&method=observed&plan_from=2022-11-01&spots_per_area=5&format=html")
    assert 'stroke="#9a9a9a"' in driver.page_source and "OFFICIAL" in driver.page_source
    screenshot(driver, "patrol-sheet-roads.png")

    # a period with no records says so on the map
    driver.get(server + "/map?dataset=leics-auto&from=2025-01&to=2025-02")
    wait_for(driver, "return document.body.dataset.query && !document.body.dataset.loading "
                     "&& !document.getElementById('empty-note').hidden")
    note = driver.find_element(By.ID, "empty-note").text
    assert "outside the data" in note and "2022-08 to 2022-10" in note
    time.sleep(0.3)
    screenshot(driver, "map-empty-period.png")

    # switching dataset in the page: its own districts replace the other's in the selector
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "dataset")).select_by_value("essex-sample")
    wait_for(driver, "return document.body.dataset.districts === '14' && !document.body.dataset.loading "
                     "&& document.body.dataset.query.indexOf('essex-sample') >= 0")
    options = driver.execute_script("return Array.from(document.getElementById('area').options)"
                                    ".map(function (o) { return o.textContent; })")
    assert "Southend-on-Sea" in options and "Charnwood" not in options
