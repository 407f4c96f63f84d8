"""One real `pipectl serve` subprocess for the server tests, on free 127.0.0.1 ports, with an API
key and a 1 MiB request limit. Clients pass the key; tests of the key leave it out."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123"
AUTH = {"authorization": f"Bearer {API_KEY}"}
PIPELINES = ("echo.yaml", "guard.yaml", "embed.yaml")
READY_TIMEOUT_S = 180


@dataclass
class Server:
    process: subprocess.Popen
    grpc_url: str
    http_url: str
    log: Path
    observed: list = field(default_factory=list)  # (live, ready) while waiting for ready

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str) -> int | None:
    request = urllib.request.Request(url, headers=AUTH)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    grpc_port, http_port = _free_port(), _free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    extra = [str(DATA / "llm.yaml")] if (DATA / "llm.yaml").exists() else []
    cmd = [
        sys.executable, "-m", "engine.cli", "serve",
        *(str(DATA / p) for p in PIPELINES), *extra,
        "--grpc-port", str(grpc_port), "--http-port", str(http_port),
        "--api-key", API_KEY, "--max-request-mb", "1", "--drain-timeout", "10",
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    srv = Server(process, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", log)
    base = f"http://{srv.http_url}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{srv.log_text()}")
            live = _status(f"{base}/v2/health/live")
            ready = _status(f"{base}/v2/health/ready")
            srv.observed.append((live, ready))
            if ready == 200:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_TIMEOUT_S}s:\n{srv.log_text()}")
            time.sleep(0.1)
        yield srv
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture(scope="session")
def grpc_client(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def http_client(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    yield client
    client.close()
