# The two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv chromium redis-server kafka-jars test test-floor floor-constraints demo lint bench bench-scale clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,lint,browser,celery]'
	touch $@

venv: $(VENV)/.installed

# The compat run (issue #21): the oldest supported Airflow, pinned whole by constraints-floor.txt, in a
# second venv. It runs the unit tests (the DAG parse is among them), then one backup and one restore DAG
# run on the real local stack. --fail-on-skip: a skipped test fails it. See docs/compatibility.md.
FLOOR_VENV ?= .venv-floor
FPY := $(FLOOR_VENV)/bin/python
FLOOR_AIRFLOW = $(shell sed -n 's/^apache-airflow==//p' constraints-floor.txt)
FLOOR_DATE ?= 2025-09-01T00:00:00Z
FLOOR_PROVIDERS = apache-airflow-providers-amazon apache-airflow-providers-apache-kafka

$(FLOOR_VENV)/.installed: pyproject.toml constraints-floor.txt
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FPY) -m pip install -q --upgrade pip
	$(FPY) -m pip install -q -c constraints-floor.txt -e '.[test]'
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	AKB_EXPECT_AIRFLOW=$(FLOOR_AIRFLOW) $(FPY) -m pytest -ra --fail-on-skip -p no:cacheprovider tests/unit \
		tests/integration/backup/test_backup_dag.py::test_backup_is_byte_exact \
		tests/integration/restore/test_restore_dag.py::test_restore_round_trip_is_byte_exact_with_offset_map

# Regenerate constraints-floor.txt: resolve the floor Airflow as PyPI stood at FLOOR_DATE (its release,
# so its providers and libraries are the ones it shipped with), then take botocore from constraints.txt
# (s3_retry_backoff_ms needs botocore 1.43; older ones refuse it with a clear message). Needs pip >= 26.
floor-constraints:
	rm -rf .venv-floor-resolve
	$(PYTHON) -m venv .venv-floor-resolve
	.venv-floor-resolve/bin/python -m pip install -q --upgrade pip
	.venv-floor-resolve/bin/python -m pip install -q --uploaded-prior-to $(FLOOR_DATE) \
		"apache-airflow==$(FLOOR_AIRFLOW)" $(FLOOR_PROVIDERS) -e '.[test]'
	.venv-floor-resolve/bin/python -m pip install -q $$(grep -E '^(boto3|botocore|s3transfer|ruff)==' constraints.txt)
	.venv-floor-resolve/bin/python -m pip check
	{ echo "# Airflow $(FLOOR_AIRFLOW), the floor, as PyPI stood at $(FLOOR_DATE) (botocore, ruff: constraints.txt)."; \
	  echo "# Made by 'make floor-constraints'; used by 'make test-floor'."; \
	  .venv-floor-resolve/bin/python -m pip freeze --exclude-editable; } > constraints-floor.txt
	rm -rf .venv-floor-resolve

lint: venv
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

# The browser tests drive Debian's chromium package through Playwright (no browser download).
CHROMIUM ?= $(shell command -v chromium || echo /usr/bin/chromium)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

chromium:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# The CeleryExecutor tests' broker (devstack/redis_server.py) is Debian's redis-server, started by the tests.
REDIS_SERVER ?= $(shell command -v redis-server || echo /usr/bin/redis-server)

redis-server:
	@test -x $(REDIS_SERVER) || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }

# The broker's jars, fetched once before the two runs below start brokers side by side.
kafka-jars: venv
	$(PY) -c "from devstack.kafka_broker import fetch_kafka_jars; fetch_kafka_jars()"

# The main run spreads its test files over PYTEST_WORKERS processes (pytest-xdist, --dist loadfile: a
# module's fixtures, such as an Airflow services stack, stay in one process; each process starts its
# own broker, S3 server and Airflow DB). The tests mostly wait on brokers, S3 and Airflow's processes:
# one process leaves much of the 2 cores idle. The floor run (its venv, its tests) goes alongside; its
# log is printed once both have finished.
PYTEST_WORKERS ?= 2

test: venv lint chromium redis-server kafka-jars
	@$(MAKE) --no-print-directory test-floor > test-floor.log 2>&1 & floor=$$!; \
	$(PY) -m pytest -ra -n $(PYTEST_WORKERS) --dist loadfile; main=$$?; \
	wait $$floor; floor_status=$$?; \
	echo "--- make test-floor (Airflow $(FLOOR_AIRFLOW)), from test-floor.log:"; cat test-floor.log; \
	test $$main = 0 && test $$floor_status = 0

demo: venv
	$(PY) -m devstack.demo

bench: venv
	$(PY) benchmarks/backup_throughput.py
	$(PY) benchmarks/restore_throughput.py

# Plan, commit and restore-plan costs at 1k, 5k and 10k partitions (docs/scaling.md); about half an hour.
bench-scale: venv
	$(PY) benchmarks/scale.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV)
