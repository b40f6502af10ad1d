# The two set-up commands of the README. Each creates (or reuses) .venv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# constraints.txt pins torch to the CPU build that lies on disk here; pyproject keeps a range.
PIP    := $(BIN)/pip install -q -c constraints.txt

.PHONY: run test test-fast setup clean

$(BIN)/fcl-ray: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,privacy]'
	touch $@

setup: $(BIN)/fcl-ray

# --overwrite: a second `make run` moves the first one's files to runs/quickstart/previous-<time>/
run: setup           ## quickstart federation on the embedded synthetic data -> Dice table
	$(BIN)/fcl-ray run experiments/quickstart.yaml --overwrite

test: setup          ## the whole test suite (unit, integration, cluster): what CI runs
	$(BIN)/python -m pytest -q

test-fast: setup     ## tests/unit only: no Ray, no MLflow server, under a minute
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) runs mlflow.db mlruns
