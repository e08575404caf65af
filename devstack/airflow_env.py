"""A throwaway Airflow home: SQLite metadata DB, our dags folder, connections from env vars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY

REPO = Path(__file__).resolve().parent.parent


def airflow_env(home: Path, dags_folder: Path = REPO / "dags") -> dict[str, str]:
    """Environment variables for an Airflow that lives entirely in ``home``."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


def connection_env(bootstrap: str, endpoint_url: str) -> dict[str, str]:
    """``kafka_default`` and ``aws_default`` as ``AIRFLOW_CONN_*`` JSON, pointing at the local stack."""
    kafka = {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, "group.id": "airflow-kafka-backup"}}
    aws = {
        "conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY,
        "extra": {"endpoint_url": endpoint_url, "region_name": REGION},
    }
    return {"AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(kafka), "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws)}


def make_airflow_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="akb-airflow-"))


def migrate(env: dict[str, str]) -> None:
    """``airflow db migrate`` into the SQLite file named by ``env``."""
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
