# make bench: set up everything and run the default config. make test: the test suite.
PYTHON ?= python3
VENV   ?= .venv
# Installed before the project so that its torch range is already met: a CPU wheel by
# default. For CUDA: make TORCH='torch --index-url https://download.pytorch.org/whl/cu126'
TORCH  ?= torch==2.13.0
EXTRAS ?= all,dev
CONFIG ?= configs/quick.toml
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: bench test lint data parity list clean
bench: $(STAMP) data
	$(BIN)/python bench.py run $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

data: $(STAMP)
	$(BIN)/python bench.py fetch mnist

parity: $(STAMP)  # every variant of every installed adapter
	$(BIN)/python bench.py parity configs/variants.toml

list: $(STAMP)
	$(BIN)/python bench.py list

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
