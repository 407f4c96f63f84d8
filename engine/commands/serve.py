"""`pipectl serve FILE...`: serve pipelines over gRPC (KServe v2, for tritonclient) and HTTP
(KServe v2 REST, OpenAI-compatible routes, /metrics) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from engine.commands.compiling import compile_or_report


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve pipelines over gRPC (KServe v2) and HTTP",
        description="Serve pipelines. Each pipeline is a model named after it; each node is also "
        "a model, `<pipeline>.<node>`. The server reports ready once every pipeline is loaded. "
        "SIGTERM finishes in-flight requests, then exits.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="pipeline files")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--grpc-port", type=int, default=8001, help="default: %(default)s; 0: any free port"
    )
    parser.add_argument(
        "--http-port", type=int, default=8000, help="default: %(default)s; 0: any free port"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("PIPECTL_API_KEY"),
        help="require 'authorization: Bearer KEY' on both protocols (default: $PIPECTL_API_KEY)",
    )
    parser.add_argument(
        "--max-request-mb", type=float, default=64.0, help="largest request body (default: 64)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds SIGTERM waits for in-flight requests (default: 30)",
    )
    parser.add_argument(
        "--otlp-endpoint",
        default=None,
        help="export one OpenTelemetry trace per request (a span per node) to this OTLP/HTTP "
        "collector, e.g. http://127.0.0.1:4318 (default: $OTEL_EXPORTER_OTLP_ENDPOINT; none: "
        "off). Needs pip install 'pipectl[otel]'",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.server.app import ServeOptions, serve
    from engine.server.otel import endpoint_from

    plans = []
    for path in args.files:
        plan = compile_or_report(path)
        if plan is None:
            return 1
        plans.append(plan)
    names = [p.name for p in plans]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        print(f"two pipelines are named {duplicates[0]!r}; names must be unique", file=sys.stderr)
        return 1
    options = ServeOptions(
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        api_key=args.api_key or None,
        max_request_bytes=int(args.max_request_mb * (1 << 20)),
        drain_timeout_s=args.drain_timeout,
        otlp_endpoint=endpoint_from(args.otlp_endpoint),
    )
    try:  # libuv's loop: about 20% less event-loop CPU per gRPC request than asyncio's here
        import uvloop
    except ImportError:
        return asyncio.run(serve(plans, options))
    return uvloop.run(serve(plans, options))
