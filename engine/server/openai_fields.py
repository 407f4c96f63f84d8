"""OpenAI request fields: which are honoured, how they become pipeline inputs, which are refused.

A field is either honoured or refused by name with a 400, never silently dropped (the brief's
rule, and vLLM's behaviour for fields it lacks). Sampling fields become pipeline inputs of the same
name; an `llm` node declares them as request parameters, so every pipeline with an `llm` node has
them without its file declaring them (engine/compiler.py `wire_request_parameters`). Ranges follow
OpenAI's API reference (temperature 0..2, penalties -2..2, top_logprobs 0..20, completions'
logprobs 0..5) and vLLM's extra sampling params (top_k, repetition_penalty, ignore_eos,
min_tokens).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.errors import InvalidInput
from engine.server import tensors
from nodes.errors import InvalidRequest
from nodes.llm.chat import check_messages
from nodes.llm.sampling import check_pairs
from nodes.llm.structured import canonical_response_format


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    def check(name: str, value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidInput(f"'{name}' must be a number, not {value!r}")
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        if too_low or (hi is not None and value > hi):
            low = "" if lo is None else f"{lo} {'<' if lo_open else '<='} "
            high = "" if hi is None else f" <= {hi}"
            raise InvalidInput(f"'{name}' must be {low}{name}{high}, not {value!r}")
        return float(value)

    return check


def _integer(lo: int | None = None, hi: int | None = None):
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"'{name}' must be an integer, not {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
            raise InvalidInput(f"'{name}' must be in {span}, not {value!r}")
        return value

    return check


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be true or false, not {value!r}")
    return value


def _stop(name: str, value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise InvalidInput(f"'{name}' must be a non-empty string or a list of them")
    if len(stops) > 4:
        raise InvalidInput(f"'{name}' takes at most 4 sequences, not {len(stops)}")
    return stops


def _response_format(name: str, value: Any) -> str | None:
    """OpenAI's response_format as the canonical JSON an llm node takes (None for text)."""
    if not isinstance(value, dict):
        raise InvalidInput(f"'{name}' must be an object {{'type': ...}}, not {value!r:.60}")
    try:
        return canonical_response_format(value)
    except InvalidRequest as exc:
        raise InvalidInput(str(exc)) from None


def _pairs(max_tokens: int, min_tokens: int, logprobs: bool, top_logprobs: int) -> None:
    """The llm node's own check of fields that bind each other (nodes/llm/sampling.py)."""
    try:
        check_pairs(max_tokens, min_tokens, logprobs, top_logprobs)
    except InvalidRequest as exc:
        raise InvalidInput(str(exc)) from None


def _top_k(name: str, value: Any) -> int:
    k = _integer(-1)(name, value)
    return max(k, 0)  # vLLM: -1 (or 0 here) turns top-k off


# sampling field → (pipeline input it feeds, checker)
SAMPLING = {
    "max_tokens": ("max_tokens", _integer(1)),
    "max_completion_tokens": ("max_tokens", _integer(1)),
    "temperature": ("temperature", _number(0, 2)),
    "top_p": ("top_p", _number(0, 1, lo_open=True)),
    "top_k": ("top_k", _top_k),
    "seed": ("seed", _integer()),
    "stop": ("stop", _stop),
    "presence_penalty": ("presence_penalty", _number(-2, 2)),
    "frequency_penalty": ("frequency_penalty", _number(-2, 2)),
    "repetition_penalty": ("repetition_penalty", _number(0, lo_open=True)),
    "ignore_eos": ("ignore_eos", _boolean),
    "min_tokens": ("min_tokens", _integer(0)),
    "response_format": ("response_format", _response_format),
}
# fields the routes handle themselves; a chat has no `prompt`, a completion no `messages`
ROUTE_FIELDS = {"model", "stream", "stream_options", "n", "user", "logprobs",
                "top_logprobs", "echo"}  # fmt: skip
ENDPOINT_FIELDS = {True: "messages", False: "prompt"}
# fields accepted only at their "off" value: anything else is refused by name
OFF_VALUES = {
    "logit_bias": ({}, None), "tools": ([], None), "tool_choice": ("none", None),
    "functions": ([], None), "function_call": ("none", None), "parallel_tool_calls": (None,),
    "best_of": (1, None), "suffix": (None, ""), "store": (False, None), "metadata": (None,),
    "service_tier": (None, "auto", "default"), "modalities": (["text"], None),
    "audio": (None,), "prediction": (None,), "reasoning_effort": (None,),
    "web_search_options": (None,),
}  # fmt: skip


def _refuse(field: str, why: str) -> InvalidInput:
    return InvalidInput(f"'{field}' is not supported: {why}")


def check_fields(body: dict, *, chat: bool) -> None:
    """Refuse, by name, every field that is unknown or set to something we cannot honour."""
    for field, value in body.items():
        if field in SAMPLING or field in ROUTE_FIELDS or field == ENDPOINT_FIELDS[chat]:
            continue
        if field == ENDPOINT_FIELDS[not chat]:
            other = "/v1/completions" if chat else "/v1/chat/completions"
            raise _refuse(field, f"this endpoint takes {ENDPOINT_FIELDS[chat]!r}; use {other}")
        if field in OFF_VALUES:
            if value not in OFF_VALUES[field]:
                raise _refuse(field, f"pipectl serves text generation only (got {value!r})")
            continue
        raise _refuse(field, "not a field pipectl knows for this endpoint")
    n = body.get("n")
    if n is not None and n != 1:
        raise _refuse("n", f"one choice per request (n=1), got {n!r}; send separate requests")
    if body.get("response_format") is not None:
        _response_format("response_format", body["response_format"])
    if body.get("stream") is not None:
        _boolean("stream", body["stream"])
    low, high = body.get("min_tokens"), body.get("max_completion_tokens", body.get("max_tokens"))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        _pairs(high, low, True, 0)
    if body.get("echo") not in (None, False):
        raise _refuse("echo", "the prompt is not repeated in the answer")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _refuse("stream_options", f"only include_usage, got {options!r}")
        if options.get("include_usage") is not None:
            _boolean("stream_options.include_usage", options["include_usage"])
        if not body.get("stream"):
            raise InvalidInput("'stream_options' is only allowed with 'stream': true")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidInput(f"'user' must be a string, not {user!r}")


EMBEDDING_FIELDS = ("model", "input", "encoding_format", "dimensions", "user")


def check_embedding_fields(body: dict) -> None:
    """/v1/embeddings: refuse, by name, an unknown field or a value we cannot honour
    (`dimensions` is checked against the vectors once they exist: see `check_dimensions`)."""
    for field in body:
        if field not in EMBEDDING_FIELDS:
            raise _refuse(field, "not a field pipectl knows for this endpoint")
    fmt = body.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise InvalidInput(f"'encoding_format' must be 'float' or 'base64', not {fmt!r:.40}")
    if body.get("dimensions") is not None:
        _integer(1)("dimensions", body["dimensions"])
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidInput(f"'user' must be a string, not {user!r:.40}")


def check_dimensions(body: dict, model: str, dim: int) -> None:
    """`dimensions` is honoured only as the model's own size (no truncation: these vectors are
    not trained Matryoshka-style, so a cut would not be an embedding)."""
    asked = body.get("dimensions")
    if asked is not None and asked != dim:
        raise _refuse("dimensions", f"pipeline {model!r} returns {dim} dimensions, got {asked}")


def chat_messages(messages: Any) -> list[dict[str, str]]:
    """`messages` checked and flattened to [{"role", "content": str}] by the llm node's own check
    (nodes.llm.chat.check_messages), so /v1 and the `messages` input accept the same chats.
    Raises InvalidInput naming `messages[i].field`."""
    try:
        return check_messages(messages)
    except InvalidRequest as exc:
        raise InvalidInput(str(exc)) from None


def logprobs_wanted(body: dict, *, chat: bool) -> tuple[bool, int]:
    """(logprobs on, how many top alternatives per token) from the request."""
    if chat:
        on = body.get("logprobs")
        on = False if on is None else _boolean("logprobs", on)
        top = body.get("top_logprobs")
        top = 0 if top is None else _integer(0, 20)("top_logprobs", top)
        _pairs(1, 0, on, top)
        return on, top
    if body.get("top_logprobs") is not None:
        raise _refuse("top_logprobs", "completions take 'logprobs': N (0..5) instead")
    top = body.get("logprobs")
    if top is None:
        return False, 0
    return True, _integer(0, 5)("logprobs", top)


def sampling_inputs(model, body: dict, *, chat: bool) -> dict[str, np.ndarray]:
    """The pipeline inputs (batch of one) that carry the request's sampling fields. A field the
    pipeline has no input for is refused by name."""
    values: dict[str, tuple[str, Any]] = {}  # input → (field, value); max_completion_tokens wins
    for field, (name, check) in SAMPLING.items():
        value = body.get(field)
        checked = None if value is None else check(field, value)
        if checked is not None:  # response_format "text" needs no input
            values[name] = (field, checked)
    on, top = logprobs_wanted(body, chat=chat)
    if on:
        values["logprobs"] = ("logprobs", True)
        if top:
            values["top_logprobs"] = ("logprobs" if not chat else "top_logprobs", top)
    out = {}
    for name, (field, value) in values.items():
        if name not in model.inputs:
            raise _refuse(
                field, f"pipeline {model.name!r} has no input {name!r} (an llm node takes it)"
            )
        seq = value if isinstance(value, list) else [value]
        out[name] = tensors.from_json(name, model.inputs[name].dtype, [1, len(seq)], seq)
    return out
