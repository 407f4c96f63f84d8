"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

The request's `model` names a pipeline. A chat goes to the pipeline input `messages` (as JSON),
else `prompt` (the last user message), else the pipeline's only required BYTES input; a completion
goes to `prompt`, else `messages` (as one user message), else that BYTES input. Sampling fields
(max_tokens, temperature, top_p, seed, stop, penalties, logprobs, ...) go to the pipeline inputs
of their names, which every pipeline with an `llm` node has; see openai_fields.py for what is
honoured and what is refused by name. The answer is the first BYTES output streamed by a
generating node (an llm node's `text`); a pipeline without one does not generate text and is
refused with a 400 naming it (as vLLM refuses a model that is not a generator). `usage` comes
from pipeline outputs `prompt_tokens` and `completion_tokens` when the pipeline has them (and
`finish_reason` from an output of that name); otherwise completion tokens count the streamed
deltas (one per token from the llm node) and prompt tokens are reported as 0.
Embeddings use the FP32 vector output (one dimension, not of size 1) named `embedding` or fed by
a node's `embedding` port (an encoder's), else the only FP32 vector output; anything else is
refused naming the candidates.
"""

from __future__ import annotations

import base64
import json
from functools import partial

import numpy as np
from aiohttp import web

from engine.errors import InvalidInput, RequestError
from engine.options import RequestOptions
from engine.server import openai_fields, tensors
from engine.server.http import HTTP_STATUS, loads
from engine.server.openai_completion import LOGPROBS_OUTPUT, USAGE_OUTPUTS, Completion
from engine.server.repository import Repository, ServedModel


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
    """The answer: the first BYTES output streamed by a generating node (the LLM's tokens; not
    its token_logprobs). InvalidInput naming the pipeline and its outputs when it has none: a
    pipeline that does not generate (search keys, a python node's texts) has no answer to give,
    nor token counts."""
    for name, spec in model.outputs.items():
        if name in model.streamed and name != LOGPROBS_OUTPUT and spec.dtype == "BYTES":
            return name
    outputs = ", ".join(f"{n} ({s.dtype})" for n, s in model.outputs.items())
    raise InvalidInput(
        f"pipeline {model.name!r} does not generate text: chat and completions need an output "
        f"streamed by a generating node, such as an llm node's 'text' (its outputs: {outputs})"
    )


def embedding_output(model: ServedModel) -> str:
    """The output /v1/embeddings returns: among the FP32 vector outputs, the one named
    `embedding` or fed by a node's `embedding` port (an encoder's), else the only one.
    InvalidInput naming the candidates otherwise: a search's scores are no embedding."""
    vectors = [
        n
        for n, s in model.outputs.items()
        if s.dtype == "FP32" and len(s.shape) == 1 and s.shape[0] != 1
    ]
    if not vectors:
        raise InvalidInput(f"pipeline {model.name!r} has no FP32 vector output to embed with")
    sources = model.plan.outputs
    named = [
        n for n in vectors if n == "embedding" or (n in sources and sources[n].port == "embedding")
    ]
    if len(named) == 1:
        return named[0]
    if len(vectors) == 1:
        return vectors[0]
    which = f"{len(named)} of them ({', '.join(named)}) are" if named else "none is"
    raise InvalidInput(
        f"pipeline {model.name!r} has {len(vectors)} FP32 vector outputs ({', '.join(vectors)}) "
        f"and {which} an embedding: /v1/embeddings takes the output named 'embedding' or fed "
        "by a node's 'embedding' port (an encoder's), or the only FP32 vector output"
    )


async def read_body(request: web.Request) -> dict:
    """The request's JSON object; InvalidInput when it is not one."""
    body = loads(await request.read())
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def pipeline(repo: Repository, body: dict) -> ServedModel:
    """The served pipeline the body's `model` names: a pipeline's name, or a /v1-only name
    (`--served-model-name org/model`, which KServe's one-segment paths cannot carry)."""
    name = body.get("model")
    if not isinstance(name, str):
        raise InvalidInput("'model' must name a pipeline")
    return repo.serving(repo.openai_names.get(name, name))


async def list_models(repo: Repository, request: web.Request) -> web.Response:
    """GET /v1/models: every pipeline, under its /v1 name where it has one."""
    shown = {pipeline: name for name, pipeline in repo.openai_names.items()}
    data = [
        {"id": shown.get(name, name), "object": "model", "created": 0, "owned_by": "pipectl"}
        for name in repo.pipelines
    ]
    return web.json_response({"object": "list", "data": data})


async def completion(repo: Repository, request: web.Request, *, chat: bool) -> web.StreamResponse:
    """POST /v1/chat/completions (chat) and /v1/completions: the body's fields become pipeline
    inputs; the answer is the text output, whole or streamed as SSE chunks."""
    body = await read_body(request)
    openai_fields.check_fields(body, chat=chat)
    model = pipeline(repo, body)
    out_name = text_output(model)  # first: a pipeline that does not generate is refused as such
    inputs = build_inputs(model, body, chat=chat)
    extra = [n for n in (*USAGE_OUTPUTS, "finish_reason") if n in model.outputs]
    wanted = [out_name, *extra]
    if "logprobs" in inputs:
        if LOGPROBS_OUTPUT not in model.outputs:
            raise InvalidInput(
                f"'logprobs' is not supported: pipeline {model.name!r} has no output "
                f"{LOGPROBS_OUTPUT!r} (an llm node's token_logprobs)"
            )
        wanted.append(LOGPROBS_OUTPUT)
    answer = Completion(
        body["model"], body, out_name, chat=chat, logprobs=LOGPROBS_OUTPUT in wanted
    )
    user = body.get("user")  # named in the request id, so logs and errors carry it
    options = RequestOptions(
        request_id=f"{answer.id} (user {user})" if user else answer.id,
        traceparent=request.headers.get("traceparent"),
    )
    events = repo.stream(model.name, inputs, wanted, options=options)
    if body.get("stream"):
        return await answer.stream(request, events)
    return await answer.whole(events)


async def chat_completions(repo: Repository, request: web.Request) -> web.StreamResponse:
    return await completion(repo, request, chat=True)


async def completions(repo: Repository, request: web.Request) -> web.StreamResponse:
    return await completion(repo, request, chat=False)


async def embeddings(repo: Repository, request: web.Request) -> web.Response:
    """POST /v1/embeddings: each input text through the pipeline's `embedding_output`."""
    body = await read_body(request)
    openai_fields.check_embedding_fields(body)
    model = pipeline(repo, body)
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidInput("'input' must be a string or a non-empty list of strings")
    vector = embedding_output(model)
    name = next((n for n in ("text", "input") if n in model.inputs), None) or _bytes_input(model)
    spec = model.inputs[name]
    shape = [len(texts), *[1 for _ in spec.shape]]
    inputs = {name: tensors.from_json(name, "BYTES", shape, texts)}
    options = RequestOptions(traceparent=request.headers.get("traceparent"))
    out = await repo.infer(model.name, inputs, [vector], options=options)
    matrix = out[vector].astype(np.float32).reshape(len(texts), -1)
    openai_fields.check_dimensions(body, model.name, matrix.shape[1])
    b64 = body.get("encoding_format") == "base64"
    data = [
        {"object": "embedding", "index": i,
         "embedding": base64.b64encode(row.tobytes()).decode() if b64 else row.tolist()}
        for i, row in enumerate(matrix)
    ]  # fmt: skip
    usage = {"prompt_tokens": 0, "total_tokens": 0}
    return web.json_response(
        {"object": "list", "data": data, "model": body["model"], "usage": usage}
    )


def routes(repo: Repository) -> list[web.RouteDef]:
    """The OpenAI-compatible routes over `repo`."""
    return [
        web.get("/v1/models", partial(list_models, repo)),
        web.post("/v1/chat/completions", partial(chat_completions, repo)),
        web.post("/v1/completions", partial(completions, repo)),
        web.post("/v1/embeddings", partial(embeddings, repo)),
    ]
