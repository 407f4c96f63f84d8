"""Chat messages as the `llm` node takes them: text inputs and the `messages` JSON, checked.

One check of a message's role serves every way a chat arrives: the `messages` input of the llm
node (KServe REST, gRPC, a pipeline edge) and OpenAI's /v1/chat/completions body
(engine/server/openai_fields.py). Roles are OpenAI's that carry plain text, less `tool` and
`function` (tools are refused).
"""

from __future__ import annotations

import json

import numpy as np

from nodes.errors import InvalidRequest

CHAT_ROLES = ("system", "developer", "user", "assistant")


def check_role(index: int, role: object) -> None:
    """Raise InvalidRequest (field `messages`) naming `messages[index].role` unless `role` is
    one of CHAT_ROLES."""
    if role not in CHAT_ROLES:
        raise InvalidRequest(
            f"'messages[{index}].role' must be one of {', '.join(CHAT_ROLES)}, not {role!r:.40}",
            field="messages",
        )


def input_text(array: np.ndarray, field: str) -> str:
    """The first element of a BYTES input as text; InvalidRequest naming `field` if not UTF-8."""
    value = np.asarray(array).reshape(-1)[0]
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"llm: input {field!r} is not UTF-8 text: {exc}", field=field
        ) from None


def input_messages(array: np.ndarray) -> list[dict]:
    """A chat from the `messages` input: JSON list of {"role": one of CHAT_ROLES, "content": str};
    anything else raises InvalidRequest naming the message."""
    text = input_text(array, "messages")
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"llm: input 'messages' is not JSON ({exc}); expected a chat "
            '[{"role": "user", "content": "..."}], got ' + repr(text[:40]),
            field="messages",
        ) from None
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            'llm: input \'messages\' must be a non-empty JSON list of {"role", "content"}',
            field="messages",
        )
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise InvalidRequest(
                f'llm: messages[{i}] must be {{"role": str, "content": str}}, got {m!r:.60}',
                field="messages",
            )
        check_role(i, m["role"])
        try:  # JSON allows lone surrogates ("\ud800"); the tokenizer does not
            (m["role"] + m["content"]).encode()
        except UnicodeEncodeError as exc:
            raise InvalidRequest(
                f"llm: messages[{i}] is not valid Unicode text: {exc.reason} "
                f"({exc.object[exc.start : exc.end]!a})",
                field="messages",
            ) from None
    return messages
