# Two commands do everything on a fresh Debian 12 machine: `make demo` and `make test`.
# `make test` also checks types (mypy) and the stage layers (lint-imports, see pyproject.toml).
# Both bootstrap what is missing: Debian's ARM toolchain and QEMU, and .venv with the pinned package.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
DEB_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_WORKERS ?= 2

.PHONY: bootstrap debs venv venv-test firmware host-test demo test lint bench bench-report soak docs-figures clean

bootstrap: debs venv

debs:
	@if ! dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1; then \
		echo "installing Debian packages: $(DEB_PACKAGES)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DEB_PACKAGES); \
	fi

venv: $(DEMO_STAMP)

venv-test: $(TEST_STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `make demo` installs the package alone: what the emulated rack needs (no pyocd, no torch, no scikit-learn).
# pyproject.toml asks for compatible ranges; constraints.txt pins the exact versions the suite was run with.
$(DEMO_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -e . -c constraints.txt
	touch $@

# `make test` adds the test tools, the hardware extra (pyocd, meters: tested at their API boundary), the labgrid extra
# (a real coordinator and exporters in tests/test_lab.py), the flower extra (a real Flower server in
# tests/test_federate.py; it holds protobuf below 7, which labgrid's grpcio-reflection 1.81 accepts) and .[oracle], torch==2.13.0, used by tests only (the
# PyTorch gradient oracle): the exact pin resolves to the local CPU wheel (torch-2.13.0+cpu in pip's find-links), so
# no CUDA packages are pulled. labgrid depends on pyserial-labgrid, which installs the same `serial` module as
# pyserial (labgrid #1245): it is reinstalled last so labgrid's copy is the one on disk (the bench runs on either).
$(TEST_STAMP): $(DEMO_STAMP)
	$(BIN)/pip install -q -e '.[test,oracle,hardware,labgrid,flower]' -c constraints.txt
	$(BIN)/pip install -q --no-deps --force-reinstall pyserial-labgrid -c constraints.txt
	touch $@

firmware: bootstrap
	$(BIN)/bench build

host-test:
	$(MAKE) -C firmware host-test

demo: bootstrap
	$(BIN)/bench build
	$(BIN)/bench run quick --out reports/latest

test: debs venv-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/bench build
	$(BIN)/pytest -n $(PYTEST_WORKERS) -q

lint: venv-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: bootstrap
	$(BIN)/bench bench

bench-report: venv
	$(BIN)/python benchmarks/report_build.py

# Soak benchmark (not a test): 50 runs through the fault-injecting link; prints runs ok / failed by status, frames
# damaged vs counted, records lost and orphan twins, and exits 1 if anything was lost or left running.
soak: firmware
	$(BIN)/bench soak --runs 50 --out reports/soak

# docs/report.png (the README's figure): the demo's job, then a headless-Chromium screenshot of its report.
docs-figures: firmware
	$(BIN)/python scripts/docs_figures.py

clean:
	rm -rf firmware/build firmware_images/*-twin reports/latest reports/pytest reports/soak reports/docs .bench-cache
