# Every target works on a brand-new machine: it creates .venv in the repo root and installs into it.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
PIP := $(BIN)/python -m pip install -q -c constraints.txt

.PHONY: install install-demo browser quickstart test test-slow lint mutate clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(PIP) -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

$(VENV)/.demo-installed: $(STAMP)
	$(PIP) -e '.[dev,demo]'
	touch $@

install-demo: $(VENV)/.demo-installed

quickstart: install
	$(BIN)/wildrayzer quickstart

# Headless Chromium (Debian package) for the HTML-report screenshot test; best effort, the test skips without it.
browser:
	@bash tools/ensure_chromium.sh || true

test: install browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-slow: install-demo
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check wildrayzer tests benchmarks tools train.py inference.py

# Flip each method decision of docs/METHOD_DECISIONS.md (and the unlisted controls) in a scratch copy, one at a time;
# the fast suite must fail for every one. Slow (minutes), not part of `make test` or CI.
mutate: install
	HF_HUB_OFFLINE=1 $(BIN)/python tools/mutate.py --all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
