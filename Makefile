# Two commands on a fresh machine: `make run` (the main job) and `make test` (every check).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: setup chromium run test lint typecheck pytest clean

setup: $(STAMP) chromium

# tests/browser drives Debian's chromium: installed with apt when missing and we are root; never
# fails setup (no apt, not root: the browser test skips and says why)
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -q && apt-get install -y -q chromium) \
	  || echo "chromium not installed: tests/browser will skip"; }

# torch is pinned to the CPU build that lies on this machine's disk; an unpinned torch pulls CUDA.
# Python 3.12 with LeRobot (docs/python312.md):
#   make setup PY=python3.12 TORCH=2.11.0 EXTRAS=dev,lerobot
TORCH ?= 2.13.0
EXTRAS ?= dev
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==$(TORCH)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

run: setup
	$(BIN)/fleet train $(ARGS)

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
