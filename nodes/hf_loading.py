"""Loading from transformers in parallel threads: one process-wide lock.

Node instances load in threads at once (an instance group of two, pipelines of a repository).
transformers resolves its classes lazily (`from transformers import AutoTokenizer`, and the
model-specific modules a `from_pretrained` picks), and that is not thread-safe: two encoder
instances loading together failed 6 times in 6 with "ImportError: cannot import name
'AutoTokenizer' from 'transformers'". Every transformers import and `from_pretrained` of the
node kinds runs under `HF_LOCK`; loads serialize only for that part (weights conversion, exports
and warm-up stay parallel).
"""

from __future__ import annotations

import threading
from typing import Any

HF_LOCK = threading.RLock()


def hf_from_pretrained(class_name: str, *args: Any, **kwargs: Any) -> Any:
    """`transformers.<class_name>.from_pretrained(*args, **kwargs)` under HF_LOCK."""
    with HF_LOCK:
        import transformers

        return getattr(transformers, class_name).from_pretrained(*args, **kwargs)
