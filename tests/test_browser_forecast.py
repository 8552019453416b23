"""The map's "Next period (forecast)" view in headless Chromium: the same cells, in the same order, as
GET /hotspots?method=forecast, coloured by expected harm, with the forecast period in the summary.
HARMSPOT_SCREENSHOTS=docs/screenshots refreshes docs/screenshots/map-forecast.png."""
from __future__ import annotations

import time

import pytest

from tests.live import screenshot, wait_for
from tests.test_browser import downloads, driver, hotspots, server, shown  # noqa: F401


def test_map_next_period_forecast(server, driver):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(server + "/map?method=forecast&top=200")
    wait_for(driver, "return document.body.dataset.query && document.body.dataset.query.indexOf('method=forecast') "
                     ">= 0 && !document.body.dataset.loading")
    time.sleep(0.5)
    assert Select(driver.find_element(By.ID, "method")).first_selected_option.text == "Next period (forecast)"
    query = driver.execute_script("return document.body.dataset.query")
    api = hotspots(server, query)
    assert api["method"] == "forecast"
    cells = shown(driver)
    assert [c["h3"] for c in cells] == [c["h3"] for c in api["cells"]]
    assert all(c.get("forecast_harm") is not None for c in cells)
    assert "Expected harm next period" in driver.find_element(By.ID, "legend").text
    period = api["forecast"]["forecast_period"]
    assert driver.find_element(By.ID, "forecast-period").text == f"{period['from']} to {period['to']}"
    # the response's totals are the look-back's observed harm: labelled so, beside the expected harm of the cells shown
    summary = driver.find_element(By.ID, "summary").text
    assert "Observed harm in look-back" in summary and "Total harm" not in summary
    expected = float(driver.find_element(By.ID, "expected-harm").text.replace(",", "").replace(" days", ""))
    assert expected == pytest.approx(sum(c["forecast_harm"] for c in api["cells"]), abs=0.051)
    screenshot(driver, "map-forecast.png")
    # back to the observed map: the selector drops the parameter
    Select(driver.find_element(By.ID, "method")).select_by_visible_text("Last period (observed)")
    driver.find_element(By.ID, "apply").click()
    wait_for(driver, "return document.body.dataset.query.indexOf('method=') < 0 && !document.body.dataset.loading")
    assert "Harm per hexagon" in driver.find_element(By.ID, "legend").text
    assert "Total harm" in driver.find_element(By.ID, "summary").text
