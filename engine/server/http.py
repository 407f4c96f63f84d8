"""The KServe v2 REST face on aiohttp: health, metadata, config, statistics, `infer` (JSON and the
binary tensor extension that tritonclient.http uses), and Triton's `generate` / `generate_stream`
(server-sent events). It only translates between JSON/bytes and `Repository`."""

from __future__ import annotations

import contextlib
import json
import logging
from functools import partial
from typing import Any

import numpy as np
from aiohttp import web

from engine.errors import InvalidInput, RequestError
from engine.options import RequestOptions
from engine.server import describe, kserve_body, tensors
from engine.server.model_control import model_control
from engine.server.model_control import repository_index as full_index
from engine.server.repository import Repository, ServedModel

log = logging.getLogger("pipectl.server")
HEADER_LENGTH = "Inference-Header-Content-Length"
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "DEADLINE_EXCEEDED": 504,
    "UNAVAILABLE": 503,
    "CANCELLED": 499,
    "UNAUTHENTICATED": 401,
    "INTERNAL": 500,
}
REPO_KEY: web.AppKey[Repository] = web.AppKey("repository", Repository)


def error_response(exc: RequestError) -> web.Response:
    return web.json_response({"error": str(exc)}, status=HTTP_STATUS.get(exc.status, 500))


@web.middleware
async def errors_middleware(request: web.Request, handler):
    """RequestErrors as `{"error": ...}` with the matching status; an oversized body as 413 with
    the limit in the message; a client gone mid-stream ends its request quietly (its work was
    already cancelled when the stream closed)."""
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(exc)
    except ConnectionResetError:
        return web.Response(status=499, text="client closed the connection")
    except web.HTTPRequestEntityTooLarge as exc:
        return web.json_response(
            {
                "error": f"request body too large: {exc.text}; raise `pipectl serve --max-request-mb`"
            },
            status=413,
        )
    except web.RequestPayloadError as exc:  # e.g. a body that is not the gzip it claims
        response = error_response(InvalidInput(f"request body could not be read: {exc}"))
        response.force_close()  # the connection's parser is broken: say so, or clients reuse it
        return response
    except web.HTTPException:
        raise
    except Exception as exc:  # a bug of ours: logged, answered in JSON
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return web.json_response(
            {"error": f"internal error: {type(exc).__name__}: {exc}"}, status=500
        )


def options(request: web.Request, request_id: str, params: Any) -> RequestOptions:
    """The request's options: its id, priority and timeout (microseconds, as Triton) from its
    parameters (any other parameter is refused by name), and the W3C traceparent header."""
    if not isinstance(params, kserve_body.RequestParameters):
        params = kserve_body.parse_parameters(params)
    return params.options(request_id, request.headers.get("traceparent"))


def loads(raw: bytes) -> Any:
    """Parsed JSON, or InvalidInput saying where it is broken."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


async def _json_body(request: web.Request) -> tuple[Any, bytes]:
    """The JSON header and the binary tail (binary tensor extension) of an infer request."""
    body = await request.read()
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        return loads(body), b""
    try:
        n = int(length)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} {length!r} is not a byte count") from None
    if not 0 <= n <= len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes")
    return loads(body[:n]), body[n:]


def decode_inputs(request: kserve_body.InferRequest, binary: bytes) -> dict[str, np.ndarray]:
    """Inputs from JSON `data`, or from the binary tail in input order (`binary_data_size`)."""
    out: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in request.inputs:
        name, datatype, shape = tensor.name, tensor.datatype, tensor.shape
        if name in out:
            raise InvalidInput(f"input {name!r} is given twice")
        size = tensor.parameters.binary_data_size if tensor.parameters else None
        if size is not None:
            if tensor.data is not None:
                raise InvalidInput(f"input {name!r} has both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary data shorter than {size} bytes")
            out[name] = tensors.from_raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif tensor.data is not None:
            out[name] = tensors.from_json(name, datatype, shape, tensor.data)
        else:
            raise InvalidInput(f"input {name!r} has neither 'data' nor binary_data_size")
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    return out


def encode_response(
    model: ServedModel, outputs: dict[str, np.ndarray], request: kserve_body.InferRequest
) -> web.Response:
    """JSON outputs, or binary ones (tail + Inference-Header-Content-Length) where asked."""
    wanted = {
        o.name: o.parameters.binary_data if o.parameters else None for o in request.outputs or []
    }
    params = request.parameters
    all_binary = bool(params and params.binary_data_output)
    result: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id:
        result["id"] = request.id
    result["outputs"] = []
    tail: list[bytes] = []
    for name, array in outputs.items():
        spec = model.outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": spec.dtype, "shape": list(array.shape)}
        binary = wanted.get(name)
        if binary if binary is not None else all_binary:
            raw = tensors.to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = tensors.to_json(array)
        result["outputs"].append(entry)
    text = json.dumps(result).encode()
    if not tail:
        return web.Response(body=text, content_type="application/json")
    return web.Response(
        body=text + b"".join(tail),
        headers={HEADER_LENGTH: str(len(text)), "Content-Type": "application/octet-stream"},
    )


def generate_inputs(model: ServedModel, body: dict) -> dict[str, np.ndarray]:
    """Triton's generate extension: top-level keys name inputs; values are scalars or lists."""
    if not isinstance(body, dict):
        raise InvalidInput(
            f"generate request: the body must be a JSON object, got {type(body).__name__}"
        )
    if not isinstance(body.get("id", ""), str):
        raise InvalidInput("generate request: 'id' must be a string")
    out = {}
    for name, value in body.items():
        if name in ("parameters", "id"):
            continue
        spec = model.inputs.get(name)
        if spec is None:
            raise InvalidInput.unknown_input(name, model.inputs, model.name)
        flat = tensors.flatten(value if isinstance(value, list) else [value])
        shape = [d if d != -1 else 1 for d in spec.shape]
        if -1 in spec.shape:
            known = int(np.prod([d for d in spec.shape if d != -1] or [1]))
            shape[list(spec.shape).index(-1)] = max(1, len(flat) // max(known, 1))
        out[name] = tensors.from_json(name, spec.dtype, [1, *shape], flat)
    return out


def generate_outputs(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Outputs of one generate item: single values as scalars (text as str), else lists."""
    out = {}
    for name, array in outputs.items():
        values = tensors.to_json(array[0] if array.ndim and array.shape[0] == 1 else array)
        out[name] = values[0] if len(values) == 1 else values
    return out


def model_of(repo: Repository, request: web.Request) -> ServedModel:
    """The model (and version) the URL names."""
    return repo.get(request.match_info["model"], request.match_info.get("version", ""))


async def server_metadata(repo: Repository, request: web.Request) -> web.StreamResponse:
    """GET /v2: server name, version and extensions."""
    return web.json_response(describe.server_metadata())


async def live(repo: Repository, request: web.Request) -> web.StreamResponse:
    """GET /v2/health/live: 200 while the process serves."""
    return web.Response(status=200)


async def ready(repo: Repository, request: web.Request) -> web.StreamResponse:
    """GET /v2/health/ready: 200 once every model is loaded and the server is not draining."""
    return web.Response(status=200 if repo.ready else 503)


async def model_metadata(repo: Repository, request: web.Request) -> web.StreamResponse:
    """GET /v2/models/{model}[/versions/{v}]: inputs, outputs, platform, versions."""
    model = model_of(repo, request)
    versions = repo.served_versions(model.name)
    return web.json_response(describe.model_metadata(model, versions))


async def model_ready(repo: Repository, request: web.Request) -> web.StreamResponse:
    """GET .../ready: 200 when this model takes requests."""
    model = model_of(repo, request)
    return web.Response(status=200 if repo.model_ready(model) else 503)


async def model_config(repo: Repository, request: web.Request) -> web.StreamResponse:
    """GET .../config: Triton's ModelConfig (ensemble steps, dynamic batching, instances)."""
    return web.json_response(describe.model_config(model_of(repo, request)))


async def model_stats(repo: Repository, request: web.Request) -> web.StreamResponse:
    """GET /v2/models[/{model}]/stats: per-model and per-node statistics."""
    name = request.match_info.get("model", "")
    stats = describe.statistics(repo, name, request.match_info.get("version", ""))
    return web.json_response(stats)


async def repository_index(repo: Repository, request: web.Request) -> web.StreamResponse:
    """POST /v2/repository/index: every model and its state."""
    body = loads(await request.read() or b"{}") if request.can_read_body else {}
    if not isinstance(body, dict) or not isinstance(body.get("ready", False), bool):
        raise InvalidInput('repository index: the body must be {"ready": true|false}')
    ready_only = body.get("ready", False)
    return web.json_response(await full_index(repo, ready_only))


async def repository_control(repo: Repository, request: web.Request) -> web.StreamResponse:
    """POST /v2/repository/models/{model}/load|unload: Triton's model control."""
    name, action = request.match_info["model"], request.match_info["action"]
    body = await request.read()
    parsed = loads(body) if body.strip() else {}
    params = parsed.get("parameters") or {} if isinstance(parsed, dict) else None
    if not isinstance(params, dict):  # {"parameters": 5} was a TypeError, a 500
        raise InvalidInput(f'{action}: the body must be {{"parameters": {{...}}}}')
    control = model_control(repo, action, dict(params))
    await (control.load(name) if action == "load" else control.unload(name))
    return web.json_response({})


async def infer(repo: Repository, request: web.Request) -> web.StreamResponse:
    """POST .../infer: a KServe v2 request (JSON, or the binary tensor extension)."""
    model = model_of(repo, request)
    header, binary = await _json_body(request)
    body = kserve_body.parse_infer(header)
    wanted = [o.name for o in body.outputs or []] or None
    params = body.parameters or kserve_body.RequestParameters()
    outputs = await repo.infer(
        model.name,
        decode_inputs(body, binary),
        wanted,
        version=request.match_info.get("version", ""),
        options=options(request, body.id or "", params),
    )
    return encode_response(model, outputs, body)


async def generate(repo: Repository, request: web.Request) -> web.StreamResponse:
    """POST .../generate: named JSON inputs in, named JSON outputs out."""
    model = model_of(repo, request)
    body, _ = await _json_body(request)
    outputs = await repo.infer(
        model.name,
        generate_inputs(model, body),
        version=request.match_info.get("version", ""),
        options=options(request, body.get("id", ""), body.get("parameters")),
    )
    return web.json_response(
        {"model_name": model.name, "model_version": model.version} | generate_outputs(outputs)
    )


async def generate_stream(repo: Repository, request: web.Request) -> web.StreamResponse:
    """POST .../generate_stream: as generate, each delta a server-sent event."""
    model = model_of(repo, request)
    body, _ = await _json_body(request)
    events = repo.stream(
        model.name,
        generate_inputs(model, body),
        version=request.match_info.get("version", ""),
        options=options(request, body.get("id", ""), body.get("parameters")),
    )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    started = False
    try:
        async with contextlib.aclosing(events):  # a dropped client frees its work now
            async for outputs, _final in events:
                if not started:
                    await response.prepare(request)
                    started = True
                data = {"model_name": model.name, "model_version": model.version}
                data |= generate_outputs(outputs)
                await response.write(f"data: {json.dumps(data)}\n\n".encode())
    except RequestError as exc:
        if not started:
            raise  # nothing sent yet: a plain error status
        await response.write(f"data: {json.dumps({'error': str(exc)})}\n\n".encode())
    if not started:
        await response.prepare(request)
    await response.write_eof()
    return response


def routes(repo: Repository) -> list[web.RouteDef]:
    """The KServe v2 routes over `repo`."""
    base = "/v2/models/{model}"
    out = [
        web.get("/v2", partial(server_metadata, repo)),
        web.get("/v2/health/live", partial(live, repo)),
        web.get("/v2/health/ready", partial(ready, repo)),
        web.get("/v2/models/stats", partial(model_stats, repo)),
        web.post("/v2/repository/index", partial(repository_index, repo)),
        web.post(
            "/v2/repository/models/{model}/{action:load|unload}", partial(repository_control, repo)
        ),
    ]
    for prefix in (base, base + "/versions/{version}"):
        out += [
            web.get(prefix, partial(model_metadata, repo)),
            web.get(prefix + "/ready", partial(model_ready, repo)),
            web.get(prefix + "/config", partial(model_config, repo)),
            web.get(prefix + "/stats", partial(model_stats, repo)),
            web.post(prefix + "/infer", partial(infer, repo)),
            web.post(prefix + "/generate", partial(generate, repo)),
            web.post(prefix + "/generate_stream", partial(generate_stream, repo)),
        ]
    return out
