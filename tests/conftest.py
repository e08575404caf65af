"""Fixtures that start the real local stack once per test session.

Airflow reads its configuration when first imported, so the temporary AIRFLOW_HOME is
set here, at conftest import, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from devstack.airflow_env import REPO, airflow_env, connection_env, make_airflow_home, migrate

_HOME = make_airflow_home()
# The shipped DAGs plus the tests' own DAGs, in one dags folder (dag.test() needs them inside it).
_DAGS = _HOME / "dags"
_DAGS.mkdir()
for dag_file in [*(REPO / "dags").glob("*.py"), *(REPO / "tests" / "dags").glob("*.py")]:
    shutil.copy(dag_file, _DAGS / dag_file.name)
_AIRFLOW_ENV = airflow_env(_HOME, dags_folder=_DAGS)
os.environ.update(_AIRFLOW_ENV)


@pytest.fixture(scope="session")
def kafka_broker():
    from devstack.kafka_broker import start_broker

    broker = start_broker()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def s3_server():
    from devstack.s3_server import start_s3_server

    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def airflow_stack(kafka_broker, s3_server):
    """Kafka, S3 and a migrated Airflow DB, with kafka_default / aws_default pointing at them."""
    env = {**_AIRFLOW_ENV, **connection_env(kafka_broker.bootstrap, s3_server.endpoint_url)}
    os.environ.update(env)
    migrate(env)
    return {"env": env, "bootstrap": kafka_broker.bootstrap, "endpoint_url": s3_server.endpoint_url,
            "sasl_bootstrap": kafka_broker.sasl_bootstrap}


@pytest.fixture
def bucket(s3_server) -> str:
    """A fresh, empty bucket per test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(s3_server):
    return s3_server.client()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fail-on-skip", action="store_true",
        help="A skipped or xfailed test fails the run: the floor run (make test-floor) must prove every test, "
             "not pass by skipping what the older Airflow cannot do.",
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With --fail-on-skip, turn a green run that skipped anything into a failure (exit 1)."""
    if not session.config.getoption("--fail-on-skip") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [*reporter.stats.get("skipped", ()), *reporter.stats.get("xfailed", ())] if reporter else []
    if skipped:
        reporter.write_line(f"--fail-on-skip: {len(skipped)} test(s) skipped or xfailed; the run fails.", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
