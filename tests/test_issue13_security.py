"""Issue 13, security slice (items 4, 10, 11, 12, 13, 15), each against a real `harmspot serve` process in keyed
mode (tests/live.py), over HTTP, with whatever pandas/DuckDB pip installed. Tests are named after the item."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import live

ROLES = ("admin", "analyst", "viewer", "public")


class Svc:
    """A live keyed server (tests/live.py) with an httpx client per role."""

    def __init__(self, server: live.Live, keys: dict[str, str], log):
        self.server, self.keys, self.log_path = server, keys, log
        self.base = server.base

    def client(self, role: str | None = None, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": self.keys[role]} if role else {},
                            timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        live.stop(self.server.proc)


def start(tmp, env: dict | None = None, roles=ROLES, host: str = "127.0.0.1") -> Svc:
    server, keys = live.start(tmp / "data", tmp / "server.log", env, {r: r for r in roles}, host=host)
    return Svc(server, keys, tmp / "server.log")


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    """One keyed service with the sample loaded and a key per role."""
    s = start(tmp_path_factory.mktemp("i13"))
    yield s
    s.stop()


def parallel(n: int, call) -> list:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def statuses(responses) -> list[int]:
    return sorted(r.status_code for r in responses)


def audit_until(c: httpx.Client, done, timeout: float = 30, limit: int = 10_000) -> list[dict]:
    """GET /audit until ``done(rows)`` (rows are written just after each response, by a background writer)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        rows = c.get("/audit", params={"limit": limit}).json()["rows"]
        if done(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------ 4: write races
def test_13_4_parallel_keydates_one_name_one_201_rest_409(svc):
    body = {"name": "race-set", "dates": [{"date": "2024-03-01", "label": "a"}, {"date": "2024-04-01", "label": "b"}]}
    with svc.client("analyst") as c:
        got = parallel(10, lambda i: c.post("/keydates", json=body))
        assert statuses(got) == [201] + [409] * 9, [r.text[:200] for r in got]
        assert all(r.json()["error"]["code"] == "conflict" for r in got if r.status_code == 409)
        sets = [s for s in c.get("/keydates").json()["sets"] if s["name"] == "race-set"]
        assert len(sets) == 1 and len(sets[0]["dates"]) == 2


def test_13_4_parallel_keydates_replace_all_succeed_and_one_version_wins_whole(svc):
    def post(i: int):
        dates = [{"date": f"2024-0{m}-0{1 + i % 9}", "label": f"v{i}"} for m in (1, 2, 3)][: 1 + i % 3]
        return c.post("/keydates", json={"name": "race-replace", "dates": dates, "replace": True})

    with svc.client("analyst") as c:
        got = parallel(10, post)
        assert statuses(got) == [201] * 10, [r.text[:200] for r in got]
        (kset,) = [s for s in c.get("/keydates").json()["sets"] if s["name"] == "race-replace"]
        labels = {d["label"] for d in kset["dates"]}
        assert len(labels) == 1  # one posted version, never a mixture of two
        i = int(labels.pop()[1:])
        assert len(kset["dates"]) == 1 + i % 3


def test_13_4_parallel_layer_uploads_one_new_name_one_201_rest_409(svc):
    csv = b"name,longitude,latitude\npub a,0.71,51.54\npub b,0.72,51.55\n"
    with svc.client("analyst") as c:
        got = parallel(6, lambda i: c.post("/layers", files={"file": ("pubs.csv", csv)},
                                           data={"name": "race-layer", "type": "pub"}))
        assert statuses(got) == [201] + [409] * 5, [r.text[:200] for r in got]
        assert c.get("/layers/race-layer").json()["features"] == 2


def test_13_4_parallel_tasking_packs_are_chained_not_forked(svc):
    """A saved pack's new/continuing/dropped statuses compare it with the pack saved before it: parallel saves
    for one dataset and layer each name a different predecessor (the check runs in the save's transaction; an
    overtaken pack is built again), so the packs form one chain."""
    params = {"layer": "wards", "spots_per_area": 1, "dataset": "essex-sample"}
    with svc.client("analyst") as c:
        got = parallel(4, lambda i: c.post("/tasking", params=params))
        assert statuses(got) == [201] * 4, [r.text[:200] for r in got]
        packs = sorted((r.json()["pack_id"], r.json()["previous_pack_id"]) for r in got)
        ids = [p for p, _ in packs]
        assert [prev for _, prev in packs][1:] == ids[:-1], packs  # each the successor of the one before
        assert len({prev for _, prev in packs}) == 4


def test_13_4_every_write_path_in_parallel_has_no_5xx(svc):
    """Keys, patrols, tasking packs, harm weights, datasets and RTM runs posted concurrently: only 2xx/4xx."""
    with svc.client("admin") as c:
        spot = c.get("/hotspots", params={"top": 1, "resolution": 10}).json()["cells"][0]["h3"]
        csv = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,"
               "Last outcome category,Context\n")
        calls = [
            lambda i: c.post("/keys", json={"name": f"race {i}", "role": "viewer"}),
            lambda i: c.post("/patrols", json={"patrols": [{"spot_id": f"HS-{spot}", "team": f"t{i}",
                                                            "start": "2024-05-01T10:00", "end": "2024-05-01T10:15"}]}),
            lambda i: c.post("/tasking", params={"layer": "districts", "spots_per_area": 1}),
            lambda i: c.post("/harm-weights", files={"file": ("w.csv", b"category,days\nrobbery,365\n")},
                             data={"name": "race-weights"}),
            lambda i: c.post("/datasets", files={"files": ("a.csv", (csv + f"race{i},2024-03,x,x,0.71,51.54,On or near "
                                                                     "X,E01,Y,Robbery,,\n").encode())},
                             data={"dataset": "race-data"}),
        ]
        got = parallel(len(calls) * 4, lambda i: calls[i % len(calls)](i))
        assert all(r.status_code < 500 for r in got), [(r.request.url.path, r.status_code, r.text[:200])
                                                       for r in got if r.status_code >= 500]
        assert all(r.status_code in (200, 201) for r in got), [(r.request.url.path, r.text[:200]) for r in got
                                                                if r.status_code >= 300]
        # every one of the 4 dataset uploads landed whole (4 distinct record ids)
        spots = c.get("/hotspots", params={"dataset": "race-data", "preset": "all-crime", "from": "2024-03",
                                           "to": "2024-03"})
        assert spots.status_code == 200 and spots.json()["total_count"] == 4, spots.text[:300]


def test_13_4_store_write_retries_a_transaction_conflict_then_answers_conflict(tmp_path):
    """Store.write: a DuckDB transaction conflict rolls back and re-runs the check-then-write; a persistent one
    is StoreConflict (the API's 409), never a raw DuckDB error (a 500)."""
    import duckdb

    from geodata.store import Store, StoreConflict

    store = Store(tmp_path / "s.duckdb")
    store.ensure_schema("CREATE TABLE IF NOT EXISTS t (name VARCHAR PRIMARY KEY)")
    tries = []

    def flaky(cur):
        tries.append(1)
        cur.execute("INSERT INTO t VALUES (?)", [f"n{len(tries)}"])
        if len(tries) < 3:
            raise duckdb.TransactionException("Conflict on tuple deletion!")
        return len(tries)

    assert store.write(flaky, scope="t") == 3
    assert store.query_df("SELECT name FROM t")["name"].tolist() == ["n3"]  # the failed attempts rolled back

    def always(cur):
        raise duckdb.TransactionException("Conflict on tuple deletion!")

    with pytest.raises(StoreConflict):
        store.write(always, scope="t")
    assert store.scope_lock("t").acquire(blocking=False)  # the lock is released after every outcome
    store.scope_lock("t").release()
    store.close()


# ------------------------------------------------------------------------------------------ 10: redaction
def test_13_10_a_key_in_the_query_string_is_never_logged_or_echoed(svc):
    admin = svc.keys["admin"]
    secret = admin.split("_", 2)[2]
    other = "hs_1234abcd_" + "S3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3t"
    with svc.client() as anon, svc.client("admin") as c:
        r = anon.get("/hotspots", params={"api_key": admin, "token": "tok-value-123", "top": 1})
        assert r.status_code == 401  # a key in the URL is never accepted
        assert anon.get(f"/hotspots?key={admin}&dataset={other}").status_code == 401
        # an error message that would echo the value (unknown dataset / preset) comes back redacted
        r = c.get("/hotspots", params={"dataset": other})
        assert r.status_code == 404 and "S3cr3t" not in r.text and "hs_1234abcd_[REDACTED]" in r.text, r.text
        r = c.get("/hotspots", params={"preset": other})
        assert r.status_code == 422 and "S3cr3t" not in r.text, r.text
        rows = audit_until(c, lambda rows: any("hs_1234abcd_" in (r["query"] or "") and r["status"] == 422
                                               for r in rows), limit=50)
    text = repr(rows)
    assert secret not in text and "S3cr3t" not in text and "tok-value-123" not in text
    refused = [r for r in rows if r["status"] == 401 and r["path"] == "/hotspots"]
    assert refused and any("api_key=[REDACTED]" in r["query"] and "token=[REDACTED]" in r["query"] for r in refused)
    assert any("hs_1234abcd_[REDACTED]" in (r["query"] or "") for r in rows)
    log = svc.log()
    assert "GET /hotspots?" in log  # uvicorn's access log is on ...
    assert secret not in log and "S3cr3t" not in log and "tok-value-123" not in log  # ... and redacted
    assert "api_key=[REDACTED]" in log


def test_13_10_store_file_and_data_dir_are_private(svc):
    import stat

    data = svc.server.env["HARMSPOT_DATA_DIR"]
    from pathlib import Path

    folder = Path(data)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for f in folder.iterdir():
        if f.name.startswith("harmspot.duckdb"):
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, (f, oct(f.stat().st_mode))


def test_13_10_redaction_rule_units():
    from app.redact import redact, redact_query, redact_target

    key = "hs_0a1b2c3d_" + "x" * 43
    assert redact(f"unknown dataset '{key}'") == "unknown dataset 'hs_0a1b2c3d_[REDACTED]'"
    assert redact_query(f"a=1&API_KEY=abc&X-Api-Key=def&access_token=ghi&password=p&q={key}") == (
        "a=1&API_KEY=[REDACTED]&X-Api-Key=[REDACTED]&access_token=[REDACTED]&password=[REDACTED]"
        "&q=hs_0a1b2c3d_[REDACTED]")
    assert redact_target(f"/x/{key}?dataset=essex&token=t") == "/x/hs_0a1b2c3d_[REDACTED]?dataset=essex&token=[REDACTED]"
    assert redact_query("dataset=essex-sample&preset=op-ark") == "dataset=essex-sample&preset=op-ark"


# ------------------------------------------------------------------------------------------ 11: demo mode
def test_13_11_last_admin_key_cannot_be_revoked_on_a_non_loopback_bind(tmp_path):
    s = start(tmp_path, env={"HARMSPOT_LOAD_SAMPLE": "false"}, roles=("admin",), host="0.0.0.0")  # keys only
    try:
        first = s.keys["admin"].split("_")[1]
        with s.client("admin") as c:
            r = c.delete(f"/keys/{first}")
            assert r.status_code == 409 and "last active" in r.json()["error"]["message"], r.text
            second = c.post("/keys", json={"name": "second admin", "role": "admin"}).json()
            viewer = c.post("/keys", json={"name": "a viewer", "role": "viewer"}).json()
            assert c.delete(f"/keys/{first}").status_code == 200  # another admin remains
        with httpx.Client(base_url=s.base, headers={"X-API-Key": second["key"]}) as c2:
            assert c2.delete(f"/keys/{second['key_id']}").status_code == 409  # the last admin (a viewer remains)
            assert c2.delete(f"/keys/{viewer['key_id']}").status_code == 200
            assert c2.delete(f"/keys/{second['key_id']}").status_code == 409  # the last key of all
        with s.client() as anon:  # never demo mode on this bind: no key, no data
            r = anon.get("/datasets")
            assert r.status_code == 401 and r.headers["x-harmspot-mode"] == "keys"
            assert anon.get("/health").json()["access"]["mode"] == "keys"
    finally:
        s.stop()


def test_13_11_no_keys_on_a_non_loopback_bind_is_never_demo_mode(tmp_path):
    """Started another way (uvicorn directly) bound to 0.0.0.0 with no key at all: the middleware checks the bind
    (HARMSPOT_HOST) at every request, so loopback clients are refused instead of becoming admin."""
    import os
    import subprocess
    import sys

    port = live.free_port()
    env = {**os.environ, "HARMSPOT_DATA_DIR": str(tmp_path / "data"), "HARMSPOT_HOST": "0.0.0.0",
           "HARMSPOT_LOAD_SAMPLE": "false"}
    log = (tmp_path / "uvicorn.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base, proc)
        with httpx.Client(base_url=base) as anon:
            for path in ("/datasets", "/keys", "/audit"):
                r = anon.get(path)
                assert r.status_code == 401 and r.headers["x-harmspot-mode"] == "keys", (path, r.text)
            assert anon.post("/keys", json={"name": "x", "role": "admin"}).status_code == 401
            health = anon.get("/health").json()["access"]
            assert health["mode"] == "keys" and "no active key" in health["message"]
    finally:
        live.stop(proc)


def test_13_11_demo_mode_refuses_requests_through_a_proxy(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from geodata.settings import Settings

    with TestClient(create_app(Settings(data_dir=tmp_path, load_sample=False))) as c:
        assert c.get("/datasets").status_code == 200  # loopback demo mode
        r = c.get("/datasets", headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "demo_mode_loopback_only"


def _wait(base: str, proc, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError("the server did not answer /health")


# ------------------------------------------------------------------------------------------ 12: public output
MONTH = {"dataset": "essex-sample", "from": "2024-04", "to": "2024-04"}


def _cells(body: dict) -> dict[str, tuple[int, float]]:
    rows = body["cells"] if "cells" in body else [f["properties"] for f in body["features"]]
    return {r["h3"]: (r["count"], r["harm"]) for r in rows}


def test_13_12_a_public_key_gets_public_output_on_every_door(svc):
    with svc.client("public") as p:
        for params in ({}, {"mode": "internal"}, {"mode": "internal", "resolution": 11, "top": 100_000}):
            body = p.get("/hotspots", params={**MONTH, **params}).json()
            d = body["disclosure"]
            assert d["mode"] == "public" and d["forced_by"] == "key" and body["resolution"] == 8
            assert body["cells"] and min(c["count"] for c in body["cells"]) >= 5
        geo = p.get("/hotspots.geojson", params=MONTH).json()
        assert geo["metadata"]["disclosure"]["forced_by"] == "key"
        assert min(f["properties"]["count"] for f in geo["features"]) >= 5
        # OGC items ignored mode=public before: at res 11 thousands of count-1 cells; now the public grid only
        items = p.get("/collections/harm-spots/items", params={"dataset": "essex-sample", "resolution": 11,
                                                               "limit": 10_000}).json()
        assert items["metadata"]["disclosure"]["forced_by"] == "key" and items["metadata"]["resolution"] == 8
        assert items["features"] and min(f["properties"]["count"] for f in items["features"]) >= 5
        one = items["features"][0]["id"]
        item = p.get(f"/collections/harm-spots/items/{one}", params={"dataset": "essex-sample"})
        assert item.status_code == 200 and item.json()["properties"]["count"] >= 5
        listed = {c["id"] for c in p.get("/collections").json()["collections"]}
        assert "harm-spots" in listed and "districts" in listed and "gistar" not in listed
        for path in ("/collections/gistar/items", "/tasking", "/hotspots/emerging", "/spikes",
                     "/keydates/england-2020-21-roadmap/2021-04-12/hotspots", "/evaluation", "/patrols",
                     "/datasets/essex-sample/rejects", "/rtm/runs"):
            r = p.get(path)
            assert r.status_code == 403 and r.json()["error"]["code"] in ("not_public", "forbidden"), (path, r.text)
        assert p.post("/keydates", json={"name": "x", "dates": [{"date": "2024-01-01", "label": "x"}]}).status_code == 403
        assert p.get("/datasets").status_code == 200 and p.get("/presets").status_code == 200


def test_13_12_public_output_gets_loaded_boundaries_not_automatic_outlines(svc):
    """Automatic lad/lsoa outlines follow the res-10 cells holding records (finer than the public grid): a public
    key gets loaded boundary layers only, on /collections and /areas/{layer}.geojson; a viewer gets both."""
    with svc.client("viewer") as v:
        cols = v.get("/collections").json()["collections"]
        auto = [c["id"] for c in cols if "automatic" in (c.get("keywords") or [])]
        assert auto, [c["id"] for c in cols]  # the sample has LSOA names: its automatic layers exist
        assert v.get("/areas/lad.geojson", params={"dataset": "essex-sample"}).status_code == 200
    with svc.client("public") as p:
        listed = {c["id"] for c in p.get("/collections").json()["collections"]}
        assert "districts" in listed and not listed & set(auto), listed
        r = p.get("/areas/lad.geojson", params={"dataset": "essex-sample"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_public", r.text[:300]
        assert p.get(f"/collections/{auto[0]}/items").status_code == 403
        assert p.get("/areas/districts.geojson", params={"dataset": "essex-sample"}).status_code == 200


def test_13_12_viewers_get_internal_output_and_every_role_can_preview_public(svc):
    for role in ("viewer", "analyst", "admin"):
        with svc.client(role) as c:
            internal = c.get("/hotspots", params={**MONTH, "resolution": 10}).json()
            assert "disclosure" not in internal and internal["resolution"] == 10
            preview = c.get("/hotspots", params={**MONTH, "mode": "public"}).json()
            assert preview["disclosure"]["forced_by"] is None and preview["resolution"] == 8
            assert c.get("/tasking", params={"mode": "public"}).status_code == 422  # no public form: refused


def test_13_12_public_key_cannot_difference_months(svc):
    """Jan-Feb minus Jan recovered February's small counts; now only whole calendar months are published."""
    with svc.client("public") as p:
        for window in ({"from": "2024-01", "to": "2024-02"}, {"from": "2024-02-01", "to": "2024-02-15"},
                       {"from": "2024-02-10", "to": "2024-03-09"}, {"to": "2024-02-20"}):
            r = p.get("/hotspots", params={"dataset": "essex-sample", **window})
            assert r.status_code == 403 and "whole calendar month" in r.json()["error"]["message"], (window, r.text)
        r = p.get("/collections/harm-spots/items", params={"dataset": "essex-sample",
                                                           "datetime": "2024-01-01/2024-02-29"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "disclosure_refused", r.text
        r = p.get("/hotspots", params={"dataset": "essex-sample", "from": "2024-05", "to": "2024-05"})
        assert r.status_code == 403 and "not complete" in r.json()["error"]["message"]
        jan = _cells(p.get("/hotspots", params={"dataset": "essex-sample", "from": "2024-01", "to": "2024-01",
                                               "top": 100_000}).json())
        feb = _cells(p.get("/hotspots", params={"dataset": "essex-sample", "from": "2024-02-01", "to": "2024-02-29",
                                               "top": 100_000}).json())
        ogc = p.get("/collections/harm-spots/items", params={"dataset": "essex-sample", "limit": 10_000,
                                                             "datetime": "2024-02-01/2024-02-29"})
        assert _cells(ogc.json()) == feb  # the same published month whichever door asks
    assert min(n for n, _ in [*jan.values(), *feb.values()]) >= 5


def test_13_12_public_key_cannot_difference_offence_selections(svc):
    with svc.client("public") as p:
        for extra in ({"offences": "robbery"}, {"offences": "violence-and-sexual-offences,robbery"},
                      {"include_asb": "true"}, {"weights": "race-weights"}, {"days": "4,5"}, {"hours": "20-3"},
                      {"method": "forecast"}):
            r = p.get("/hotspots", params={**MONTH, **extra})
            assert r.status_code == 403 and r.json()["error"]["code"] == "disclosure_refused", (extra, r.text)
        default = p.get("/hotspots", params={**MONTH, "top": 100_000}).json()
        assert default["preset"] == "all-crime"  # the one published selection, whatever the door's default
        for preset in ("all-crime", "op-ark", "nte", "community-violence"):  # another preset: the published one
            body = p.get("/hotspots", params={**MONTH, "preset": preset, "top": 100_000}).json()
            assert body["preset"] == "all-crime" and body["disclosure"]["preset_requested"] == preset
            assert _cells(body) == _cells(default)  # so one selection minus another is always zero


def test_13_12_public_key_cannot_difference_district_areas(svc):
    """Whole dataset minus a district recovered small counts of cells cut by the boundary; an area now keeps
    whole published cells (by centre), so every cell has the same count in every response that contains it."""
    with svc.client("public") as p:
        whole = _cells(p.get("/hotspots", params={**MONTH, "top": 100_000}).json())
        seen: dict[str, str] = {}
        for district in ("Southend-on-Sea", "Chelmsford", "Basildon", "Castle Point", "Rochford"):
            body = p.get("/hotspots", params={**MONTH, "area": f"districts:{district}", "top": 100_000}).json()
            part = _cells(body)
            assert part and all(whole[h] == v for h, v in part.items()), district  # a difference is always 0
            assert body["total_count"] == sum(n for n, _ in part.values())
            for h in part:
                assert seen.setdefault(h, district) == district  # by centre: a cell is in one district only
        bbox = _cells(p.get("/hotspots", params={**MONTH, "bbox": "0.6,51.5,0.8,51.6", "top": 100_000}).json())
        assert bbox and all(whole[h] == v for h, v in bbox.items())
        for res in (7, 9, 11):  # one published grid: no parent-minus-children differencing
            assert _cells(p.get("/hotspots", params={**MONTH, "resolution": res, "top": 100_000}).json()) == whole


def test_13_12_a_public_deployment_forces_public_output_for_every_role(tmp_path):
    s = start(tmp_path, env={"HARMSPOT_DISCLOSURE": "public", "HARMSPOT_PUBLIC_PERIOD": "quarter"},
              roles=("admin", "analyst", "viewer"))
    try:
        for role in ("viewer", "analyst", "admin"):
            with s.client(role) as c:
                q1 = c.get("/hotspots", params={"dataset": "essex-sample", "from": "2024-01", "to": "2024-03"})
                assert q1.status_code == 200 and q1.json()["disclosure"]["forced_by"] == "deployment", q1.text
                assert min(x["count"] for x in q1.json()["cells"]) >= 5
                month = c.get("/hotspots", params={"dataset": "essex-sample", "from": "2024-03", "to": "2024-03"})
                assert month.status_code == 403  # quarters are published here, so a month would difference them
                assert c.get("/tasking").status_code == 403
                assert c.get("/collections/harm-spots/items", params={"dataset": "essex-sample",
                                                                      "datetime": "2024-01-01/2024-03-31"}
                             ).json()["metadata"]["disclosure"]["forced_by"] == "deployment"
        with s.client("admin") as c:
            assert c.get("/keys").status_code == 200 and c.get("/audit").status_code == 200  # admin work goes on
    finally:
        s.stop()


# ------------------------------------------------------------------------------------------ 13: bounded queues
def test_13_13_rtm_runs_are_capped_per_key_with_429_and_retry_after(tmp_path):
    s = start(tmp_path, env={"HARMSPOT_RTM_MAX_QUEUED_PER_KEY": "2", "HARMSPOT_RTM_MAX_QUEUED": "3"},
              roles=("admin", "analyst"))
    body = {"dataset": "essex-sample", "resolution": 10, "bootstrap": 20}  # a county-wide run: seconds, not ms
    try:
        with s.client("analyst") as c:
            got = parallel(6, lambda i: c.post("/rtm/runs", json=body))
            codes = statuses(got)
            assert codes.count(202) == 2 and codes.count(429) == 4, [r.text[:200] for r in got]
            refused = next(r for r in got if r.status_code == 429)
            assert int(refused.headers["retry-after"]) >= 5
            assert refused.json()["error"]["code"] == "too_many_runs"
            mine = [r for r in c.get("/rtm/runs").json()["runs"] if r["status"] in ("queued", "running")]
            assert len(mine) == 2  # nothing was stored for the refused ones
        with s.client("admin") as c:
            assert c.post("/rtm/runs", json=body).status_code == 202  # the cap is per key ...
            r = c.post("/rtm/runs", json=body)
            assert r.status_code == 429 and "service has 3" in r.json()["error"]["message"]  # ... and in all
            rows = audit_until(c, lambda rows: sum(r["repeats"] for r in rows if r["status"] == 429) >= 5)
        assert sum(r["repeats"] for r in rows if r["status"] == 429 and r["path"] == "/rtm/runs") == 5
    finally:
        s.stop()


def test_13_13_unauthenticated_refusals_are_aggregated_not_one_row_each(svc):
    n = 3000
    with svc.client("admin") as c:
        before = c.get("/audit", params={"limit": 10_000}).json()["rows"]

    def hammer(i: int) -> int:
        with svc.client() as anon:
            return sum(anon.get("/hotspots" if j % 2 else f"/datasets/x{j}/rejects").status_code == 401
                       for j in range(i, n, 6))

    assert sum(parallel(6, hammer)) == n
    with svc.client("admin") as c:
        after = audit_until(c, lambda rows: sum(r["repeats"] for r in rows[: len(rows) - len(before)]
                                                if r["status"] == 401 and r["key_id"] is None) >= n)
    new = after[: len(after) - len(before)]
    refused = [r for r in new if r["status"] == 401 and r["key_id"] is None]
    assert sum(r["repeats"] for r in refused) == n  # every refusal counted ...
    assert len(refused) <= 4, len(refused)  # ... in a few rows (first one at once, the rest as a count)
    assert all(r["client"] == "127.0.0.1" for r in refused)


def test_13_13_refusal_aggregator_bounds_its_memory():
    from app.refusals import MANY, RefusalAggregator

    t = [0.0]
    agg = RefusalAggregator(window_s=60, max_buckets=100, clock=lambda: t[0])
    row = lambda c: ["at", None, None, "GET", "/x", "", None, 401, c, "keys", 1]  # noqa: E731
    written = [agg.admit(row(f"10.0.{i // 250}.{i % 250}"), f"10.0.{i // 250}.{i % 250}", 401, None)[0]
               for i in range(10_000)]
    assert sum(written) == 101 and len(agg._buckets) == 101  # 100 clients + one "(many clients)" bucket
    t[0] = 61.0
    _, due = agg.admit(row("10.9.9.9"), "10.9.9.9", 401, None)
    assert sum(r[-1] for r in due) == 10_000 - 101 and any(r[8] == MANY for r in due)


# ------------------------------------------------------------------------------------------ 15: the image starts keyed
def _dockerfile() -> tuple[str, dict[str, str], list[str], list[str]]:
    """(WORKDIR, ENV, CMD, COPY sources) of the repository's Dockerfile."""
    import json
    import shlex
    from pathlib import Path

    workdir, env, cmd, copies = "/", {}, [], []
    for line in (Path(__file__).resolve().parent.parent / "Dockerfile").read_text().splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "WORKDIR":
            workdir = rest.strip()
        elif word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "COPY":
            copies += shlex.split(rest)[:-1]
    return workdir, env, cmd, copies


class Image:
    """The image's entry command run here: its WORKDIR rebuilt from the COPY lines, its ENV with only the paths
    (/srv/harmspot, /data) and the port (8000 is not ours to take on a shared machine) mapped; the `harmspot`
    console script installed from this repository is the one `pip install .` puts on the image's PATH."""

    def __init__(self, tmp, extra_env: dict | None = None):
        import os
        import shutil
        from pathlib import Path

        workdir, env, cmd, copies = _dockerfile()
        root = Path(__file__).resolve().parent.parent
        self.work = tmp / "srv-harmspot"
        self.work.mkdir()
        for src in copies:
            (shutil.copytree if (root / src).is_dir() else shutil.copy)(root / src, self.work / Path(src).name)
        self.data = tmp / "data"
        self.port = live.free_port()
        mapped = {k: v.replace(workdir, str(self.work)).replace("/data", str(self.data)) for k, v in env.items()}
        mapped["HARMSPOT_PORT"] = str(self.port)
        assert mapped["HARMSPOT_HOST"] == "0.0.0.0" and cmd == ["harmspot", "serve"], (env, cmd)
        # the image's environment, not the developer's: no HARMSPOT_* or PYTHON* variable leaks in
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HARMSPOT_", "PYTHON"))}
        self.env = {**base, **mapped, **(extra_env or {})}
        self.cmd = [str(live.HARMSPOT), *cmd[1:]]
        self.tmp = tmp
        self.runs = 0

    def start(self):
        import subprocess

        self.runs += 1
        self.log = self.tmp / f"image-{self.runs}.log"
        self.proc = subprocess.Popen(self.cmd, cwd=self.work, env=self.env, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        _wait(self.base, self.proc)
        return self

    def stop(self):
        live.stop(self.proc)


def _printed_keys(text: str) -> list[str]:
    import re

    return re.findall(r"hs_[0-9a-f]{8}_[A-Za-z0-9_-]{32,}", text)


def test_13_15_the_image_entry_command_starts_keyed_and_prints_the_admin_key_once(tmp_path):
    import stat

    img = Image(tmp_path)
    img.start()
    try:
        keys = _printed_keys(img.log.read_text())
        assert len(keys) == 1, img.log.read_text()[-2000:]
        with httpx.Client(base_url=img.base) as anon:
            health = anon.get("/health").json()
            assert health["access"]["mode"] == "keys" and health["offences"] > 0  # the bundled sample is found
            assert anon.get("/hotspots").status_code == 401
        with httpx.Client(base_url=img.base, headers={"X-API-Key": keys[0]}) as admin:
            assert admin.get("/hotspots", params={"top": 1}).status_code == 200
            assert [k["role"] for k in admin.get("/keys").json()["keys"]] == ["admin"]
        assert stat.S_IMODE(img.data.stat().st_mode) == 0o700
    finally:
        img.stop()
    img.start()  # a restart: the key stays, nothing new is printed
    try:
        assert _printed_keys(img.log.read_text()) == []
        with httpx.Client(base_url=img.base, headers={"X-API-Key": keys[0]}) as admin:
            assert admin.get("/keys").status_code == 200
    finally:
        img.stop()


def test_13_15_the_first_admin_key_can_come_from_a_secret_file(tmp_path):
    from app.security import new_key

    key = new_key()
    secret = tmp_path / "harmspot_admin_key"
    secret.write_text(key + "\n")
    img = Image(tmp_path, {"HARMSPOT_ADMIN_KEY_FILE": str(secret), "HARMSPOT_LOAD_SAMPLE": "false"})
    img.start()
    try:
        assert _printed_keys(img.log.read_text()) == []  # nothing secret in the log
        with httpx.Client(base_url=img.base, headers={"X-API-Key": key}) as admin:
            assert admin.get("/keys").json()["keys"][0]["name"].startswith("first admin (HARMSPOT_ADMIN_KEY)")
        with httpx.Client(base_url=img.base) as anon:
            assert anon.get("/datasets").status_code == 401
    finally:
        img.stop()
