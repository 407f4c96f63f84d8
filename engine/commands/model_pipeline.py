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


# a Hugging Face style name as vLLM users pass it (org/model, Llama-3.1-8B)
_OPENAI_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)?")


def served_names(served_name: str | None) -> tuple[str | None, str | None]:
    """(pipeline name, /v1-only name) of `--served-model-name`. A name a pipeline can hold is
    both. A Hugging Face style name (`org/model`, `Llama-3.1-8B`) is served under that name on
    /v1, as `vllm serve` does, and under `default_served_name` of it over KServe, whose paths
    (/v2/models/NAME/infer) take one segment and where '.' joins a pipeline to its node. Any
    other name is left to the spec's check (an error naming the flag)."""
    if served_name is None or re.match(NAME_PATTERN, served_name):
        return served_name, None
    if _OPENAI_NAME.fullmatch(served_name) and ".." not in served_name:
        return default_served_name(served_name), served_name
    return served_name, None


def model_spec(
    model: str,
    served_name: str | None = None,
    *,
    dtype: str | None = None,
    quantization: str | None = None,
    max_model_len: int | None = None,
    kv_cache_bytes: int | None = None,
    speculative: dict | None = None,
    threads: int | None = None,
    device: str = "auto",
    base_dir: str | Path = ".",
) -> PipelineSpec:
    """The pipeline spec serving `model` (pkg:module/file, a GGUF path or a HF folder, relative
    to `base_dir`) as `served_name`. The model is alone in its process, as with `vllm serve`: it
    computes on every core (`threads: 0`, torch's default) unless `threads` says otherwise.
    Raises SpecError (a bad name or param, with the flag)."""
    name = served_name or default_served_name(model)
    params: dict = {"model": model, "threads": 0 if threads is None else threads}
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


# the flag behind each field of the generated pipeline: its errors name the flag, not a line of
# a file the user never wrote
FLAGS = {
    "name": "--served-model-name",
    "nodes.generate.params.model": "--model",
    "nodes.generate.params.dtype": "--dtype",
    "nodes.generate.params.quantization": "--quantization",
    "nodes.generate.params.max_model_len": "--max-model-len",
    "nodes.generate.params.kv_cache_bytes": "--kv-cache-bytes",
    "nodes.generate.params.speculative": "--speculative-config",
    "nodes.generate.params.threads": "--threads",
    "defaults.placement.device": "--device",
}


def flag_problems(exc: Exception) -> list[str]:
    """The errors of a `--model` pipeline that failed to compile, each naming its flag
    ("--max-model-len: Input should be greater than or equal to 2 (got 0)")."""
    problems = []
    for issue in getattr(exc, "issues", None) or ():
        if issue.severity != "error":
            continue
        flag = next((f for p, f in FLAGS.items() if issue.path == p or
                     issue.path.startswith(p + ".")), "")  # fmt: skip
        message = issue.message
        if flag:
            field = issue.path.rpartition(".")[2]
            message = message.removeprefix(f"{field}: ")
        hint = f" ({issue.hint})" if issue.hint else ""
        problems.append(f"{flag or issue.path or '--model'}: {message}{hint}")
    return problems or [str(exc)]
