# ComputeProof for Slurm. Run as root on Debian 12 or 13.
#   make demo         local Slurm cluster + GPU jobs + receipts + report
#   make test         units under every CPython 3.11+ found (nox), the hooks under each,
#                     then the real-Slurm suite against the native cluster, then that
#                     cluster as many hosts posting to a collector (tests/multihost)
#   make test-matrix  the compose clusters: Debian 12 (Slurm 22.05), Debian 13 (Slurm 24.11),
#                     Slurm 25.11 + pyslurm built from ../shared/vendor/; every extra from PyPI
#   make test-fresh   `make test` from a fresh clone in a bare Debian 13 container (DIST=)
# Everything Python runs from a virtual environment ($(VENV)), never the system interpreter:
# Debian's python3 is externally managed (PEP 668). The hooks alone run /usr/bin/python3 -SE
# with the standard library (conf/INSTALL.md).
SHELL := /bin/bash
# the interpreter that creates the venv (Debian's python3 needs python3-venv)
BOOT_PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
CLUSTER := docker-slurm/cluster
COMPOSE := docker-slurm/compose-cluster
DEB_PACKAGES := gcc make libc6-dev munge slurmctld slurmd slurm-client slurmdbd mariadb-server \
	chromium prometheus postgresql python3-venv git
MATRIX_DEB_PACKAGES := docker.io docker-compose mmdebstrap debian-archive-keyring
# `make test` runs its own cluster from a clean directory, so nothing a developer left in
# the demo cluster (/var/tmp/computeproof-cluster) can change a result.
TEST_CLUSTER_DIR ?= /var/tmp/computeproof-test-cluster
# ... and the many-hosts pass (CP_LEDGER=collector: a spool, key and forwarder per node,
# one collector on PostgreSQL) another
TEST_MULTIHOST_DIR ?= /var/tmp/computeproof-test-multihost
DIST ?= trixie
# compose clusters whose suite may fail without failing test-matrix (said loudly), e.g.
# MATRIX_ALLOW_FAIL="trixie slurm-25.11" until the Slurm 24.11+ parsing lands; empty: strict
MATRIX_ALLOW_FAIL ?=
# The Slurm 25.11 cluster runs the suite twice: with pyslurm as the job-info backend (45 of
# 45, twice, 2026-12-05) and with the command line. CP_PYSLURM_PASS=0 leaves the pyslurm
# pass out (about 4 minutes).
export CP_PYSLURM_PASS ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# the cluster scripts (keys, agents) and the demo run the CLI from the venv
export PYTHON := $(abspath $(VPY))
# timed NAME CMD...: run CMD, then print how long part NAME took
timed = start=$$SECONDS; status=0; $(2) || status=$$?; \
	echo "== time: $(1): $$((SECONDS - start)) s (exit $$status)"; exit $$status

.PHONY: deps deb-deps matrix-deps venv test unit hooks integration test-matrix test-fresh \
	lint demo bench cluster-up cluster-down clean

deb-deps:
	@missing=$$(for p in $(DEB_PACKAGES) $(EXTRA_DEB); do \
		dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

matrix-deps:
	$(MAKE) deb-deps EXTRA_DEB="$(MATRIX_DEB_PACKAGES)"

# The project with every extra and the dev tools in $(VENV), rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(BOOT_PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q '.[all,dev]'
	touch $@

venv: deb-deps $(VENV)/.installed

deps: deb-deps venv

lint: venv
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .
	$(VPY) -m mypy

# Units under every CPython 3.11+ found (noxfile.py), and the hook processes under each.
unit: venv
	@$(call timed,units under every interpreter,$(VENV)/bin/nox -s unit)

hooks: venv
	@$(call timed,hooks under every interpreter,$(VENV)/bin/nox -s hooks)

# The real-Slurm tests (and gpu, which skip without a GPU) against the native cluster,
# torn down afterwards whatever happened.
integration: deps
	$(CLUSTER) down  # the demo cluster, if up, holds the same ports
	CP_CLUSTER_DIR=$(TEST_CLUSTER_DIR) $(CLUSTER) clean
	CP_CLUSTER_DIR=$(TEST_CLUSTER_DIR) $(CLUSTER) up
	@start=$$SECONDS; status=0; CP_CLUSTER_DIR=$(TEST_CLUSTER_DIR) $(VPY) -m pytest \
		tests/integration tests/gpu -q -p no:cacheprovider || status=$$?; \
	CP_CLUSTER_DIR=$(TEST_CLUSTER_DIR) $(CLUSTER) down; \
	echo "== time: native cluster suite (Slurm $$(slurmd -V 2>/dev/null | cut -d' ' -f2)): $$((SECONDS - start)) s (exit $$status)"; \
	start=$$SECONDS; rc=0; export CP_LEDGER=collector CP_CLUSTER_DIR=$(TEST_MULTIHOST_DIR); \
	{ $(CLUSTER) clean && $(CLUSTER) up && \
		$(VPY) -m pytest tests/multihost -q -p no:cacheprovider; } || rc=$$?; \
	$(CLUSTER) down; \
	echo "== time: the same cluster as many hosts (a collector on PostgreSQL): $$((SECONDS - start)) s (exit $$rc)"; \
	[ $$rc = 0 ] || status=1; exit $$status

test: deps
	@status=0; $(MAKE) --no-print-directory unit || status=1; \
	$(MAKE) --no-print-directory hooks || status=1; \
	$(MAKE) --no-print-directory integration || status=1; exit $$status

# The compose clusters (docker-slurm/compose-cluster): each part prints its time; the
# 25.11 part is skipped with a note where ../shared/vendor/ has no Slurm source.
test-matrix: matrix-deps venv
	@status=0; \
	for dist in bookworm trixie slurm-25.11; do \
		start=$$SECONDS; rc=0; $(COMPOSE) test $$dist || rc=$$?; \
		if [ $$rc = 3 ]; then echo "== skipped: compose $$dist (no Slurm source)"; rc=0; fi; \
		echo "== time: compose cluster $$dist: $$((SECONDS - start)) s (exit $$rc)"; \
		if [ $$rc != 0 ] && [[ " $(MATRIX_ALLOW_FAIL) " == *" $$dist "* ]]; then \
			echo "== KNOWN FAILING, not failing the run (MATRIX_ALLOW_FAIL): compose $$dist"; \
			rc=0; fi; \
		[ $$rc = 0 ] || status=1; \
	done; \
	start=$$SECONDS; rc=0; $(VPY) -m pytest tests/install -q -p no:cacheprovider || rc=$$?; \
	echo "== time: every extra from PyPI: $$((SECONDS - start)) s (exit $$rc)"; \
	[ $$rc = 0 ] || status=1; \
	$(COMPOSE) stop; exit $$status

# `make test` as a new site runs it: a fresh clone in a bare Debian container (DIST=trixie
# or bookworm) that installs everything itself, on its own ports.
test-fresh: matrix-deps
	@$(call timed,make test on a fresh Debian $(DIST),docker-slurm/fresh-make-test $(DIST))

cluster-up: deps
	$(CLUSTER) up

cluster-down:
	$(CLUSTER) down

demo: deps
	bash scripts/demo.sh

bench: venv
	$(VPY) bench/bench_ingest.py
	$(VPY) bench/bench_merkle.py

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .nox $(VENV)
