"""/docs (Swagger UI) and /redoc render with no internet: their assets are vendored under app/static/vendor.

Headless Chromium (Debian chromium + chromium-driver, Selenium) against the real service on loopback, with every
non-loopback host unreachable (an unresolvable host map and a dead proxy): the page must render the API's
operations, and every resource it loaded must come from the service itself. Skipped (with the reason) when
chromium, chromedriver or selenium are absent (scripts/install-browser.sh installs them when root).
Set HARMSPOT_SCREENSHOTS=docs/screenshots to keep the screenshots.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import live
from tests.live import screenshot, wait_for

ROOT = Path(__file__).resolve().parent.parent

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
    live.need_browser()
    with live.serving(tmp_path_factory.mktemp("docs"), {"HARMSPOT_LOAD_SAMPLE": "false"}) as srv:
        yield srv.base


@pytest.fixture(scope="module")
def offline_driver(server, tmp_path_factory):
    # no internet: every host but loopback is unresolvable, and anything else goes to a dead proxy
    d = live.chromium(1400, 1000, profile=tmp_path_factory.mktemp("chromium-profile"),
                      args=("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                            "--proxy-server=http://127.0.0.1:9"))
    yield d
    d.quit()


def _resources(driver) -> list[str]:
    return driver.execute_script("return performance.getEntriesByType('resource').map(function (e) { return e.name; });")


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
    n = wait_for(offline_driver, "return document.querySelectorAll('.opblock').length")
    assert n >= 30  # every operation of the API, read from /openapi.json
    title = offline_driver.execute_script("return document.querySelector('.info .title').textContent")
    assert title.startswith("harmspot")
    screenshot(offline_driver, "docs-offline.png")
    assert all(u.startswith(server) for u in _resources(offline_driver)), _resources(offline_driver)


def test_redoc_renders_offline(server, offline_driver):
    offline_driver.get(f"{server}/redoc")
    wait_for(offline_driver, "return document.querySelectorAll('[data-section-id^=\"operation/\"]').length >= 30")
    heading = offline_driver.execute_script("return document.querySelector('.api-info h1').textContent")
    assert heading.startswith("harmspot")
    screenshot(offline_driver, "redoc-offline.png")
    # the "API docs by Redocly" footer logo is the one remote image in the bundle; it hides itself when it fails
    remote = [u for u in _resources(offline_driver) if not u.startswith(server)]
    assert remote in ([], ["https://cdn.redoc.ly/redoc/logo-mini.svg"]), remote
