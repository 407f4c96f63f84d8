"""Export a Hugging Face model folder to ONNX once, keep it in a cache keyed on the folder's
content, and open onnxruntime sessions on it. Shared by the kinds that offer an onnxruntime
backend."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

DEFAULT_CACHE = "~/.cache/pipectl/onnx"


def folder_hash(folder: Path, salt: str = "") -> str:
    """A key for the cache: small files by content, large ones by size and their two ends."""
    digest = hashlib.sha256(salt.encode())
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".md"):
        digest.update(path.name.encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as fh:
            if size <= 16 << 20:
                digest.update(fh.read())
            else:
                digest.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def cached_export(
    folder: Path,
    variant: str,
    export: Callable[[Path], None],
    *,
    opset: int = 17,
    cache_dir: str | Path | None = None,
) -> Path:
    """The cached `<folder>-<variant>-<key>.onnx`; on a miss `export(tmp_path)` writes it and it is
    moved into place atomically, so concurrent instances never read a half-written file."""
    root = Path(cache_dir or DEFAULT_CACHE).expanduser()
    key = folder_hash(folder, f"opset={opset};variant={variant}")
    path = root / f"{folder.name}-{variant}-{key}.onnx"
    if path.is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        export(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def ort_session(path: Path, device: str = "cpu", threads: int | None = None):
    """An onnxruntime session on `path`: CUDA provider for `cuda:N` when onnxruntime-gpu is
    installed, else CPU; idle threads sleep because other nodes share the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.partition(":")[2] or 0)
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    return ort.InferenceSession(str(path), options, providers=providers)


def export_sequence_classifier(folder: Path, out: Path, opset: int = 17) -> None:
    """Export `AutoModelForSequenceClassification` (fp32) with dynamic batch and length; inputs
    input_ids, attention_mask (and token_type_ids when the model takes them), output logits."""
    import inspect

    import torch

    from nodes.hf_loading import hf_from_pretrained

    model = hf_from_pretrained(
        "AutoModelForSequenceClassification", str(folder), dtype=torch.float32
    )
    model.eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")

    class _Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(names, tensors, strict=True))).logits

    ids = torch.ones((2, 8), dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["logits"] = {0: "batch"}
    torch.onnx.export(
        _Logits(),
        tuple(ids if n == "input_ids" else torch.ones_like(ids) for n in names),
        str(out),
        input_names=names,
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=opset,
        dynamo=False,
    )
