# The two commands of the README's quickstart (and setup, docs). Each creates (or reuses) .venv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# constraints.txt pins torch to the CPU build that lies on disk here; pyproject keeps a range.
PIP    := $(BIN)/pip install -q -c constraints.txt

.PHONY: run test test-fast setup setup-flower docs clean floors

# Extras: test (the suite, the notebook runner), docs (make docs; tests/unit/test_docs.py).
$(BIN)/fcl-ray: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,docs,privacy]'
	touch $@

setup: $(BIN)/fcl-ray

setup-flower: setup  ## the optional Flower runtime (fcl-ray deploy, tests/integration/test_flower_loopback.py)
	$(PIP) -e '.[test,docs,flower]'

# --overwrite: a second `make run` moves the first one's files to runs/quickstart/previous-<time>/
run: setup           ## quickstart federation on the embedded synthetic data -> Dice table
	$(BIN)/fcl-ray run experiments/quickstart.yaml --overwrite

test: setup          ## the whole test suite (unit, integration, cluster): what CI runs
	$(BIN)/python -m pytest -q --durations=15

test-fast: setup     ## tests/unit only: no Ray, no MLflow server, under a minute
	$(BIN)/python -m pytest -q tests/unit

docs: setup          ## the docs site (mkdocs.yml, docs/) into site/; a broken link or anchor fails
	$(BIN)/mkdocs build --strict

# The lowest versions pyproject.toml allows (each floor's latest patch, X.Y.*), in a throwaway
# venv, under the unit tests that touch them. torch stays the local CPU build (constraints.txt): its floor's PyPI
# wheel pulls gigabytes of CUDA libraries; elsewhere run with FLOORS_TORCH=1 to pin it too.
FLOORS_VENV ?= /tmp/fcl-ray-floors
FLOORS_TESTS := tests/unit/test_labels.py tests/unit/test_report_stats.py tests/unit/test_models.py \
                tests/unit/test_encoders.py tests/unit/test_config.py tests/unit/test_readers.py
floors:              ## install the dependency floors in $(FLOORS_VENV) and run unit tests there
	rm -rf $(FLOORS_VENV) && $(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -c 'import re, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; [print(re.sub(r"\[.*\]", "", d).split(",")[0].replace(">=", "==") + ".*") for d in deps if ">=" in d and ("$(FLOORS_TORCH)" or not d.startswith("torch"))]' > $(FLOORS_VENV)/floors.txt
	cat $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/pip install -q -c $(FLOORS_VENV)/floors.txt $(if $(FLOORS_TORCH),,-c constraints.txt) -e '.[test]'
	$(FLOORS_VENV)/bin/pip freeze | grep -iE '^(torch|monai|nibabel|numpy|pandas|pyyaml|ray|mlflow|matplotlib|scipy)=='
	$(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider $(FLOORS_TESTS)

clean:
	rm -rf $(VENV) runs mlflow.db mlruns site
