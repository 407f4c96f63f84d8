"""The client examples in samples/clients/ work against a real server, as the README says."""

from __future__ import annotations

import subprocess
import sys

from tests.server.conftest import API_KEY, ROOT

CLIENTS = ROOT / "samples" / "clients"


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], check=False, capture_output=True, text=True, timeout=180, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_triton_grpc_sample_streams_tokens(server):
    out = _run(
        str(CLIENTS / "triton_grpc.py"), "--url", server.grpc_url, "--model", "chat",
        "--input", "prompt=Say hello.", "--stream", "--text-output", "text", "--api-key", API_KEY,
    )  # fmt: skip
    assert out.strip(), "no streamed text"


def test_triton_grpc_sample_unary_prints_outputs(server):
    out = _run(
        str(CLIENTS / "triton_grpc.py"), "--url", server.grpc_url, "--model", "chat",
        "--input", "prompt=Say hello.", "--api-key", API_KEY,
    )  # fmt: skip
    assert "finish_reason:" in out and "text:" in out


def test_openai_sample_chats(server):
    out = _run(
        str(CLIENTS / "openai_chat.py"), "--base-url", f"http://{server.http_url}/v1",
        "--model", "chat", "--api-key", API_KEY, "Say hello.",
    )  # fmt: skip
    assert out.strip()
