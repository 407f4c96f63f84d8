"""Configuration of the LLM engine: the model's shape and the engine's limits, checked."""

from __future__ import annotations

from dataclasses import dataclass

from nodes.errors import InvalidConfig
from nodes.llm.speculative import SpeculativeConfig

_ROPE_TYPES = ("default", "llama3")
ATTENTION_BACKENDS = ("auto", "torch", "cpu_kernel")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Shape of a Llama-family model, from config.json or GGUF metadata."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int = 0  # 0: hidden_size // num_heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # Llama-3 scaling as sorted (key, value) pairs: rope_type, factor, low_freq_factor, ...
    rope_scaling: tuple[tuple[str, float | str], ...] = ()
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model config: {name} must be > 0, got {getattr(self, name)}")
        if self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            raise ValueError(f"model config: num_heads {self.num_heads} is not a multiple of "
                             f"num_kv_heads {self.num_kv_heads}")  # fmt: skip
        if self.head_dim % 2:
            raise ValueError(f"model config: head_dim {self.head_dim} must be even for RoPE")
        rope_type = dict(self.rope_scaling).get("rope_type", "default")
        if rope_type not in _ROPE_TYPES:
            raise ValueError(f"rope_type {rope_type!r} unsupported; supported: {_ROPE_TYPES}")

    @classmethod
    def from_hf(cls, cfg: dict) -> ModelConfig:
        """From a Hugging Face config.json dict (transformers 4 and 5 spellings of RoPE)."""
        rope = dict(cfg.get("rope_scaling") or cfg.get("rope_parameters") or {})
        theta = cfg.get("rope_theta", rope.pop("rope_theta", 10000.0))
        rope.pop("rope_theta", None)
        rope["rope_type"] = rope.pop("type", None) or rope.get("rope_type", "default")
        if rope["rope_type"] == "default":
            rope = {}
        eos = cfg.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            head_dim=cfg.get("head_dim") or 0,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
            rope_theta=float(theta),
            rope_scaling=tuple(sorted(rope.items())),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos,
        )


DEFAULT_MAX_MODEL_LEN = 2048  # when max_model_len is not set, and the model allows as much


def derive_max_model_len(requested: int | None, model: ModelConfig) -> int:
    """The engine's max_model_len: `requested`, which must not exceed the model's
    max_position_embeddings (vLLM refuses that too: positions past it were never trained, and
    RoPE tables stop there), or min(DEFAULT_MAX_MODEL_LEN, max_position_embeddings) when None.
    Raises nodes.errors.InvalidConfig (a ValueError) naming both numbers."""
    limit = model.max_position_embeddings
    if requested is None:
        return min(DEFAULT_MAX_MODEL_LEN, limit)
    if requested > limit:
        raise InvalidConfig(
            f"max_model_len {requested} is more than the model's max_position_embeddings "
            f"{limit}; set max_model_len to at most {limit}, or leave it unset for "
            f"{min(DEFAULT_MAX_MODEL_LEN, limit)}",
            field="max_model_len",
        )
    return requested


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Limits of one engine: dtype, KV budget and the per-step token budget."""

    dtype: str = "auto"  # auto | bf16 | fp16 | fp32; the engine resolves auto for its device
    device: str = "cpu"
    block_size: int = 16
    kv_cache_bytes: int = 512 << 20
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    # prompt plus output tokens; None: the model's max_position_embeddings, at most 2048
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    num_threads: int = 1  # torch intra-op threads; 0 leaves torch's setting (see bench/llm.py)
    speculative: SpeculativeConfig | None = None  # n-gram speculation (nodes/llm/speculative.py)
    # weights at run time: auto (GGUF stays quantized, HF dense) | none | int8 | int4 (nodes/llm/quant.py)
    quantization: str = "auto"
    # decode attention on CPU: auto (the C kernel where a C compiler builds it, else torch ops)
    # | torch | cpu_kernel (the C kernel or an error); nodes/llm/cpu_attention.py
    attention_backend: str = "auto"

    def __post_init__(self):
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"dtype {self.dtype!r} unsupported; dtypes: auto, bf16, fp16, fp32")
        if self.quantization not in ("auto", "none", "int8", "int4"):
            raise ValueError(f"quantization {self.quantization!r} unsupported; "
                             "choose from auto, none, int8, int4")  # fmt: skip
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend {self.attention_backend!r} unsupported; "
                             f"choose from {', '.join(ATTENTION_BACKENDS)}")  # fmt: skip
        if self.attention_backend == "cpu_kernel" and self.dtype == "fp16":
            raise ValueError("attention_backend cpu_kernel reads fp32 or bf16 KV caches, not fp16; "
                             "use dtype fp32/bf16/auto, or attention_backend auto or torch")  # fmt: skip
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        lows = {"kv_cache_bytes": 1, "max_num_seqs": 1, "max_num_batched_tokens": 1,
                "max_model_len": 2, "num_threads": 0}  # fmt: skip
        for name, low in lows.items():
            if getattr(self, name) is not None and getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                             f"max_num_seqs ({self.max_num_seqs}): each running sequence decodes "
                             "every step")  # fmt: skip
