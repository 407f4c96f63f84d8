"""What the engine hands back: a Delta per step of a request (streamed) and a whole Completion."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Delta:
    """What one step added to one request; the last one has `finished` and the counts."""

    request_id: str
    text: str
    token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None  # stop | length | abort | error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    logprobs: list[float] = field(default_factory=list)
    error: str | None = None
    scores: list[float] | None = None  # logprobs of the request's score_token_ids at this step
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)  # per token


@dataclass(slots=True)
class Completion:
    """A whole generated answer."""

    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None


def merge(parts: list[Delta]) -> Delta:
    """One Delta for several tokens of one step (speculative decoding), the last one's state."""
    if len(parts) == 1:
        return parts[0]
    last = parts[-1]
    last.text = "".join(d.text for d in parts)
    last.token_ids = [t for d in parts for t in d.token_ids]
    last.logprobs = [x for d in parts for x in d.logprobs]
    last.top_logprobs = [x for d in parts for x in d.top_logprobs]
    return last


def completion(parts: list[Delta]) -> Completion:
    last = parts[-1]
    text = "".join(d.text for d in parts)
    logprobs = [x for d in parts for x in d.logprobs]
    tops = [x for d in parts for x in d.top_logprobs]
    return Completion(
        last.request_id, text, [t for d in parts for t in d.token_ids], last.finish_reason,
        last.prompt_tokens, last.completion_tokens, last.cached_tokens, logprobs or None,
        tops or None,
    )  # fmt: skip
