"""OpenTelemetry traces: one trace per request, a span per node (`pipectl serve --otlp-endpoint`).

Span tree of one request (times from the executor's per-node trace, so a parallel branch shows as
overlapping spans, unlike Triton ensembles, triton-inference-server/server#5296):

    <model>                       SERVER span, child of the client's W3C `traceparent` if sent
      <node>                      from the node taking the request to the end of its compute
        queue                     waiting in the node's dynamic batcher
        compute                   the batch it ran in (pipectl.batch_size)
      <node>                      a node skipped by its `when:` (or an absent input): zero
                                  length, pipectl.skipped = true

Node spans carry pipectl.node, pipectl.kind, pipectl.batch_size, pipectl.instance,
pipectl.device, pipectl.queue_ms, pipectl.compute_ms, pipectl.item (the batch item of the
client's request) and the node's scalar integer outputs as `pipectl.output.<port>`; the LLM's
token counts also as the GenAI semantic conventions' gen_ai.usage.input_tokens/output_tokens.

The SDK is the optional extra `pipectl[otel]` and is imported only here, only when tracing is on.
Export is OTLP over HTTP/protobuf in the SDK's background thread (BatchSpanProcessor), so the
request path only builds the spans once the request has ended.
"""

from __future__ import annotations

import os
import time

from engine.result import NodeTrace
from engine.server.repository import Repository
from engine.server.traces import TracedRequest

ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TOKEN_CONVENTIONS = {
    "prompt_tokens": "gen_ai.usage.input_tokens",
    "completion_tokens": "gen_ai.usage.output_tokens",
}


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector base URL (as OTEL_EXPORTER_OTLP_ENDPOINT: the
    SDK appends `/v1/traces`); a URL that already ends in /v1/traces is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def endpoint_from(option: str | None) -> str | None:
    """`--otlp-endpoint`, else $OTEL_EXPORTER_OTLP_ENDPOINT, else None (tracing off).
    Raises ValueError naming its source when it is not an http(s)://HOST[:PORT] URL (the SDK
    would take any string and fail on every export, in a background thread)."""
    from urllib.parse import urlsplit

    endpoint = option or os.environ.get(ENV_ENDPOINT) or None
    if endpoint is None:
        return None
    try:
        url = urlsplit(endpoint)
        url.port  # noqa: B018 (a port out of range or not a number raises here)
    except ValueError as exc:
        url, why = None, str(exc)
    if url is not None and (url.scheme not in ("http", "https") or not url.hostname):
        why = "expected the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318"
    elif url is not None:
        return endpoint
    source = "--otlp-endpoint" if option else f"${ENV_ENDPOINT}"
    raise ValueError(f"{source} {endpoint!r}: {why}")


class OtelTracer:
    """A RequestTracer that turns every request's per-node trace into OpenTelemetry spans.
    `exporter` (e.g. the SDK's InMemorySpanExporter) replaces the OTLP one; `batch=False` exports
    each span at once (tests)."""

    propagates = True  # the faces pass the client's traceparent only when a tracer reads it

    def __init__(
        self,
        repo: Repository,
        endpoint: str | None = None,
        exporter=None,
        batch: bool = True,
        service_name: str = "pipectl",
    ):
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError as exc:
            raise RuntimeError(
                "OpenTelemetry tracing needs the SDK: pip install 'pipectl[otel]'"
            ) from exc
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            if not endpoint:
                raise ValueError(f"no OTLP endpoint: pass --otlp-endpoint or set {ENV_ENDPOINT}")
            exporter = OTLPSpanExporter(endpoint=traces_url(endpoint))
        self.repo = repo
        resource = Resource.create({"service.name": service_name})
        self.provider = TracerProvider(resource=resource)
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("pipectl")
        self.propagator = TraceContextTextMapPropagator()

    def wants(self, pipeline: str, traceparent: str | None) -> bool:
        return True

    def finished(self, request: TracedRequest) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        offset = time.time_ns() - time.monotonic_ns()  # monotonic → Unix epoch ns
        parent = None
        if request.traceparent:
            parent = self.propagator.extract({"traceparent": request.traceparent})
        root = self.tracer.start_span(
            request.model,
            context=parent,
            kind=SpanKind.SERVER,
            start_time=request.start_ns + offset,
            attributes={
                "pipectl.pipeline": request.pipeline,
                "pipectl.model": request.model,
                "pipectl.request_id": request.request_id,
                "pipectl.batch_items": len(request.results),
            },
        )
        context = trace.set_span_in_context(root)
        plan = self.repo.models[request.pipeline].plan
        for item, result in enumerate(request.results):
            for node_trace in result.trace:
                self._node_spans(node_trace, item, plan, context, offset)
        if request.error:
            root.set_status(Status(StatusCode.ERROR, request.error))
            root.set_attribute("pipectl.status", request.status)
        root.end(end_time=request.end_ns + offset)

    def _node_spans(self, t: NodeTrace, item: int, plan, context, offset: int) -> None:
        from opentelemetry import trace

        node = plan.nodes.get(t.node)
        instances = node.instances if node is not None else ()
        device = instances[t.instance].device if t.instance < len(instances) else ""
        start = t.start_ns + offset
        queued = start + int(t.queue_ms * 1e6)
        end = queued + int(t.compute_ms * 1e6)
        attributes: dict = {
            "pipectl.node": t.node,
            "pipectl.kind": node.kind if node is not None else "",
            "pipectl.item": item,
            "pipectl.skipped": t.skipped,
        }
        if not t.skipped:
            attributes |= {
                "pipectl.batch_size": t.batch_size,
                "pipectl.instance": t.instance,
                "pipectl.device": device,
                "pipectl.queue_ms": t.queue_ms,
                "pipectl.compute_ms": t.compute_ms,
            }
        for port, value in (t.attributes or {}).items():
            attributes[f"pipectl.output.{port}"] = value
            if port in TOKEN_CONVENTIONS:
                attributes[TOKEN_CONVENTIONS[port]] = value
        span = self.tracer.start_span(
            t.node, context=context, start_time=start, attributes=attributes
        )
        if not t.skipped:
            inner = trace.set_span_in_context(span)
            self.tracer.start_span("queue", context=inner, start_time=start).end(end_time=queued)
            compute = self.tracer.start_span(
                "compute", context=inner, start_time=queued,
                attributes={"pipectl.batch_size": t.batch_size, "pipectl.device": device},
            )  # fmt: skip
            compute.end(end_time=end)
        span.end(end_time=end if not t.skipped else start)

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporter's thread."""
        self.provider.shutdown()
