"""How much the RAG pipeline's reranker helps, and what it costs: 20 corpus questions, each with
the corpus ids that answer it, searched like pipelines/rag.yaml (all-MiniLM-L6-v2, faiss top 20)
and reordered by the rerank node's settings from that file.

    python bench/rerank_quality.py [--pipeline pipelines/rag.yaml] [--weights 0,5,10,20,40]

Prints MRR@20 and hit@4 (an answering passage among the 4 kept) for retrieval order, the judge
alone, and the judge fused with the retrieval score at several `prior_weight`s; then the judge's
time and prompt tokens per question.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABELLED = [  # question, corpus ids that answer it
    ("How do I parse a JSON string into a Python object?", {"json.loads"}),
    ("How can I sort a list with a custom key?", {"builtins.sorted"}),
    ("How do I get the current local date and time?", {"datetime.datetime.now"}),
    ("How do I copy a whole directory tree?", {"shutil.copytree"}),
    ("Run a shell command and capture its output", {"subprocess.check_output", "subprocess.run",
                                                     "subprocess.getoutput"}),
    ("How do I create nested directories?", {"os.makedirs"}),
    ("Replace all matches of a regular expression in a string", {"re.sub", "re.subn"}),
    ("Find all occurrences of a pattern in a string", {"re.findall", "re.finditer"}),
    ("Pause the program for a few seconds", {"time.sleep"}),
    ("Count how many times each item appears", {"collections.Counter"}),
    ("Encode binary data as base64 text", {"base64.b64encode"}),
    ("Percent-encode a string for use in a URL", {"urllib.parse.quote", "urllib.parse.quote_plus"}),
    ("Serialize a Python object to bytes with pickle", {"pickle.dumps", "pickle.dump"}),
    ("Read rows from a CSV file", {"csv.reader"}),
    ("Cache the results of a function call", {"functools.lru_cache"}),
    ("Delete a directory and everything in it", {"shutil.rmtree"}),
    ("Create a temporary directory", {"tempfile.mkdtemp", "tempfile.TemporaryDirectory"}),
    ("Find files matching a wildcard pattern", {"glob.glob", "glob.iglob", "fnmatch.fnmatch"}),
    ("Compute the average of a list of numbers", {"statistics.mean", "statistics.fmean"}),
    ("Read a zip archive", {"zipfile.ZipFile"}),
]  # fmt: skip


def _first_hit(keys: list[str], good: set[str]) -> int | None:
    return next((rank for rank, key in enumerate(keys) if key in good), None)


def _figures(ranks: list[int | None]) -> str:
    mrr = np.mean([0.0 if r is None else 1.0 / (r + 1) for r in ranks])
    hit = np.mean([r is not None and r < 4 for r in ranks])
    return f"MRR@20 {mrr:.3f}  hit@4 {hit:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "rag.yaml")
    parser.add_argument("--weights", default="0,5,10,20,40", help="prior_weight values to fuse")
    args = parser.parse_args()

    from engine.spec import load_spec
    from nodes.dtypes import as_bytes_array
    from nodes.registry import get_kind

    spec = load_spec(args.pipeline)
    base = Path(spec.base_dir)

    def node(name: str, **overrides):
        kind = get_kind(spec.nodes[name].kind)
        instance = kind(kind.Params.model_validate(spec.nodes[name].params | overrides), base)
        instance.load("cpu")
        return instance

    encode, search = node("encode"), node("search")
    # every candidate scored by the judge alone; the fusion is recomputed below
    rerank = node("rerank", top_n=20, prior_weight=0.0)
    weights = [float(w) for w in args.weights.split(",")]
    ranks: dict[str, list] = {"retrieval": [], "judge alone": []}
    ranks |= {f"judge + {w:g} x retrieval": [] for w in weights if w}
    seconds, tokens = [], []
    for question, good in LABELLED:
        query = as_bytes_array([question])
        (vector,) = encode.run_batch([{"text": query}])
        (found,) = search.run_batch([{"vector": vector["embedding"]}])
        keys = [k.decode() for k in found["keys"]]
        ranks["retrieval"].append(_first_hit(keys, good))
        started = time.perf_counter()
        (judged,) = rerank.run_batch(
            [{"query": query, "docs": found["texts"], "ids": found["ids"]}]
        )
        seconds.append(time.perf_counter() - started)
        tokens.append(sum(len(rerank.scorer.render(question, t.decode())) for t in found["texts"]))
        row_of = {int(i): n for n, i in enumerate(found["ids"])}
        judge = np.zeros(len(keys), dtype=np.float32)
        for i, score in zip(judged["ids"], judged["scores"], strict=True):
            judge[row_of[int(i)]] = score
        ranks["judge alone"].append(_first_hit([keys[i] for i in np.argsort(-judge)], good))
        for w in weights:
            if w:
                fused = judge + w * found["scores"]
                order = np.argsort(-fused, kind="stable")
                ranks[f"judge + {w:g} x retrieval"].append(
                    _first_hit([keys[i] for i in order], good)
                )
        print(f"{question[:60]:60s} retrieval rank {ranks['retrieval'][-1]}", flush=True)
    print()
    for name, found_ranks in ranks.items():
        print(f"{name:28s} {_figures(found_ranks)}")
    print(
        f"\njudge: {np.mean(seconds):.2f} s and {np.mean(tokens):.0f} prompt tokens per question "
        f"(20 pairs); prefix-cache hit rate {rerank.scorer.engine.statistics()['prefix_cache_hit_rate']:.0%}"
    )
    rerank.close()


if __name__ == "__main__":
    main()
