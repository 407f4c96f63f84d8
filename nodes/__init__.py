"""Node kinds, and the helpers they share. Nothing here imports `engine/`.

Kinds (registered by name in registry.py):
    encoder.py        `encoder`: sentence embeddings
    faiss_search.py   `faiss_search`: nearest passages in a faiss index
    template.py       `template`: a Jinja prompt from the inputs
    python_fn.py      `python`: a user function on a whole batch
    rerank/           `rerank` (node.py) and its backends (cross_encoder.py, llm_judge.py)
    llm/              `llm` (node.py) and the paged-attention engine behind it

Helpers:
    base.py           the Node contract (ports, memory estimate, load, run_batch, stream)
    registry.py       kinds by name, built-in and from the `pipectl.nodes` entry points
    errors.py         the root of the error tree, and InvalidRequest (a request's fault)
    dtypes.py         KServe v2 data types and numpy;  port_spec.py  ports declared in params
    compute_dtype.py  `dtype: auto` per placed instance;  onnx_export.py  cached ONNX exports
    paths.py          `pkg:` and relative paths in params;  jsonl.py  the JSON Lines reader
    index_builder.py  `pipectl index build`: a faiss_search index from a JSONL corpus
    hf_loading.py     transformers' from_pretrained under one lock (its lazy imports race)
    openmp.py         how idle OpenMP workers wait (GOMP_SPINCOUNT); loading in a passing thread
    shared.py         one object per key, loaded once, reference-counted (LLM engines, and the
                      engine's shared batched nodes)
"""
