"""One OpenAI completion or chat completion as it comes out of a pipeline: answered whole
(`Completion.whole`) or as server-sent `chat.completion.chunk` / `text_completion` events
(`Completion.stream`, ending with `data: [DONE]`), with `usage`, `finish_reason` and `logprobs`
in OpenAI's shapes (https://platform.openai.com/docs/api-reference/chat). The routes that build it
are in openai_api.py.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
from aiohttp import web

from engine.errors import RequestError

USAGE_OUTPUTS = ("prompt_tokens", "completion_tokens")
LOGPROBS_OUTPUT = "token_logprobs"

Events = AsyncIterator[tuple[dict[str, np.ndarray], bool]]  # Repository.stream's events


class Completion:
    """The answer to one request: its id, the text pieces, token entries and counts so far."""

    def __init__(self, model: str, body: dict, out_name: str, *, chat: bool, logprobs: bool):
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.model, self.body, self.out_name = model, body, out_name
        self.chat, self.logprobs_on = chat, logprobs
        self.offset = [0]  # text offset of the next token (completions' logprobs)
        self.pieces: list[str] = []
        self.lines: list[dict] = []
        self.counts: dict[str, int | None] = {}
        self.finish = "stop"

    def note(self, outputs: dict) -> None:
        """Take the token counts and finish reason an event carries."""
        self.counts.update({n: _count(outputs, n) for n in USAGE_OUTPUTS if n in outputs})
        if "finish_reason" in outputs and outputs["finish_reason"].size:
            self.finish = _decode(outputs["finish_reason"]) or "stop"

    def choice(self, text: str, finish: str | None, first: bool = False, lines=None) -> dict:
        """One entry of `choices`: a message, a chat delta or a completion text."""
        logprobs = None
        if self.logprobs_on and lines is not None:
            logprobs = _logprobs(lines or [], chat=self.chat, offset=self.offset)
        if not self.chat:
            return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
        if self.body.get("stream"):
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            return {"index": 0, "delta": delta if text or first else {},
                    "logprobs": logprobs, "finish_reason": finish}  # fmt: skip
        message = {"role": "assistant", "content": text}
        return {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}

    async def whole(self, events: Events) -> web.Response:
        """The whole answer as one JSON response."""
        async with contextlib.aclosing(events):
            async for outputs, _final in events:
                if self.out_name in outputs:
                    self.pieces.append(_decode(outputs[self.out_name]))
                self.lines.extend(_lines(outputs))
                self.note(outputs)
        kind = "chat.completion" if self.chat else "text_completion"
        choice = self.choice("".join(self.pieces), self.finish, lines=self.lines)
        return web.json_response(
            {"id": self.id, "object": kind, "created": self.created, "model": self.model,
             "choices": [choice], "usage": _usage(self.counts, self.pieces)}
        )  # fmt: skip

    async def stream(self, request: web.Request, events: Events) -> web.StreamResponse:
        """The answer as server-sent chunks. An error before the first chunk is a plain error
        status; after it, an in-band `error` event ends the stream."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        first = True
        try:
            async with contextlib.aclosing(events):  # a dropped client frees its work now
                async for outputs, _final in events:
                    if first:
                        await response.prepare(request)
                    self.note(outputs)
                    text = _decode(outputs[self.out_name]) if self.out_name in outputs else ""
                    new_lines = _lines(outputs)
                    if text or first or new_lines:
                        self.pieces.append(text)
                        await self._send(response, [self.choice(text, None, first, new_lines)])
                    first = False
        except RequestError as exc:
            if first:
                raise
            await response.write(
                f"data: {json.dumps({'error': {'message': str(exc)}})}\n\n".encode()
            )
            await response.write_eof()
            return response
        await self._send(response, [self.choice("", self.finish)])
        stream_options = self.body.get("stream_options") or {}
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            await self._send(response, [], _usage(self.counts, self.pieces))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _send(self, response, choices: list, usage: dict | None = None) -> None:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        data = {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": choices}  # fmt: skip
        if usage is not None:
            data["usage"] = usage
        await response.write(f"data: {json.dumps(data)}\n\n".encode())


def _decode(array: np.ndarray) -> str:
    return b"".join(bytes(v) for v in array.reshape(-1)).decode("utf-8", errors="replace")


def _count(outputs: dict, name: str) -> int | None:
    return int(np.asarray(outputs[name]).reshape(-1)[0]) if name in outputs else None


def _lines(outputs: dict) -> list[dict]:
    """The token entries (JSON lines of an llm node's token_logprobs) in one event."""
    if LOGPROBS_OUTPUT not in outputs:
        return []
    text = _decode(outputs[LOGPROBS_OUTPUT])
    return [json.loads(line) for line in text.splitlines() if line]


def _logprobs(entries: list[dict], *, chat: bool, offset: list[int]) -> dict:
    """OpenAI's logprobs object: chat's `content` list, or completions' parallel lists."""
    if chat:
        return {"content": entries, "refusal": None}
    offsets = []
    for entry in entries:
        offsets.append(offset[0])
        offset[0] += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


def _usage(counts: dict[str, int | None], pieces: list[str]) -> dict:
    prompt = counts.get("prompt_tokens") or 0
    completion = counts.get("completion_tokens")
    if completion is None:
        completion = sum(1 for p in pieces if p)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
