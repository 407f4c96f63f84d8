"""The gallery of bad requests: every one gets a 4xx (gRPC: a client-error status) whose message
names what is wrong, and the server answers a good request right after each. KServe JSON and
its binary extension over raw HTTP, gRPC through the stock stub, the OpenAI routes through the
`openai` package and raw HTTP. Kinds of issue 8: client mistakes are never 500 (3), fields are
honoured or refused by name (5), malformed bodies at any depth are 400 (6)."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
import requests

from tests.server.conftest import API_KEY, AUTH

pytestmark = pytest.mark.integration
grpc = pytest.importorskip("grpc")
openai = pytest.importorskip("openai")
from tritonclient.grpc import service_pb2, service_pb2_grpc

SCALE = "/v2/models/echo.scale/infer"
CHAT = "/v2/models/chat/infer"
LEN = "Inference-Header-Content-Length"


def _x(**extra) -> dict:
    return {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]} | extra


def _chat_input(name: str, datatype: str, data, shape=None) -> dict:
    return {"name": name, "shape": shape or [1, 1], "datatype": datatype, "data": data}


_PROMPT = _chat_input("prompt", "BYTES", ["Hi"])
_WIZARD = b'[{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Abracadabra"}]'

# (id, path, JSON body or raw bytes, extra headers, status, words the error must hold)
REST = [
    ("not-json", SCALE, b"{not json", {}, 400, "not valid JSON"),
    ("body-a-list", SCALE, [], {}, 400, "must be a JSON object"),
    ("no-inputs", SCALE, {"outputs": []}, {}, 400, "inputs is missing"),
    ("inputs-not-list", SCALE, {"inputs": {"x": 1}}, {}, 400, "inputs"),
    ("inputs-empty", SCALE, {"inputs": []}, {}, 400, "inputs"),
    (
        "input-no-name",
        SCALE,
        {"inputs": [{"shape": [1], "datatype": "FP32"}]},
        {},
        400,
        "inputs[0].name is missing",
    ),
    ("input-a-string", SCALE, {"inputs": ["x"]}, {}, 400, "inputs[0]"),
    ("shape-string", SCALE, {"inputs": [_x(shape=[1, "4"])]}, {}, 400, "inputs[0].shape[1]"),
    ("shape-negative", SCALE, {"inputs": [_x(shape=[-1, 4])]}, {}, 400, "inputs[0].shape[0]"),
    ("shape-float", SCALE, {"inputs": [_x(shape=[1, 4.0])]}, {}, 400, "inputs[0].shape[1]"),
    (
        "datatype-unknown",
        SCALE,
        {"inputs": [_x(datatype="FLOAT")]},
        {},
        400,
        "unknown datatype 'FLOAT'",
    ),
    (
        "datatype-wrong",
        SCALE,
        {"inputs": [_x(datatype="INT32")]},
        {},
        400,
        "datatype INT32, expected FP32",
    ),
    ("data-count", SCALE, {"inputs": [_x(data=[1, 2, 3])]}, {}, 400, "3 values in data"),
    ("data-string", SCALE, {"inputs": [_x(data=["a", 2, 3, 4])]}, {}, 400, "not FP32"),
    ("data-bool", SCALE, {"inputs": [_x(data=[True, 2, 3, 4])]}, {}, 400, "not FP32"),
    ("data-object", SCALE, {"inputs": [_x(data=[{}, 2, 3, 4])]}, {}, 400, "not FP32"),
    (
        "data-overflow-fp32",
        SCALE,
        {"inputs": [_x(data=[1e39, 2, 3, 4])]},
        {},
        400,
        "out of range for FP32",
    ),
    (
        "data-nesting",
        SCALE,
        {"inputs": [_x(data=[[1, 2], [3, 4]])]},
        {},
        400,
        "does not match shape",
    ),
    ("data-ragged", SCALE, {"inputs": [_x(data=[[1, 2, 3], [4]])]}, {}, 400, "'x'"),
    ("data-missing", SCALE, {"inputs": [_x(data=None)]}, {}, 400, "neither 'data'"),
    ("shape-wrong", SCALE, {"inputs": [_x(shape=[1, 2], data=[1, 2])]}, {}, 400, "shape [1, 2]"),
    ("bf16-json", SCALE, {"inputs": [_x(datatype="BF16")]}, {}, 400, "BF16 has no JSON form"),
    ("unknown-field", SCALE, {"inputs": [_x()], "foo": 1}, {}, 400, "foo: unknown field"),
    (
        "unknown-tensor-field",
        SCALE,
        {"inputs": [_x(contents=[1])]},
        {},
        400,
        "inputs[0].contents: unknown field",
    ),
    (
        "shared-memory",
        SCALE,
        {"inputs": [_x(parameters={"shared_memory_region": "r"})]},
        {},
        400,
        "shared_memory_region: shared memory is not supported",
    ),
    (
        "classification",
        SCALE,
        {"inputs": [_x()], "outputs": [{"name": "y", "parameters": {"classification": 2}}]},
        {},
        400,
        "classification",
    ),
    (
        "sequence-id",
        SCALE,
        {"inputs": [_x()], "parameters": {"sequence_id": 7}},
        {},
        400,
        "sequence batching is not supported",
    ),
    (
        "unknown-parameter",
        SCALE,
        {"inputs": [_x()], "parameters": {"foo": 1}},
        {},
        400,
        "parameters.foo: unknown field",
    ),
    (
        "priority-string",
        SCALE,
        {"inputs": [_x()], "parameters": {"priority": "high"}},
        {},
        400,
        "parameters.priority",
    ),
    (
        "priority-float",
        SCALE,
        {"inputs": [_x()], "parameters": {"priority": 1.5}},
        {},
        400,
        "parameters.priority",
    ),
    (
        "timeout-negative",
        SCALE,
        {"inputs": [_x()], "parameters": {"timeout": -1}},
        {},
        400,
        "parameters.timeout",
    ),
    ("id-number", SCALE, {"inputs": [_x()], "id": 5}, {}, 400, "id"),
    (
        "binary-data-not-bool",
        SCALE,
        {"inputs": [_x()], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]},
        {},
        400,
        "outputs[0].parameters.binary_data",
    ),
    (
        "output-unknown",
        SCALE,
        {"inputs": [_x()], "outputs": [{"name": "z"}]},
        {},
        400,
        "has no output 'z'",
    ),
    ("input-unknown", SCALE, {"inputs": [_x(), _x(name="w")]}, {}, 400, "has no input 'w'"),
    ("input-twice", SCALE, {"inputs": [_x(), _x()]}, {}, 400, "given twice"),
    ("input-missing", "/v2/models/echo/infer", {"inputs": [_x()]}, {}, 400, "missing input 'text'"),
    (
        "bytes-numbers",
        "/v2/models/echo.upper/infer",
        {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [5]}]},
        {},
        400,
        "BYTES data must be strings",
    ),
    (
        "int-float",
        CHAT,
        {"inputs": [_PROMPT, _chat_input("max_tokens", "INT64", [1.5])]},
        {},
        400,
        "'max_tokens': data is not INT64",
    ),
    (
        "int64-overflow",
        CHAT,
        {"inputs": [_PROMPT, _chat_input("max_tokens", "INT64", [2**63])]},
        {},
        400,
        "out of range for INT64",
    ),
    (
        "llm-max-tokens-0",
        CHAT,
        {"inputs": [_PROMPT, _chat_input("max_tokens", "INT64", [0])]},
        {},
        400,
        "max_tokens",
    ),
    (
        "llm-temperature",
        CHAT,
        {"inputs": [_PROMPT, _chat_input("temperature", "FP32", [-1.0])]},
        {},
        400,
        "temperature",
    ),
    (
        "llm-stop-empty",
        CHAT,
        {"inputs": [_PROMPT, _chat_input("stop", "BYTES", [""])]},
        {},
        400,
        "stop",
    ),
    (
        "llm-chat-plain-text",
        CHAT,
        {"inputs": [_chat_input("messages", "BYTES", ["hello there"])]},
        {},
        400,
        "'messages' is not JSON",
    ),
    (
        "llm-chat-bad-message",
        CHAT,
        {"inputs": [_chat_input("messages", "BYTES", ['[{"role": 1}]'])]},
        {},
        400,
        "messages[0]",
    ),
    (
        "llm-chat-unknown-role",
        CHAT,
        {"inputs": [_chat_input("messages", "BYTES", [_WIZARD.decode()])]},
        {},
        400,
        "'messages[1].role' must be one of system, developer, user, assistant, not 'wizard'",
    ),
    (
        "llm-prompt-and-messages",
        CHAT,
        {"inputs": [_PROMPT, _chat_input("messages", "BYTES", ["[]"])]},
        {},
        400,
        "exactly one",
    ),
    ("generate-list", "/v2/models/chat/generate", [1], {}, 400, "JSON object"),
    (
        "generate-parameter",
        "/v2/models/chat/generate",
        {"prompt": "Hi", "parameters": {"max_tokens": 3}},
        {},
        400,
        "parameters.max_tokens: unknown field",
    ),
    (
        "generate-unknown-input",
        "/v2/models/chat/generate",
        {"promt": "Hi"},
        {},
        400,
        "has no input 'promt'",
    ),
    ("index-body", "/v2/repository/index", b"[1]", {}, 400, "ready"),
]


def _binary(header: dict, tail: bytes, length: int | str | None = None) -> tuple[bytes, dict]:
    text = json.dumps(header).encode()
    return text + tail, {LEN: str(len(text) if length is None else length)}


def _bin_x(size: int) -> dict:
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                        "parameters": {"binary_data_size": size}}]}  # fmt: skip


_TEXT = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": 6}}]}  # fmt: skip
BINARY = [
    ("length-not-number", SCALE, *_binary(_bin_x(16), b"\0" * 16, "ten"), 400, LEN),
    ("length-past-body", SCALE, *_binary(_bin_x(16), b"\0" * 16, 10_000), 400, LEN),
    ("tail-short", SCALE, *_binary(_bin_x(16), b"\0" * 8), 400, "shorter than 16 bytes"),
    ("tail-extra", SCALE, *_binary(_bin_x(16), b"\0" * 20), 400, "belong to no input"),
    ("size-wrong", SCALE, *_binary(_bin_x(8), b"\0" * 8), 400, "8 bytes of data for FP32"),
    (
        "bytes-cut",
        "/v2/models/echo.upper/infer",
        *_binary(_TEXT, struct.pack("<I", 9) + b"ab"),
        400,
        "cut short",
    ),
    (
        "bytes-not-utf8",
        CHAT,
        *_binary(
            _TEXT | {"inputs": [dict(_TEXT["inputs"][0], name="prompt")]},
            struct.pack("<I", 2) + b"\xff\xfe",
        ),
        400,
        "UTF-8",
    ),
    (
        "data-and-binary",
        SCALE,
        *_binary({"inputs": [_x(parameters={"binary_data_size": 16})]}, b"\0" * 16),
        400,
        "both 'data' and binary_data_size",
    ),
]


@pytest.fixture(scope="module")
def session(server):
    s = requests.Session()
    s.headers.update(AUTH)
    yield s
    s.close()


def _still_serving(session, server) -> None:
    body = {"inputs": [_x()]}
    r = session.post(f"http://{server.http_url}{SCALE}", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2, 4, 6, 8]


@pytest.mark.parametrize(("path", "body", "headers", "status", "words"),
                         [c[1:] for c in REST + BINARY], ids=[c[0] for c in REST + BINARY])  # fmt: skip
def test_rest(session, server, path, body, headers, status, words):
    url = f"http://{server.http_url}{path}"
    if isinstance(body, bytes):
        r = session.post(url, data=body, headers=headers, timeout=60)
    else:
        r = session.post(url, json=body, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    assert words in r.json()["error"], r.text
    _still_serving(session, server)


def _tensor(name, datatype, shape, **contents):
    tensor = service_pb2.ModelInferRequest().InferInputTensor(
        name=name, datatype=datatype, shape=shape
    )
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return tensor


def _request(model="echo.scale", inputs=(), raw=(), **params):
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.extend(inputs)
    request.raw_input_contents.extend(raw)
    for key, (kind, value) in params.items():
        setattr(request.parameters[key], kind, value)
    return request


_X = _tensor("x", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4])
_P = _tensor("prompt", "BYTES", [1, 1], bytes_contents=[b"Hi"])
_shm = _tensor("x", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4])
_shm.parameters["shared_memory_region"].string_param = "r"
GRPC = [
    (
        "datatype-unknown",
        _request(inputs=[_tensor("x", "FLOAT", [1, 4])], raw=[b"\0" * 16]),
        "INVALID_ARGUMENT",
        "unknown datatype 'FLOAT'",
    ),
    (
        "raw-count",
        _request(inputs=[_X], raw=[b"\0" * 16, b"\0" * 16]),
        "INVALID_ARGUMENT",
        "raw_input_contents",
    ),
    (
        "contents-count",
        _request(inputs=[_tensor("x", "FP32", [1, 4], fp32_contents=[1])]),
        "INVALID_ARGUMENT",
        "1 values in fp32_contents",
    ),
    (
        "raw-size",
        _request(inputs=[_tensor("x", "FP32", [1, 4])], raw=[b"\0" * 15]),
        "INVALID_ARGUMENT",
        "15 bytes of data",
    ),
    ("input-twice", _request(inputs=[_X, _X]), "INVALID_ARGUMENT", "given twice"),
    (
        "priority-string",
        _request(inputs=[_X], priority=("string_param", "high")),
        "INVALID_ARGUMENT",
        "'priority' must be an int64_param",
    ),
    (
        "timeout-double",
        _request(inputs=[_X], timeout=("double_param", 1.5)),
        "INVALID_ARGUMENT",
        "'timeout' must be an int64_param",
    ),
    (
        "sequence-id",
        _request(inputs=[_X], sequence_id=("int64_param", 3)),
        "INVALID_ARGUMENT",
        "sequence batching is not supported",
    ),
    (
        "unknown-parameter",
        _request(inputs=[_X], foo=("bool_param", True)),
        "INVALID_ARGUMENT",
        "parameter 'foo': unknown parameter",
    ),
    ("shared-memory", _request(inputs=[_shm]), "INVALID_ARGUMENT", "shared memory"),
    ("model-unknown", _request(model="nope", inputs=[_X]), "NOT_FOUND", "not served"),
    (
        "llm-max-tokens-0",
        _request("chat", [_P, _tensor("max_tokens", "INT64", [1, 1], int64_contents=[0])]),
        "INVALID_ARGUMENT",
        "max_tokens must be >= 1",
    ),
    (
        "llm-max-tokens-huge",
        _request("chat", [_P, _tensor("max_tokens", "INT64", [1, 1], int64_contents=[2**63 - 1])]),
        "INVALID_ARGUMENT",
        "max_model_len",
    ),
    (
        "llm-chat-unknown-role",
        _request("chat", [_tensor("messages", "BYTES", [1, 1], bytes_contents=[_WIZARD])]),
        "INVALID_ARGUMENT",
        "node 'generate' field 'messages': 'messages[1].role' must be one of system,",
    ),
    (
        "llm-prompt-too-long",
        _request("chat", [_tensor("prompt", "BYTES", [1, 1], bytes_contents=[b"word " * 700])]),
        "INVALID_ARGUMENT",
        "max_model_len",
    ),
]


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@pytest.mark.parametrize(("request_pb", "code", "words"), [c[1:] for c in GRPC],
                         ids=[c[0] for c in GRPC])  # fmt: skip
def test_grpc(stub, session, server, request_pb, code, words):
    metadata = [("authorization", f"Bearer {API_KEY}")]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_pb, metadata=metadata, timeout=120)
    assert info.value.code().name == code, info.value.details()
    assert words in info.value.details()
    reply = stub.ModelInfer(_request(inputs=[_X]), metadata=metadata, timeout=60)
    out = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)
    assert out.tolist() == [2, 4, 6, 8]


_HI = [{"role": "user", "content": "Hi"}]
OPENAI = [
    ("max-tokens-0", {"max_tokens": 0}, "max_tokens"),
    ("max-tokens-negative", {"max_tokens": -5}, "max_tokens"),
    ("max-tokens-2-63", {"max_tokens": 2**63}, "max_tokens"),
    ("temperature-negative", {"temperature": -1}, "temperature"),
    ("stop-empty", {"stop": [""]}, "stop"),
    (
        "prompt-too-long",
        {"messages": [{"role": "user", "content": "word " * 700}]},
        "max_model_len",
    ),
    ("messages-not-list", {"messages": "Hi"}, "messages"),
    ("message-not-object", {"messages": ["Hi"]}, "messages[0]"),
    ("content-part-text", {"messages": [{"role": "user", "content": [{"text": 5}]}]}, "text"),
    (
        "include-usage-not-bool",
        {"stream": True, "stream_options": {"include_usage": "yes"}},
        "'stream_options.include_usage' must be true or false",
    ),
]


@pytest.mark.parametrize(("fields", "words"), [c[1:] for c in OPENAI], ids=[c[0] for c in OPENAI])
def test_openai(openai_client, session, server, fields, words):
    body = {"model": "chat", "messages": _HI} | fields
    messages = body.pop("messages")
    with pytest.raises(openai.BadRequestError, match=re.escape(words)):
        openai_client.chat.completions.create(messages=messages, **body)
    _still_serving(session, server)


def test_llm_client_mistakes_are_not_node_failures(openai_client, session, server):
    def failures() -> float:
        text = session.get(f"http://{server.http_url}/metrics", timeout=30).text
        line = next(
            ln for ln in text.splitlines()
            if ln.startswith("pipectl_node_failure_total") and 'node="generate"' in ln
        )  # fmt: skip
        return float(line.split()[-1])

    before = failures()
    for fields in ({"max_tokens": 0}, {"temperature": -1}, {"stop": [""]}):
        with pytest.raises(openai.BadRequestError):
            openai_client.chat.completions.create(model="chat", messages=_HI, **fields)
    assert failures() == before
    reply = openai_client.chat.completions.create(model="chat", messages=_HI, max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")
