"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

The request's `model` names a pipeline. A chat goes to the pipeline input `messages` (as JSON),
else `prompt` (the last user message), else the pipeline's only required BYTES input; a completion
goes to `prompt`, else `messages` (as one user message), else that BYTES input. Sampling fields
(max_tokens, temperature, top_p, seed, stop, penalties, logprobs, ...) go to the pipeline inputs
of their names, which every pipeline with an `llm` node has; see openai_fields.py for what is
honoured and what is refused by name. The answer is the first streamed BYTES output (the LLM's tokens),
else the first BYTES output. `usage` comes from pipeline outputs `prompt_tokens` and
`completion_tokens` when the pipeline has them (and `finish_reason` from an output of that
name); otherwise completion tokens count the streamed deltas (one per token from the llm node)
and prompt tokens are reported as 0.
Embeddings use the first FP32 vector output (one dimension, not of size 1).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid

import numpy as np
from aiohttp import web

from engine.errors import InvalidInput, RequestError
from engine.server import openai_fields, tensors
from engine.server.http import HTTP_STATUS, loads
from engine.server.repository import Repository, ServedModel

USAGE_OUTPUTS = ("prompt_tokens", "completion_tokens")
LOGPROBS_OUTPUT = "token_logprobs"


def _error(message: str, status: int, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status)


@web.middleware
async def openai_errors(request: web.Request, handler):
    """Errors under /v1 in OpenAI's shape."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    try:
        return await handler(request)
    except RequestError as exc:
        return _error(str(exc), HTTP_STATUS.get(exc.status, 500))
    except web.RequestPayloadError as exc:  # e.g. a body that is not the gzip it claims
        response = _error(f"request body could not be read: {exc}", 400)
        response.force_close()  # the connection's parser is broken: say so, or clients reuse it
        return response


def _bytes_input(model: ServedModel) -> str:
    names = [n for n, s in model.inputs.items() if s.dtype == "BYTES" and not s.optional]
    if len(names) != 1:
        raise InvalidInput(
            f"pipeline {model.name!r} takes no 'messages' or 'prompt' input and not exactly one "
            f"text input (inputs: {', '.join(model.inputs)})"
        )
    return names[0]


def build_inputs(model: ServedModel, body: dict, *, chat: bool) -> dict[str, np.ndarray]:
    """Pipeline inputs (batch of one) for a chat or completion request."""
    if chat:
        messages = openai_fields.chat_messages(body.get("messages"))
        users = [m["content"] for m in messages if m["role"] == "user"]
        text = users[-1] if users else messages[-1]["content"]
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise InvalidInput("'prompt' must be one string")
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidInput("'prompt' must be a string")
        text, messages = prompt, [{"role": "user", "content": prompt}]
    # a chat goes to `messages` first, a completion to `prompt` first
    order = ("messages", "prompt") if chat else ("prompt", "messages")
    name = next((n for n in order if n in model.inputs), None) or _bytes_input(model)
    value = json.dumps(messages) if name == "messages" else text
    spec = model.inputs[name]
    out = {name: tensors.from_json(name, "BYTES", [1, *[1 for _ in spec.shape]], [value])}
    out.update(openai_fields.sampling_inputs(model, body, chat=chat))
    return out


def text_output(model: ServedModel) -> str:
    """The answer: the first streamed BYTES output (the LLM's tokens; not its token_logprobs),
    else the first BYTES output."""
    names = [n for n in model.outputs if n != LOGPROBS_OUTPUT and model.outputs[n].dtype == "BYTES"]
    for name in names:
        if name in model.streamed:
            return name
    if names:
        return names[0]
    raise InvalidInput(f"pipeline {model.name!r} has no text output")


def _decode(array: np.ndarray) -> str:
    return b"".join(bytes(v) for v in array.reshape(-1)).decode("utf-8", errors="replace")


def _count(outputs: dict, name: str) -> int | None:
    return int(np.asarray(outputs[name]).reshape(-1)[0]) if name in outputs else None


def routes(repo: Repository) -> list[web.RouteDef]:
    """The OpenAI-compatible routes over `repo`."""

    async def read(request) -> dict:
        body = loads(await request.read())
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        return body

    def pipeline(body: dict) -> ServedModel:
        name = body.get("model")
        if not isinstance(name, str):
            raise InvalidInput("'model' must name a pipeline")
        return repo.serving(name)

    async def list_models(request):
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "pipectl"}
            for name in repo.pipelines
        ]
        return web.json_response({"object": "list", "data": data})

    async def completion(request, *, chat: bool):
        body = await read(request)
        openai_fields.check_fields(body, chat=chat)
        model = pipeline(body)
        inputs = build_inputs(model, body, chat=chat)
        out_name = text_output(model)
        extra = [n for n in (*USAGE_OUTPUTS, "finish_reason") if n in model.outputs]
        wanted = [out_name, *extra]
        if "logprobs" in inputs:
            if LOGPROBS_OUTPUT not in model.outputs:
                raise InvalidInput(
                    f"'logprobs' is not supported: pipeline {model.name!r} has no output "
                    f"{LOGPROBS_OUTPUT!r} (an llm node's token_logprobs)"
                )
            wanted.append(LOGPROBS_OUTPUT)
        kind = "chat.completion" if chat else "text_completion"
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        user = body.get("user")  # named in the request id, so logs and errors carry it
        tagged = f"{rid} (user {user})" if user else rid
        events = repo.stream(
            model.name, inputs, wanted, request_id=tagged,
            traceparent=request.headers.get("traceparent"),
        )  # fmt: skip
        logprobs_on = LOGPROBS_OUTPUT in wanted
        offset = [0]

        def choice(text: str, finish: str | None, first: bool = False, lines=None) -> dict:
            logprobs = None
            if logprobs_on and lines is not None:
                logprobs = _logprobs(lines or [], chat=chat, offset=offset)
            if not chat:
                return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
            if body.get("stream"):
                delta = {"role": "assistant", "content": text} if first else {"content": text}
                return {"index": 0, "delta": delta if text or first else {},
                        "logprobs": logprobs, "finish_reason": finish}  # fmt: skip
            message = {"role": "assistant", "content": text}
            return {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}

        pieces: list[str] = []
        lines: list[dict] = []
        counts: dict[str, int | None] = {}
        finish = ["stop"]

        def note(outputs: dict) -> None:
            counts.update({n: _count(outputs, n) for n in USAGE_OUTPUTS if n in outputs})
            if "finish_reason" in outputs and outputs["finish_reason"].size:
                finish[0] = _decode(outputs["finish_reason"]) or "stop"

        if not body.get("stream"):
            async with contextlib.aclosing(events):
                async for outputs, _final in events:
                    if out_name in outputs:
                        pieces.append(_decode(outputs[out_name]))
                    lines.extend(_lines(outputs))
                    note(outputs)
            usage = _usage(counts, pieces)
            return web.json_response(
                {"id": rid, "object": kind, "created": created, "model": model.name,
                 "choices": [choice("".join(pieces), finish[0], lines=lines)], "usage": usage}
            )  # fmt: skip
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        chunk_kind = "chat.completion.chunk" if chat else "text_completion"

        async def send(choices: list, usage: dict | None = None) -> None:
            data = {"id": rid, "object": chunk_kind, "created": created, "model": model.name,
                    "choices": choices}  # fmt: skip
            if usage is not None:
                data["usage"] = usage
            await response.write(f"data: {json.dumps(data)}\n\n".encode())

        first = True
        try:
            async with contextlib.aclosing(events):  # a dropped client frees its work now
                async for outputs, _final in events:
                    if first:
                        await response.prepare(request)
                    note(outputs)
                    text = _decode(outputs[out_name]) if out_name in outputs else ""
                    new_lines = _lines(outputs)
                    if text or first or new_lines:
                        pieces.append(text)
                        await send([choice(text, None, first, new_lines)])
                    first = False
        except RequestError as exc:
            if first:
                raise  # nothing sent yet: a plain error status
            await response.write(
                f"data: {json.dumps({'error': {'message': str(exc)}})}\n\n".encode()
            )
            await response.write_eof()
            return response
        await send([choice("", finish[0])])
        stream_options = body.get("stream_options") or {}
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            await send([], _usage(counts, pieces))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def chat_completions(request):
        return await completion(request, chat=True)

    async def completions(request):
        return await completion(request, chat=False)

    async def embeddings(request):
        body = await read(request)
        openai_fields.check_embedding_fields(body)
        model = pipeline(body)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidInput("'input' must be a string or a non-empty list of strings")
        vectors = [
            n
            for n, s in model.outputs.items()
            if s.dtype == "FP32" and len(s.shape) == 1 and s.shape[0] != 1
        ]
        if not vectors:
            raise InvalidInput(f"pipeline {model.name!r} has no FP32 vector output to embed with")
        name = next((n for n in ("text", "input") if n in model.inputs), None) or _bytes_input(
            model
        )
        spec = model.inputs[name]
        shape = [len(texts), *[1 for _ in spec.shape]]
        inputs = {name: tensors.from_json(name, "BYTES", shape, texts)}
        out = await repo.infer(
            model.name, inputs, [vectors[0]], traceparent=request.headers.get("traceparent")
        )
        matrix = out[vectors[0]].astype(np.float32).reshape(len(texts), -1)
        openai_fields.check_dimensions(body, model.name, matrix.shape[1])
        b64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i,
             "embedding": base64.b64encode(row.tobytes()).decode() if b64 else row.tolist()}
            for i, row in enumerate(matrix)
        ]  # fmt: skip
        usage = {"prompt_tokens": 0, "total_tokens": 0}
        return web.json_response(
            {"object": "list", "data": data, "model": model.name, "usage": usage}
        )

    return [
        web.get("/v1/models", list_models),
        web.post("/v1/chat/completions", chat_completions),
        web.post("/v1/completions", completions),
        web.post("/v1/embeddings", embeddings),
    ]


def _lines(outputs: dict) -> list[dict]:
    """The token entries (JSON lines of an llm node's token_logprobs) in one event."""
    if LOGPROBS_OUTPUT not in outputs:
        return []
    text = _decode(outputs[LOGPROBS_OUTPUT])
    return [json.loads(line) for line in text.splitlines() if line]


def _logprobs(entries: list[dict], *, chat: bool, offset: list[int]) -> dict:
    """OpenAI's logprobs object: chat's `content` list, or completions' parallel lists."""
    if chat:
        return {"content": entries, "refusal": None}
    offsets = []
    for entry in entries:
        offsets.append(offset[0])
        offset[0] += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


def _usage(counts: dict[str, int | None], pieces: list[str]) -> dict:
    prompt = counts.get("prompt_tokens") or 0
    completion = counts.get("completion_tokens")
    if completion is None:
        completion = sum(1 for p in pieces if p)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
