# cerepro: two commands do everything on a fresh machine.
#   make report   install into .venv, run the offline demo grid, build the book
#   make test     install into .venv and run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; on a GPU machine install the CUDA build of the same release first
# (README, "GPU installs") or set TORCH_INDEX to a PyTorch wheel index.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

.PHONY: install test lint report browser slurm clean-venv parity

install: $(STAMP)

LAB_SETTING := jupyter/lab/settings/overrides.d/cerepro.json

$(STAMP): pyproject.toml $(LAB_SETTING)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	# JupyterLab opens notebooks/*.py as notebooks (jupytext's viewer), not in a text editor
	install -D -m 644 jupyter/lab/settings/overrides.d/cerepro.json $(VENV)/share/jupyter/lab/settings/overrides.d/cerepro.json
	touch $(STAMP)

# Test files run in parallel, one file per worker, longest first (pytest-xdist; tests/conftest.py
# orders them): three workers on two cores, as the longest (SLURM, kill-and-resume) mostly wait;
# TEST_WORKERS=1 runs them in turn. One math thread per process unless set; the 15 slowest tests
# are listed at the end, to see where the suite's time goes.
TEST_WORKERS ?= 3
test: install browser slurm lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=$${MKL_NUM_THREADS:-1} $(BIN)/python -m pytest -q --durations=15 \
		$(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# Style is kept by a tool: ruff's formatter and linter, configured in pyproject.toml ([tool.ruff]);
# `.venv/bin/ruff format . && .venv/bin/ruff check --fix .` applies them.
lint: install
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .

# Headless Chromium (Debian package) for the book's browser check; sudo when not root.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# Debian's SLURM and munge for the one-node test cluster (tests/slurm_cluster.py); sudo when not root.
slurm:
	@command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }

report: install
	$(BIN)/cerepro report

# The authors' own libraries (experimaestro-ir, xpm-torch) run against cerepro on the same inputs,
# in environments of their own (.venv-parity-*; parity/README.md). Not part of make test.
parity:
	TORCH_SPEC="$(TORCH_SPEC)" TORCH_INDEX="$(TORCH_INDEX)" $(PYTHON) parity/run.py

clean-venv:
	rm -rf $(VENV)
