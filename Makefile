# Quick start (offline, with ../shared beside this checkout):
#   make demo   sets up .venv from the lock and runs the main job
#   make test   sets up .venv from the lock and runs the test suite
# Dependencies:
#   make lock         re-resolves requirements/lock.txt to today's newest allowed releases (a deliberate commit)
#   make test-latest  the suite in .venv-latest on the newest releases pyproject.toml allows (run before `make lock`)
#   make test-oldest  the suite in .venv-oldest on the lowest releases pyproject.toml allows
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
# Built-in datasets are read from here (the development set-up uses ../shared/data).
export TEXTTUNE_DATA_DIR ?= $(abspath ../shared/data)
# Never reach for the Hugging Face Hub from the demo or the tests.
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
# torch is held at the release the lock names everywhere (latest and oldest too): it is the CPU build
# on this machine's disk; any other release pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
PIP_TOOLS := pip-tools==7.6.2

.PHONY: setup demo test lock test-latest test-oldest clean

# Exactly the locked versions, then texttune itself without resolving anything; `pip check` fails
# when pyproject.toml names a dependency the lock lacks (refresh it with `make lock`).
$(BIN)/texttune: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

setup: $(BIN)/texttune

demo: setup
	$(BIN)/texttune run configs/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet $(PIP_TOOLS)
	CUSTOM_COMPILE_COMMAND="make lock" .venv-lock/bin/pip-compile --quiet --upgrade --strip-extras --extra dev --allow-unsafe \
		--no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml requirements/lock.in
	rm -rf .venv-lock

# A fresh venv each time: what a new machine gets today, not what an old venv kept.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager $(TORCH) -e '.[dev]'
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider

test-oldest:
	rm -rf .venv-oldest
	$(PYTHON) -m venv .venv-oldest
	$(PYTHON) requirements/lowest.py pyproject.toml > .venv-oldest/floors.txt
	.venv-oldest/bin/python -m pip install --quiet -c .venv-oldest/floors.txt $(TORCH) -e '.[dev]'
	.venv-oldest/bin/python -m pip list --format=freeze > .venv-oldest/versions.txt
	.venv-oldest/bin/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest .venv-lock .pytest_cache
