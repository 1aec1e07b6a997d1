# Each target creates its own virtual environment and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.r1mw-installed
# The comparison with other caches has heavy dependencies: a venv of its own.
CVENV  ?= .venv-compare
CSTAMP := $(CVENV)/.r1mw-installed

.PHONY: demo test typecheck bench compare clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(CSTAMP): pyproject.toml
	$(PYTHON) -m venv $(CVENV)
	$(CVENV)/bin/python -m pip install -q --upgrade pip
	$(CVENV)/bin/python -m pip install -q -e '.[compare]'
	touch $(CSTAMP)

demo: $(STAMP)
	$(VENV)/bin/r1mw demo

test: $(STAMP)
	$(PY) -m pytest -q

# The types the package promises (py.typed), checked: [tool.mypy] in pyproject.toml.
typecheck: $(STAMP)
	$(VENV)/bin/python -m mypy

bench: $(STAMP)
	$(VENV)/bin/r1mw bench

compare: $(CSTAMP)
	$(CVENV)/bin/python benchmarks/compare.py

clean:
	rm -rf $(VENV) $(CVENV) build *.egg-info
