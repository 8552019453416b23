"""Issue 13, security slice (items 4, 10, 11, 12, 13, 15), each against a real `harmspot serve` process in keyed
mode (tests/live.py), over HTTP, with whatever pandas/DuckDB pip installed. Tests are named after the item."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import live

ROLES = ("admin", "analyst", "viewer")


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

    assert store.write(flaky) == 3
    assert store.query_df("SELECT name FROM t")["name"].tolist() == ["n3"]  # the failed attempts rolled back

    def always(cur):
        raise duckdb.TransactionException("Conflict on tuple deletion!")

    with pytest.raises(StoreConflict):
        store.write(always)
    assert store.write_lock.acquire(blocking=False)  # the lock is released after every outcome
    store.write_lock.release()
    store.close()
