"""The provider as an operator meets it: `airflow providers list`, `airflow dags test` from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from tests.helpers import create_topics, produce_tricky

pytestmark = pytest.mark.integration

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def _airflow(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


def test_providers_list_shows_the_provider(airflow_stack):
    result = _airflow("providers", "list", "-o", "json", env=airflow_stack["env"])
    assert result.returncode == 0, result.stderr
    providers = {p["package_name"]: p for p in json.loads(result.stdout[result.stdout.index("["):])}
    assert providers["airflow-kafka-backup"]["version"] == "0.1.0"


def test_airflow_dags_test_cli_backs_up_a_topic(airflow_stack, bucket, s3):
    topic = f"cli-{uuid.uuid4().hex[:6]}"
    create_topics(airflow_stack["bootstrap"], NewTopic(topic, 2, 1, config={"retention.ms": "-1"}))
    produce_tricky(airflow_stack["bootstrap"], topic, 2, 400, seed=11)
    conf = json.dumps({"topics": [topic], "bucket": bucket})
    result = _airflow("dags", "test", "kafka_backup", "-c", conf, env=airflow_stack["env"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == [
        "kafka-backup/_commits/seq=000000000001.json",  # the commit log's first entry
        f"kafka-backup/_locks/{next(k for k in keys if '_locks' in k).rsplit('/', 1)[1]}",  # the writer lock
        f"kafka-backup/_manifests/{next(k for k in keys if '_manifests' in k).rsplit('/', 1)[1]}",
        f"kafka-backup/{topic}/partition=0/{topic}+0+0000000000.msgpack.zst",
        f"kafka-backup/{topic}/partition=1/{topic}+1+0000000000.msgpack.zst",
    ]
