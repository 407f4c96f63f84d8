"""`pipectl serve --model MODEL`: the one-node `llm` pipeline that serves a model without a file,
as `vllm serve MODEL` does.

The pipeline takes `messages` or `prompt` and, through the llm node's request parameters, every
sampling field (max_tokens, temperature, ...); it returns the text (streamed), finish_reason,
prompt_tokens, completion_tokens and token_logprobs, which is what the OpenAI routes read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.spec import NAME_PATTERN, PipelineSpec, parse_spec

_OUTPUTS = ("text", "finish_reason", "prompt_tokens", "completion_tokens", "token_logprobs")


def default_served_name(model: str) -> str:
    """The served name of a model path: its file or folder name, `.gguf` dropped, characters a
    model name cannot hold turned into '-' (SmolLM2-135M-Instruct.Q4_1.gguf ->
    SmolLM2-135M-Instruct-Q4_1)."""
    stem = Path(model.split(":", 1)[-1] if model.startswith("pkg:") else model).name
    stem = stem.removesuffix(".gguf")
    name = re.sub(r"[^A-Za-z0-9_-]", "-", stem).strip("-") or "model"
    return name if re.match(NAME_PATTERN, name) else f"m-{name}"


def model_spec(
    model: str,
    served_name: str | None = None,
    *,
    dtype: str | None = None,
    quantization: str | None = None,
    max_model_len: int | None = None,
    kv_cache_bytes: int | None = None,
    speculative: dict | None = None,
    device: str = "auto",
    base_dir: str | Path = ".",
) -> PipelineSpec:
    """The pipeline spec serving `model` (pkg:module/file, a GGUF path or a HF folder, relative
    to `base_dir`) as `served_name`. Raises SpecError (a bad name or param, with the flag)."""
    name = served_name or default_served_name(model)
    params: dict = {"model": model}
    for key, value in (
        ("dtype", dtype),
        ("quantization", quantization),
        ("max_model_len", max_model_len),
        ("kv_cache_bytes", kv_cache_bytes),
        ("speculative", speculative),
    ):
        if value is not None:
            params[key] = value
    spec = {
        "apiVersion": "pipectl/v1",
        "name": name,
        "description": f"pipectl serve --model {model}",
        "inputs": {
            "messages": {"dtype": "BYTES", "shape": [1], "optional": True},
            "prompt": {"dtype": "BYTES", "shape": [1], "optional": True},
        },
        "outputs": {port: f"generate.{port}" for port in _OUTPUTS},
        "defaults": {"placement": {"device": device, "instances": 1}},
        "nodes": {
            "generate": {
                "kind": "llm",
                "params": params,
                "inputs": {"messages": "$inputs.messages", "prompt": "$inputs.prompt"},
            }
        },
    }
    # JSON is YAML: the spec goes through the same parser, checks and line-less errors as a file
    return parse_spec(json.dumps(spec, indent=1), f"--model {model}", base_dir=str(base_dir))
