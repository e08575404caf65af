"""Unit tests: one Airflow floor, stated the same everywhere, and the compat imports behind it (issue #21).

The floor run (``make test-floor``) runs these under the oldest supported Airflow with
``AKB_EXPECT_AIRFLOW`` set, so they also prove which Airflow that run really had.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import tomllib

from airflow_kafka_backup import DEPENDENCIES, MIN_AIRFLOW_VERSION, get_provider_info

REPO = Path(__file__).resolve().parents[2]


def _pyproject_dependencies() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def test_pyproject_provider_info_and_code_state_the_same_floor():
    assert _pyproject_dependencies() == DEPENDENCIES
    info = get_provider_info()
    assert info["dependencies"] == DEPENDENCIES
    airflow = [d for d in info["dependencies"] if re.match(r"apache-airflow[<>=]", d)]
    assert airflow == [f"apache-airflow>={MIN_AIRFLOW_VERSION},<4"]


def test_the_floor_run_pins_exactly_the_floor():
    """constraints-floor.txt installs the floor itself, not some later release that happens to work."""
    pins = dict(line.split("==", 1) for line in (REPO / "constraints-floor.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["apache-airflow"] == MIN_AIRFLOW_VERSION
    assert pins["apache-airflow-core"] == MIN_AIRFLOW_VERSION
    # The provider floors in pyproject are the versions the floor run installs.
    for dist in ("apache-airflow-providers-amazon", "apache-airflow-providers-apache-kafka"):
        assert f"{dist}>={pins[dist]}" in DEPENDENCIES, dist


def test_the_running_airflow_is_the_one_this_run_expects():
    from airflow_kafka_backup.compat import airflow_version, version_tuple

    expected = os.environ.get("AKB_EXPECT_AIRFLOW")
    if expected:  # the floor run
        assert airflow_version() == expected
    assert version_tuple(airflow_version()) >= version_tuple(MIN_AIRFLOW_VERSION)


@pytest.mark.parametrize(("version", "parsed"), [
    ("3.1.0", (3, 1, 0)), ("3.0.6", (3, 0, 6)), ("3.2.0rc1", (3, 2, 0)), ("3.3.2.dev0", (3, 3, 2)), ("4", (4,)),
])
def test_version_tuple(version, parsed):
    from airflow_kafka_backup.compat import version_tuple

    assert version_tuple(version) == parsed


def test_below_the_floor_is_one_clear_log_line(monkeypatch, caplog):
    from airflow_kafka_backup import compat

    assert compat.warn_if_below_floor() is None  # this Airflow is supported
    monkeypatch.setattr(compat, "airflow_version", lambda: "2.11.0")
    message = compat.warn_if_below_floor()
    assert message is not None and f"needs Airflow >= {MIN_AIRFLOW_VERSION}; this is Airflow 2.11.0" in message
    assert message in caplog.text


def test_compat_names_work_on_this_airflow():
    """Each moved name resolves to the real Airflow object, whichever module this release keeps it in."""
    from airflow_kafka_backup.compat import TriggerRule, conf, dag_bag_class, render_template_to_string

    assert TriggerRule.NONE_FAILED == "none_failed"
    assert conf.getint("core", "max_map_length", fallback=7) > 0
    assert dag_bag_class().__name__ == "DagBag"
    import jinja2

    assert render_template_to_string(jinja2.Template("{{ x }}-{{ y }}"), {"x": 1, "y": "b"}) == "1-b"


def test_nothing_outside_compat_imports_what_moved():
    """The names that moved between Airflow 3 releases come only from compat (a new import elsewhere
    broke every DAG on 3.0 and 3.1 before)."""
    moved = re.compile(r"from airflow\.(sdk\.configuration|configuration|utils\.trigger_rule|sdk\.log|"
                       r"dag_processing\.dagbag|models\.dagbag|utils\.helpers|sdk\.definitions\.context)\b"
                       r"|from airflow\.sdk import [^\n]*\b(TriggerRule|conf)\b")
    offenders = [str(path.relative_to(REPO)) for folder in ("airflow_kafka_backup", "dags", "tests")
                 for path in (REPO / folder).rglob("*.py")
                 if path.name != "compat.py" and path.name != "test_compat.py" and moved.search(path.read_text())]
    assert offenders == []
