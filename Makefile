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

.PHONY: bench test lint data parity list site gpu-check wheels clean
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

site: $(STAMP)  # site/index.html: every run under results/, its tables, interactive plots and history
	$(BIN)/python bench.py site results --out site

# On a GPU machine, offline: the frameworks preinstalled with CUDA (seen through --system-site-packages),
# the light packages from $(WHEELS) (make wheels on a machine with network). Without $(WHEELS), the
# usual .venv: on a machine without a GPU the check skips its GPU steps, saying why, and exits 0.
WHEELS   ?= wheels
GPU_VENV ?= .venv-gpu
gpu-check:
	@if [ -d "$(WHEELS)" ]; then \
	  test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(GPU_VENV); \
	  $(GPU_VENV)/bin/python -m pip install --quiet --no-index --find-links $(WHEELS) -e . || exit 1; \
	  $(GPU_VENV)/bin/python bench.py gpu-check; \
	else \
	  $(MAKE) --no-print-directory $(STAMP) && $(BIN)/python bench.py gpu-check; \
	fi

wheels:  # the project's light dependencies as wheels, for make gpu-check where there is no network
	$(PYTHON) -m pip download --quiet --dest $(WHEELS) setuptools wheel \
	  $$($(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"])')

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

clean:
	rm -rf $(VENV) $(GPU_VENV) .pytest_cache .ruff_cache
