"""`pipectl index build | info`: a pipeline file names the encoder and where its index goes."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from engine.cli import main
from nodes.faiss_search import read_meta

CORPUS = Path(__file__).resolve().parents[2] / "samples" / "corpus.jsonl"

PIPELINE = """\
apiVersion: pipectl/v1
name: search
inputs:
  query: {dtype: BYTES, shape: [1]}
outputs:
  passages: search.texts
nodes:
  encode:
    kind: encoder
    params: {max_length: 32}
    inputs: {text: $inputs.query}
  search:
    kind: faiss_search
    params: {index: data/index, top_k: 2, index_type: hnsw}
    inputs: {vector: encode.embedding}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    with CORPUS.open() as fh:
        return write(tmp_path, "corpus.jsonl", "".join(islice(fh, 24)))


@pytest.mark.integration
def test_build_writes_the_index_where_the_node_points(tmp_path, corpus, capsys):
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    pipeline = write(pipelines, "search.yaml", PIPELINE)
    code = main(["index", "build", str(corpus), "--pipeline", str(pipeline), "--batch-size", "10"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    index = pipelines / "data" / "index"
    assert "built hnsw index of 24 passages (dim 384)" in captured.out
    assert str(index) in captured.out
    assert "24/24" in captured.err  # the progress bar reached the end
    meta = read_meta(index)
    assert (meta["count"], meta["index_type"], meta["encoder"]["max_length"]) == (24, "hnsw", 32)

    assert main(["index", "info", str(index)]) == 0
    table = capsys.readouterr().out
    assert "count" in table and "24" in table and "hnsw" in table
    assert main(["index", "info", str(index), "-o", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dim"] == 384 and info["size_bytes"] > 24 * 384 * 4


@pytest.mark.integration
def test_out_and_index_type_override_the_node(tmp_path, corpus, capsys):
    pipeline = write(tmp_path, "p.yaml", PIPELINE)
    out = tmp_path / "elsewhere"
    args = ["index", "build", str(corpus), "--pipeline", str(pipeline), "--out", str(out)]
    assert main([*args, "--index-type", "flat", "--node", "search"]) == 0
    assert read_meta(out)["index_type"] == "flat"
    assert not (tmp_path / "data").exists()


def test_pipeline_without_search_node_or_encoder_is_an_error(tmp_path, corpus, capsys):
    no_search = PIPELINE.split("  search:")[0].replace("search.texts", "encode.embedding")
    pipeline = write(tmp_path, "a.yaml", no_search)
    assert main(["index", "build", str(corpus), "--pipeline", str(pipeline)]) == 1
    assert "no faiss_search node" in capsys.readouterr().err

    pipeline = write(tmp_path, "b.yaml", PIPELINE)
    assert main(["index", "build", str(corpus), "--pipeline", str(pipeline), "--node", "x"]) == 1
    assert "no faiss_search node 'x'; faiss_search nodes: search" in capsys.readouterr().err

    direct = PIPELINE.replace("vector: encode.embedding", "vector: $inputs.query")
    pipeline = write(tmp_path, "c.yaml", direct)
    assert main(["index", "build", str(corpus), "--pipeline", str(pipeline)]) == 1
    assert "not from an encoder node" in capsys.readouterr().err

    pipeline = write(tmp_path, "d.yaml", PIPELINE.replace("apiVersion", "apiVersoin"))
    assert main(["index", "build", str(corpus), "--pipeline", str(pipeline)]) == 1
    assert "d.yaml:" in capsys.readouterr().err


def test_bad_corpus_and_missing_index_are_reported(tmp_path, capsys):
    pipeline = write(tmp_path, "p.yaml", PIPELINE)
    bad = write(tmp_path, "bad.jsonl", '{"id": 1}\n')
    assert main(["index", "build", str(bad), "--pipeline", str(pipeline)]) == 1
    assert "bad.jsonl:1: expected" in capsys.readouterr().err
    assert main(["index", "info", str(tmp_path / "none")]) == 1
    assert "pipectl index build" in capsys.readouterr().err
