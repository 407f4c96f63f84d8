"""One serving process: gRPC and HTTP on one event loop over one Repository.

Both faces listen at once and answer "not ready" (ServerReady false, /v2/health/ready 503, health
NOT_SERVING) while the pipelines load; they turn ready when every pipeline is loaded. SIGTERM or
SIGINT: stop taking requests (UNAVAILABLE), let in-flight ones finish (up to a drain timeout),
then stop the listeners and the executors.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.plan import Plan
from engine.server.model_control import ModelControl
from engine.server.repository import Repository


@dataclass(frozen=True)
class ServeOptions:
    """Where to listen and the limits (see `pipectl serve --help`)."""

    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    api_key: str | None = None
    max_request_bytes: int = 64 << 20
    drain_timeout_s: float = 30.0
    otlp_endpoint: str | None = None  # OpenTelemetry collector (OTLP/HTTP); None: no traces
    model_repository: str | None = None  # a folder of pipeline files (Triton's model repository)
    model_control_mode: str = "none"  # none | explicit | poll (see engine/server/model_control.py)
    repository_poll_secs: float = 5.0
    load_models: tuple[str, ...] = ()  # explicit mode: models loaded at start ('*': all)
    openai_names: tuple[tuple[str, str], ...] = ()  # /v1 model name -> pipeline (org/model)


def _say(message: str) -> None:
    print(f"pipectl serve: {message}", file=sys.stderr, flush=True)


def build_http_app(repo: Repository, options: ServeOptions):
    """The aiohttp application: KServe v2 REST, OpenAI routes, /metrics and the live page."""
    from aiohttp import web

    from engine.server import dashboard, http, metrics, openai_api
    from engine.server.auth import ApiKey

    middlewares = []
    if options.api_key:  # the page's own files carry no data; its JSON needs the key
        exempt = ("/v2/health", dashboard.PAGE_PREFIX)
        middlewares.append(ApiKey(options.api_key).http_middleware(exempt_prefixes=exempt))
    middlewares += [http.errors_middleware, openai_api.openai_errors]
    app = web.Application(client_max_size=options.max_request_bytes, middlewares=middlewares)
    app.add_routes(http.routes(repo) + openai_api.routes(repo) + metrics.routes(repo))
    app.add_routes(dashboard.routes(repo))
    return app


def _in_daemon_thread(loop: asyncio.AbstractEventLoop, fn, *args) -> asyncio.Future:
    """Run `fn(*args)` in a daemon thread; its outcome as a future of `loop`. Unlike the loop's
    default executor, whose threads the interpreter joins at exit, an abandoned daemon thread
    does not keep a stopping process alive."""
    future = loop.create_future()

    def settle(result=None, error: BaseException | None = None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = (None, exc)
        else:
            outcome = (result, None)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: the server stopped meanwhile
            pass

    threading.Thread(target=run, name=f"pipectl-{fn.__name__}", daemon=True).start()
    return future


@dataclass
class _Listeners:
    """The two faces of one serving process, listening."""

    grpc_server: Any
    health: Any  # the gRPC health servicer
    http_runner: Any  # aiohttp AppRunner
    grpc_port: int
    http_port: int

    async def close(self) -> None:
        await self.grpc_server.stop(grace=1.0)
        await self.http_runner.cleanup()


async def serve(plans: list[Plan], options: ServeOptions, say: Callable[[str], None] = _say) -> int:
    """Serve `plans` until SIGTERM/SIGINT; returns the exit status."""
    from engine.server import grpc as grpc_face

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    repo = Repository()
    repo.openai_names = dict(options.openai_names)
    for plan in plans:
        repo.add(plan)
    tracer = _tracer(repo, options, say)
    faces = await _listen(repo, options, say)
    if faces is None:
        return 1
    say(f"gRPC on {options.host}:{faces.grpc_port}, HTTP on {options.host}:{faces.http_port}")
    status = 0
    control = poller = None
    try:
        started = time.monotonic()
        status = await _load_pipelines(repo, plans, stop, say)
        if status is not None:
            return status
        if options.model_repository:
            control, poller = await _model_control(repo, options, say)
        repo.started = True
        names = ", ".join(repo.pipelines) or "(no models yet)"
        say(f"ready: {names} (loaded in {time.monotonic() - started:.1f}s)")
        await grpc_face.set_health(faces.health, True)
        await stop.wait()
        say(f"draining {repo.inflight} in-flight requests")
        await grpc_face.set_health(faces.health, False)
        status = 0
        if not await repo.drain(options.drain_timeout_s):
            say(f"drain timed out after {options.drain_timeout_s}s; {repo.inflight} left")
            status = 1
    finally:
        repo.draining = True
        if poller is not None:
            poller.cancel()
        await faces.close()
        if control is not None:
            await control.close()
        await loop.run_in_executor(None, repo.stop)
        if tracer is not None:
            await loop.run_in_executor(None, tracer.shutdown)  # flush the last spans
        say("stopped")
    return status


def _tracer(repo: Repository, options: ServeOptions, say: Callable[[str], None]):
    """The OpenTelemetry exporter when `otlp_endpoint` is set (added to `repo`), else None."""
    if not options.otlp_endpoint:
        return None
    from engine.server.otel import OtelTracer, traces_url

    tracer = OtelTracer(repo, options.otlp_endpoint)
    repo.add_tracer(tracer)
    say(f"exporting OpenTelemetry traces to {traces_url(options.otlp_endpoint)}")
    return tracer


async def _listen(
    repo: Repository, options: ServeOptions, say: Callable[[str], None]
) -> _Listeners | None:
    """Start gRPC (health NOT_SERVING) and HTTP; None (after saying why) if a port is taken."""
    from aiohttp import web

    from engine.server import grpc as grpc_face
    from engine.server.auth import ApiKey

    key = ApiKey(options.api_key) if options.api_key else None
    try:
        grpc_server, health, grpc_port = grpc_face.build_server(
            repo, options.host, options.grpc_port, api_key=key,
            max_request_bytes=options.max_request_bytes,
        )  # fmt: skip
    except (OSError, RuntimeError) as exc:
        say(f"cannot listen for gRPC on {options.host}:{options.grpc_port}: {exc}")
        return None
    await grpc_face.set_health(health, False)
    await grpc_server.start()
    # handler_cancellation: a client that closes its connection cancels its request's handler,
    # so its work is dropped from every queue and an LLM generation is aborted (aiohttp >= 3.9
    # no longer does this by default)
    runner = web.AppRunner(
        build_http_app(repo, options),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, options.host, options.http_port).start()
    except OSError as exc:
        say(f"cannot listen for HTTP on {options.host}:{options.http_port}: {exc}")
        await grpc_server.stop(grace=None)
        await runner.cleanup()
        return None
    http_port = runner.addresses[0][1] if runner.addresses else options.http_port
    return _Listeners(grpc_server, health, runner, grpc_port, http_port)


async def _load_pipelines(
    repo: Repository, plans: list[Plan], stop: asyncio.Event, say: Callable[[str], None]
) -> int | None:
    """Load each pipeline in turn; an exit status if the server must end (a stop signal, a
    failed load), else None."""
    loop = asyncio.get_running_loop()
    for plan in plans:
        say(f"loading pipeline {plan.name!r} ({len(plan.nodes)} nodes)")

        def progress(node: str, done: int, total: int, name: str = plan.name) -> None:
            say(f"  {name}: loaded {node} ({done}/{total} instances)")

        load = _in_daemon_thread(loop, repo.load, plan.name, progress)
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([load, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if stop.is_set():
            # loading cannot be interrupted; it runs in a daemon thread that dies with the
            # process, so a stop signal is obeyed now rather than after the load
            say("stopping while loading (the load is abandoned)")
            return 0
        try:
            load.result()
        except Exception as exc:  # noqa: BLE001 - reported, then the server exits
            say(f"pipeline {plan.name!r} failed to load: {type(exc).__name__}: {exc}")
            return 1
    return None


async def _model_control(repo: Repository, options: ServeOptions, say: Callable[[str], None]):
    """Start Triton-style model control over `options.model_repository`; (control, poller)."""
    control = ModelControl(
        repo, options.model_repository, options.model_control_mode,
        poll_secs=options.repository_poll_secs,
        drain_timeout_s=options.drain_timeout_s, say=say,
    )  # fmt: skip
    say(f"model repository {options.model_repository} ({control.mode} control)")
    await control.start(options.load_models)
    poller = None
    if control.mode == "poll":
        poller = asyncio.get_running_loop().create_task(control.poll_forever())
    return control, poller
