# cmrkit: two commands do all the set-up.  `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
PROFILE ?= smoke
ONLY ?=
DATASET ?= phantom
DATA_DIR ?=
SEED ?= 0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cmrkit-installed
TORCH_VERSION ?= 2.13.0
# e.g. VENV_ARGS=--system-site-packages to reuse a machine's own (CUDA) torch
VENV_ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup reproduce test lint format lab phantom clean-reports clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=$(PROFILE) (smoke|cpu|demo|paper)  ONLY=01,03  DATASET=phantom|ukbb|acdc|mnms  DATA_DIR=...  SEED=0"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first: the local CPU wheel; a bare 'torch' requirement would pull a multi-GB CUDA build
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[notebooks,dev]"
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the kit with notebook and test extras

reproduce: $(STAMP) ## execute every notebook headless (PROFILE=smoke|cpu|demo|paper) into reports/$(PROFILE)/
	$(BIN)/cmrkit reproduce --profile $(PROFILE) --dataset $(DATASET) --seed $(SEED) \
		$(if $(ONLY),--only $(ONLY)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

test: $(STAMP) lint ## lint, then the whole test suite, including a smoke execution of every notebook
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff: lint and format check (configured in pyproject.toml)
	$(BIN)/ruff check cmrkit tests benchmarks notebooks
	$(BIN)/ruff format --check cmrkit tests benchmarks notebooks

format: $(STAMP) ## ruff: fix what can be fixed and format the tree
	$(BIN)/ruff check --fix cmrkit tests benchmarks notebooks
	$(BIN)/ruff format cmrkit tests benchmarks notebooks

# JupyterLab refuses to run as root ("Running as root is not recommended"); containers often are root
ROOT_USER := $(filter 0,$(shell id -u 2>/dev/null))
LAB_ARGS ?= $(if $(ROOT_USER),--allow-root)

lab: $(STAMP) ## start JupyterLab on the notebooks with the kit's environment (sliders and 3D views on)
	@$(if $(ROOT_USER),echo "note: running as root (a container?): starting JupyterLab with --allow-root; run as an ordinary user where you can")
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

phantom: $(STAMP) ## generate the phantom cohort of PROFILE under data/phantom/$(PROFILE)
	$(BIN)/cmrkit phantom --profile $(PROFILE) --seed $(SEED) --out data/phantom/$(PROFILE)

clean-reports: ## remove reports/
	rm -rf reports

clean: ## remove the environment, reports and generated phantom cohorts
	rm -rf $(VENV) reports data/phantom
