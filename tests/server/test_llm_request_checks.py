"""One set of checks for an llm request, whichever way it arrives: the `messages` and sampling
inputs over KServe REST (tritonclient.http) and gRPC (tritonclient.grpc) accept and refuse what
/v1/chat/completions (the `openai` package) does, by the same name, against one real server.
They used to differ: `name`/`tool_calls` dropped, `min_tokens` > `max_tokens` clipped and
`top_logprobs` without `logprobs` ignored over KServe, text parts refused there."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.server.conftest import AUTH

pytestmark = pytest.mark.integration
openai = pytest.importorskip("openai")
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

_HI = {"role": "user", "content": "Hi"}
# (id, messages, sampling fields, words every refusal holds)
REFUSED = [
    ("message-name", [_HI | {"name": "bob"}], {}, "'messages[0].name' is not supported"),
    (
        "assistant-tool-calls",
        [_HI, {"role": "assistant", "content": "", "tool_calls": []}, _HI],
        {},
        "'messages[1].tool_calls' is not supported",
    ),
    ("content-empty-list", [{"role": "user", "content": []}], {}, "'messages[0].content' must"),
    (
        "text-part-extra-key",
        [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {}}]}],
        {},
        "'messages[0].content[0].cache_control' is not supported",
    ),
    (
        "min-over-max",
        [_HI],
        {"min_tokens": 10, "max_tokens": 3},
        "'min_tokens' (10) must be at most 'max_tokens' (3)",
    ),
    ("top-logprobs-alone", [_HI], {"top_logprobs": 3}, "'top_logprobs' needs 'logprobs': true"),
]
_DTYPES = {int: ("INT64", np.int64), bool: ("BOOL", np.bool_)}


def _inputs(module, messages: list, fields: dict) -> list:
    text = np.array([[json.dumps(messages).encode()]], dtype=object)
    tensor = module.InferInput("messages", [1, 1], "BYTES")
    tensor.set_data_from_numpy(text)
    out = [tensor]
    for name, value in fields.items():
        datatype, dtype = _DTYPES[type(value)]
        t = module.InferInput(name, [1, 1], datatype)
        t.set_data_from_numpy(np.array([[value]], dtype=dtype))
        out.append(t)
    return out


@pytest.fixture(scope="module")
def kserve(server):
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    yield {
        "http": (httpclient, lambda inputs: http.infer("chat", inputs, headers=dict(AUTH))),
        "grpc": (grpcclient, lambda inputs: grpc.infer("chat", inputs, headers=dict(AUTH))),
    }
    http.close()
    grpc.close()


def _openai(client, messages: list, fields: dict):
    extra = {k: v for k, v in fields.items() if k == "min_tokens"}
    plain = {k: v for k, v in fields.items() if k != "min_tokens"}
    return client.chat.completions.create(
        model="chat", messages=messages, extra_body=extra, **({"max_tokens": 2} | plain)
    )


@pytest.mark.parametrize(("messages", "fields", "words"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])  # fmt: skip
def test_kserve_and_v1_refuse_alike(kserve, openai_client, messages, fields, words):
    for protocol, (module, infer) in kserve.items():
        with pytest.raises(InferenceServerException) as info:
            infer(_inputs(module, messages, fields))
        assert words in str(info.value), protocol
        status = str(info.value.status())
        assert status in ("400", "StatusCode.INVALID_ARGUMENT"), (protocol, status)
    with pytest.raises(openai.BadRequestError) as info:
        _openai(openai_client, messages, fields)
    assert words in str(info.value)


def test_text_parts_are_honoured_over_kserve(kserve, openai_client):
    parts = [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi."}]
    messages = [{"role": "user", "content": parts}]
    fields = {"max_tokens": 3, "temperature": 0}
    reply = _openai(openai_client, messages, fields)
    for protocol, (module, infer) in kserve.items():
        inputs = _inputs(module, messages, {"max_tokens": 3})
        temperature = module.InferInput("temperature", [1, 1], "FP32")
        temperature.set_data_from_numpy(np.array([[0.0]], dtype=np.float32))
        result = infer([*inputs, temperature])
        tokens = int(result.as_numpy("prompt_tokens").reshape(-1)[0])
        assert tokens == reply.usage.prompt_tokens, protocol


def test_min_tokens_and_logprobs_pairs_are_honoured(kserve):
    for protocol, (module, infer) in kserve.items():
        fields = {"min_tokens": 3, "max_tokens": 3, "logprobs": True, "top_logprobs": 2}
        result = infer(_inputs(module, [_HI], fields))
        assert int(result.as_numpy("completion_tokens").reshape(-1)[0]) == 3, protocol
