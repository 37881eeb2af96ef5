# ComputeProof for Slurm. Run as root on Debian 12.
#   make demo   local Slurm cluster + GPU jobs + receipts + report
#   make test   install what the tests need, bring up the test cluster, run every test
SHELL := /bin/bash
PYTHON ?= python3
PIP := $(PYTHON) -m pip
CLUSTER := docker-slurm/cluster
DEB_PACKAGES := gcc make munge slurmctld slurmd slurm-client slurmdbd mariadb-server chromium prometheus postgresql
# `make test` runs its own cluster from a clean directory, so nothing a developer left in
# the demo cluster (/var/tmp/computeproof-cluster) can change a result.
TEST_CLUSTER_DIR ?= /var/tmp/computeproof-test-cluster
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: deps deb-deps py-deps test unit lint demo bench cluster-up cluster-down clean

deb-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

py-deps:
	$(PIP) install -q -e '.[gpu,server,postgres,dev,anchor]'

deps: deb-deps py-deps

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

unit: py-deps
	$(PYTHON) -m pytest tests/unit -q

# The whole suite: unit tests, then the real-Slurm tests against the local cluster,
# which is torn down afterwards whatever happened.
test: deps
	$(CLUSTER) down  # the demo cluster, if up, holds the same ports
	CP_CLUSTER_DIR=$(TEST_CLUSTER_DIR) $(CLUSTER) clean
	CP_CLUSTER_DIR=$(TEST_CLUSTER_DIR) $(CLUSTER) up
	status=0; CP_CLUSTER_DIR=$(TEST_CLUSTER_DIR) $(PYTHON) -m pytest tests -q \
		-p no:cacheprovider || status=$$?; \
	CP_CLUSTER_DIR=$(TEST_CLUSTER_DIR) $(CLUSTER) down; exit $$status

cluster-up: deps
	$(CLUSTER) up

cluster-down:
	$(CLUSTER) down

demo: deps
	bash scripts/demo.sh

bench: py-deps
	$(PYTHON) bench/bench_ingest.py
	$(PYTHON) bench/bench_merkle.py

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
