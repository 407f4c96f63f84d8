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


def gated_guard(tmp_path: Path) -> tuple[Path, Path]:
    """guard.yaml with its `slow` node held by a gate folder (data/fns.py:gated): the node
    touches `entered` there and waits for `open`. Returns (pipeline file, gate folder)."""
    gate = tmp_path / "gate"
    gate.mkdir()
    text = (DATA / "guard.yaml").read_text()
    text = text.replace('"fns.py:', f'"{DATA / "fns.py"}:').replace("fns.py:slow", "fns.py:gated")
    pipeline = tmp_path / "guard.yaml"
    pipeline.write_text(text.replace("kwargs: {seconds: 0.5}", f'kwargs: {{folder: "{gate}"}}'))
    return pipeline, gate


def wait_for_file(path: Path, timeout_s: float = 30) -> None:
    """Until `path` exists (a gated node wrote it); AssertionError after `timeout_s`."""
    for _ in range(int(timeout_s / 0.01)):
        if path.exists():
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def start_server(files: list[str], *args: str, log: Path, module: str = "engine.cli") -> Server:
    """Start `python -m MODULE serve FILES ARGS` on free ports and wait (bounded) until it is
    ready."""
    grpc_port, http_port = _free_port(), _free_port()
    cmd = [
        sys.executable, "-m", module, "serve", *files,
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), *args,
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
                return srv
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_TIMEOUT_S}s:\n{srv.log_text()}")
            time.sleep(0.1)
    except BaseException:
        stop_server(srv)
        raise


def stop_server(srv: Server, timeout_s: float = 30) -> int:
    """SIGTERM the server by PID, wait for it (kill after `timeout_s`); returns its exit code."""
    process = srv.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    log = tmp_path_factory.mktemp("server") / "serve.log"
    files = [str(DATA / p) for p in PIPELINES]
    if (DATA / "llm.yaml").exists():
        files.append(str(DATA / "llm.yaml"))
    args = ("--api-key", API_KEY, "--max-request-mb", "1", "--drain-timeout", "10")
    srv = start_server(files, *args, log=log)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def stream_server(tmp_path_factory) -> Server:
    """A server of the deterministic streaming pipeline (words.yaml): the same CLI, started
    through tests/server/stream_kind.py so that its `test_words` kind is registered."""
    log = tmp_path_factory.mktemp("stream_server") / "serve.log"
    args = ("--api-key", API_KEY)
    srv = start_server(
        [str(DATA / "words.yaml")], *args, log=log, module="tests.server.stream_kind"
    )
    yield srv
    stop_server(srv)


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


@pytest.fixture(scope="session")
def openai_client(server):
    """The `openai` package's client on the server's /v1, with the key, no retries."""
    openai = pytest.importorskip("openai")
    with openai.OpenAI(
        base_url=f"http://{server.http_url}/v1", api_key=API_KEY, max_retries=0, timeout=120
    ) as c:
        yield c
