"""The DAGs under a real Airflow: scheduler, dag-processor, api-server and triggerer as separate processes.

The other integration tests run DAGs through ``dag.test()``, where every task runs in the
test process and a deferred sensor's trigger runs inline. Here the LocalExecutor runs each
task in its own process, tasks reach Variables and XCom through the Execution API, and the
backlog sensor's trigger runs in the real triggerer, as in a deployment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.storage.key_layout import manifest_key
from airflow_kafka_backup.engine.storage.manifest import load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from devstack.airflow_env import REPO, connection_env
from devstack.airflow_services import AirflowServices
from tests.helpers import create_topics, produce_tricky, read_backup, read_kafka, snapshot_bucket

pytestmark = pytest.mark.integration

BACKLOG_DAG = "kafka_backup_on_backlog"
SENSOR = "wait_for_backlog"
TRIGGER_CLASS = "airflow_kafka_backup.triggers.backlog.KafkaBacklogTrigger"
BACKLOG_MIN_RECORDS = 50  # tests/dags/kafka_backup_on_backlog.py


class StatsdListener:
    """A StatsD server on loopback UDP: keeps every datagram the tasks send, for the metrics tests."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.lines.extend(data.decode(errors="replace").splitlines())

    def values(self, name: str) -> list[str]:
        """Every value sent for the metric ``name`` (``airflow.<name>:<value>|<type>``), oldest first."""
        prefix = f"airflow.{name}:"
        return [line[len(prefix):] for line in list(self.lines) if line.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture(scope="module")
def statsd() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def airflow(airflow_stack, statsd, request) -> Iterator[AirflowServices]:
    """The four services, once for this module, with kafka_default / aws_default on the session's stack."""
    dag_files = [*(REPO / "dags").glob("*.py"), *(REPO / "tests" / "dags").glob("*.py")]
    extra_env = {
        **connection_env(airflow_stack["bootstrap"], airflow_stack["endpoint_url"]),
        "KAFKA_BACKUP_SCHEDULE": "none",  # else the scheduler starts an @hourly run of its own at once
        # Every process sends its metrics to the test's StatsD listener.
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    failed_before = request.session.testsfailed
    with AirflowServices(dag_files, extra_env) as services:
        services.wait_for_dags(["kafka_backup", BACKLOG_DAG, NO_RETRIES_DAG])
        yield services
        # Keep the home (logs, DB) for inspection when a test here failed.
        services.keep_home = request.session.testsfailed > failed_before


def _diagnostics(airflow: AirflowServices, dag_id: str, run_id: str) -> str:
    """What to read when a run did not go as expected: task states, task logs, service logs."""
    try:
        states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in airflow.task_instances(dag_id, run_id)}
    except OSError as error:
        states = {"error": str(error)}
    return (f"AIRFLOW_HOME={airflow.home}\ntask states: {states}\n"
            f"{airflow.task_log_tails(dag_id)}\n{airflow.log_tails()}")


def _wait_for_deferred(airflow: AirflowServices, dag_id: str, run_id: str, task_id: str,
                       timeout: float = 120) -> dict[str, Any]:
    """Until the task is deferred and a triggerer has picked up its trigger; returns the task instance."""
    deadline = time.monotonic() + timeout
    ti: dict[str, Any] = {}
    while time.monotonic() < deadline:
        airflow.check_alive()
        ti = next((t for t in airflow.task_instances(dag_id, run_id) if t["task_id"] == task_id), {})
        trigger = ti.get("trigger") or {}
        if ti.get("state") == "deferred" and trigger.get("triggerer_id") is not None:
            return ti
        assert ti.get("state") not in ("success", "failed", "upstream_failed", "skipped"), (
            f"{task_id} finished without deferring: {ti}\n{_diagnostics(airflow, dag_id, run_id)}")
        time.sleep(0.5)
    raise AssertionError(f"{task_id} not deferred to a triggerer within {timeout}s: {ti}\n"
                         f"{_diagnostics(airflow, dag_id, run_id)}")


def _assert_ran_in_separate_processes(airflow: AirflowServices, tis: list[dict[str, Any]]) -> None:
    """Every task instance ran in a process of its own: not the test's, not a service's, not another task's."""
    pids = {(ti["task_id"], ti["map_index"]): ti["pid"] for ti in tis}
    assert all(pids.values()), f"task instances without a pid: {pids}"
    not_tasks = {os.getpid(), *(process.pid for process in airflow.processes.values())}
    assert not set(pids.values()) & not_tasks, f"tasks ran in the test or a service process: {pids}"
    assert len(set(pids.values())) == len(pids), f"tasks shared a process: {pids}"


def _assert_backup_matches_kafka(bootstrap: str, s3, bucket: str, prefix: str, topic: str, run_id: str,
                                 produced: int) -> None:
    """The committed backup holds exactly what Kafka holds, record for record, under this run's manifest."""
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", ())}
    assert manifest_key(prefix, run_id) in keys, keys
    assert any(k.startswith(f"{prefix}/{topic}/partition=") for k in keys), keys
    backed_up = read_backup(S3ObjectStore(client=s3, bucket=bucket), prefix)
    assert sum(len(records) for records in backed_up.values()) == produced
    truth = {tp: records for tp, records in read_kafka(bootstrap, [topic]).items() if records}
    assert backed_up == truth


def test_backlog_sensor_defers_to_the_triggerer_and_tasks_run_in_their_own_processes(
        airflow: AirflowServices, airflow_stack, bucket: str, s3) -> None:
    bootstrap = airflow_stack["bootstrap"]
    topic = f"sched-backlog-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 2, 1, config={"retention.ms": "-1"}))  # 2020 timestamps
    produce_tricky(bootstrap, topic, 2, 10, seed=1)  # below the sensor's threshold
    run_id = f"cli-{uuid.uuid4().hex[:8]}"
    conf = {"topics": [topic], "bucket": bucket, "prefix": "sched"}
    airflow.cli("dags", "trigger", BACKLOG_DAG, "--run-id", run_id, "--conf", json.dumps(conf))

    sensor = _wait_for_deferred(airflow, BACKLOG_DAG, run_id, SENSOR)
    assert sensor["trigger"]["classpath"] == TRIGGER_CLASS, sensor
    assert sensor["pid"] not in (None, os.getpid()), sensor
    produce_tricky(bootstrap, topic, 2, 60, seed=2, start=10)  # now the backlog crosses the threshold

    state = airflow.wait_for_run(BACKLOG_DAG, run_id, timeout=240)
    assert state == "success", _diagnostics(airflow, BACKLOG_DAG, run_id)
    tis = airflow.task_instances(BACKLOG_DAG, run_id)
    assert {ti["task_id"] for ti in tis} == {SENSOR, "retention", "plan", "backup", "commit", "check_rpo"}
    assert all(ti["state"] == "success" for ti in tis), _diagnostics(airflow, BACKLOG_DAG, run_id)
    _assert_ran_in_separate_processes(airflow, tis)
    resumed = next(ti for ti in tis if ti["task_id"] == SENSOR)
    assert resumed["pid"] != sensor["pid"], "the sensor resumes in a new process after the trigger fires"
    # The sensor resumed from the trigger's event (execute_complete), which saw the threshold crossed.
    due = airflow.request("GET", f"/api/v2/dags/{BACKLOG_DAG}/dagRuns/{run_id}/taskInstances/{SENSOR}"
                                 "/xcomEntries/return_value?deserialize=true")["value"]
    assert due["records"] >= BACKLOG_MIN_RECORDS, due
    _assert_backup_matches_kafka(bootstrap, s3, bucket, "sched", topic, run_id, produced=70)


def test_kafka_backup_triggered_through_the_rest_api(airflow: AirflowServices, airflow_stack, bucket: str,
                                                     s3) -> None:
    bootstrap = airflow_stack["bootstrap"]
    topic = f"sched-rest-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 3, 1, config={"retention.ms": "-1"}))
    produce_tricky(bootstrap, topic, 3, 300, seed=4)
    run_id = f"rest-{uuid.uuid4().hex[:8]}"
    airflow.trigger_run("kafka_backup", run_id, {"topics": [topic], "bucket": bucket, "prefix": "rest",
                                                 "flush_size": 40})

    state = airflow.wait_for_run("kafka_backup", run_id, timeout=240)
    assert state == "success", _diagnostics(airflow, "kafka_backup", run_id)
    tis = airflow.task_instances("kafka_backup", run_id)
    assert sorted(ti["map_index"] for ti in tis if ti["task_id"] == "backup") == [0, 1, 2]
    _assert_ran_in_separate_processes(airflow, tis)
    _assert_backup_matches_kafka(bootstrap, s3, bucket, "rest", topic, run_id, produced=300)


NO_RETRIES_DAG = "kafka_backup_no_retries"  # tests/dags/kafka_backup_no_retries.py


def _kill_a_running_backup_task(airflow: AirflowServices, run_id: str, timeout: float = 120) -> int:
    """SIGKILL the first backup task instance seen running; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        airflow.check_alive()
        tis = airflow.task_instances(NO_RETRIES_DAG, run_id)
        running = [ti for ti in tis if ti["task_id"] == "backup" and ti["state"] == "running" and ti.get("pid")]
        if running:
            os.kill(running[0]["pid"], signal.SIGKILL)
            return running[0]["pid"]
        assert not any(ti["task_id"] == "commit" and ti["state"] == "success" for ti in tis), "finished first"
        time.sleep(0.2)
    raise AssertionError(f"no backup task ran within {timeout}s\n{_diagnostics(airflow, NO_RETRIES_DAG, run_id)}")


def test_a_killed_run_does_not_stop_the_next_and_its_rerun_changes_nothing(
        airflow: AirflowServices, airflow_stack, bucket: str, s3, statsd) -> None:
    bootstrap = airflow_stack["bootstrap"]
    topic = f"sched-kill-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 1, 1, config={"retention.ms": "-1"}))
    for start in range(0, 150_000, 50_000):  # seconds of backing up: time to kill it (in chunks: the queue)
        produce_tricky(bootstrap, topic, 1, 50_000, seed=9, start=start)
    conf = {"topics": [topic], "bucket": bucket, "prefix": "killed", "flush_size": 5_000}
    killed = f"killed-{uuid.uuid4().hex[:8]}"
    airflow.trigger_run(NO_RETRIES_DAG, killed, conf)
    _kill_a_running_backup_task(airflow, killed)
    assert airflow.wait_for_run(NO_RETRIES_DAG, killed) == "failed"
    store = S3ObjectStore(client=s3, bucket=bucket)
    assert not [k for k in snapshot_bucket(s3, bucket) if "/_manifests/" in k], "the killed run committed nothing"

    # The next run takes over the killed run's lock at once (no force_unlock, no 12-hour lease).
    produce_tricky(bootstrap, topic, 1, 500, seed=10, start=150_000)
    next_run = f"next-{uuid.uuid4().hex[:8]}"
    airflow.trigger_run(NO_RETRIES_DAG, next_run, conf)
    assert airflow.wait_for_run(NO_RETRIES_DAG, next_run) == "success", _diagnostics(airflow, NO_RETRIES_DAG,
                                                                                    next_run)
    plan_log = airflow.task_log_tails(NO_RETRIES_DAG, lines=400)
    assert f"taken over from run '{killed}' of DAG {NO_RETRIES_DAG}" in plan_log and "(its state: failed)" in plan_log
    _assert_backup_matches_kafka(bootstrap, s3, bucket, "killed", topic, next_run, produced=150_500)

    # The run's figures reached StatsD, right: every record once, and no lag after the commit.
    deadline = time.monotonic() + 10
    while not statsd.values(f"kafka_backup.lag_records.{NO_RETRIES_DAG}.{topic}") and time.monotonic() < deadline:
        time.sleep(0.2)
    sent = statsd.values(f"kafka_backup.records.{NO_RETRIES_DAG}")
    assert sent == ["150500|c"], (sent, sorted({line.split(":")[0] for line in statsd.lines})[:80])
    segments = sum(len(m.segments) for m in load_manifests(store, "killed"))
    assert statsd.values(f"kafka_backup.segments.{NO_RETRIES_DAG}") == [f"{segments}|c"]
    for lag in ("lag_records", "lag_seconds"):
        sent = statsd.values(f"kafka_backup.{lag}.{NO_RETRIES_DAG}.{topic}")
        assert [float(v.removesuffix("|g")) for v in sent] == [0.0], sent
    assert len(statsd.values(f"kafka_backup.run_seconds.{NO_RETRIES_DAG}")) == 1

    # Clearing the killed run's backup and commit later must not commit over the newer generation.
    before = snapshot_bucket(s3, bucket)
    airflow.request("POST", f"/api/v2/dags/{NO_RETRIES_DAG}/clearTaskInstances", {
        "dag_run_id": killed, "dry_run": False, "only_failed": False, "reset_dag_runs": True,
        "task_ids": ["backup", "commit", "check_rpo"]})
    assert airflow.wait_for_run(NO_RETRIES_DAG, killed) == "failed"
    after = snapshot_bucket(s3, bucket)
    assert {k: after[k] for k in before} == before, "a committed object changed"
    assert sorted(k for k in after if "/_manifests/" in k) == sorted(k for k in before if "/_manifests/" in k)
    _assert_backup_matches_kafka(bootstrap, s3, bucket, "killed", topic, next_run, produced=150_500)
