# Every target is self-contained on a fresh machine that has only python3:
# the first call creates .venv and installs triggerd with its test tools.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/triggerd run --config config/triggerd.yaml

lint: $(STAMP)
	$(BIN)/ruff check triggerd tests bench
	$(BIN)/ruff format --check triggerd tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict triggerd

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/validate.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
