"""Cross-encoder relevance scores: a Hugging Face sequence-classification model reads each
(query, passage) pair together and returns one logit per pair. torch (fp32, bf16 or fp16) or
onnxruntime (exported once, cached beside the other exports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nodes.hf_loading import hf_from_pretrained


class CrossEncoderScorer:
    """Scores (query, passage) pairs with `AutoModelForSequenceClassification`.

    The relevance score is the single logit of a one-label model, else the log-probability of
    `label` (default: the last label, the "relevant" class of two-label rerankers)."""

    def __init__(
        self,
        folder: Path,
        *,
        device: str = "cpu",
        dtype: str = "fp32",
        runtime: str = "torch",
        batch_size: int = 32,
        max_length: int = 512,
        label: int | None = None,
        cache_dir: str | Path | None = None,
    ):
        self.folder = Path(folder)
        if not (self.folder / "config.json").exists():
            raise FileNotFoundError(
                f"{self.folder}: not a Hugging Face model folder (no config.json); the "
                f"cross_encoder backend needs a sequence-classification model folder"
            )
        self.batch_size = batch_size
        self.max_length = max_length
        self.runtime = runtime
        self.device = device
        self.tokenizer = hf_from_pretrained("AutoTokenizer", str(self.folder))
        if runtime == "torch":
            self._load_torch(dtype)
        else:
            self._load_onnx(dtype, cache_dir)
        self.label = self.num_labels - 1 if label is None else label
        if not -self.num_labels <= self.label < self.num_labels:
            raise ValueError(f"label {label} out of range: the model has {self.num_labels} labels")

    def _load_torch(self, dtype: str) -> None:
        from nodes.compute_dtype import torch_dtype

        model = hf_from_pretrained(
            "AutoModelForSequenceClassification", str(self.folder), dtype=torch_dtype(dtype)
        )
        self.model = model.to(self.device).eval()
        self.num_labels = int(model.config.num_labels)
        self._input_names = ["input_ids", "attention_mask", "token_type_ids"]

    def _load_onnx(self, dtype: str, cache_dir: str | Path | None) -> None:
        from nodes.onnx_export import cached_export, export_sequence_classifier, ort_session

        if dtype != "fp32":
            raise ValueError("the onnxruntime runtime runs fp32 models only; use dtype: fp32")
        path = cached_export(
            self.folder,
            "seqcls",
            lambda out: export_sequence_classifier(self.folder, out),
            cache_dir=cache_dir,
        )
        self.session = ort_session(path, self.device)
        self._input_names = [i.name for i in self.session.get_inputs()]
        self.num_labels = int(self.session.get_outputs()[0].shape[-1])

    def score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        """One FP32 relevance score per pair, in order. Pairs run in sub-batches of similar
        length so that padding stays small."""
        out = np.empty(len(queries), dtype=np.float32)
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(passages[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._score_chunk(
                [queries[i] for i in chunk], [passages[i] for i in chunk]
            )
        return out

    def _score_chunk(self, queries: list[str], passages: list[str]) -> np.ndarray:
        framework = "pt" if self.runtime == "torch" else "np"
        enc = self.tokenizer(
            queries,
            passages,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors=framework,
        )
        if self.runtime == "torch":
            import torch

            with torch.inference_mode():
                feeds = {k: v.to(self.device) for k, v in enc.items() if k in self._input_names}
                logits = self.model(**feeds).logits.float().cpu().numpy()
        else:
            feeds = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
            if "token_type_ids" in self._input_names and "token_type_ids" not in feeds:
                feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            feeds = {k: v for k, v in feeds.items() if k in self._input_names}
            logits = self.session.run(None, feeds)[0].astype(np.float32)
        if self.num_labels == 1:
            return logits[:, 0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return log_probs[:, self.label]
