"""faiss_search: Flat, IVF and HNSW indexes saved, loaded and searched, checked against numpy
brute force on synthetic vectors and on a real subset of the sample corpus."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from nodes.encoder import EncoderNode, EncoderParams
from nodes.faiss_search import (
    FaissSearchNode,
    FaissSearchParams,
    default_nlist,
    read_meta,
    save_index,
    train_index,
)
from nodes.index_builder import build_index, read_corpus
from nodes.registry import get_kind

CORPUS = Path(__file__).resolve().parents[2] / "samples" / "corpus.jsonl"
DIM = 32


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str):
    if metric == "ip":
        scores = queries @ vectors.T
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        scores = ((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
        ids = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def saved(tmp_path: Path, vectors: np.ndarray, **params) -> FaissSearchParams:
    """Build and save an index over `vectors`; return the params a node would carry."""
    p = FaissSearchParams(index=str(tmp_path / "idx"), **params)
    index = train_index(vectors, p)
    keys = [f"doc{i}" for i in range(len(vectors))]
    texts = [f"passage number {i}" for i in range(len(vectors))]
    meta = {"model": "synthetic", "index_type": p.index_type, "metric": p.metric}
    save_index(p.index, index, keys, texts, meta)
    return p


def loaded(params: FaissSearchParams, base_dir=None) -> FaissSearchNode:
    node = FaissSearchNode(params, base_dir)
    node.load("cpu")
    return node


def stored(node: FaissSearchNode, ids) -> np.ndarray:
    """The vectors the node's index holds for `ids` (IVF needs its direct map for that)."""
    import faiss

    if node.params.index_type == "ivf":
        faiss.extract_index_ivf(node._index).make_direct_map()
    return np.stack([node._index.reconstruct(int(i)) for i in ids])


def query_items(queries: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{"vector": q} for q in queries]


def test_registered_under_its_kind_name():
    assert get_kind("faiss_search") is FaissSearchNode


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_matches_numpy_brute_force(tmp_path, metric):
    vectors, queries = unit_rows(500, 0), unit_rows(20, 1)
    node = loaded(saved(tmp_path, vectors, metric=metric, top_k=7))
    out = node.run_batch(query_items(queries))
    want_scores, want_ids = brute_force(vectors, queries, 7, metric)
    got_ids = np.stack([o["ids"] for o in out])
    got_scores = np.stack([o["scores"] for o in out])
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-4)
    assert out[0]["ids"].dtype == np.int64 and out[0]["scores"].dtype == np.float32
    assert list(out[3]["texts"]) == [f"passage number {i}".encode() for i in want_ids[3]]
    assert list(out[3]["keys"]) == [f"doc{i}".encode() for i in want_ids[3]]


def test_ivf_with_every_list_probed_is_exact(tmp_path):
    vectors, queries = unit_rows(2000, 2), unit_rows(16, 3)
    nlist = default_nlist(2000)
    assert 1 < nlist <= 2000 // 39
    node = loaded(saved(tmp_path, vectors, index_type="ivf", nprobe=nlist, top_k=5))
    got = np.stack([o["ids"] for o in node.run_batch(query_items(queries))])
    np.testing.assert_array_equal(got, brute_force(vectors, queries, 5, "ip")[1])
    assert read_meta(tmp_path / "idx")["index_type"] == "ivf"


def test_ivf_with_one_probe_is_approximate_but_close(tmp_path):
    vectors, queries = unit_rows(2000, 4), unit_rows(50, 5)
    node = loaded(saved(tmp_path, vectors, index_type="ivf", nprobe=4, top_k=10))
    got = np.stack([o["ids"] for o in node.run_batch(query_items(queries))])
    want = brute_force(vectors, queries, 10, "ip")[1]
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    assert 0.3 < recall <= 1.0


def test_hnsw_recall(tmp_path):
    vectors, queries = unit_rows(1500, 6), unit_rows(40, 7)
    node = loaded(saved(tmp_path, vectors, index_type="hnsw", ef_search=128, top_k=10))
    got = np.stack([o["ids"] for o in node.run_batch(query_items(queries))])
    want = brute_force(vectors, queries, 10, "ip")[1]
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.95


def test_fewer_passages_than_top_k_are_padded(tmp_path):
    vectors = unit_rows(3, 8)
    node = loaded(saved(tmp_path, vectors, top_k=5))
    (out,) = node.run_batch([{"vector": vectors[1]}])
    assert out["ids"][0] == 1 and list(out["ids"][3:]) == [-1, -1]
    assert np.isneginf(out["scores"][3:]).all()
    assert list(out["texts"][3:]) == [b"", b""]
    assert out["texts"].shape == out["keys"].shape == (5,)


def test_ports_take_dim_from_meta_or_param_else_open(tmp_path):
    params = saved(tmp_path, unit_rows(10, 9), top_k=3)
    ports = FaissSearchNode.ports(params)
    assert ports.inputs["vector"].shape == (DIM,)
    assert {n: (s.dtype, s.shape) for n, s in ports.outputs.items()} == {
        "ids": ("INT64", (3,)),
        "scores": ("FP32", (3,)),
        "texts": ("BYTES", (3,)),
        "keys": ("BYTES", (3,)),
    }
    relative = FaissSearchParams(index="idx")
    assert FaissSearchNode.ports(relative, tmp_path).inputs["vector"].shape == (DIM,)
    missing = FaissSearchParams(index=str(tmp_path / "none"))
    assert FaissSearchNode.ports(missing).inputs["vector"].shape == (-1,)
    with_dim = FaissSearchParams(index=str(tmp_path / "none"), dim=384)
    assert FaissSearchNode.ports(with_dim).inputs["vector"].shape == (384,)
    assert FaissSearchNode.memory_bytes(params) > 10 * DIM * 4
    assert FaissSearchNode.memory_bytes(missing) == 0


def test_blas_by_batch_size_threads_and_relative_paths(tmp_path):
    import faiss

    vectors = unit_rows(300, 10)
    saved(tmp_path, vectors, top_k=4)
    before = faiss.omp_get_max_threads()
    try:
        node = loaded(
            FaissSearchParams(index="idx", blas_min_batch=3, threads=1, top_k=4), tmp_path
        )
        assert faiss.omp_get_max_threads() == 1
        want = brute_force(vectors, vectors[:3], 4, "ip")[1]
        np.testing.assert_array_equal(node.search(vectors[:2])[1], want[:2])
        assert faiss.cvar.distance_compute_blas_threshold > 1_000_000  # sequential kernel
        np.testing.assert_array_equal(node.search(vectors[:3])[1], want)
        assert faiss.cvar.distance_compute_blas_threshold == 1  # BLAS
    finally:
        faiss.omp_set_num_threads(before)
    assert node.meta["count"] == 300


def test_mismatches_and_missing_index_are_explained(tmp_path):
    params = saved(tmp_path, unit_rows(50, 11))
    with pytest.raises(ValueError, match="index_type 'flat'.*rebuild"):
        loaded(params.model_copy(update={"index_type": "hnsw"}))
    with pytest.raises(ValueError, match="dim 32, params say 16"):
        loaded(params.model_copy(update={"dim": 16}))
    node = loaded(params)
    with pytest.raises(ValueError, match="16 values, the index has dim 32"):
        node.run_batch([{"vector": np.zeros(16, np.float32)}])
    with pytest.raises(FileNotFoundError, match="pipectl index build"):
        loaded(FaissSearchParams(index=str(tmp_path / "nowhere")))
    passages = tmp_path / "idx" / "passages.jsonl"
    passages.write_text("".join(passages.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match="inconsistent"):
        loaded(params)
    with pytest.raises(ValidationError):
        FaissSearchParams(index="x", top_k=0)


def test_ivf_needs_enough_vectors(tmp_path):
    with pytest.raises(ValueError, match="nlist 20 is larger"):
        saved(tmp_path, unit_rows(10, 12), index_type="ivf", nlist=20)


def test_read_corpus_names_bad_lines(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "text": "x"}\n\n{"text": "y"}\n')
    assert read_corpus(good) == (["a", "1"], ["x", "y"])
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(ValueError, match=r"dup.jsonl:2: duplicate id 'a'"):
        read_corpus(dup)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_corpus(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no passages"):
        read_corpus(empty)


@pytest.fixture(scope="module")
def real_subset(tmp_path_factory) -> Path:
    """The first 80 passages of the sample corpus (short max_length keeps it quick)."""
    folder = tmp_path_factory.mktemp("real")
    corpus = folder / "corpus.jsonl"
    with CORPUS.open() as fh:
        corpus.write_text("".join(islice(fh, 80)))
    return corpus


@pytest.mark.integration
@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_real_corpus_round_trip(real_subset, tmp_path, index_type):
    out = tmp_path / "index"
    seen: list[tuple[int, int]] = []
    meta = build_index(
        real_subset,
        out,
        {"max_length": 48, "dtype": "fp32"},  # exact: the build batches differently
        search_params={"index": "unused", "nprobe": 64, "ef_search": 64, "top_k": 3},
        index_type=index_type,
        batch_size=32,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(0, 80), (32, 80), (64, 80), (80, 80)]
    assert meta == read_meta(out)
    assert (meta["count"], meta["dim"], meta["index_type"]) == (80, 384, index_type)
    assert meta["encoder"]["max_length"] == 48
    rows = [json.loads(line) for line in real_subset.read_text().splitlines()]
    params = FaissSearchParams(index=str(out), index_type=index_type, nprobe=64, top_k=3)
    node = loaded(params)
    # a passage's own embedding finds that passage first
    vectors = stored(node, (0, 57, 79))
    out_items = node.run_batch(query_items(vectors))
    assert [int(o["ids"][0]) for o in out_items] == [0, 57, 79]
    assert out_items[1]["keys"][0].decode() == rows[57]["id"]
    assert out_items[1]["texts"][0].decode() == rows[57]["text"]
    np.testing.assert_allclose([o["scores"][0] for o in out_items], 1.0, atol=1e-3)
    if index_type == "flat":
        # each row holds the embedding of that row's passage (the build embeds out of order)
        encoder = EncoderNode(EncoderParams(max_length=48, dtype="fp32"), None)
        encoder.load("cpu")
        texts = [rows[i]["text"] for i in (0, 57, 79)]
        np.testing.assert_allclose(encoder.embed(texts), vectors, atol=1e-5)
        everything = stored(node, range(80))
        want_scores, want_ids = brute_force(everything, vectors, 3, "ip")
        np.testing.assert_array_equal(np.stack([o["ids"] for o in out_items]), want_ids)
        np.testing.assert_allclose(
            np.stack([o["scores"] for o in out_items]), want_scores, atol=1e-5
        )
