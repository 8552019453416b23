"""kill -9 a real `harmspot ingest` mid-batch: the store stays consistent with the last committed batch,
reopens, and a restarted ingest completes.

The kill is timed from the outside, by watching the store files: DuckDB writes a big insert's blocks into the
database file while the transaction is open and writes the commit to the WAL at the end. Killing while the file
has grown but the WAL has not is killing in the middle of the batch's transaction.
"""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARMSPOT = Path(sys.executable).parent / "harmspot"
LEICS = ROOT.parent / "shared" / "data" / "crime" / "leicestershire_street_2019-12_to_2022-10.csv.gz"
SAMPLE = ROOT / "sample" / "essex_street_2024-01_to_2024-04.csv.gz"


def env_for(data_dir: Path) -> dict:
    return {**os.environ, "HARMSPOT_DATA_DIR": str(data_dir), "HARMSPOT_LOAD_SAMPLE": "false"}


def ingest(data_dir: Path, file: Path, dataset: str) -> subprocess.Popen:
    return subprocess.Popen([str(HARMSPOT), "ingest", str(file), "--dataset", dataset], env=env_for(data_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def sizes(data_dir: Path) -> tuple[int, int]:
    def size(p: Path) -> int:
        try:
            return p.stat().st_size
        except FileNotFoundError:
            return 0
    return size(data_dir / "harmspot.duckdb"), size(data_dir / "harmspot.duckdb.wal")


def kill_when(proc: subprocess.Popen, data_dir: Path, condition, timeout: float = 90.0) -> bool:
    """Poll the store files every few ms; SIGKILL the process when ``condition(db, wal)`` holds."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        db, wal = sizes(data_dir)
        if condition(db, wal):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return True
        time.sleep(0.003)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    return False


def check_consistent(data_dir: Path) -> dict[str, int]:
    """Reopen the store (as a restarted service would) and check every batch is whole; offences per dataset."""
    from geodata.store import Store

    store = Store(data_dir / "harmspot.duckdb")
    try:
        bad = store.query_df("""
            SELECT b.batch_id, b.stored, b.rejected,
                   (SELECT count(*) FROM offences o WHERE o.batch_id = b.batch_id) AS offences,
                   (SELECT count(*) FROM rejects r WHERE r.batch_id = b.batch_id) AS rejects
            FROM batches b""")
        assert (bad["stored"] == bad["offences"]).all(), bad
        assert (bad["rejected"] == bad["rejects"]).all(), bad
        orphans = store.scalar("""SELECT count(*) FROM offences WHERE batch_id NOT IN (SELECT batch_id FROM batches)""")
        orphans += store.scalar("""SELECT count(*) FROM rejects WHERE batch_id NOT IN (SELECT batch_id FROM batches)""")
        assert orphans == 0
        keys = store.scalar("""SELECT count(*) FROM offences WHERE offence_key NOT IN
                                (SELECT offence_key FROM offence_keys)""")
        assert keys == 0
        counts = store.query_df("SELECT dataset, count(*) AS n FROM offences GROUP BY 1")
        return dict(zip(counts["dataset"], counts["n"].astype(int)))
    finally:
        store.close()


@pytest.fixture
def seeded(tmp_path):
    """A store with one committed batch (the Essex sample)."""
    proc = ingest(tmp_path, SAMPLE, "essex")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    stored = json.loads(out)["stored"]
    return tmp_path, stored


BIG_ROWS = 150_000  # enough for a multi-second batch of many blocks; the whole file doubled the suite's time here


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """The header and first BIG_ROWS rows of the real Leicestershire download, gzipped as downloaded."""
    if not LEICS.exists():
        pytest.skip(f"real data not available: {LEICS}")
    out = tmp_path_factory.mktemp("big") / "leics_head.csv.gz"
    with gzip.open(LEICS, "rt", encoding="utf-8", newline="") as src, gzip.open(out, "wt", encoding="utf-8",
                                                                                   newline="", compresslevel=1) as dst:
        for _, line in zip(range(BIG_ROWS + 1), src):
            dst.write(line)
    return out


def test_kill_9_mid_batch_leaves_last_committed_state(seeded, big_file):
    data_dir, essex = seeded
    db0, _ = sizes(data_dir)
    proc = ingest(data_dir, big_file, "leics")
    # mid-transaction: the insert has written >= 1 MB of blocks into the file, the commit is not in the WAL yet
    killed = kill_when(proc, data_dir, lambda db, wal: db > db0 + (1 << 20) and wal < (64 << 10))
    assert killed and proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed mid-batch"
    counts = check_consistent(data_dir)
    assert counts == {"essex": essex}  # exactly the last committed batch; nothing of the killed one
    # restart recovers: the same ingest runs to completion on the reopened store, and queries work
    proc = ingest(data_dir, big_file, "leics")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0
    report = json.loads(out)
    counts = check_consistent(data_dir)
    assert counts == {"essex": essex, "leics": report["stored"]} and report["stored"] > 0.8 * BIG_ROWS
    q = subprocess.run([str(HARMSPOT), "hotspots", "--dataset", "leics", "--top", "3", "--format", "csv"],
                       env=env_for(data_dir), capture_output=True, text=True, timeout=120)
    assert q.returncode == 0 and len(q.stdout.splitlines()) == 4


def test_kill_9_at_commit_is_all_or_nothing(seeded, big_file):
    data_dir, essex = seeded
    proc = ingest(data_dir, big_file, "leics")
    report_stored = None
    killed = kill_when(proc, data_dir, lambda db, wal: wal > (64 << 10))  # the commit is being written
    if not killed:
        report_stored = json.loads(proc.stdout.read())["stored"]
    counts = check_consistent(data_dir)
    assert counts.get("essex") == essex
    assert counts.get("leics", 0) in (0, report_stored or counts.get("leics", 0))
    if counts.get("leics"):  # committed before the kill: the whole batch is there, replayed from the WAL
        assert counts["leics"] > 0.8 * BIG_ROWS


def test_kill_9_while_reading_changes_nothing(seeded):
    data_dir, essex = seeded
    proc = ingest(data_dir, SAMPLE, "essex-again")
    time.sleep(0.3)  # still importing / parsing: nothing written yet
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    counts = check_consistent(data_dir)
    assert counts["essex"] == essex and counts.get("essex-again", 0) in (0, essex)


def test_kill_9_during_an_rtm_run(tmp_path):
    """SIGKILL a real `harmspot rtm` in its bootstrap stage: an earlier finished run and its cells are intact,
    the killed run has no cells and is left 'running' until the next start marks it failed ('interrupted'),
    and the store takes a new run."""
    env = env_for(tmp_path)
    poi = ROOT / "sample" / "poi"

    def cli(*args, **kw):
        return subprocess.run([str(HARMSPOT), *args], env=env, capture_output=True, text=True, timeout=300, **kw)

    assert cli("ingest", str(SAMPLE), "--dataset", "essex").returncode == 0
    for name, file, kind in (("pubs", "essex_osm_pubs.csv", "pub"), ("stations", "essex_railway_stations.csv",
                                                                     "railway station")):
        assert cli("layer", "add", str(poi / file), "--name", name, "--type", kind, "--dataset", "essex").returncode == 0
    base = ["rtm", "--dataset", "essex", "--resolution", "8", "--test-months", "1", "--format", "json"]
    first = cli(*base, "--bootstrap", "0", "--quiet")
    assert first.returncode == 0, first.stderr
    done_id = json.loads(first.stdout)["id"]

    proc = subprocess.Popen([str(HARMSPOT), *base, "--bootstrap", "100"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    seen = b""
    deadline = time.monotonic() + 120
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline and b"bootstrap" not in seen and proc.poll() is None:
        seen += proc.stderr.read() or b""
        time.sleep(0.02)
    assert b"bootstrap" in seen and proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)

    from app.rtm_jobs import get_run, list_runs, recover_interrupted
    from geodata.store import Store

    store = Store(tmp_path / "harmspot.duckdb")
    try:
        runs = {r["id"]: r for r in list_runs(store)}
        killed = [r for r in runs.values() if r["id"] != done_id]
        assert len(killed) == 1 and killed[0]["status"] == "running" and killed[0]["stage"] == "bootstrap"
        kid = killed[0]["id"]
        assert store.scalar("SELECT count(*) FROM rtm_cells WHERE run_id = ?", [kid]) == 0
        done = get_run(store, done_id)
        assert done["status"] == "done" and done["result"]["factors"] is not None
        cells = store.scalar("SELECT count(*) FROM rtm_cells WHERE run_id = ?", [done_id])
        assert cells == done["result"]["grid"]["cells"]
        assert recover_interrupted(store) == 1  # what the service does at start-up
        after = get_run(store, kid)
        assert after["status"] == "failed" and after["error"].startswith("interrupted")
    finally:
        store.close()
    again = cli(*base, "--bootstrap", "0", "--quiet")
    assert again.returncode == 0, again.stderr
