"""Bodies that parse badly or not at all, over raw HTTP (requests) against a real server: JSON
nested past Python's recursion limit on /v1, a body that is not the gzip its content-encoding
claims, and JSON strings holding lone surrogates ("\\ud800": valid JSON, not encodable as UTF-8).
Each used to be a 500 (RecursionError, RequestPayloadError, UnicodeEncodeError in the route or a
TypeError in the LLM's tokenizer counted as a node failure); each is a 400 naming the body, the
input or the message, and the server answers a good request right after."""

from __future__ import annotations

import pytest
import requests

from tests.server.conftest import AUTH

pytestmark = pytest.mark.integration

DEEP = b"[" * 100_000 + b"]" * 100_000
CHAT = '{"model": "chat", "max_tokens": 2, "messages": [{"role": "user", "content": "%s"}]}'
# (id, path, raw body, extra headers, words the error must hold)
CASES = [
    ("deep-chat", "/v1/chat/completions", DEEP, {}, "not valid JSON"),
    ("deep-completion", "/v1/completions", DEEP, {}, "not valid JSON"),
    ("gzip-kserve", "/v2/models/echo.scale/infer", b"{}", {"content-encoding": "gzip"},
     "could not be read"),
    ("gzip-openai", "/v1/chat/completions", b"{}", {"content-encoding": "gzip"},
     "could not be read"),
    ("surrogate-kserve", "/v2/models/echo.upper/infer",
     b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["a\\ud800"]}]}',
     {}, "input 'text': BYTES data is not valid Unicode text"),
    ("surrogate-generate", "/v2/models/chat/generate", b'{"prompt": "a\\udc00", "max_tokens": 2}',
     {}, "input 'prompt'"),
    ("surrogate-completion", "/v1/completions",
     b'{"model": "chat", "prompt": "a\\ud800", "max_tokens": 2}', {}, "input 'prompt'"),
    ("surrogate-chat", "/v1/chat/completions", (CHAT % "a\\ud800").encode(), {},
     "messages[0] is not valid Unicode text"),
    ("surrogate-stop", "/v1/chat/completions",
     b'{"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "stop": ["\\ud800"]}',
     {}, "input 'stop'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def http(server):
    with requests.Session() as s:
        s.headers.update(AUTH | {"content-type": "application/json"})
        yield s


def _still_serving(http, server) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    r = http.post(f"http://{server.http_url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    upper = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["ab"]}]}
    r = http.post(f"http://{server.http_url}/v2/models/echo.upper/infer", json=upper, timeout=60)
    assert r.json()["outputs"][0]["data"] == ["AB"]


@pytest.mark.parametrize(("path", "body", "headers", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_unreadable_bodies_are_400(http, server, path, body, headers, words):
    r = http.post(f"http://{server.http_url}{path}", data=body, headers=headers, timeout=120)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert words in (error["message"] if isinstance(error, dict) else error)
    _still_serving(http, server)
