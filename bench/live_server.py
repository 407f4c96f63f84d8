"""A `pipectl serve` subprocess on free 127.0.0.1 ports for the reliability benchmark, and the
few HTTP reads it needs (/metrics gauges, RSS of the server process). Stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    process: subprocess.Popen
    http: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    log: Path

    @classmethod
    def start(cls, files: list[str], log: Path, ready_s: float = 300) -> LiveServer:
        grpc_port, http_port = _free_port(), _free_port()
        cmd = [sys.executable, "-m", "engine.cli", "serve", *files,
               "--grpc-port", str(grpc_port), "--http-port", str(http_port)]  # fmt: skip
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        server = cls(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log)
        deadline = time.monotonic() + ready_s
        while server.status("/v2/health/ready") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"server not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return server

    def status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.http + path, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def metrics(self) -> dict[str, float]:
        """Every /metrics sample as `name{labels}` → value."""
        with urllib.request.urlopen(self.http + "/metrics", timeout=30) as response:
            text = response.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def gauge(self, prefix: str) -> float:
        """The sum of every sample whose key starts with `prefix`."""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
