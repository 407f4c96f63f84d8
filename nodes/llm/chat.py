"""Chat messages as the `llm` node takes them: text inputs and the `messages` JSON, checked.

One check of a chat (`check_messages`: keys, roles, content parts) serves every way a chat
arrives: the `messages` input of the llm node (KServe REST, gRPC, a pipeline edge) and OpenAI's
/v1/chat/completions body (engine/server/openai_fields.py), so both accept and refuse the same. Roles are OpenAI's that carry plain text, less `tool` and
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


def _refused(where: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{where}' is not supported: {why}", field="messages")


def message_text(where: str, content: object) -> str:
    """A message's content as text: a string, or a non-empty list of OpenAI's text parts
    `{"type": "text", "text": str}` joined; any other part (image, audio, file) or part key is
    refused by name (`messages[0].content[1]`)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise InvalidRequest(
            f"'{where}' must be a string or a non-empty list of text parts, not {content!r:.60}",
            field="messages",
        )
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else part
            raise _refused(f"{where}[{j}]", f"only text parts, got {kind!r:.40}")
        for key in part:
            if key not in ("type", "text"):
                raise _refused(f"{where}[{j}].{key}", "a text part has only 'type' and 'text'")
        if not isinstance(part.get("text"), str):
            raise InvalidRequest(
                f"'{where}[{j}].text' must be a string, not {part.get('text')!r:.40}",
                field="messages",
            )
        texts.append(part["text"])
    return "".join(texts)


def check_messages(messages: object) -> list[dict[str, str]]:
    """A chat checked and flattened to [{"role", "content": str}]: the one check behind the llm
    node's `messages` input (KServe REST, gRPC, a pipeline edge) and /v1/chat/completions.
    Each message is {"role": one of CHAT_ROLES, "content": str or text parts}; any other key
    (`name`, `tool_calls`...) is refused rather than dropped. Raises InvalidRequest (field
    `messages`) naming `messages[i].field`."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            '\'messages\' must be a non-empty list of {"role", "content"}', field="messages"
        )
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidRequest(
                f"'{where}' must be an object with 'role' and 'content', not {m!r:.40}",
                field="messages",
            )
        for key in m:
            if key not in ("role", "content"):
                raise _refused(f"{where}.{key}", "a message has only 'role' and 'content' here")
        check_role(i, m.get("role"))
        if "content" not in m:
            raise InvalidRequest(f"'{where}.content' is missing", field="messages")
        text = message_text(f"{where}.content", m["content"])
        try:  # JSON allows lone surrogates ("\ud800"); the tokenizer does not
            text.encode()
        except UnicodeEncodeError as exc:
            raise InvalidRequest(
                f"{where} is not valid Unicode text: {exc.reason} "
                f"({exc.object[exc.start : exc.end]!a})",
                field="messages",
            ) from None
        out.append({"role": m["role"], "content": text})
    return out


def input_messages(array: np.ndarray) -> list[dict[str, str]]:
    """A chat from the `messages` input: JSON text checked by `check_messages`."""
    text = input_text(array, "messages")
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"llm: input 'messages' is not JSON ({exc}); expected a chat "
            '[{"role": "user", "content": "..."}], got ' + repr(text[:40]),
            field="messages",
        ) from None
    return check_messages(messages)
