# The two commands of the README:
#   make run   - install, start the embedded PostgreSQL, migrate, and show the worker at work
#   make test  - install, then run every check and test (no database needed)
# and the documentation: make docs (build into site/), make docs-serve (live preview)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: install run test lint typecheck pytest bench clean wheel docs docs-serve

# The install byte-compiles the package as a wheel install would (pip does it there):
# with PYTHONDONTWRITEBYTECODE set, every worker process would compile it again at start.
$(STAMP): pyproject.toml $(shell find sql worker cli -name '*.py' -o -name '*.sql' -o -name '*.ts' 2>/dev/null)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dashboard]' --config-settings editable_mode=strict
	$(BIN)/python -m compileall -q "$$($(BIN)/python -c 'import pathlib, websurf.sql; print(pathlib.Path(websurf.sql.__file__).parents[1])')"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/websurf migrate
	$(BIN)/websurf demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

bench: install
	$(BIN)/websurf bench

# The documentation site: MkDocs (strict: a broken link or reference fails) into site/.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,dashboard,docs]' --config-settings editable_mode=strict
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

wheel:
	$(PYTHON) -m pip wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) build dist *.egg-info site
