"""Which pipeline output the OpenAI routes answer with, through the `openai` package and
tritonclient against a real server. /v1/embeddings returns the encoder's `embedding` even when
another FP32 vector output comes first, and refuses, naming both, a pipeline whose two vectors
are neither; chat and completions refuse a pipeline that generates no text (it used to answer
200 with its texts glued together and a made-up token count)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.server.conftest import DATA, start_server, stop_server

pytestmark = pytest.mark.integration
openai = pytest.importorskip("openai")
import tritonclient.http as httpclient


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("output_choice") / "serve.log"
    files = [str(DATA / "scored_embed.yaml"), str(DATA / "two_vectors.yaml")]
    srv = start_server(files, log=log)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(
        base_url=f"http://{server.http_url}/v1", api_key="none", max_retries=0, timeout=120
    ) as c:
        yield c


def test_embeddings_take_the_encoder_output_not_the_first(client, server):
    reply = client.embeddings.create(model="scored_embed", input=["a red fox", "the sea"])
    vectors = np.array([d.embedding for d in reply.data], dtype=np.float32)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    http = httpclient.InferenceServerClient(server.http_url)
    text = httpclient.InferInput("text", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"the sea"]], dtype=object))
    result = http.infer("scored_embed", [text])
    http.close()
    np.testing.assert_allclose(result.as_numpy("vec")[0], vectors[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("doubled")[0], 2 * vectors[1], rtol=1e-4, atol=1e-5)


def test_embeddings_refuse_a_choice_they_cannot_make(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="two_vectors", input="hello")
    message = str(info.value)
    assert "'two_vectors' has 2 FP32 vector outputs (doubled, tripled)" in message
    assert "none is an embedding" in message


@pytest.mark.parametrize("model", ["scored_embed", "two_vectors", "scored_embed.upper"])
def test_chat_and_completions_refuse_a_pipeline_that_does_not_generate(client, model):
    words = f"pipeline {model!r} does not generate text"
    with pytest.raises(openai.BadRequestError, match=words):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match=words):
        client.completions.create(model=model, prompt="Hi")
    reply = client.embeddings.create(model="scored_embed", input="still serving")
    assert len(reply.data[0].embedding) == 384
