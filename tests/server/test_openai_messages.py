"""Chat messages and per-endpoint fields through the `openai` package against a real server: a
message without a valid role, a content part that is not text, a message key we would drop, a
`prompt` sent to chat (or `messages` to completions), a non-boolean `stream` and `min_tokens`
over `max_tokens` are each a 400 naming the field, where they used to be answered as if the field
were absent. The server answers a good chat right after each."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration
openai = pytest.importorskip("openai")

_HI = [{"role": "user", "content": "Hi"}]


def _schema(spec: dict) -> dict:
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


_IMAGE = {"type": "image_url", "image_url": {"url": "http://127.0.0.1/cat.png"}}
CHAT = [
    ("no-role", {"messages": [{"content": "Hi"}]}, "'messages[0].role' must be one of"),
    ("bad-role", {"messages": [{"role": "wizard", "content": "Hi"}]}, "'messages[0].role'"),
    ("no-content", {"messages": [{"role": "user"}]}, "'messages[0].content' is missing"),
    (
        "content-object",
        {"messages": [{"role": "user", "content": {"a": 1}}]},
        "messages[0].content",
    ),
    ("content-number", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (
        "content-image",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, _IMAGE]}]},
        "'messages[0].content[1]' is not supported: only text parts, got 'image_url'",
    ),
    (
        "message-name",
        {"messages": [{"role": "user", "content": "Hi", "name": "bob"}]},
        "'messages[0].name' is not supported",
    ),
    ("prompt-in-chat", {"extra_body": {"prompt": "Hi"}}, "'prompt' is not supported"),
    ("stream-a-string", {"extra_body": {"stream": "yes"}}, "'stream' must be true or false"),
    (
        "min-over-max",
        {"max_tokens": 2, "extra_body": {"min_tokens": 5}},
        "'min_tokens' (5) must be at most 'max_tokens' (2)",
    ),
    ("response-format-string", {"extra_body": {"response_format": "text"}}, "must be an object"),
    (
        "json-schema-no-name",
        _schema({"schema": {}}),
        "'response_format.json_schema.name' is missing",
    ),
    ("json-schema-name-number", _schema({"name": 123}), "'response_format.json_schema.name' must"),
    ("json-schema-strict-string", _schema({"name": "v", "strict": "yes"}), "strict' must be true"),
    ("json-schema-boolean", _schema({"name": "v", "schema": True}), "json_schema.schema' must"),
    ("content-empty-list", {"messages": [{"role": "user", "content": []}]}, "non-empty list"),
]


@pytest.fixture
def client(openai_client):
    return openai_client


def _still_serving(client) -> None:
    reply = client.chat.completions.create(model="chat", messages=_HI, max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(("fields", "words"), [c[1:] for c in CHAT], ids=[c[0] for c in CHAT])
def test_chat_refuses_by_name(client, fields, words):
    body = {"model": "chat", "messages": _HI} | fields
    messages = body.pop("messages")
    with pytest.raises(openai.BadRequestError, match=re.escape(words)):
        client.chat.completions.create(messages=messages, **body)
    _still_serving(client)


def test_completions_refuse_messages(client):
    with pytest.raises(openai.BadRequestError, match=re.escape("'messages' is not supported")):
        client.completions.create(
            model="chat", prompt="Hi", max_tokens=2, extra_body={"messages": _HI}
        )
    _still_serving(client)


def test_text_parts_and_every_role_are_honoured(client):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "developer", "content": [{"type": "text", "text": "Be polite."}]},
        {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi."}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again."},
    ]  # fmt: skip
    reply = client.chat.completions.create(model="chat", messages=messages, max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.prompt_tokens > 20
