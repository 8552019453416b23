"""Access control: role boundaries (401/403), hashed keys, audit rows, demo mode, CORS closed, serve refusal."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.security import keyring_of, create_key, required_role, revoke_key
from geodata.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample" / "essex_street_2024-01_to_2024-04.csv.gz"


def small_csv(n: int = 30) -> bytes:
    lines = gzip.decompress(SAMPLE.read_bytes()).decode().splitlines()
    return ("\n".join(lines[: n + 1]) + "\n").encode()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A service with one key of each role (and one revoked key)."""
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("sec")))
    with TestClient(app) as client:
        store = app.state.harmspot.store
        keys = {role: create_key(store, role, f"test {role}")[1] for role in ("viewer", "analyst", "admin")}
        revoked_id, revoked = create_key(store, "admin", "gone")
        revoke_key(store, revoked_id)
        keyring_of(app).reload()
        keys["revoked"] = revoked
        yield client, keys, app


def h(key: str) -> dict:
    return {"X-API-Key": key}


def test_role_table_is_the_one_place():
    assert required_role("GET", "/health") is None
    assert required_role("GET", "/openapi.json") is None
    assert required_role("GET", "/static/map.js") is None
    assert required_role("GET", "/hotspots") == "public"  # public keys get it disclosure-controlled
    assert required_role("GET", "/hotspots.geojson") == "public"
    assert required_role("GET", "/collections/hotspots/items") == "public"
    assert required_role("GET", "/datasets") == "public"
    assert required_role("GET", "/tasking") == "viewer"  # no public form
    assert required_role("GET", "/hotspots/emerging") == "viewer"
    assert required_role("GET", "/spikes") == "viewer"
    assert required_role("GET", "/datasets/x/rejects") == "analyst"
    assert required_role("POST", "/datasets") == "analyst"
    assert required_role("POST", "/rtm/runs") == "analyst"
    assert required_role("POST", "/patrols") == "analyst"
    assert required_role("POST", "/keydates") == "analyst"
    assert required_role("POST", "/harm-weights") == "admin"
    assert required_role("GET", "/harm-weights") == "public"
    assert required_role("GET", "/keys") == "admin"
    assert required_role("DELETE", "/keys/abc") == "admin"
    assert required_role("GET", "/audit") == "admin"
    assert required_role("POST", "/something-new") == "analyst"


def test_no_key_is_401_and_open_paths_stay_open(keyed):
    client, _, _ = keyed
    r = client.get("/hotspots")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert "X-API-Key" in r.headers["www-authenticate"]
    assert r.headers["x-harmspot-mode"] == "keys"
    for path in ("/health", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path
    health = client.get("/health").json()
    assert health["access"]["mode"] == "keys"


def test_bad_revoked_and_query_string_keys_are_401(keyed):
    client, keys, _ = keyed
    assert client.get("/hotspots", headers=h("hs_deadbeef_nope")).status_code == 401
    assert client.get("/hotspots", headers=h("garbage")).status_code == 401
    assert client.get("/hotspots", headers=h(keys["revoked"])).status_code == 401
    assert client.get("/hotspots", headers=h(keys["viewer"][:-2] + "xx")).status_code == 401
    assert client.get("/hotspots", params={"api_key": keys["admin"]}).status_code == 401  # header only


def test_viewer_boundaries(keyed):
    client, keys, _ = keyed
    v = h(keys["viewer"])
    assert client.get("/hotspots", params={"top": 3}, headers=v).status_code == 200
    assert client.get("/hotspots.geojson", params={"top": 3}, headers=v).status_code == 200
    assert client.get("/datasets", headers=v).status_code == 200
    r = client.post("/datasets", files={"files": ("a.csv", small_csv())}, data={"dataset": "v-up"}, headers=v)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/datasets/essex-sample/rejects", headers=v).status_code == 403
    assert client.get("/keys", headers=v).status_code == 403
    assert client.post("/harm-weights", files={"file": ("w.csv", b"category,days\nrobbery,365\n")},
                       data={"name": "w"}, headers=v).status_code == 403


def test_analyst_boundaries(keyed):
    client, keys, _ = keyed
    a = h(keys["analyst"])
    r = client.post("/datasets", files={"files": ("a.csv", small_csv())}, data={"dataset": "analyst-up"}, headers=a)
    assert r.status_code == 201, r.text
    assert client.get("/datasets/analyst-up/rejects", headers=a).status_code == 200
    assert client.get("/keys", headers=a).status_code == 403
    assert client.post("/keys", json={"name": "x", "role": "admin"}, headers=a).status_code == 403
    assert client.post("/harm-weights", files={"file": ("w.csv", b"category,days\nrobbery,365\n")},
                       data={"name": "w"}, headers=a).status_code == 403
    assert client.get("/audit", headers=a).status_code == 403


def test_admin_creates_and_revokes_keys(keyed):
    client, keys, app = keyed
    ad = h(keys["admin"])
    r = client.post("/keys", json={"name": "new viewer", "role": "viewer"}, headers=ad)
    assert r.status_code == 201
    new = r.json()
    assert new["key"].startswith(f"hs_{new['key_id']}_")
    assert client.get("/hotspots", params={"top": 1}, headers=h(new["key"])).status_code == 200
    listed = client.get("/keys", headers=ad).json()["keys"]
    assert any(k["key_id"] == new["key_id"] for k in listed)
    assert all("key_hash" not in k and "salt" not in k for k in listed)
    # secrets are never stored: only salted hashes
    stored = app.state.harmspot.store.query_df("SELECT * FROM api_keys")
    secret = new["key"].split("_", 2)[2]
    assert not stored.astype(str).apply(lambda col: col.str.contains(secret, regex=False)).any().any()
    assert client.delete(f"/keys/{new['key_id']}", headers=ad).status_code == 200
    assert client.get("/hotspots", params={"top": 1}, headers=h(new["key"])).status_code == 401
    assert client.delete(f"/keys/{new['key_id']}", headers=ad).status_code == 404
    assert client.post("/keys", json={"name": "x", "role": "superuser"}, headers=ad).status_code == 422
    r = client.post("/harm-weights", files={"file": ("w.csv", b"category,days\nrobbery,365\n")},
                    data={"name": "w-admin"}, headers=ad)
    assert r.status_code != 403 and r.status_code < 500


def test_audit_log_rows(keyed):
    client, keys, app = keyed
    vid = keys["viewer"].split("_")[1]
    client.get("/hotspots", params={"dataset": "essex-sample", "top": 2, "preset": "all-crime"},
               headers=h(keys["viewer"]))
    client.post("/datasets", files={"files": ("b.csv", small_csv(10))}, data={"dataset": "audited-up"},
                headers=h(keys["analyst"]))
    client.get("/hotspots", params={"dataset": "essex-sample"})  # refused: no key
    rows = client.get("/audit", params={"limit": 50}, headers=h(keys["admin"])).json()["rows"]
    fetch = next(r for r in rows if r["key_id"] == vid and r["path"] == "/hotspots")
    assert fetch["dataset"] == "essex-sample" and fetch["status"] == 200 and fetch["role"] == "viewer"
    assert "preset=all-crime" in fetch["query"] and fetch["method"] == "GET" and fetch["at_utc"]
    upload = next(r for r in rows if r["path"] == "/datasets" and r["method"] == "POST" and r["status"] == 201
                  and r["dataset"] == "audited-up")
    assert upload["role"] == "analyst"
    refused = [r for r in rows if r["status"] == 401 and r["key_id"] is None]
    assert refused and refused[0]["dataset"] == "essex-sample"
    forbidden = [r for r in rows if r["status"] == 403 and r["role"] == "viewer"]
    assert forbidden  # the viewer's refused upload is in the log too
    assert not [r for r in rows if r["path"] == "/health"]  # health checks are not audited


def test_demo_mode_is_labelled_and_open_on_loopback(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, load_sample=False))
    with TestClient(app) as client:
        r = client.get("/health")
        assert r.json()["access"]["mode"] == "demo"
        assert "DEMO" in r.json()["access"]["message"]
        assert r.headers["x-harmspot-mode"] == "demo"
        assert client.get("/datasets").status_code == 200
        assert client.get("/keys").status_code == 200  # no access control in demo mode
        app.state.harmspot_audit.flush()  # rows are buffered (app/rowwriter.py); GET /audit flushes the same way
        rows = app.state.harmspot.store.query_df("SELECT * FROM audit_log")
        assert len(rows) and (rows["key_id"] == "demo").all() and (rows["mode"] == "demo").all()
        # creating the first key ends demo mode at once
        key = client.post("/keys", json={"name": "first admin", "role": "admin"}).json()["key"]
        assert client.get("/datasets").status_code == 401
        assert client.get("/datasets", headers=h(key)).status_code == 200
        assert client.get("/health").json()["access"]["mode"] == "keys"


def test_demo_mode_refuses_remote_clients(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, load_sample=False))
    with TestClient(app, client=("192.0.2.7", 5000)) as client:
        r = client.get("/datasets")
        assert r.status_code == 403 and r.json()["error"]["code"] == "demo_mode_loopback_only"


def test_keys_required_mode_without_keys(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, load_sample=False, keys_mode="required"))
    with TestClient(app) as client:
        assert client.get("/datasets").status_code == 401
        assert client.get("/health").json()["access"]["mode"] == "keys"


def test_cors_closed_by_default_and_opt_in(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "a", load_sample=False))
    with TestClient(app) as client:
        r = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = client.options("/datasets", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers
    app = create_app(Settings(data_dir=tmp_path / "b", load_sample=False, cors_origins="https://gis.force.example"))
    with TestClient(app) as client:
        r = client.get("/health", headers={"Origin": "https://gis.force.example"})
        assert r.headers["access-control-allow-origin"] == "https://gis.force.example"
        r = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_cli_keys(tmp_path, capsys):
    """(A non-loopback `harmspot serve` without keys now starts keyed: tests/test_issue13_security.py, 13.15.)"""
    from app import cli

    settings = Settings(data_dir=tmp_path, load_sample=False)
    args = cli.build_parser().parse_args(["keys", "create", "--role", "analyst", "--name", "cli analyst"])
    assert cli.cmd_keys(args, settings) == 0
    out = capsys.readouterr().out
    import json

    created = json.loads(out)
    assert created["role"] == "analyst" and created["key"].startswith("hs_")
    assert cli.cmd_keys(cli.build_parser().parse_args(["keys", "list"]), settings) == 0
    assert "cli analyst" in capsys.readouterr().out
    assert cli.cmd_keys(cli.build_parser().parse_args(["keys", "revoke", created["key_id"]]), settings) == 0
    assert cli.cmd_keys(cli.build_parser().parse_args(["keys", "revoke", created["key_id"]]), settings) == 1


def test_13_14_a_method_no_route_takes_is_405_with_allow_whatever_the_key(keyed):
    """Issue 13 item 14: an undeclared method is a 405 listing every method the path takes (RFC 9110), before
    and regardless of the key's role; no handler runs. A declared method keeps its 401/403."""
    client, keys, _ = keyed
    for key in ("", keys["viewer"], keys["analyst"]):
        r = client.request("PUT", "/keys", headers=h(key) if key else {})
        assert r.status_code == 405, (key, r.text)
        assert r.headers["allow"] == "GET, POST"
        assert r.json()["error"]["code"] == "method_not_allowed"
        r = client.request("TRACE", "/keys/abc", headers=h(key) if key else {})
        assert r.status_code == 405 and r.headers["allow"] == "DELETE", r.text
    assert client.get("/keys", headers=h(keys["analyst"])).status_code == 403
    assert client.get("/keys").status_code == 401
    assert client.request("OPTIONS", "/datasets", headers=h(keys["analyst"])).headers["allow"] == "GET, POST"
