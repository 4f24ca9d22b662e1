# Two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both create and reuse .venv; only Python 3.10+ and git are needed beforehand.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# registry `make demo` registers into: empty = notebooks/registry.sqlite3 in this clone; `make demo DB=URL`
# (sqlite:///path or postgresql://...) for another. `:=`, not `?=`: a DB variable in the environment is ignored.
DB :=

.PHONY: venv demo test test-fast bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# editable installs skip data-files: enable the server extension the way a normal install does
	@mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	@cp jupyter-config/jupyter_server_config.d/scidex_nbcapsule.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python notebooks/run_demo.py $(if $(DB),--db '$(DB)')

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf notebooks/capsules notebooks/results notebooks/registry.sqlite3* .pytest_cache
