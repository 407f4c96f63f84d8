"""Custom steps of pipelines/rag.yaml (called by its `python` node).

`route` sends greetings and thanks straight to the LLM: for them it returns an empty `question`,
and the `encode` node's condition `text != ""` then skips retrieval (encode, search and rerank).
"""

from __future__ import annotations

import re

import numpy as np

GREETING_WORD = re.compile(
    r"hi|hello|hey|hiya|howdy|greetings|yo|thanks|thank|thx|cheers|bye|goodbye|good|morning|"
    r"afternoon|evening|you|there|ok|okay"
)


def is_greeting(text: str) -> bool:
    """Short messages made only of greeting or thanks words ("hi!", "thank you", "good morning")."""
    words = re.findall(r"[a-z']+", text.lower())
    return 0 < len(words) <= 4 and all(GREETING_WORD.fullmatch(w) for w in words)


def route(items: list[dict[str, np.ndarray]]) -> list[dict[str, object]]:
    """`question`: the query when it needs retrieval, else empty."""
    out = []
    for item in items:
        raw = item["query"].reshape(-1)[0]
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        out.append({"question": [b"" if is_greeting(text) else text.encode()]})
    return out
