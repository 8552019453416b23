"""A real `harmspot serve` process for hostile-input tests: keyed mode (an admin key made with the CLI before
the start), a free loopback port (tests.live.free_port), its own data dir; peak RSS read from /proc. Stopped by
the test's fixture."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.live import HARMSPOT, free_port


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict = field(default_factory=dict)

    def json(self):
        return json.loads(self.body)


@dataclass
class LiveServer:
    data_dir: Path
    env: dict
    key: str = ""
    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path = Path("/nonexistent")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(HARMSPOT), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self) -> "LiveServer":
        made = self.cli("keys", "create", "--role", "admin", "--name", "hostile-tests")
        assert made.returncode == 0, made.stderr
        self.key = json.loads(made.stdout)["key"]
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="harmspot-serve-", suffix=".log")[1])
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(HARMSPOT), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                         env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"harmspot serve exited: {self.log_tail()}")
            try:
                if self.request("GET", "/health", timeout=2).status == 200:
                    return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("harmspot serve did not start")

    def log_tail(self, chars: int = 8000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.unlink(missing_ok=True)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 300) -> Response:
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers={"X-API-Key": self.key, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, r.read(), dict(r.headers))
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read(), dict(e.headers))

    def upload(self, files: list[tuple[str, bytes]], dataset: str = "hostile", **fields: str) -> Response:
        body, ctype = multipart(files, {"dataset": dataset, **fields})
        return self.request("POST", "/datasets", body, {"Content-Type": ctype})

    def peak_rss_mb(self) -> float:
        """VmHWM of the server process (its peak resident set so far)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")


BOUNDARY = "harmspot-test-boundary-7f3a"


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    parts = []
    for name, value in fields.items():
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, data in files:
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={BOUNDARY}"


def server_env(data_dir: Path, **settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARMSPOT_")}
    env.update({"HARMSPOT_DATA_DIR": str(data_dir), "HARMSPOT_LOAD_SAMPLE": "false", "HARMSPOT_AUDIT": "true"})
    env.update({f"HARMSPOT_{k.upper()}": str(v) for k, v in settings.items()})
    return env
