"""The browser door's static files (app/assets.py): the map's JavaScript and CSS go out gzip-compressed to a client
that accepts it, byte-identical once decompressed, with a strong ETag per coding and 304s; plain clients, HEAD
and byte ranges get the file as before. Against `harmspot serve` over real HTTP (tests/live.py), so the bytes
checked are the bytes on the wire."""
from __future__ import annotations

import gzip
import os
import time

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from app.assets import StaticAssets
from tests import live
from tests.conftest import ROOT

STATIC = ROOT / "app" / "static"
LEAFLET = "/static/vendor/leaflet/leaflet.js"
GZ = {"Accept-Encoding": "gzip, deflate"}
# every text file the map page loads (app/static/map.html)
PAGE_ASSETS = ["/static/vendor/leaflet/leaflet.css", "/static/map.css", "/static/keydates.css",
               "/static/vendor/leaflet/leaflet.js", "/static/keydates.js", "/static/map.js", "/static/mappack.js"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with live.serving(tmp_path_factory.mktemp("assets"), {"HARMSPOT_LOAD_SAMPLE": "false"}) as s:
        yield s


def _file(path: str) -> bytes:
    return (STATIC / path.removeprefix("/static/")).read_bytes()


def test_leaflet_is_sent_gzipped_and_decompresses_to_the_file(srv):
    r = srv.get(LEAFLET, headers=GZ)
    assert r.status == 200 and r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(r.body) == _file(LEAFLET)
    assert int(r.headers["content-length"]) == len(r.body) < len(_file(LEAFLET)) / 3
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "no-cache" and r.headers["vary"] == "Accept-Encoding"
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('-gzip"')  # strong, and the gzip copy's own


def test_every_text_asset_of_the_map_page_is_gzipped(srv):
    for path in [*PAGE_ASSETS, "/map"]:
        r = srv.get(path, headers=GZ)
        raw = (STATIC / "map.html").read_bytes() if path == "/map" else _file(path)
        assert r.status == 200 and r.headers.get("content-encoding") == "gzip", path
        assert gzip.decompress(r.body) == raw, path


def test_without_accept_encoding_the_file_is_plain(srv):
    raw = _file(LEAFLET)
    for headers in ({"Accept-Encoding": None}, {"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip;q=0"}):
        r = srv.get(LEAFLET, headers=headers)
        assert r.status == 200 and "content-encoding" not in r.headers, headers
        assert r.body == raw and int(r.headers["content-length"]) == len(raw)
        assert r.headers["accept-ranges"] == "bytes" and r.headers["cache-control"] == "no-cache"
    plain, zipped = r.headers["etag"], srv.get(LEAFLET, headers=GZ).headers["etag"]
    assert zipped == plain[:-1] + '-gzip"'  # one file version, two codings: two strong validators


def test_etag_revalidation_is_a_304(srv):
    first = srv.get(LEAFLET, headers=GZ)
    etag = first.headers["etag"]
    again = srv.get(LEAFLET, headers={**GZ, "If-None-Match": etag})
    assert again.status == 304 and again.body == b"" and again.headers["etag"] == etag
    assert again.headers["cache-control"] == "no-cache"
    plain_etag = srv.get(LEAFLET).headers["etag"]
    # either coding's ETag names this file version; the answer carries the ETag of the coding it would send
    assert srv.get(LEAFLET, headers={**GZ, "If-None-Match": plain_etag}).status == 304
    r = srv.get(LEAFLET, headers={"If-None-Match": f'"other", W/{etag}'})
    assert r.status == 304 and r.headers["etag"] == plain_etag
    changed = srv.get(LEAFLET, headers={**GZ, "If-None-Match": '"not-this-one"'})
    assert changed.status == 200 and gzip.decompress(changed.body) == _file(LEAFLET)
    since = srv.get(LEAFLET, headers={**GZ, "If-Modified-Since": first.headers["last-modified"]})
    assert since.status == 304
    assert srv.get(LEAFLET, headers={**GZ, "If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status == 200


def test_head_has_the_headers_of_get_and_no_body(srv):
    get, head = srv.get(LEAFLET, headers=GZ), srv.request("HEAD", LEAFLET, headers=GZ)
    assert head.status == 200 and head.body == b""
    for h in ("content-encoding", "content-length", "etag", "content-type", "cache-control"):
        assert head.headers[h] == get.headers[h], h
    plain = srv.request("HEAD", LEAFLET)
    assert plain.body == b"" and int(plain.headers["content-length"]) == len(_file(LEAFLET))


def test_a_range_gets_the_file_bytes_not_gzip(srv):
    """A byte range is of the file itself, so it is never compressed (nor recoded by the gzip middleware: HTML
    is one of its types, and 2,000 bytes are above its threshold)."""
    raw = _file("/static/map.html")
    r = srv.get("/static/map.html", headers={**GZ, "Range": "bytes=0-1999"})
    assert r.status == 206 and "content-encoding" not in r.headers
    assert r.body == raw[:2000] and r.headers["content-range"] == f"bytes 0-1999/{len(raw)}"
    js = srv.get(LEAFLET, headers={**GZ, "Range": "bytes=100-199"})
    assert js.status == 206 and js.body == _file(LEAFLET)[100:200]


def test_images_and_small_files_are_sent_as_they_are(srv):
    png = "/static/vendor/leaflet/images/layers.png"
    r = srv.get(png, headers=GZ)
    assert r.status == 200 and "content-encoding" not in r.headers and r.body == _file(png)
    small = "/static/vendor/redoc/VERSION"  # under 1 KB
    r = srv.get(small, headers=GZ)
    assert r.status == 200 and "content-encoding" not in r.headers and r.body == _file(small)
    assert srv.get("/static/no-such-file.js", headers=GZ).status == 404
    assert srv.get("/static/../main.py", headers=GZ).status == 404


def test_a_changed_file_is_compressed_again(tmp_path):
    """The gzip copy is kept per file version (mtime, size): an edited file is never answered from the old copy,
    and its ETag changes."""
    asset = tmp_path / "app.js"
    asset.write_text("var x = 1;\n" * 200)
    assets = StaticAssets(directory=tmp_path)
    with TestClient(Starlette(routes=[Mount("/static", assets)])) as c:
        first = c.get("/static/app.js", headers=GZ)
        assert first.headers["content-encoding"] == "gzip" and first.content == asset.read_bytes()
        asset.write_text("var y = 2;\n" * 300)
        later = time.time() + 5
        os.utime(asset, (later, later))  # a distinct mtime whatever the filesystem's resolution
        second = c.get("/static/app.js", headers={**GZ, "If-None-Match": first.headers["etag"]})
        assert second.status_code == 200 and second.content == asset.read_bytes()
        assert second.headers["etag"] != first.headers["etag"]
        assert assets.stats()["files"] == 1
