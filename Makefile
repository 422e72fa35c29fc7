# The README's two commands: `make demo` (install + main job) and `make test` (the whole suite, as CI runs it).
# `make install` installs the exact versions in requirements/lock.txt (the tested set); `make lock` re-resolves it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
LOCK_VENV := .lock-venv
# uv installs the lock about 3x as fast as pip (docs/benchmarks.md). It reads no pip.conf: set UV_INDEX_URL (and
# UV_INDEX_STRATEGY=unsafe-best-match with extra indexes) for a mirror, or use `make install INSTALLER=pip`.
INSTALLER ?= uv
# `make lock` keeps the locked version of every package that still fits setup.py and requirements/lock.in;
# `make lock LOCK_ARGS=--upgrade` moves every package to its newest release (or --upgrade-package NAME for one).
LOCK_ARGS ?=
# `make demo` also logs the demo to MLflow, in a SQLite database in this folder (README: "MLflow"); it costs about
# 0.4 s of start-up and 2-3% of the demo's 134 ms step (docs/benchmarks.md). `make demo MLFLOW=0` leaves it out.
MLFLOW ?= 1
MLFLOW_LOGGER := loggers.mlflow.tracking_uri=sqlite:///mlflow.db loggers.mlflow.experiment_name=foundry-ext \
	loggers.mlflow.log_system_metrics=false loggers.mlflow.log_duplicated_metric_every_n_steps=1

.PHONY: demo test install lock

install: $(VENV)/.installed

$(VENV)/.installed: setup.py $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade -c $(LOCK) pip $(if $(filter uv,$(INSTALLER)),uv)
ifeq ($(INSTALLER),uv)
	$(BIN)/uv pip install --python $(BIN)/python -c $(LOCK) -e '.[dev]'
else
	$(BIN)/pip install -c $(LOCK) -e '.[dev]'
endif
	touch $@

# One resolve for every platform and every Python that setup.py allows (uv's universal mode), with the
# versions for CPython 3.11 on Linux x86-64 being the ones the suite runs with.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet -c $(LOCK) uv
	$(LOCK_VENV)/bin/uv pip compile setup.py requirements/lock.in --extra dev --universal --python-version 3.10 \
		--custom-compile-command 'make lock' --quiet $(LOCK_ARGS) -o $(LOCK)
	rm -rf $(LOCK_VENV)

demo: install
	$(BIN)/composer scripts/train.py yamls/wsd.yaml $(if $(filter 1,$(MLFLOW)),$(MLFLOW_LOGGER))

test: install
	$(BIN)/python -m pytest -q
