#!/usr/bin/env bash
# pipectl's CUDA paths on a fresh GPU machine, in at most 8 minutes, as one markdown table.
#
#   bench/gpu_prepare.sh                      # here, once: wheels + model configs -> .gpu-carry/
#   bash bench/gpu_check.sh                   # there (carry .gpu-carry): table -> $OUT/gpu_check.md
#   bash bench/gpu_check.sh --dry-run         # any CPU machine: the same stages, tiny sizes, on cpu
#
# Planned for an H200 with Python 3.12 and torch 2.11 (its `python3`), reaching no registry.
# Stages, each under its own time limit (a stage that fails or runs out of time is reported
# and the next one runs; all of them together stay within BUDGET_S, default 470 s; --dry-run
# gives every limit 3x, for a busy CPU):
#   setup        install .gpu-carry/wheels offline (pydantic, faiss-cpu) into a scratch folder
#   models       random-weight SmolLM2-135M and all-MiniLM-L6-v2 of the real shapes
#                (bench/gpu_models.py build), with the real tokenizers
#   pytest       `pytest -m gpu` over the test files that hold gpu tests (the Triton
#                paged-attention kernel against the CPU path, the engine's greedy tokens)
#   llm          bench/llm_device.py: tokens/s at batch 1 and 64 (bench/llm.py's measure), the
#                decode step against the HBM-bandwidth floor (bytes read / bandwidth)
#   encoder      bench/nodes_device.py: the encoder node, torch backend, on the GPU
#   onnxruntime  the encoder node, onnxruntime backend, asked for the GPU (CUDA provider only
#                with onnxruntime-gpu installed; the row names the providers that ran)
#   faiss        the faiss_search node asked for the GPU (faiss-cpu: the row says it searched
#                on the CPU)
# CHECK_DEVICE (default cuda; cpu with --dry-run) is the device asked for. The table and a log
# of every stage go to $OUT (default bench/results/): gpu_check.md, gpu_check.log.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
CARRY="${CARRY:-$ROOT/.gpu-carry}"
RESULTS="${OUT:-$ROOT/bench/results}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
if [ "$DRY" = 1 ]; then
  DEVICE="${CHECK_DEVICE:-cpu}"
  PY="${PYTHON:-$ROOT/.venv/bin/python}"
  SCALE=3  # time limits x3: a busy CPU, not the GPU machine the limits are for
  LAYERS=2 NEW=8 STEPS=3 BATCHES=1,8 COUNT=5000 RUN_S=0.3 COPY_MB=64
else
  DEVICE="${CHECK_DEVICE:-cuda}"
  PY="${PYTHON:-python3}"
  SCALE=1
  LAYERS="" NEW=128 STEPS=20 BATCHES=1,64 COUNT=100000 RUN_S=2 COPY_MB=1024
fi
BUDGET_S="${BUDGET_S:-$((470 * SCALE))}"
export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PIPECTL_SMOLLM2_TOKENIZER="$WORK/models/smollm2"
ROWS="$WORK/rows.md"
LOG="$RESULTS/gpu_check.log"
: >"$ROWS"
: >"$LOG"
START=$SECONDS

# stage NAME LIMIT_S COMMAND...: run it under min(LIMIT_S, what the budget has left); one row.
stage() {
  local name=$1 limit=$(($2 * SCALE)) left rc took note
  shift 2
  left=$((BUDGET_S - (SECONDS - START) - 5))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "| $name | not run | | the ${BUDGET_S} s budget was spent |" >>"$WORK/stages.md"
    return
  fi
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  took=$((SECONDS - t0))
  { echo "===== $name (rc $rc, ${took} s): $*"; cat "$WORK/$name.log"; } >>"$LOG"
  note=$(grep -E '^=+ .*(passed|failed|skipped|error).* =+$|^[0-9]+ (passed|failed|skipped)' \
    "$WORK/$name.log" | tail -1 | tr -d '=' | xargs)
  case $rc in
    0) echo "| $name | ok | ${took} s | ${note} |" ;;
    124 | 137) echo "| $name | TIMED OUT | ${took} s | limit ${limit} s; see gpu_check.log |" ;;
    *) note=${note:-$(grep -v '^\s*$' "$WORK/$name.log" | tail -1 | cut -c1-160 | tr '|' '/')}
       echo "| $name | FAILED (rc $rc) | ${took} s | ${note} |" ;;
  esac >>"$WORK/stages.md"
}

setup() {
  if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
      "$CARRY"/wheels/*.whl || return 1
  elif [ "$DRY" = 0 ]; then
    echo "no wheels in $CARRY/wheels: run bench/gpu_prepare.sh where pip reaches PyPI"
  fi
  if [ ! -f "$CARRY/models/smollm2/config.json" ]; then
    echo "no $CARRY/models: run bench/gpu_prepare.sh first"
    return 1
  fi
  "$PY" -c "import pydantic, faiss, torch; print('pydantic', pydantic.VERSION, 'faiss', faiss.__version__)"
}

gpu_tests() {
  local files
  files=$(grep -rlE "pytest\.mark\.gpu" tests --include='test_*.py' | sort)
  echo "gpu tests in: $files"
  # shellcheck disable=SC2086  # one word per file
  "$PY" -m pytest -m gpu -q -p no:cacheprovider $files
}

environment() {
  "$PY" - "$DEVICE" <<'EOF'
import platform, sys
import torch
device = sys.argv[1]
parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
if device.startswith("cuda") and torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    parts += [f"{p.name} ({p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, "
              f"{p.multi_processor_count} SMs)", f"CUDA {torch.version.cuda}"]
else:
    parts.append(f"CPU {torch.backends.cpu.get_cpu_capability()}"
                 + ("" if device == "cpu" else f"; {device} asked but torch sees no GPU"))
for name in ("triton", "transformers", "onnxruntime", "faiss"):
    try:
        parts.append(f"{name} {__import__(name).__version__}")
    except Exception as exc:  # noqa: BLE001 - a missing package is part of the report
        parts.append(f"{name}: {type(exc).__name__}")
print(", ".join(parts))
EOF
}

export DRY CARRY PY WORK DEVICE
export -f setup gpu_tests environment
MODELS="$WORK/models"
LAYER_ARGS=()
[ -n "$LAYERS" ] && LAYER_ARGS=(--layers "$LAYERS")
if [ "$DRY" = 1 ] && [ ! -f "$CARRY/models/smollm2/config.json" ]; then
  stage prepare 60 "$PY" bench/gpu_models.py prepare --carry "$CARRY"  # from the installed packages
fi
stage setup 45 bash -c setup
timeout 30 bash -c environment >"$WORK/environment.txt" 2>&1  # versions, after the wheels
stage models 45 "$PY" bench/gpu_models.py build --carry "$CARRY" --out "$MODELS" "${LAYER_ARGS[@]}"
stage pytest 100 bash -c gpu_tests
stage llm 150 "$PY" bench/llm_device.py --model "$MODELS/smollm2" --device "$DEVICE" \
  --new-tokens "$NEW" --steps "$STEPS" --batches "$BATCHES" --copy-mb "$COPY_MB" --rows "$ROWS"
NODE_ARGS=(--device "$DEVICE" --model "$MODELS/minilm" --seconds "$RUN_S" --rows "$ROWS")
stage encoder 40 "$PY" bench/nodes_device.py encoder "${NODE_ARGS[@]}"
stage onnxruntime 50 "$PY" bench/nodes_device.py onnxruntime "${NODE_ARGS[@]}"
stage faiss 40 "$PY" bench/nodes_device.py faiss "${NODE_ARGS[@]}" --count "$COUNT"

{
  echo "# bench/gpu_check.sh $([ "$DRY" = 1 ] && echo '--dry-run ')on $DEVICE," \
    "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')," \
    "$((SECONDS - START)) s of ${BUDGET_S} s"
  echo
  tail -1 "$WORK/environment.txt"
  echo
  echo "| stage | result or measure | figure | note |"
  echo "|---|---|---|---|"
  cat "$WORK/stages.md" "$ROWS"
} >"$RESULTS/gpu_check.md"
cat "$RESULTS/gpu_check.md"
