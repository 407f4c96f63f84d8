"""`pipectl index`: build and inspect the faiss indexes that `faiss_search` nodes read.

    pipectl index build samples/corpus.jsonl --pipeline pipelines/search.yaml
    pipectl index build corpus.jsonl --pipeline rag.yaml --node search --index-type hnsw
    pipectl index info samples/index

`build` embeds the corpus with the encoder node that feeds the faiss_search node's `vector`
input (same model and params as at query time) and writes the index where that node's `index`
param points (relative to the pipeline file), or to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.errors import SpecError

SEARCH_KIND = "faiss_search"
ENCODER_KIND = "encoder"


class IndexCommandError(Exception):
    """The pipeline has no usable encoder → faiss_search pair; the message says what to fix."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "index",
        help="build or inspect a faiss_search index",
        description="Build the index of a faiss_search node from a JSONL corpus "
        '({"id": ..., "text": ...} per line), or print what an index folder holds.',
    )
    sub = parser.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="embed a corpus and build the index")
    build.add_argument("corpus", metavar="CORPUS", help="JSONL file of passages")
    build.add_argument("--pipeline", required=True, metavar="FILE", help="the pipeline file")
    build.add_argument("--node", metavar="NAME", help="the faiss_search node (when several)")
    build.add_argument("--out", metavar="DIR", help="index folder (default: the node's index)")
    build.add_argument(
        "--index-type", choices=("flat", "ivf", "hnsw"), help="override the node's index_type"
    )
    build.add_argument("--batch-size", type=int, default=256, help="passages per encoder call")
    build.add_argument("--device", default="auto", help="cpu, cuda:N or auto (a GPU if any)")
    build.set_defaults(func=run_build)
    info = sub.add_parser("info", help="print an index folder's metadata")
    info.add_argument("dir", metavar="DIR")
    info.add_argument("-o", "--output", choices=("table", "json"), default="table")
    info.set_defaults(func=run_info)


def find_nodes(spec, node: str | None) -> tuple[str, str]:
    """(faiss_search node, encoder node feeding its vector) in a loaded PipelineSpec."""
    searches = [n for n, s in spec.nodes.items() if s.kind == SEARCH_KIND]
    if node is not None:
        if node not in spec.nodes or spec.nodes[node].kind != SEARCH_KIND:
            raise IndexCommandError(
                f"no {SEARCH_KIND} node {node!r}; {SEARCH_KIND} nodes: {', '.join(searches) or '-'}"
            )
        search = node
    elif len(searches) == 1:
        search = searches[0]
    elif not searches:
        raise IndexCommandError(f"{spec.file}: no {SEARCH_KIND} node to build an index for")
    else:
        raise IndexCommandError(
            f"{spec.file}: several {SEARCH_KIND} nodes ({', '.join(searches)}); pick one with --node"
        )
    source = spec.nodes[search].inputs.get("vector", "")
    encoder = source.partition(".")[0]
    if encoder not in spec.nodes or spec.nodes[encoder].kind != ENCODER_KIND:
        raise IndexCommandError(
            f"{spec.file}: {search}.vector comes from {source or 'nowhere'!r}, not from an "
            f"{ENCODER_KIND} node; the index must be embedded by the same encoder as the queries"
        )
    return search, encoder


def _device(value: str) -> str:
    if value != "auto":
        return value
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.spec import load_spec
    from nodes.index_builder import build_index

    try:
        spec = load_spec(args.pipeline)
        search, encoder = find_nodes(spec, args.node)
    except SpecError as exc:
        for issue in exc.issues:
            print(issue.format(), file=sys.stderr)
        return 1
    except IndexCommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    search_params = dict(spec.nodes[search].params)
    base_dir = Path(spec.base_dir)
    out = Path(args.out) if args.out else base_dir / str(search_params.get("index", ""))
    if not args.out and "index" not in search_params:
        print(f"error: node {search!r} has no index param; give --out", file=sys.stderr)
        return 1
    bar = tqdm(total=None, unit="passage", desc=f"embedding ({encoder})", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        meta = build_index(
            args.corpus,
            out,
            spec.nodes[encoder].params,
            search_params=search_params,
            index_type=args.index_type,
            batch_size=args.batch_size,
            device=_device(args.device),
            base_dir=base_dir,
            progress=progress,
        )
    except (OSError, ValueError) as exc:  # a bad corpus, params or model path
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    print(
        f"built {meta['index_type']} index of {meta['count']} passages (dim {meta['dim']}) "
        f"in {meta['build_seconds']:.1f} s -> {out}"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from nodes.faiss_search import INDEX_FILE, read_meta

    try:
        meta = read_meta(args.dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta["size_bytes"] = sum(f.stat().st_size for f in Path(args.dir).iterdir() if f.is_file())
    if not (Path(args.dir) / INDEX_FILE).is_file():
        print(f"error: {args.dir}: {INDEX_FILE} missing", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(meta, indent=2))
        return 0
    width = max(len(k) for k in meta)
    for key, value in meta.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        print(f"{key:<{width}}  {shown}")
    return 0
