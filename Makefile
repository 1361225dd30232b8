# rig: `make demo` runs the whole job on the local lab; `make test` runs every test.
# Both set up what they need on a fresh Debian machine: Debian packages (as root), .venv/.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
RIG   := $(BIN)/rig
STAMP := $(VENV)/.installed
DEBS  := docker.io docker-registry debootstrap iproute2 openssh-client sudo
# rig is installed into the venv as an operator installs it (not editable): tests and the demo
# run the installed `rig` and its installed rig/ and tasks/ packages, never the checkout.
SOURCES := pyproject.toml $(shell find rig tasks -name '*.py' 2>/dev/null)
PYINFRA_PIN := pyinfra==3.10.0
LAB   := $(RIG) --env lab

.PHONY: setup demo test test-unit test-lab lint bench fuzz coverage mutate lab-down clean

setup: $(STAMP)

$(STAMP): $(SOURCES)
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: need Debian packages: $$missing (run as root or apt-get install them)"; exit 1; fi; \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@python3 -m venv --help >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	@[ -x $(BIN)/pip ] || python3 -m venv $(VENV)
	@[ -f $(VENV)/.pip-upgraded ] || { $(BIN)/pip install -q --upgrade pip && touch $(VENV)/.pip-upgraded; }
	$(BIN)/pip install -q '.[dev]' '$(PYINFRA_PIN)'
	$(BIN)/pip install -q --no-deps --force-reinstall .
	@rm -rf build *.egg-info
	@touch $(STAMP)

demo: $(STAMP)
	$(RIG) validate
	$(LAB) lab up
	$(LAB) bootstrap
	@echo "--- a second bootstrap must change nothing:"
	$(LAB) bootstrap
	$(LAB) verify --suite bootstrap
	@tag=$$($(RIG) tag) && set -x && \
	$(LAB) build --push --tag $$tag && \
	echo "--- a second build must build and push nothing:" && \
	$(LAB) build --push --tag $$tag && \
	$(LAB) images verify --tag $$tag && \
	$(LAB) plan --tag $$tag && \
	$(LAB) rollout --tag $$tag && \
	$(LAB) status
	$(LAB) lab status
	@echo "The lab stays up to explore (ssh -i .lab/ssh/id_ed25519 ops@10.77.0.11); 'make lab-down' removes it."

# Unit tests take seconds and need no host; lab tests bring the lab up from scratch and the
# lab is torn down afterwards whatever happened. pytest's exit 5 (nothing collected) is not
# a failure of the suite.
test: $(STAMP)
	$(BIN)/pytest tests/unit -q || [ $$? -eq 5 ]
	$(BIN)/pytest tests/lab -q; rc=$$?; $(RIG) lab down >/dev/null || rc=1; \
	  [ $$rc -eq 5 ] && rc=0; exit $$rc

# `make test-unit PYINFRA=latest`: the unit tests (runner contract tests included) against the
# newest pyinfra 3.x on PyPI, in a venv of its own.
test-unit: $(STAMP)
ifeq ($(PYINFRA),latest)
	@[ -x .venv-latest/bin/pip ] || python3 -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade '.[dev]' 'pyinfra>=3,<4'
	@rm -rf build *.egg-info
	@.venv-latest/bin/python -c "import pyinfra.version as v; print('pyinfra', v.__version__)" 2>/dev/null || .venv-latest/bin/pip show pyinfra | head -2
	.venv-latest/bin/pytest tests/unit -q
else
	$(BIN)/pytest tests/unit -q
endif

# Property-based tests of the spec loader with many more examples than `make test` runs.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/unit/test_fuzz_spec.py -q

# Not part of `make test`: minutes of wall time on an 8-host lab, figures as ratios (bench/bench.py).
bench: $(STAMP)
	$(BIN)/python bench/bench.py

# Not part of `make test`: unit line coverage of the rollout core (rig/ops, rig/rollout,
# tasks/rollout.py; [tool.coverage.*] in pyproject.toml), measured in the installed packages the
# tests import and reported against the checkout, missing lines included. The whole report is
# printed first; then it fails if the unit tests failed or the core's total is below COVER_MIN %.
# Its data file lives in a temporary folder, removed afterwards.
COVER_MIN ?= 90
coverage: $(STAMP)
	@data=$$(mktemp -d) && trap 'rm -rf "$$data"' EXIT && export COVERAGE_FILE="$$data/coverage"; \
	  echo "$(BIN)/coverage run $(BIN)/pytest tests/unit -q"; \
	  $(BIN)/coverage run $(BIN)/pytest tests/unit -q; tests=$$?; \
	  echo "$(BIN)/coverage report --fail-under=$(COVER_MIN)"; \
	  $(BIN)/coverage report --fail-under=$(COVER_MIN); cover=$$?; \
	  [ $$tests -eq 0 ] || [ $$tests -eq 5 ] || echo "make: the unit tests failed (pytest exit $$tests)"; \
	  [ $$cover -ne 2 ] || echo "make: rollout core coverage is below COVER_MIN=$(COVER_MIN)%"; \
	  { [ $$tests -eq 0 ] || [ $$tests -eq 5 ]; } && [ $$cover -eq 0 ]

# Not part of `make test`: a mutation check of the rollout core (minutes: each mutant runs the
# unit tests that cover its file). A report; see tools/mutate.py --help, e.g.
# `make mutate MUTATE_ARGS="--max-per-file 15"` or MUTATE_ARGS="--only rig/rollout/gate.py:78".
MUTATE_ARGS ?=
mutate: $(STAMP)
	$(BIN)/python tools/mutate.py $(MUTATE_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check rig tasks tests inventory group_data deploy.py dockerfiles bench tools

lab-down: $(STAMP)
	$(RIG) lab down

clean: lab-down
	rm -rf $(VENV) .venv-latest *.egg-info build .bench
