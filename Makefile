# The commands of the README: `make test` goes from a fresh clone to a green run by
# itself (it creates .venv and installs everything it needs); so do the others.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all test-interop test-browser test-slurm lint docs bench bench-quick bench-peers bench-detail clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,bench,dev,docs]'
	touch $(STAMP)

# Graphviz's dot draws pictures of graphs (installed from the system's packages when missing);
# the suite runs in two processes (pytest-xdist), as two copies side by side would load the machine
test: $(STAMP)
	.ci/system-packages dot=graphviz
	$(BIN)/python -m pytest -q -n 2

# the slow cases that `make test` leaves out (marked `slow`): leak checks over hundreds of runs, a million-node graph
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# the adapters to other tools, with the tools: the `interop` and `peers` extras, then
# tests/interop (which `make test` leaves out) and the examples of docs/interop.md
INTEROP_STAMP := $(VENV)/.installed-interop

$(INTEROP_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[all,bench,dev,docs,interop,peers]'
	touch $(INTEROP_STAMP)

test-interop: $(INTEROP_STAMP)
	$(BIN)/python -m pytest -q tests/interop

# the HTML timeline of a trace in a real headless browser: Chromium from the system's
# packages (installed when missing)
test-browser: $(STAMP)
	.ci/system-packages chromium=chromium
	$(BIN)/python -m pytest -q -m browser

# a real Slurm cluster of one node (tests/slurm/cluster.py: munged, slurmctld and slurmd
# as root in a temporary directory, stopped whatever happens) and tests/slurm run in it;
# Slurm and munge come from the system's packages. Where they cannot be installed (not
# root, no apt-get) it says why and fails in CI (CI set), passes elsewhere.
test-slurm: $(STAMP)
	@if [ "$$(id -u)" = 0 ] && .ci/system-packages slurmctld=slurm-wlm slurmd=slurmd munged=munge sbatch=slurm-client; then \
		$(BIN)/python tests/slurm/cluster.py --cpus 8 --timeout 2400 -- $(BIN)/python -m pytest -q tests/slurm; \
	else \
		echo "make test-slurm did not run: its Slurm and munge daemons need root and apt-get (Debian: apt-get install slurm-wlm munge)"; \
		test -z "$$CI"; \
	fi

# the HTML site in docs/_build/html; a warning fails the build
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check dispatcher tests benchmarks docs/conf.py
	$(BIN)/ruff format --check dispatcher tests benchmarks docs/conf.py

# every executor and baseline on every suite: a table, bench-results/results.{json,md,png}
bench: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m dispatcher.bench

bench-quick: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m dispatcher.bench --quick

# the same with the other tools beside (joblib, Ray, Parsl: the `peers` extra), in bench-results/peers
PEERS_STAMP := $(VENV)/.installed-peers

$(PEERS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[all,bench,dev,docs,peers]'
	touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m dispatcher.bench --peers --out bench-results/peers

# the focused measurements of each executor (core overhead, processes, dask, MPI)
bench-detail: $(STAMP)
	$(BIN)/python benchmarks/core_overhead.py --trace
	$(BIN)/python benchmarks/process_executor.py
	$(BIN)/python benchmarks/dask_executor.py
	$(BIN)/python benchmarks/mpi_executor.py
	$(BIN)/python benchmarks/futures_and_dask.py
	$(BIN)/python -m dispatcher.bench --suites mixed --workers 8 --no-plot --out bench-results/mixed \
		--executors python,serial,threads,processes,delayed-threads,futures-threads
	$(BIN)/python benchmarks/store.py --dir /dev/shm
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/mpiexec -n 3 $(BIN)/python benchmarks/mpi_executor.py --spmd

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache docs/_build
