"""/v1/embeddings through the `openai` package against a real server: every field is honoured or
refused by name. `dimensions: 10` used to return 384-dimensional vectors, and an unknown field,
a bad `encoding_format` or a non-string `user` were ignored."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration
openai = pytest.importorskip("openai")

CASES = [
    ("dimensions-cut", {"dimensions": 10}, "'dimensions' is not supported: pipeline 'embed' returns 384"),
    ("dimensions-zero", {"dimensions": 0}, "'dimensions' must be in 1..inf"),
    ("format-junk", {"encoding_format": "junk"}, "'encoding_format' must be 'float' or 'base64'"),
    ("user-number", {"extra_body": {"user": 5}}, "'user' must be a string"),
    ("unknown", {"extra_body": {"truncate": True}}, "'truncate' is not supported"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_embedding_fields_are_refused_by_name(openai_client, fields, words):
    with pytest.raises(openai.BadRequestError, match=re.escape(words)):
        openai_client.embeddings.create(model="embed", input="bake bread", **fields)
    ok = openai_client.embeddings.create(model="embed", input="bake bread", dimensions=384)
    assert len(ok.data[0].embedding) == 384


def test_honoured_fields(openai_client):
    floats = openai_client.embeddings.create(
        model="embed", input=["a", "b"], encoding_format="float", user="alice"
    )
    assert [len(d.embedding) for d in floats.data] == [384, 384]
