# rig: `make demo` runs the whole job on the local lab; `make test` runs every test.
# Both set up what they need on a fresh Debian machine: Debian packages (as root), .venv/.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
RIG   := $(BIN)/rig
STAMP := $(VENV)/.installed
DEBS  := docker.io docker-registry debootstrap iproute2 openssh-client

.PHONY: setup demo test test-unit test-lab lint bench lab-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: need Debian packages: $$missing (run as root or apt-get install them)"; exit 1; fi; \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@python3 -m venv --help >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(RIG) validate
	$(RIG) lab up
	$(RIG) bootstrap -i inventory/lab.py
	@echo "--- a second bootstrap must change nothing:"
	$(RIG) bootstrap -i inventory/lab.py
	$(RIG) verify -i inventory/lab.py --suite bootstrap
	@tag=$$($(RIG) tag) && set -x && \
	$(RIG) build -i inventory/lab.py --push --tag $$tag && \
	echo "--- a second build must build and push nothing:" && \
	$(RIG) build -i inventory/lab.py --push --tag $$tag && \
	$(RIG) images verify -i inventory/lab.py --tag $$tag && \
	$(RIG) plan -i inventory/lab.py --tag $$tag && \
	$(RIG) rollout -i inventory/lab.py --tag $$tag && \
	$(RIG) status -i inventory/lab.py
	$(RIG) lab status
	@echo "The lab stays up to explore (ssh -i .lab/ssh/id_ed25519 root@10.77.0.11); 'make lab-down' removes it."

# Unit tests take seconds and need no host; lab tests bring the lab up from scratch and the
# lab is torn down afterwards whatever happened. pytest's exit 5 (nothing collected) is not
# a failure of the suite.
test: $(STAMP)
	$(BIN)/pytest tests/unit -q || [ $$? -eq 5 ]
	$(BIN)/pytest tests/lab -q -p no:cacheprovider; rc=$$?; $(RIG) lab down >/dev/null || rc=1; \
	  [ $$rc -eq 5 ] && rc=0; exit $$rc

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# Not part of `make test`: minutes of wall time on an 8-host lab, figures as ratios (bench/bench.py).
bench: $(STAMP)
	$(BIN)/python bench/bench.py

lint: $(STAMP)
	$(BIN)/ruff check rig tasks tests inventory group_data deploy.py dockerfiles bench

lab-down: $(STAMP)
	$(RIG) lab down

clean: lab-down
	rm -rf $(VENV) *.egg-info .bench
