"""The real service in a subprocess (`harmspot serve` on a free loopback port, its own store), for hostile-input
tests against the process as deployed: real HTTP parsing, the body-limit middleware, keys, worker threads.

And the headless browser the map and docs tests drive against it (Debian chromium + chromium-driver through
Selenium; `scripts/install-browser.sh` installs them when root): `need_browser`, `chromium`, `wait_for`,
`screenshot`."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import http.client
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

HARMSPOT = Path(sys.executable).parent / "harmspot"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Live:
    base: str
    proc: subprocess.Popen
    env: dict
    key: str | None = None

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                key: str | None = "default", timeout: float = 120, chunked: bool = False,
                headers: dict[str, str | None] | None = None) -> Reply:
        """One request on its own connection. A server that answers before the whole body is sent (413 on the
        declared length) and closes is read like any other answer, not as a client-side write error. ``headers``
        are sent as given, a None value meaning "not sent" (an ``Accept-Encoding`` among them replaces
        http.client's ``identity``; ``Accept`` replaces ``application/json``); the body is read as sent (never
        decompressed)."""
        host, port = self.base.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        given = {k.lower() for k in headers or {}}
        try:
            conn.putrequest(method, path, skip_accept_encoding="accept-encoding" in given)
            if "accept" not in given:
                conn.putheader("Accept", "application/json")
            for name, value in (headers or {}).items():
                if value is not None:
                    conn.putheader(name, value)
            if content_type:
                conn.putheader("Content-Type", content_type)
            k = self.key if key == "default" else key
            if k:
                conn.putheader("X-API-Key", k)
            if body is not None and chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            try:
                if body is not None and chunked:
                    for i in range(0, len(body), 1 << 16):
                        piece = body[i:i + (1 << 16)]
                        conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    conn.send(b"0\r\n\r\n")
                elif body:
                    conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered and closed before the whole body went out
            resp = conn.getresponse()
            return Reply(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: bytes | str = b"", content_type: str | None = "text/csv", **kw) -> Reply:
        return self.request("POST", path, body.encode() if isinstance(body, str) else body, content_type, **kw)

    def harmspot(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(HARMSPOT), *args], env=self.env, capture_output=True, text=True, timeout=120)


def create_key(env: dict, role: str, name: str) -> str:
    made = subprocess.run([str(HARMSPOT), "keys", "create", "--role", role, "--name", name], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(made.stdout)["key"]


def start(data_dir: Path, log: Path, extra_env: dict | None = None, keys: dict[str, str] | None = None,
          host: str = "127.0.0.1") -> tuple[Live, dict]:
    """Start `harmspot serve`; ``keys`` = {name: role} creates API keys first (keyed mode). Returns the server
    and {name: key}. ``host`` is the bind address (clients always connect over loopback)."""
    # the server runs the code these tests import (a git worktree's, not the editable install's checkout)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HARMSPOT_DATA_DIR": str(data_dir), **(extra_env or {})}
    made = {name: create_key(env, role, name) for name, role in (keys or {}).items()}
    port = free_port()
    proc = subprocess.Popen([str(HARMSPOT), "serve", "--host", host, "--port", str(port)], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"harmspot serve exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return Live(base, proc, env, next(iter(made.values()), None)), made
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"harmspot serve did not start: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def serving(tmp: Path, extra_env: dict | None = None) -> Iterator[Live]:
    """`start` on a store in ``tmp``/data (log ``tmp``/server.log), stopped on leaving the block."""
    srv, _ = start(tmp / "data", tmp / "server.log", extra_env)
    try:
        yield srv
    finally:
        stop(srv.proc)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------- headless browser
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def have_browser() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def need_browser() -> None:
    """Skip the calling test or fixture, with the reason, when Chromium, ChromeDriver or Selenium are absent."""
    import pytest

    if not have_browser():
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[test]')")


def chromium(width: int, height: int, *, profile: Path | None = None, downloads: Path | None = None,
             args: tuple[str, ...] = (), page_load_timeout: float | None = 60) -> Any:
    """Headless Chromium (no sandbox, software rendering, no background networking) in a ``width`` x ``height``
    window; ``profile`` is its user-data directory, ``downloads`` where downloads go without a prompt, ``args``
    more command-line switches. The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                f"--window-size={width},{height}", "--disable-dev-shm-usage",
                *([f"--user-data-dir={profile}"] if profile else []), *args):
        opts.add_argument(arg)
    if downloads:
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    if downloads:
        d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    if page_load_timeout is not None:
        d.set_page_load_timeout(page_load_timeout)
    return d


def wait_for(driver: Any, script: str, timeout: float = 45) -> Any:
    """Run ``script`` in the page until it returns something truthy, and return that; on a timeout fail with the
    script and the page's #status text (the map's status line), when it has one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    status = driver.execute_script("var s = document.getElementById('status'); return s ? s.textContent : null")
    raise AssertionError(f"timed out waiting for: {script}; status: {status}")


def screenshot(driver: Any, name: str) -> None:
    """Save a screenshot as ``name`` under $HARMSPOT_SCREENSHOTS (relative to the repository), when it is set."""
    target = os.environ.get("HARMSPOT_SCREENSHOTS")
    if target:
        out = (ROOT / target) if not Path(target).is_absolute() else Path(target)
        out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out / name))
