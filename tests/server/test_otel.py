"""OpenTelemetry traces. In process: the HTTP and gRPC faces on real sockets over one Repository,
stock tritonclient clients, spans caught by the SDK's InMemorySpanExporter: they nest, parallel
branches overlap (Triton reports them wrongly, triton-inference-server/server#5296), a skipped
conditional node is marked, a client's W3C traceparent is honoured on both protocols. End to end:
`pipectl serve --otlp-endpoint` sends OTLP/HTTP to a small collector run by the test."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from engine.compiler import compile_file
from engine.server.otel import endpoint_from, traces_url
from tests.server.conftest import DATA, ROOT, start_server, stop_server

pytestmark = pytest.mark.integration
pytest.importorskip("opentelemetry.sdk", reason="the otel extra: pip install 'pipectl[otel]'")
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def _x(module, value: float):
    x = module.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return [x]


async def _serve_and_call(exporter) -> None:
    """Serve branches.yaml on both protocols in this process; one HTTP request with x=1 and a
    traceparent, one gRPC request with x=-1 and the same traceparent."""
    from aiohttp import web

    from engine.server import grpc as grpc_face
    from engine.server.app import ServeOptions, build_http_app
    from engine.server.otel import OtelTracer
    from engine.server.repository import Repository

    repo = Repository()
    repo.add(compile_file(DATA / "branches.yaml"))
    await asyncio.to_thread(repo.load, "branches")
    tracer = OtelTracer(repo, exporter=exporter, batch=False)
    repo.add_tracer(tracer)
    runner = web.AppRunner(build_http_app(repo, ServeOptions()))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    http_port = runner.addresses[0][1]
    grpc_server, _, grpc_port = grpc_face.build_server(repo, "127.0.0.1", 0)
    await grpc_server.start()

    def call() -> None:
        http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        http.infer("branches", _x(httpclient, 1.0), headers={"traceparent": TRACEPARENT})
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        grpc.infer("branches", _x(grpcclient, -1.0), headers={"traceparent": TRACEPARENT})
        grpc.infer("branches", _x(grpcclient, 2.0))  # no traceparent: a trace of its own

    try:
        await asyncio.to_thread(call)
    finally:
        await grpc_server.stop(None)
        await runner.cleanup()
        await asyncio.to_thread(repo.stop)
        tracer.shutdown()


def _children(spans, parent):
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_spans_nest_overlap_for_parallel_branches_and_mark_skipped_nodes():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    asyncio.run(_serve_and_call(exporter))
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "branches"]
    assert len(roots) == 3
    # the client's trace continues (same trace id, parent = the client's span) on both protocols
    traced = [r for r in roots if r.parent is not None]
    assert len(traced) == 2
    for root in traced:
        assert f"{root.context.trace_id:032x}" == TRACE_ID
        assert f"{root.parent.span_id:016x}" == PARENT_ID
    assert len({r.context.trace_id for r in roots}) == 2  # the third request: a trace of its own
    skipped_in = []
    for root in roots:
        nodes = {s.name: s for s in _children(spans, root)}
        assert set(nodes) == {"left", "right", "join", "positive"}, nodes
        left, right, join = nodes["left"], nodes["right"], nodes["join"]
        # parallel branches overlap in time; the join starts after both ended
        assert left.start_time < right.end_time and right.start_time < left.end_time
        assert join.start_time >= max(left.end_time, right.end_time)
        for span in (left, right, join):
            queue, compute = sorted(_children(spans, span), key=lambda s: s.start_time)
            assert (queue.name, compute.name) == ("queue", "compute")
            assert span.start_time == queue.start_time <= queue.end_time == compute.start_time
            assert compute.end_time == span.end_time
            assert span.attributes["pipectl.device"] == "cpu"
            assert span.attributes["pipectl.batch_size"] >= 1
            assert span.attributes["pipectl.kind"] == "python"
            assert span.attributes["pipectl.skipped"] is False
        assert right.attributes["pipectl.instance"] in (0, 1)
        for span in nodes.values():  # node spans lie within the request's span
            assert root.start_time <= span.start_time and span.end_time <= root.end_time
        positive = nodes["positive"]
        if positive.attributes["pipectl.skipped"]:
            assert positive.start_time == positive.end_time and not _children(spans, positive)
            skipped_in.append(root)
        else:
            assert len(_children(spans, positive)) == 2
    # x = -1: join makes -2 and `when: x > 0` is false; only that request skipped `positive`
    assert len(skipped_in) == 1


def test_endpoint_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert endpoint_from(None) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert endpoint_from(None) == "http://collector:4318"
    assert endpoint_from("http://other:4318/") == "http://other:4318/"
    assert traces_url("http://other:4318/") == "http://other:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
    with pytest.raises(ValueError, match=r"\$OTEL_EXPORTER_OTLP_ENDPOINT 'collector:4318'"):
        endpoint_from(None)


@pytest.mark.parametrize("endpoint", ["garbage", "ftp://c:4318", "http://c:99999", "http://"])
def test_serve_refuses_an_endpoint_that_is_no_url(endpoint):
    """The SDK takes any string and then fails every export in a background thread: the
    server used to start and serve while sending no trace anywhere."""
    command = [sys.executable, "-m", "engine.cli", "serve", str(DATA / "echo.yaml"),
               "--grpc-port", "0", "--http-port", "0", "--otlp-endpoint", endpoint]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2, done.stderr
    assert f"--otlp-endpoint {endpoint!r}" in done.stderr


class _Collector(BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP receiver: keeps each ExportTraceServiceRequest's spans."""

    spans: ClassVar[list] = []

    def do_POST(self):
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                type(self).spans.extend(scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args):
        pass


def test_pipectl_serve_exports_to_an_otlp_collector(tmp_path):
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    srv = start_server(
        [str(DATA / "branches.yaml")], "--otlp-endpoint", endpoint, log=tmp_path / "serve.log"
    )
    try:
        client = httpclient.InferenceServerClient(srv.http_url)
        client.infer("branches", _x(httpclient, 3.0), headers={"traceparent": TRACEPARENT})
    finally:
        assert stop_server(srv) == 0  # SIGTERM flushes the buffered spans
        collector.shutdown()
    spans = _Collector.spans
    names = sorted(s.name for s in spans)
    assert names.count("branches") == 1 and names.count("compute") == 4, names
    (root,) = [s for s in spans if s.name == "branches"]
    assert root.trace_id.hex() == TRACE_ID and root.parent_span_id.hex() == PARENT_ID
    assert "exporting OpenTelemetry traces to" in srv.log_text()


def test_streamed_llm_like_node_carries_token_counts():
    """A streaming node's prompt/completion token outputs become span attributes (also under
    the GenAI semantic conventions' names)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import tests.server.stream_kind  # noqa: F401 - registers the test_words kind
    from engine.server.otel import OtelTracer
    from engine.server.repository import Repository

    exporter = InMemorySpanExporter()

    async def go() -> None:
        repo = Repository()
        repo.add(compile_file(DATA / "words.yaml"))
        await asyncio.to_thread(repo.load, "words")
        tracer = OtelTracer(repo, exporter=exporter, batch=False)
        repo.add_tracer(tracer)
        try:
            prompt = {"prompt": np.array([[b"one two three"]], dtype=object)}
            async for _ in repo.stream("words", prompt, request_id="r1"):
                pass
        finally:
            await asyncio.to_thread(repo.stop)
            tracer.shutdown()

    asyncio.run(go())
    (reply,) = [s for s in exporter.get_finished_spans() if s.name == "reply"]
    assert reply.attributes["gen_ai.usage.input_tokens"] == 3
    assert reply.attributes["gen_ai.usage.output_tokens"] == 4  # "echo:" and three words
    assert reply.attributes["pipectl.output.completion_tokens"] == 4
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "words"]
    assert root.attributes["pipectl.request_id"] == "r1"
