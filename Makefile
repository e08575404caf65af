# The two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv test demo lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(PY) -m ruff check .

test: venv lint
	$(PY) -m pytest -ra

demo: venv
	$(PY) -m devstack.demo

bench: venv
	$(PY) benchmarks/backup_throughput.py
	$(PY) benchmarks/restore_throughput.py

clean:
	rm -rf $(VENV)
