"""`pipectl serve` start and stop: SIGTERM lets in-flight requests finish, refuses new ones,
and exits 0; a broken pipeline file stops the command before it listens."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.server.conftest import (
    DATA,
    ROOT,
    _status,
    gated_guard,
    start_server,
    stop_server,
    wait_for_file,
)

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException


def _wait_for_refusal(srv) -> None:
    """Until the server says it is draining (readiness 503): then new requests are refused."""
    for _ in range(3000):
        if _status(f"http://{srv.http_url}/v2/health/ready") == 503:
            return
        time.sleep(0.01)
    raise AssertionError("the server never started draining")


def test_sigterm_drains_in_flight_requests(tmp_path):
    pipeline, gate = gated_guard(tmp_path)
    srv = start_server([str(pipeline)], log=tmp_path / "serve.log")
    try:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        x = grpcclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.full((1, 1), 7, dtype=np.float32))
        slow = [grpcclient.InferRequestedOutput("slow")]
        got: dict = {}

        def call():
            got["slow"] = client.infer("guard", [x], outputs=slow).as_numpy("slow")

        worker = threading.Thread(target=call)
        worker.start()
        wait_for_file(gate / "entered")  # the request is inside the node
        srv.process.send_signal(signal.SIGTERM)
        _wait_for_refusal(srv)
        other = grpcclient.InferenceServerClient(srv.grpc_url)
        with pytest.raises(InferenceServerException) as info:
            other.infer("guard", [x], outputs=slow)
        assert "UNAVAILABLE" in info.value.status()
        (gate / "open").touch()
        worker.join(timeout=10)
        assert got["slow"].tolist() == [[7.0]]
        assert srv.process.wait(timeout=20) == 0
    finally:
        stop_server(srv)
    log = srv.log_text()
    assert "draining 1 in-flight" in log and "stopped" in log


def test_a_broken_pipeline_file_is_reported_before_listening(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (DATA / "guard.yaml").read_text()
    bad.write_text(text.replace("inputs: {x: $inputs.x}", "inputs: {x: $inputs.nope}", 1))
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        str(bad),
        "--grpc-port",
        "0",
        "--http-port",
        "0",
    ]
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "nope" in done.stderr and "gRPC on" not in done.stderr


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_during_loading_exits_at_once(tmp_path, sig):
    """The node takes 120 s to load; the signal is obeyed long before, the ports are free."""
    from tests.server.conftest import _free_port

    grpc_port, http_port = _free_port(), _free_port()
    cmd = [
        sys.executable, "-m", "engine.cli", "serve", str(DATA / "slow_load.yaml"),
        "--grpc-port", str(grpc_port), "--http-port", str(http_port),
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "loading pipeline" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)  # inside the load
        process.send_signal(sig)
        # generous: the load alone would take 120 s
        assert process.wait(timeout=40) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    text = log.read_text()
    assert "stopping while loading" in text and "stopped" in text, text
    assert _free(grpc_port) and _free(http_port)
