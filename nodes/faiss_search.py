"""`faiss_search`: nearest passages of a query vector in a saved faiss index (Flat, IVF or HNSW).

An index folder holds `index.faiss`, `passages.jsonl` (one {"id", "text"} per row, in index order)
and `meta.json` (dim, count, model, index type, metric); nodes/index_builder.py writes it. The
whole batch is searched as one matrix; a GPU copy of the index is used when faiss sees GPUs and
the instance's device is `cuda:N`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from nodes.base import Item, Node, NodeParams, Ports, TensorSpec
from nodes.errors import InvalidConfig
from nodes.openmp import refuse_thread_count
from nodes.paths import resolve_path

INDEX_FILE = "index.faiss"
PASSAGES_FILE = "passages.jsonl"
META_FILE = "meta.json"
FORMAT_VERSION = 1


class FaissSearchParams(NodeParams):
    """Params of the `faiss_search` kind.

    | param          | default | meaning                                                         |
    |----------------|---------|-----------------------------------------------------------------|
    | index          |         | index folder (relative to the pipeline file), see `pipectl index` |
    | top_k          | 10      | results per query (padded with id -1 when the index has fewer)  |
    | metric         | ip      | ip (inner product: cosine on unit vectors) or l2                |
    | index_type     | flat    | flat (exact), ivf or hnsw (approximate); used when building     |
    | nlist          | auto    | ivf: number of lists (default ~4·sqrt(count), ≥ 39 rows a list) |
    | nprobe         | 8       | ivf: lists visited per query                                    |
    | hnsw_m         | 32      | hnsw: neighbours per node                                       |
    | ef_construction| 80      | hnsw: candidate list size while building                        |
    | ef_search      | 64      | hnsw: candidate list size while searching                       |
    | dim            | auto    | vector size, when the index is not built yet (else from meta)   |
    | blas_min_batch | 4       | flat search: batches this large use BLAS, smaller ones faiss'   |
    |                |         | sequential kernel (3-5x faster for one query here)              |
    | threads        | auto    | OpenMP threads of this instance's searches (1: no spinning      |
    |                |         | threads fighting other nodes for the cores)                     |
    """

    index: str
    top_k: int = Field(10, ge=1, le=4096)
    metric: Literal["ip", "l2"] = "ip"
    index_type: Literal["flat", "ivf", "hnsw"] = "flat"
    nlist: int | None = Field(None, ge=1)
    nprobe: int = Field(8, ge=1)
    hnsw_m: int = Field(32, ge=4, le=256)
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(64, ge=1)
    dim: int | None = Field(None, ge=1)
    blas_min_batch: int = Field(4, ge=1)
    threads: int | None = Field(None, ge=1)


def read_meta(index_dir: str | Path) -> dict[str, Any]:
    """The metadata of a saved index; FileNotFoundError names the build command when missing."""
    path = Path(index_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no index at {index_dir} ({META_FILE} missing); build it with "
            f"`pipectl index build CORPUS --pipeline FILE`"
        )
    return json.loads(path.read_text())


def default_nlist(count: int) -> int:
    """~4·sqrt(count) lists, but at least 39 training rows per list (faiss' k-means minimum)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def train_index(vectors: np.ndarray, params: FaissSearchParams):
    """A filled faiss index of `params.index_type` over the rows of `vectors` (float32 [n, dim])."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    metric = faiss.METRIC_INNER_PRODUCT if params.metric == "ip" else faiss.METRIC_L2
    if params.index_type == "flat":
        index = faiss.IndexFlatIP(dim) if params.metric == "ip" else faiss.IndexFlatL2(dim)
    elif params.index_type == "ivf":
        nlist = params.nlist or default_nlist(count)
        if nlist > count:
            raise InvalidConfig(
                f"nlist {nlist} is larger than the {count} vectors to index", field="nlist"
            )
        quantizer = faiss.IndexFlatIP(dim) if params.metric == "ip" else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
        index.train(vectors)
    else:
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, metric)
        index.hnsw.efConstruction = params.ef_construction
    index.add(vectors)
    return index


def save_index(
    index_dir: str | Path, index, keys: list[str], texts: list[str], meta: dict[str, Any]
) -> dict[str, Any]:
    """Write index, passages and metadata into `index_dir`; return the metadata written."""
    import faiss

    if index.ntotal != len(keys) or len(keys) != len(texts):
        raise ValueError(f"{index.ntotal} vectors but {len(keys)} ids and {len(texts)} texts")
    out = Path(index_dir)
    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / INDEX_FILE))
    with (out / PASSAGES_FILE).open("w", encoding="utf-8") as fh:
        for key, text in zip(keys, texts, strict=True):
            fh.write(json.dumps({"id": key, "text": text}, ensure_ascii=False) + "\n")
    meta = {"format": FORMAT_VERSION, "dim": index.d, "count": index.ntotal, **meta}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


class FaissSearchNode(Node):
    """Returns the `top_k` nearest passages (row ids, scores, texts, corpus ids) of each vector."""

    deterministic = True  # no sampling: a response cache may serve it
    shareable = True  # pipelines with this node at equal params share its instances
    kind = "faiss_search"
    Params = FaissSearchParams
    max_batch_size = 4096

    @classmethod
    def _index_dir(cls, params: FaissSearchParams, base_dir: str | Path | None) -> Path:
        return resolve_path(params.index, base_dir)

    @classmethod
    def ports(cls, params: FaissSearchParams, base_dir: str | Path | None = None) -> Ports:
        dim = params.dim
        if dim is None:
            try:  # an index not built yet is not an error here: the vector size stays open
                dim = int(read_meta(cls._index_dir(params, base_dir))["dim"])
            except (FileNotFoundError, KeyError, ValueError):
                dim = -1
        k = params.top_k
        return Ports(
            inputs={"vector": TensorSpec("FP32", (dim,), doc="query embedding")},
            outputs={
                "ids": TensorSpec("INT64", (k,), doc="row numbers of the passages, -1 = none"),
                "scores": TensorSpec("FP32", (k,), doc="similarity (ip) or distance (l2)"),
                "texts": TensorSpec("BYTES", (k,), doc="the passages, best first"),
                "keys": TensorSpec("BYTES", (k,), doc="the passages' ids in the corpus"),
            },
        )

    @classmethod
    def memory_bytes(cls, params: FaissSearchParams, base_dir: str | Path | None = None) -> int:
        folder = cls._index_dir(params, base_dir)
        files = [folder / INDEX_FILE, folder / PASSAGES_FILE]
        # the index is read whole; passages are held as bytes plus Python object overhead
        return sum(
            int(f.stat().st_size * (1 if f.name == INDEX_FILE else 1.5))
            for f in files
            if f.is_file()
        )

    def load(self, device: str) -> None:
        import faiss

        refuse_thread_count(self.params.threads)
        self.device = device
        folder = self._index_dir(self.params, self.base_dir)
        meta = read_meta(folder)
        for key in ("index_type", "metric"):
            if meta.get(key) != getattr(self.params, key):
                raise ValueError(
                    f"index at {folder} was built with {key} {meta.get(key)!r} but the node's "
                    f"params say {getattr(self.params, key)!r}; rebuild with `pipectl index build`"
                )
        if self.params.dim is not None and self.params.dim != meta["dim"]:
            raise ValueError(
                f"index at {folder} has dim {meta['dim']}, params say {self.params.dim}"
            )
        if self.params.threads:  # OpenMP's setting is per thread: load runs in the worker
            faiss.omp_set_num_threads(self.params.threads)
        index = faiss.read_index(str(folder / INDEX_FILE))
        keys: list[bytes] = []
        texts: list[bytes] = []
        with (folder / PASSAGES_FILE).open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                keys.append(str(row["id"]).encode())
                texts.append(row["text"].encode())
        if not (index.ntotal == len(texts) == meta["count"]):
            raise ValueError(
                f"index at {folder} is inconsistent: {index.ntotal} vectors, {len(texts)} "
                f"passages, meta count {meta['count']}; rebuild it"
            )
        self._configure(index)
        self.meta = meta
        self._index = self._to_device(index, device)
        # one trailing empty entry so that id -1 (no result) indexes to b""
        self._texts = np.array(texts + [b""], dtype=object)
        self._keys = np.array(keys + [b""], dtype=object)

    def _configure(self, index) -> None:
        import faiss

        if self.params.index_type == "ivf":
            faiss.extract_index_ivf(index).nprobe = self.params.nprobe
        elif self.params.index_type == "hnsw":
            index.hnsw.efSearch = self.params.ef_search

    def _to_device(self, index, device: str):
        import faiss

        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if not device.startswith("cuda") or gpus == 0 or self.params.index_type == "hnsw":
            return index  # faiss has no GPU HNSW; a CPU index is the answer there
        self._gpu_resources = faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(
            self._gpu_resources, int(device.partition(":")[2] or 0), index
        )
        if self.params.index_type == "ivf":
            faiss.GpuParameterSpace().set_index_parameter(gpu_index, "nprobe", self.params.nprobe)
        return gpu_index

    def search(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the `top_k` nearest rows for each row of `vectors`; ids -1 = none."""
        import faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32)
        # faiss-cpu 1.15's default threshold (128000) never takes BLAS for a serving batch:
        # 62 vs 423 q/s at batch 64 here; but BLAS is 3-5x slower for 1-3 queries. The global
        # is set per call (extremes, whatever unit this faiss compares it in); a race with
        # another instance only picks the slower kernel, never a wrong result.
        use_blas = len(x) >= self.params.blas_min_batch
        faiss.cvar.distance_compute_blas_threshold = 1 if use_blas else 1 << 30
        scores, ids = self._index.search(x, self.params.top_k)
        missing = ids < 0
        if missing.any():
            scores[missing] = -np.inf if self.params.metric == "ip" else np.inf
        return scores, ids

    def run_batch(self, items: list[Item]) -> list[Item]:
        dim = self._index.d
        rows = []
        for item in items:
            vector = np.asarray(item["vector"], dtype=np.float32).reshape(-1)
            if vector.size != dim:
                raise ValueError(f"vector has {vector.size} values, the index has dim {dim}")
            rows.append(vector)
        scores, ids = self.search(np.stack(rows))
        texts = self._texts[ids]  # id -1 picks the trailing empty entry
        keys = self._keys[ids]
        return [
            {"ids": ids[i], "scores": scores[i], "texts": texts[i], "keys": keys[i]}
            for i in range(len(items))
        ]

    def close(self) -> None:
        self._index = None
        self._gpu_resources = None
