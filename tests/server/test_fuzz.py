"""Hypothesis drives KServe REST bodies, OpenAI bodies and the binary tensor extension's headers
against a real server (issue 8): whatever comes in, the answer is never a 5xx, and the server
answers a good request afterwards. Examples are derandomized (the same on every run, so a CI run
cannot turn red by chance) and bounded to keep the test near a minute."""

from __future__ import annotations

import json

import pytest
import requests

from tests.server.conftest import AUTH

pytestmark = pytest.mark.integration
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
MODELS = ["echo", "echo.scale", "echo.upper", "echo.length", "nope"]
DATATYPES = ["FP32", "BYTES", "INT64", "INT8", "UINT8", "BOOL", "FP16", "BF16", "FP64", "x"]
LEN = "Inference-Header-Content-Length"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
any_json = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _maybe(strategy):
    """A value from `strategy`, or any JSON at all in its place."""
    return st.one_of(strategy, strategy, strategy, any_json)


tensor = st.fixed_dictionaries(
    {
        "name": _maybe(st.sampled_from(["x", "text", "y", ""])),
        "datatype": _maybe(st.sampled_from(DATATYPES)),
        "shape": _maybe(st.lists(st.integers(min_value=-2, max_value=6), max_size=3)),
    },
    optional={
        "data": _maybe(
            st.lists(scalars, max_size=8) | st.lists(st.lists(scalars, max_size=4), max_size=3)
        ),
        "parameters": _maybe(
            st.fixed_dictionaries({}, optional={"binary_data_size": _maybe(st.integers(-4, 64))})
        ),
    },
)
infer_body = st.fixed_dictionaries(
    {"inputs": _maybe(st.lists(tensor, max_size=3))},
    optional={
        "id": _maybe(st.text(max_size=6)),
        "outputs": _maybe(st.lists(st.fixed_dictionaries({"name": _maybe(st.sampled_from(["y", "text", "n", "z"]))}), max_size=2)),
        "parameters": _maybe(st.dictionaries(st.sampled_from(["priority", "timeout", "binary_data_output", "foo"]), scalars, max_size=3)),
    },
)  # fmt: skip


@st.composite
def mutated(draw, value):
    """`value` with at most one place (a key, an item, or the whole) replaced by any JSON, a
    key deleted, or nothing changed: near-valid bodies that reach the deep checks."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return value
    if choice == 1 or not isinstance(value, dict | list) or not value:
        return draw(any_json) if choice == 1 else value
    if isinstance(value, dict):
        key = draw(st.sampled_from(sorted(value)))
        out = dict(value)
        if draw(st.booleans()):
            del out[key]
        else:
            out[key] = draw(mutated(value[key]))
        return out
    i = draw(st.integers(0, len(value) - 1))
    return [*value[:i], draw(mutated(value[i])), *value[i + 1 :]]


floats = st.floats(width=32, allow_nan=False, allow_infinity=False)
valid_scale = st.builds(
    lambda rows, extra: (
        {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}
        | extra
    ),
    st.lists(st.lists(floats, min_size=4, max_size=4), min_size=1, max_size=3),
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=4),
            "outputs": st.just([{"name": "y", "parameters": {"binary_data": False}}]),
            "parameters": st.fixed_dictionaries(
                {}, optional={"priority": st.integers(0, 3), "timeout": st.integers(0, 10**7)}
            ),
        },
    ),
)
valid_upper = st.builds(
    lambda texts: {
        "inputs": [{"name": "text", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}]
    },
    st.lists(st.text(max_size=10), min_size=1, max_size=3),
)
near_valid = st.one_of(
    st.tuples(st.just("echo.scale"), valid_scale.flatmap(mutated)),
    st.tuples(st.just("echo.upper"), valid_upper.flatmap(mutated)),
)


def _post(server, path: str, **kw) -> requests.Response:
    return requests.post(f"http://{server.http_url}{path}", headers=AUTH | kw.pop("headers", {}),
                         timeout=120, **kw)  # fmt: skip


SEEN: dict[str, set[int]] = {}


def _no_5xx(response: requests.Response, kind: str) -> None:
    """No 5xx, except the 504 of a request whose own (fuzzed) `timeout` passed: the client asked
    for that deadline, and on a loaded machine a few ms may pass before the answer."""
    if response.status_code == 504 and "passed its deadline" in response.text:
        return
    assert response.status_code < 500, response.text[:500]
    SEEN.setdefault(kind, set()).add(response.status_code)


def _still_serving(server) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    assert _post(server, "/v2/models/echo.scale/infer", json=body).status_code == 200


def test_kserve_rest_bodies(server):
    @settings(FUZZ, max_examples=400)
    @given(case=near_valid | st.tuples(st.sampled_from(MODELS), infer_body | any_json))
    def check(case):
        model, body = case
        _no_5xx(_post(server, f"/v2/models/{model}/infer", data=json.dumps(body)), "rest")

    check()
    assert {200, 400} <= SEEN["rest"]  # the examples reach both answers
    _still_serving(server)


def test_generate_bodies(server):
    @settings(FUZZ, max_examples=60)
    @given(body=st.dictionaries(st.sampled_from(["text", "x", "id", "parameters", "q"]), any_json, max_size=3) | any_json)  # fmt: skip
    def check(body):
        _no_5xx(_post(server, "/v2/models/echo.upper/generate", data=json.dumps(body)), "generate")

    check()
    _still_serving(server)


binary_header = st.builds(
    lambda size: {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": size},
            }
        ]
    },
    st.sampled_from([16, 16, 16, 8, 0, 20]),
).flatmap(mutated)


def test_binary_extension_headers(server):
    @settings(FUZZ, max_examples=300)
    @given(
        header=binary_header | infer_body | any_json,
        tail=st.binary(min_size=16, max_size=16) | st.binary(max_size=40),
        length=st.none()
        | st.none()
        | st.integers(-5, 400)
        | st.text("0123456789-+xe.", min_size=1, max_size=4),
    )
    def check(header, tail, length):
        text = json.dumps(header).encode()
        headers = {LEN: str(len(text)) if length is None else str(length)}
        response = _post(server, "/v2/models/echo.scale/infer", data=text + tail, headers=headers)
        _no_5xx(response, "binary")

    check()
    assert {200, 400} <= SEEN["binary"]
    _still_serving(server)


message = st.fixed_dictionaries(
    {},
    optional={"role": _maybe(st.sampled_from(["user", "system", "assistant"])),
              "content": _maybe(st.text(max_size=20) | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _maybe(st.text(max_size=8))}), max_size=2))},
)  # fmt: skip
chat_body = st.fixed_dictionaries(
    {"model": _maybe(st.sampled_from(["chat", "echo", "nope"])),
     "messages": _maybe(st.lists(message, max_size=3))},
    optional={
        "max_tokens": st.integers(-3, 3) | st.integers(2**62, 2**64) | any_json,
        "temperature": _maybe(st.floats(-2, 3)), "top_p": _maybe(st.floats(-1, 2)),
        "stop": _maybe(st.lists(st.text(max_size=3), max_size=2)), "n": _maybe(st.integers(0, 3)),
        "stream": st.booleans(), "seed": _maybe(st.integers(-(2**64), 2**64)),
        "stream_options": any_json, "response_format": any_json, "logprobs": any_json,
    },
)  # fmt: skip


valid_chat = st.builds(
    lambda text, extra: {"model": "chat", "messages": [{"role": "user", "content": text}]} | extra,
    st.text(max_size=12),
    st.fixed_dictionaries(
        {},
        optional={
            "temperature": st.floats(0, 2),
            "top_p": st.floats(0.1, 1),
            "stop": st.lists(st.text(min_size=1, max_size=3), max_size=2),
            "seed": st.integers(0, 2**31),
            "stream": st.booleans(),
        },
    ),
)


def test_openai_bodies(server):
    """Chat bodies, mostly near-valid; a valid one generates at most a few tokens."""

    @settings(FUZZ, max_examples=60)
    @given(body=chat_body | valid_chat.flatmap(mutated) | any_json)
    def check(body):
        if isinstance(body, dict) and isinstance(body.get("max_tokens"), int) and 0 < body["max_tokens"] < 2**62:  # fmt: skip
            body["max_tokens"] = min(body["max_tokens"], 3)
        elif isinstance(body, dict) and "max_tokens" not in body:
            body["max_tokens"] = 2
        response = _post(server, "/v1/chat/completions", data=json.dumps(body))
        _no_5xx(response, "openai")

    check()
    assert {200, 400} <= SEEN["openai"]
    _still_serving(server)
