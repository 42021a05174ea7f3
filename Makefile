# difflab set-up. `make demo` and `make test` work on a fresh machine: they create .venv and install
# the pinned requirements (torch/torchvision pinned here; the package itself only asks torch>=2.3).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT ?= runs/demo

.PHONY: install demo demo-full test test-all bench clean

$(STAMP): requirements.txt requirements-peers.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-peers.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/difflab demo --out $(OUT)

demo-full: $(STAMP)
	$(BIN)/difflab demo --full --out $(OUT)-full

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/sampler_overhead.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
