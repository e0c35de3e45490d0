# Ecological credit assessment: the two commands are `make assess` and `make test`.
# Every target creates .venv and installs the pinned package on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
BASIN ?= yongding
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG := configs/$(BASIN).yaml
OUT ?= outputs/$(BASIN)
ARGS ?=
# test processes: one per CPU, at most 4 (each runs dask on every CPU and holds up to ~1.5 GB);
# a test file's tests share one process, so its session fixtures are built once
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

.DEFAULT_GOAL := help
.PHONY: help assess validate test bench bench-large reprocess demo-data clean-venv

help: ## list the targets
	@echo "Ecological credit assessment (see README.md)"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo
	@echo "  variables: BASIN=$(BASIN) (configs/<BASIN>.yaml), OUT=$(OUT), ARGS='extra cli flags', TEST_WORKERS=$(TEST_WORKERS)"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23.2"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@# compile the numba kernels once so the first run is not slowed by JIT
	$(PY) -m pipeline warmup
	@touch $(STAMP)

assess: $(STAMP) ## run the full assessment of configs/$(BASIN).yaml into outputs/$(BASIN)/
	$(PY) -m pipeline assess $(CONFIG) --out $(OUT) $(ARGS)

validate: $(STAMP) ## check configs/$(BASIN).yaml and every input it names; writes nothing
	$(PY) -m pipeline validate $(CONFIG) $(ARGS)

reprocess: $(STAMP) ## pick up new imagery from the basin inbox and update outputs
	$(PY) -m pipeline reprocess $(CONFIG) $(ARGS)

test: $(STAMP) ## run the whole test suite (TEST_WORKERS=0: in one process)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

bench: $(STAMP) ## benchmarks against peer tools (hydrology, landcover, reprocess); outputs/bench/*.json
	@for b in hydrology landcover reprocess; do $(PY) -m bench $$b $(ARGS) || exit 1; done

bench-large: $(STAMP) ## whole assessment of a generated 2e8-cell basin; outputs/bench/large.json
	$(PY) -m bench large $(ARGS)

demo-data: $(STAMP) ## rebuild data_samples/ from ../shared/data (deterministic)
	$(PY) scripts/make_demo_basin.py $(ARGS)

clean-venv: ## remove .venv (next target reinstalls)
	rm -rf $(VENV)
