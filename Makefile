# Quick start (offline, with ../shared beside this checkout):
#   make demo   sets up .venv and runs the main job
#   make test   sets up .venv and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Built-in datasets are read from here (the development set-up uses ../shared/data).
export TEXTTUNE_DATA_DIR ?= $(abspath ../shared/data)
# Never reach for the Hugging Face Hub from the demo or the tests.
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1

.PHONY: setup demo test clean

$(BIN)/texttune: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel on local disk. A looser pin pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/texttune

demo: setup
	$(BIN)/texttune run configs/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
