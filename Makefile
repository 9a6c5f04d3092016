# The two commands a new user needs: `make demo` and `make test`. Each sets itself up
# (virtual environment + install) on a fresh machine. `make help` lists the rest.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# dev: the test tools; postgres and k8s: what the deployment tests exercise (docs/deploy.md).
EXTRAS ?= dev,postgres,k8s
# The demo's instance and data root, for the demo and the UI only: the tests make their own per test
# (sr_pipeline_tests/conftest.py) and never see these.
DEMO_HOME := $(CURDIR)/data/dagster_home
DEMO_DATA := $(CURDIR)/data
demo ui: export DAGSTER_HOME := $(DEMO_HOME)
demo ui: export SR_PIPELINE_DATA ?= $(DEMO_DATA)

.PHONY: help install demo test ui lpips-weights bench gpu-check wheelhouse clean-data

help:
	@echo "make demo           install, make the bundled demo data and materialise every asset"
	@echo "make test           install and run the test suite"
	@echo "make ui             open the Dagster UI (dagster dev) on http://127.0.0.1:3000 (local only)"
	@echo "make lpips-weights  make LPIPS's AlexNet weights available offline"
	@echo "make bench          run the benchmarks that need no external data"
	@echo "make gpu-check      prove the GPU path on one GPU in under 8 minutes (benchmarks/gpu_check.py)"
	@echo "make wheelhouse     the wheels a machine holding only torch needs for the GPU check (<= 60 MB)"
	@echo "make clean-data     delete everything under data/ (uploads, store, models, Dagster history)"

# A download cut off mid-file (seen on CI: a 55 MB wheel stopped at 25 MB six times running)
# fails the whole install, so each pip step is retried a few times before giving up.
RETRY := for attempt in 1 2 3; do
RETRY_END := && break; [ $$attempt = 3 ] && exit 1; echo "pip failed (attempt $$attempt of 3); retrying in 20 s" >&2; sleep 20; done

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(RETRY) $(BIN)/pip install --quiet --upgrade pip $(RETRY_END)
	$(RETRY) $(BIN)/pip install --quiet --resume-retries 10 -e '.[$(EXTRAS)]' $(RETRY_END)
	touch $(STAMP)

install: $(STAMP)

$(DEMO_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DEMO_HOME)
	cp dagster.yaml $@

lpips-weights: install
	$(BIN)/sr-pipeline lpips-weights

demo: install $(DEMO_HOME)/dagster.yaml
	-$(BIN)/sr-pipeline lpips-weights
	$(BIN)/sr-pipeline demo

test: install
	-$(BIN)/sr-pipeline lpips-weights
	env -u DAGSTER_HOME -u SR_PIPELINE_DATA $(BIN)/pytest -q

ui: install $(DEMO_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -w workspace.yaml  # never 0.0.0.0: see docs/deploy.md

bench: install
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_degrade.py
	$(BIN)/python benchmarks/bench_speed.py

# On a GPU machine that holds only torch and the wheelhouse no virtual environment is made: the
# check runs with the venv's Python when there is one, else python3 (CHECK_PYTHON=... to choose).
CHECK_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
WHEELHOUSE ?= wheelhouse

gpu-check:
	PYTHONPATH=$(CURDIR) $(CHECK_PYTHON) benchmarks/gpu_check.py --device cuda

# Made afresh each time; the script prints the folder's size and fails over 60 MB (docs/multi-gpu.md).
wheelhouse: install
	rm -rf $(WHEELHOUSE)
	$(BIN)/python benchmarks/wheelhouse.py $(WHEELHOUSE)
	du -sh $(WHEELHOUSE)

clean-data:
	find data -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitignore -exec rm -rf {} +
