# Two commands on a fresh machine: `make demo` and `make test`. Both run `make setup` first, which
# creates .venv, installs the package, open3d's system library and rembg's model, once.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL := .models/u2netp/u2netp.onnx
# torch: the CPU build where no NVIDIA GPU is present. On machines whose pip cannot find a CPU wheel
# for this version, set TORCH_INDEX=https://download.pytorch.org/whl/cpu (or cu124 etc. for CUDA).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
CORES ?= all
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup demo test lint clean doctor

setup: $(STAMP) $(MODEL) .libusb

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "setup: installing $(TORCH_SPEC)"; \
	  $(BIN)/python -m pip install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	@echo "setup: installing neus-stage and its dependencies into $(VENV)"
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@# rembg imports pymatting, whose numba kernels compile on their first import (about a minute on 2
	@# cores) and are cached beside it: compile them here, not in the first run's masks stage
	@echo "setup: compiling rembg's numba kernels (once)"
	@$(BIN)/python -c "import rembg" 2>/dev/null || true
	@touch $(STAMP)

$(MODEL): scripts/install_models.py | $(STAMP)
	@$(BIN)/python scripts/install_models.py .models

# open3d needs the system library libusb-1.0 (Debian: libusb-1.0-0)
.libusb: | $(STAMP)
	@if ! ldconfig -p | grep -q 'libusb-1.0.so.0'; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "setup: installing libusb-1.0-0 for open3d"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libusb-1.0-0) >/dev/null; \
	  else \
	    echo "setup: open3d needs the system library libusb-1.0: run 'sudo apt-get install libusb-1.0-0' (Debian/Ubuntu) and 'make setup' again" >&2; exit 1; \
	  fi; \
	fi
	@touch .libusb

# the report test screenshots report.html in headless Chromium (Debian: chromium); the test skips without it
.chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "setup: installing chromium for the report's screenshot test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null \
	      || echo "setup: could not install chromium; the report's screenshot test will be skipped" >&2; \
	  else \
	    echo "setup: the report's screenshot test needs chromium: run 'sudo apt-get install chromium' (Debian/Ubuntu); it is skipped until then" >&2; \
	  fi; \
	fi
	@if command -v chromium >/dev/null 2>&1; then touch .chromium; fi

demo: setup
	@$(BIN)/snakemake --cores $(CORES)
	@$(BIN)/python scripts/demo_summary.py demo

test: setup .chromium
	@$(BIN)/pytest -q

lint: setup
	@$(BIN)/ruff check neus_stage tests scripts
	@$(BIN)/ruff format --check neus_stage tests scripts
	@$(BIN)/snakefmt --check Snakefile workflow/rules
	@$(BIN)/snakemake --lint

doctor: setup
	@$(BIN)/neus-stage doctor

clean:
	rm -rf results logs benchmarks .snakemake
