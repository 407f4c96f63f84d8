#!/usr/bin/env bash
# What bench/gpu_check.sh needs on a GPU machine that reaches no package registry, gathered here.
#
#   bench/gpu_prepare.sh            # writes .gpu-carry/ (ignored by git), ~25 MB
#
# The GPU machine planned for (an H200 with Python 3.12 and torch 2.11, see bench/gpu_check.sh)
# has torch, triton, transformers, tokenizers, safetensors, numpy, onnx, onnxruntime (CPU
# build) and pytest, but not pydantic nor faiss. Their Python 3.12 manylinux wheels are
# downloaded into .gpu-carry/wheels, at the versions this project's venv runs (pydantic and
# pydantic-core are pinned to each other). faiss's GPU wheels (faiss-gpu, faiss-gpu-cu12) and
# onnxruntime-gpu are not brought: they need CUDA 12's cuBLAS or weigh 135-255 MB, far over the
# 64 MiB that travels to the device machine beside the working tree; the check then reports
# the CPU fallback those nodes take. The model packages' weights (~90 MB) do not fit either:
# bench/gpu_models.py writes their config.json and tokenizer files here (~3 MB), and the GPU
# machine builds random weights of the same shapes.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
CARRY="${CARRY:-$ROOT/.gpu-carry}"
cd "$ROOT"

version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
PINS=()
for dist in pydantic pydantic-core annotated-types typing-inspection typing-extensions faiss-cpu; do
  PINS+=("$dist==$(version "$dist")")
done

rm -rf "$CARRY/wheels"
mkdir -p "$CARRY/wheels"
PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${p}_x86_64")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$CARRY/wheels" "${PINS[@]}"
"$PY" bench/gpu_models.py prepare --carry "$CARRY"

carry_kib=$(du -sk "$CARRY" | cut -f1)
tree_kib=$(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
echo "# $CARRY: $((carry_kib / 1024)) MiB; tracked files: $((tree_kib / 1024)) MiB (64 MiB travel)"
ls -1 "$CARRY/wheels"
echo "# on the GPU machine: bash bench/gpu_check.sh   (carry: .gpu-carry)"
