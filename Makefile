# harmspot: two commands. `make serve` runs the service with the bundled sample; `make test` runs the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test
BENCHSTAMP := $(VENV)/.installed-bench

.PHONY: serve test bench install clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (Python 3.11+) on PATH, or run: make PY=python3 ..."; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(TESTSTAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

$(BENCHSTAMP): pyproject.toml $(TESTSTAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	@touch $@

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/harmspot serve

test: $(TESTSTAMP)
	bash scripts/install-browser.sh || true
	bash scripts/install-gis.sh || true
	$(BIN)/python -m pytest -rs -n auto --dist loadfile

bench: $(BENCHSTAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data
