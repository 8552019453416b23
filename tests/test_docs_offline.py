"""/docs (Swagger UI) and /redoc render with no internet: their assets are vendored under app/static/vendor.

Headless Chromium (Debian chromium + chromium-driver, Selenium) against the real service on loopback, with every
non-loopback host unreachable (an unresolvable host map and a dead proxy): the page must render the API's
operations, and every resource it loaded must come from the service itself. Skipped (with the reason) when
chromium, chromedriver or selenium are absent (scripts/install-browser.sh installs them when root).
Set HARMSPOT_SCREENSHOTS=docs/screenshots to keep the screenshots.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests import live

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.browser


def test_docs_pages_name_only_local_assets(api):
    for path in ("/docs", "/redoc"):
        r = api.get(path)
        assert r.status_code == 200
        assert "cdn" not in r.text and "https://" not in r.text.replace("https://fastapi.tiangolo.com", ""), r.text
    for asset in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css", "redoc/redoc.standalone.js"):
        assert api.get(f"/static/vendor/{asset}").status_code == 200
    for licence in ("swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
        assert (ROOT / "app" / "static" / "vendor" / licence).stat().st_size > 40


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("docs")
    server, _ = live.start(tmp / "data", tmp / "server.log", {"HARMSPOT_LOAD_SAMPLE": "false"})
    yield server.base
    live.stop(server.proc)


@pytest.fixture(scope="module")
def offline_driver(server, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--window-size=1400,1000", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                # no internet: every host but loopback is unresolvable, and anything else goes to a dead proxy
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def _wait(driver, script: str, timeout: float = 45):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}")


def _resources(driver) -> list[str]:
    return driver.execute_script("return performance.getEntriesByType('resource').map(function (e) { return e.name; });")


def _screenshot(driver, name: str) -> None:
    target = os.environ.get("HARMSPOT_SCREENSHOTS")
    if target:
        out = (ROOT / target) if not Path(target).is_absolute() else Path(target)
        out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out / name))


def test_internet_is_really_off(offline_driver):
    from selenium.common.exceptions import WebDriverException

    try:
        offline_driver.get("http://example.com/")
    except WebDriverException as exc:  # net::ERR_NAME_NOT_RESOLVED / ERR_PROXY_CONNECTION_FAILED
        assert "net::ERR_" in str(exc)
    else:
        assert "Example Domain" not in offline_driver.page_source


def test_swagger_ui_renders_offline(server, offline_driver):
    offline_driver.get(f"{server}/docs")
    n = _wait(offline_driver, "return document.querySelectorAll('.opblock').length")
    assert n >= 30  # every operation of the API, read from /openapi.json
    title = offline_driver.execute_script("return document.querySelector('.info .title').textContent")
    assert title.startswith("harmspot")
    _screenshot(offline_driver, "docs-offline.png")
    assert all(u.startswith(server) for u in _resources(offline_driver)), _resources(offline_driver)


def test_redoc_renders_offline(server, offline_driver):
    offline_driver.get(f"{server}/redoc")
    _wait(offline_driver, "return document.querySelectorAll('[data-section-id^=\"operation/\"]').length >= 30")
    heading = offline_driver.execute_script("return document.querySelector('.api-info h1').textContent")
    assert heading.startswith("harmspot")
    _screenshot(offline_driver, "redoc-offline.png")
    # the "API docs by Redocly" footer logo is the one remote image in the bundle; it hides itself when it fails
    remote = [u for u in _resources(offline_driver) if not u.startswith(server)]
    assert remote in ([], ["https://cdn.redoc.ly/redoc/logo-mini.svg"]), remote
