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

from tests.server.conftest import DATA, ROOT, start_server, stop_server

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException


def test_sigterm_drains_in_flight_requests(tmp_path):
    srv = start_server([str(DATA / "guard.yaml")], log=tmp_path / "serve.log")
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
        time.sleep(0.2)  # the request is inside the 0.5 s node
        srv.process.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        other = grpcclient.InferenceServerClient(srv.grpc_url)
        with pytest.raises(InferenceServerException) as info:
            other.infer("guard", [x], outputs=slow)
        assert "UNAVAILABLE" in info.value.status()
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
