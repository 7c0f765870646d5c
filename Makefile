# verified-arithmetic: `make demo` and `make test` are all a user types on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel these machines hold; on a CUDA cluster e.g. TORCH_SPEC="torch==2.13.0 --index-url <your wheel index>"
TORCH_SPEC ?= torch==2.13.0
RUNS ?= runs
SEEDS ?= 372001
ARCHS ?= add_d6_l2_h3_t15K
CLUSTER ?= auto
PROFILE ?=
MODEL ?=
QUESTIONS ?= 1000000
PYTEST_ARGS ?=
SWEEP_ARGS ?=

.PHONY: setup demo test bench sweep status verify lint clean oracle slurm-up slurm-down regenerate regenerate-tiny

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# Train a 2-digit addition model, verify it on all 10,000 questions, print accuracy per complexity class.
DEMO_MODEL ?= add_d2_l1_h3_t3K_s123456
demo: setup
	$(BIN)/varith train $(DEMO_MODEL) --out $(RUNS) --d-model 64 --d-head 16 --lr 3e-3 --no-resume
	$(BIN)/varith verify $(RUNS)/$(DEMO_MODEL)/$(DEMO_MODEL).pth --exhaustive
	$(BIN)/varith status --runs-dir $(RUNS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	mkdir -p bench/out
	set -o pipefail; $(BIN)/python -m bench | tee bench/out/bench.jsonl

sweep: setup
	$(BIN)/varith sweep --seeds $(SEEDS) --archs $(ARCHS) --cluster $(CLUSTER) --runs-dir $(RUNS) $(if $(PROFILE),--profile $(PROFILE),) $(SWEEP_ARGS)

status: setup
	$(BIN)/varith status --runs-dir $(RUNS)

verify: setup
	@test -n "$(MODEL)" || { echo "make verify: set MODEL=path/to/<name>.pth" >&2; exit 2; }
	$(BIN)/varith verify $(MODEL) --questions $(QUESTIONS)

# every published model of jobs/catalog.toml: train, verify, ablate, algorithm search, hub folder (resumable)
REGEN_OUT ?= runs/regenerated
REGEN_CLUSTER ?= slurm
REGEN_ARGS ?=
regenerate: setup
	$(BIN)/varith regenerate --scale full --cluster $(REGEN_CLUSTER) --out $(REGEN_OUT) $(if $(PROFILE),--profile $(PROFILE),) $(REGEN_ARGS)

# the same chain, shrunk (d_model 32, 300 steps, 10k questions): the whole catalog on a CPU
regenerate-tiny: setup
	$(BIN)/varith regenerate --scale tiny --cluster none --out $(REGEN_OUT)-tiny $(REGEN_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info

# TransformerLens as an oracle: its own venv (TransformerLens 2.x pins numpy < 2, which our stack does not want).
ORACLE_VENV ?= .venv-tl
oracle: setup
	@if [ ! -f $(ORACLE_VENV)/.installed ]; then \
	  $(PYTHON) -m venv $(ORACLE_VENV) && \
	  $(ORACLE_VENV)/bin/pip install -q $(TORCH_SPEC) 'transformer_lens>=2,<3' 'datasets<3' 'pyarrow<16' pytest && \
	  touch $(ORACLE_VENV)/.installed; fi
	PYTHONPATH=$(CURDIR) $(ORACLE_VENV)/bin/python -m pytest -q -p no:cacheprovider "tests/test_model.py::test_transformer_lens_gives_the_same_logits" -rs

# a real single-node SLURM on this machine (root; Debian packages), for the tests marked `slurm`
slurm-up:
	bash tools/slurm_local.sh start

slurm-down:
	bash tools/slurm_local.sh stop
