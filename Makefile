# The README's commands. `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test check-template ui clean

$(BIN)/cellpaint: pyproject.toml requirements-dev.txt requirements-ui.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk (a bare `torch` pulls a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]' -r requirements-dev.txt -r requirements-ui.txt
	touch $@

setup: $(BIN)/cellpaint

# The whole pipeline on this machine (docs/local.md): embedded AWS, the real aws CLI, the GPU job on CPU.
demo: setup
	$(BIN)/cellpaint local demo examples/cell.png examples/cell.mask.png --out out/demo

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

check-template: setup
	.ci/check-template.sh

ui: setup
	$(BIN)/cellpaint ui

clean:
	rm -rf $(VENV) .venv-checkov out .cache .pytest_cache
