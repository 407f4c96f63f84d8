"""Structured output: OpenAI's `response_format` (JSON object, JSON schema) as a grammar that
masks each step's logits, with xgrammar (https://github.com/mlc-ai/xgrammar).

A request's `response_format` is OpenAI's object, `{"type": "text"}`, `{"type": "json_object"}`
or `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}`
(https://platform.openai.com/docs/api-reference/chat/create#chat-create-response_format). It
reaches the engine as canonical JSON text in `SamplingParams.response_format` (itself a valid
`response_format`: only `type` and the schema are kept). Each such
sequence gets an xgrammar `GrammarMatcher`: before sampling, the tokens the grammar forbids
are set to -inf in the sequence's logits row; after sampling, the chosen token advances the
matcher, and the sequence finishes ("stop") when the grammar has been completed and its stop
token taken. xgrammar is the structured-output backend vLLM and SGLang use; a grammar engine is
not what pipectl exists for, so it is a library here (the `structured` extra), imported only when
a request asks for a format.
"""

from __future__ import annotations

import json
import re
import threading
from typing import TYPE_CHECKING, Any

from nodes.errors import InvalidRequest

if TYPE_CHECKING:
    import torch

FIELD = "response_format"
_SCHEMA_KEYS = {"name", "schema", "strict", "description"}
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def canonical_response_format(value: Any) -> str | None:
    """OpenAI's `response_format` (an object, or its JSON text) checked and reduced to what the
    engine needs: None for plain text, else canonical JSON `{"type": ..., ["schema": ...]}`.
    Raises InvalidRequest naming `response_format` (or the key inside it) on any other shape."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidRequest(f"'{FIELD}' is not valid JSON: {exc}", field=FIELD) from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise InvalidRequest(
            f"'{FIELD}' must be an object {{'type': 'text' | 'json_object' | 'json_schema'}}, "
            f"not {value!r:.80}",
            field=FIELD,
        )
    kind = value["type"]
    extra = set(value) - {"type", "json_schema"}
    if kind == "text" or kind == "json_object":
        extra |= {"json_schema"} & set(value)
    if extra:
        raise InvalidRequest(f"'{FIELD}' has unknown keys {sorted(extra)}", field=FIELD)
    if kind == "text":
        return None
    if kind == "json_object":
        return json.dumps({"type": "json_object"})
    if kind != "json_schema":
        raise InvalidRequest(
            f"'{FIELD}.type' must be 'text', 'json_object' or 'json_schema', not {kind!r:.40}",
            field=FIELD,
        )
    name, schema = _json_schema(value.get("json_schema"))
    # canonical form is itself a valid response_format (a node may check it again)
    canonical = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    return json.dumps(canonical, sort_keys=True)


def _json_schema(spec: Any) -> tuple[str, dict]:
    """(name, schema) of OpenAI's `json_schema` object: `name` required, 1-64 of a-z A-Z 0-9 _ -;
    `schema` a JSON Schema object (absent: any JSON value); `strict` a boolean; `description`
    a string (OpenAI's API reference, vLLM's JsonSchemaResponseFormat). Raises InvalidRequest
    naming the key."""
    where = f"{FIELD}.json_schema"
    if not isinstance(spec, dict):
        raise InvalidRequest(
            f"'{where}' must be an object {{'name': ..., 'schema': {{...}}}}, not {spec!r:.40}",
            field=FIELD,
        )
    if set(spec) - _SCHEMA_KEYS:
        unknown = sorted(set(spec) - _SCHEMA_KEYS)
        raise InvalidRequest(f"'{where}' has unknown keys {unknown}", field=FIELD)
    name = spec.get("name")
    if "name" not in spec:
        raise InvalidRequest(f"'{where}.name' is missing (OpenAI requires it)", field=FIELD)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"'{where}.name' must be 1-64 characters of a-z, A-Z, 0-9, _ and -, not {name!r:.70}",
            field=FIELD,
        )
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"'{where}.schema' must be a JSON Schema object, not {schema!r:.40} (a boolean "
            "schema is not taken: give {} for any JSON value)",
            field=FIELD,
        )
    for key, kind, words in (("strict", bool, "true or false"), ("description", str, "a string")):
        if spec.get(key) is not None and not isinstance(spec[key], kind):
            raise InvalidRequest(f"'{where}.{key}' must be {words}, not {spec[key]!r:.40}",
                                 field=FIELD)  # fmt: skip
    return name, schema


class GrammarCompiler:
    """Compiles `response_format`s for one tokenizer, once each (xgrammar caches by grammar),
    and hands out one matcher per sequence. Thread-safe: requests are added from any thread."""

    def __init__(self, hf_tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...]):
        self._tokenizer = hf_tokenizer
        self._vocab_size = vocab_size
        self._stop_token_ids = list(stop_token_ids)
        self._compiler = None
        self._lock = threading.Lock()

    def _xgrammar(self):
        try:
            import xgrammar
        except ImportError:
            raise InvalidRequest(
                f"'{FIELD}' is not supported by this server: structured output needs xgrammar "
                "(pip install 'pipectl[structured]')",
                field=FIELD,
            ) from None
        with self._lock:
            if self._compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(
                    self._tokenizer, vocab_size=self._vocab_size,
                    stop_token_ids=self._stop_token_ids,
                )  # fmt: skip
                self._compiler = xgrammar.GrammarCompiler(info, max_threads=1)
        return xgrammar

    def matcher(self, response_format: str):
        """A fresh GrammarMatcher for canonical `response_format` JSON. A schema xgrammar cannot
        compile raises InvalidRequest naming `response_format`."""
        xgrammar = self._xgrammar()
        spec = json.loads(response_format)
        try:
            # json_object: any JSON object (OpenAI's JSON mode), as vLLM compiles it
            schema = spec.get("json_schema", {}).get("schema", {"type": "object"})
            compiled = self._compiler.compile_json_schema(json.dumps(schema))
        except (RuntimeError, ValueError, TypeError) as exc:
            # xgrammar prefixes its C++ errors with "[time] file.cc:line: "
            reason = re.sub(r"^\[[^\]]*\] \S+:\d+: ", "", str(exc).splitlines()[0])
            raise InvalidRequest(
                f"'{FIELD}.json_schema.schema' cannot be used: {reason:.200}",
                field=FIELD,
            ) from None
        return xgrammar.GrammarMatcher(compiled)


def mask_logits(logits: torch.Tensor, matchers: list) -> None:
    """In place on float32 `logits` [S, V]: each row whose matcher is not None keeps only the
    tokens its grammar allows next (others -inf). Rows without a matcher are untouched."""
    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return
    import xgrammar

    bitmask = xgrammar.allocate_token_bitmask(len(matchers), logits.shape[-1])
    for i in rows:
        matchers[i].fill_next_token_bitmask(bitmask, i)
    xgrammar.apply_token_bitmask_inplace(logits, bitmask, indices=rows)


def advance(matcher, token: int) -> bool:
    """Feed the chosen `token` to the matcher; True when the grammar is finished (its stop token
    taken). A token the grammar refuses (it cannot be chosen after masking) raises RuntimeError."""
    if not matcher.accept_token(token):
        raise RuntimeError(f"structured output: token {token} is not allowed by the grammar")
    return matcher.is_terminated()
