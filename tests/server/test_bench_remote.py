"""`pipectl bench` against a real `pipectl serve`: KServe v2 over gRPC and HTTP with the server's
per-node split read back from ModelStatistics, and streamed outputs (TTFT, inter-token latency,
tokens/s) over gRPC, HTTP generate_stream and /v1."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from tests.server.conftest import API_KEY

pytestmark = pytest.mark.integration
QUICK = ["--duration", "1", "--warmup", "0.2", "--no-progress", "-o", "json", "--api-key", API_KEY]


def _bench(capsys, *args: str) -> dict:
    code = main(["bench", *args, *QUICK])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_unary_levels_and_the_servers_node_split(server, capsys, scheme):
    url = server.grpc_url if scheme == "grpc" else server.http_url
    report = _bench(capsys, f"{scheme}://{url}", "--model", "echo", "-c", "1,4",
                    "--input", "text=hello", "--input", "x=[1,2,3,4]")  # fmt: skip
    assert not report["streaming"]
    for level in report["levels"]:
        assert level["requests"] > 0 and level["errors"] == 0, level
        assert set(level["nodes"]) == {"upper", "length", "scale"}
        for node in level["nodes"].values():  # the server counted what we sent, maybe more
            assert node["items"] >= level["requests"] * 0.5 and node["compute_ms"] > 0


def test_errors_are_counted_with_their_message(server, capsys):
    report = _bench(capsys, f"grpc://{server.grpc_url}", "--model", "guard", "-c", "2",
                    "--input", "x=[-1]")  # fmt: skip
    (level,) = report["levels"]
    assert level["errors"] > 0 and level["latency_ms"]["p50"] is None
    assert any("negative values are not allowed" in e for e in level["error_examples"])


def test_an_unknown_model_is_a_clear_error(server, capsys):
    args = ["bench", f"http://{server.http_url}", "--model", "nope", *QUICK]
    assert main(args) == 1
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["http://{}", "http://{}/v1"])
def test_a_failed_open_closes_its_http_session(server, target):
    """The session of a target that failed to open was left to the garbage collector, which
    printed 'Unclosed client session' after the error."""
    import subprocess
    import sys

    from tests.server.conftest import ROOT

    command = [sys.executable, "-m", "engine.cli", "bench", target.format(server.http_url),
               "--model", "nope", "--api-key", API_KEY, *QUICK]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1 and "'nope' is not served" in done.stderr
    assert "Unclosed" not in done.stderr, done.stderr


@pytest.mark.parametrize("scheme", ["grpc", "http", "v1"])
def test_streamed_outputs_report_ttft_itl_and_tokens(stream_server, capsys, scheme):
    url = {
        "grpc": f"grpc://{stream_server.grpc_url}",
        "http": f"http://{stream_server.http_url}",
        "v1": f"http://{stream_server.http_url}/v1",
    }[scheme]
    report = _bench(capsys, url, "-c", "2", "--input", "prompt=one two three four five six")
    assert report["model"] == "words" and report["streaming"]
    (level,) = report["levels"]
    assert level["requests"] > 0 and level["errors"] == 0, level
    ttft, itl, latency = level["ttft_ms"], level["itl_ms"], level["latency_ms"]
    assert 0 < ttft["p50"] <= latency["p50"]
    assert itl["p50"] > 0  # several deltas per request
    assert level["tokens_per_s"] >= level["rps"]  # at least one token per request


def test_clients_shared_among_processes(server, capsys):
    report = _bench(capsys, f"grpc://{server.grpc_url}", "--model", "echo", "-c", "4",
                    "--client-procs", "2", "--warmup", "3",
                    "--input", "text=hi", "--input", "x=[1,2,3,4]")  # fmt: skip
    (level,) = report["levels"]
    assert level["requests"] > 0 and level["errors"] == 0, level
    node = level["nodes"]["upper"]
    # the server saw about what both processes counted (items in flight at the edges differ)
    assert node["items"] >= level["requests"] * 0.5


def test_client_procs_need_a_server(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: pipectl/v1\n")
    assert main(["bench", str(path), "--client-procs", "2", *QUICK]) == 1
    assert "--client-procs needs a server URL" in capsys.readouterr().err
