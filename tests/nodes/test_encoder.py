"""The encoder kind against embeddings computed directly with transformers (AutoModel, mean
pooling over the attention mask, L2 normalisation)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from nodes.encoder import EncoderNode, EncoderParams, model_dir
from nodes.registry import get_kind

TEXTS = [
    "How do I read a file line by line?",
    "json.dumps: Serialize obj to a JSON formatted str.",
    "ok",
    "",
    "Ünïcode façade — naïve café, 東京. " * 3,
    "A much longer passage about the standard library: " + "word " * 120,
]


def reference(texts: list[str], max_length: int = 256) -> np.ndarray:
    """Embeddings straight from transformers, the way sentence-transformers computes them."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = model_dir(EncoderParams(), None)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    return reference(TEXTS)


@pytest.fixture(scope="module")
def fp32() -> EncoderNode:
    node = EncoderNode(EncoderParams(micro_batch=2, dtype="fp32"), None)
    node.load("cpu")
    return node


def test_registered_under_its_kind_name():
    assert get_kind("encoder") is EncoderNode


def test_ports_read_dim_from_config_without_importing_torch():
    code = (
        "import sys\n"
        "from nodes.encoder import EncoderNode, EncoderParams\n"
        "ports = EncoderNode.ports(EncoderParams())\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "print(ports.inputs['text'].dtype, ports.inputs['text'].shape, "
        "ports.outputs['embedding'].dtype, ports.outputs['embedding'].shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["BYTES", "(1,)", "FP32", "(384,)"]


def test_params_reject_bf16_on_onnxruntime_and_unknown_keys():
    with pytest.raises(ValidationError, match="bf16 needs backend torch"):
        EncoderParams(backend="onnxruntime", dtype="bf16")
    with pytest.raises(ValidationError, match="extra"):
        EncoderParams(modle="x")


def test_missing_model_folder_is_named(tmp_path):
    params = EncoderParams(model="no/such/model")
    with pytest.raises(FileNotFoundError, match="no/such/model"):
        EncoderNode.ports(params, tmp_path)


def test_memory_estimate_follows_weights_and_dtype():
    weights = (model_dir(EncoderParams(), None) / "model.safetensors").stat().st_size
    fp32 = EncoderNode.memory_bytes(EncoderParams())
    bf16 = EncoderNode.memory_bytes(EncoderParams(dtype="bf16"))
    assert fp32 > weights
    assert bf16 < fp32 - weights // 3


@pytest.mark.integration
def test_fp32_matches_transformers(fp32, expected):
    got = fp32.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.integration
def test_mixed_length_batch_equals_one_by_one(fp32):
    batch = fp32.embed(TEXTS)
    single = np.stack([fp32.embed([text])[0] for text in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-5)


@pytest.mark.integration
def test_run_batch_takes_bytes_items_and_keeps_order(fp32, expected):
    items = [{"text": np.array([t.encode()], dtype=object)} for t in reversed(TEXTS)]
    out = fp32.run_batch(items)
    assert [set(o) for o in out] == [{"embedding"}] * len(TEXTS)
    got = np.stack([o["embedding"] for o in out])
    np.testing.assert_allclose(got, expected[::-1], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        fp32.run_batch([{"text": np.array([b"a", b"b"], dtype=object)}])
    assert fp32.embed([]).shape == (0, 384)


@pytest.mark.integration
def test_truncates_at_max_length():
    node = EncoderNode(EncoderParams(max_length=8, dtype="fp32"), None)
    node.load("cpu")
    long = TEXTS[-1]
    np.testing.assert_allclose(node.embed([long]), reference([long], max_length=8), atol=1e-5)
    assert not np.allclose(node.embed([long]), reference([long]), atol=1e-3)


@pytest.mark.integration
def test_bf16_is_close_to_fp32(expected):
    node = EncoderNode(EncoderParams(dtype="bf16"), None)
    node.load("cpu")
    got = node.embed(TEXTS)
    assert got.dtype == np.float32
    # Each rounding to bf16 moves a value by at most u = 2^-8 of itself; LayerNorm keeps the
    # errors relative. all-MiniLM-L6-v2 rounds R = 2 (embeddings) + 6 x 12 (per layer: q, k, v,
    # QK^T, softmax, context, out-proj, add+LN, up, GELU, down, add+LN) + 2 (pooling, norm) = 76
    # times. Independent roundings (std u/sqrt(3) each) add like a random walk, so a unit vector
    # moves by about sigma = u * sqrt(R / 3); the bound is 4 sigma (~0.08; measured: 0.018).
    sigma = 2.0**-8 * np.sqrt(76 / 3)
    assert (np.linalg.norm(got - expected, axis=1) <= 4 * sigma).all()
    # and the computation was bf16, not fp32 under another name: fp32 lands within 1e-5
    assert np.abs(got - expected).max() > 1e-4


@pytest.mark.integration
@pytest.mark.slow
def test_onnxruntime_exports_once_and_matches(tmp_path, expected):
    params = EncoderParams(backend="onnxruntime", cache_dir=str(tmp_path / "onnx"))
    node = EncoderNode(params, None)
    node.load("cpu")
    files = sorted((tmp_path / "onnx").iterdir())
    assert len(files) == 1 and files[0].suffix == ".onnx"
    np.testing.assert_allclose(node.embed(TEXTS), expected, atol=1e-4)
    mtime = files[0].stat().st_mtime_ns
    again = EncoderNode(params, None)
    again.load("cpu")  # reuses the cached export
    assert sorted((tmp_path / "onnx").iterdir()) == files
    assert files[0].stat().st_mtime_ns == mtime
    batch = again.embed(TEXTS)
    single = np.stack([again.embed([text])[0] for text in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-5)


@pytest.mark.integration
def test_auto_loads_the_dtype_the_cpu_computes_natively(monkeypatch):
    """On this machine auto is what nodes/compute_dtype resolves from torch's report; on a CPU
    without native bf16 (Zen 3's flags) it is fp32. The model's weights are in that dtype."""
    import torch

    from nodes import compute_dtype

    node = EncoderNode(EncoderParams(), None)
    node.load("cpu")
    expected = compute_dtype.resolve_dtype("auto", "cpu")
    assert node.dtype == expected
    assert next(node._model.parameters()).dtype == compute_dtype.torch_dtype(expected.dtype)
    zen3 = compute_dtype.cpu_info_from_flags(["sse4_2", "avx", "avx2", "fma", "f16c"])
    monkeypatch.setattr(compute_dtype, "cpu_info", lambda import_torch=True: zen3)
    slow_bf16 = EncoderNode(EncoderParams(), None)
    slow_bf16.load("cpu")
    assert slow_bf16.dtype.reason == "cpu: AVX2, no native bf16 → fp32"
    assert next(slow_bf16._model.parameters()).dtype == torch.float32
    onnx = EncoderParams(backend="onnxruntime").compute_dtype("cpu")
    assert (onnx.dtype, onnx.reason) == ("fp32", "cpu: onnxruntime runs fp32 → fp32")


def test_two_instances_load_at_once_in_a_fresh_process():
    """An instance group of two loads in two threads; transformers' lazy imports are not
    thread-safe (without nodes/hf_loading.py's lock this failed 6 times in 6: "cannot import
    name 'AutoTokenizer'"). A fresh process, so that nothing is imported before."""
    code = (
        "import threading\n"
        "from nodes.encoder import EncoderNode, EncoderParams\n"
        "nodes = [EncoderNode(EncoderParams(dtype='fp32'), None) for _ in range(2)]\n"
        "errors = []\n"
        "def load(node):\n"
        "    try:\n"
        "        node.load('cpu')\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=load, args=(n,)) for n in nodes]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "assert not errors, errors\n"
        "a, b = (n.embed(['same text']) for n in nodes)\n"
        "assert (a == b).all()\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
