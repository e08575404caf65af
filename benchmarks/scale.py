"""Scale: what planning and committing a run costs at 1k, 5k and 10k partitions.

For each size, on a fresh local stack (a real Kafka broker and moto's S3 server, from
``devstack``) and a throwaway Airflow home, it creates topics of up to 1,000 partitions
(``--records-per-partition`` records each, default 3), then runs the shipped DAGs through
``dag.test()`` (every task in this process, one after the other):

* ``kafka_backup`` ``--runs`` times (default 2; the runs after the first back up one new
  record per partition), the last on a prefix that also holds ``--past-manifests`` keys of past
  runs' manifests (default 2,000), to see whether the plan's S3 requests grow with the past runs;
* ``kafka_restore`` with ``dry_run``: the restore plan (reads every manifest, asks the broker
  about the targets, creates nothing);
* the restore plan task once more, not dry, outside Airflow with its XCom caught: the XCom a real
  restore run stores (the plan's, the restore tasks' and verify's), against what it stored before
  work units went to S3;
* and once more as a restore that waits for approval plans it (``approval_follows``: nothing written,
  XCom gets the units' digest and the manifests' pin), followed by the ``work_units`` task that runs
  after the approval (plans again from the pinned manifests, checks the digest, writes the units):
  that run's XCom, and the ``work_units`` task's time and S3 requests.

It prints, per size:

* plan, commit and restore-plan wall time (each task's ``execute``);
* the peak RSS each of those tasks added: ``VmHWM`` is reset through ``/proc/self/clear_refs``
  (``5``) before the task and read after it, against ``VmRSS`` before it;
* XCom bytes of the run (every row the run left in the ``xcom`` table, by task): since the plan,
  the work units and the segment lists go through S3 (``<prefix>/_runs/``), refs to them only;
* the working objects the run left under ``<prefix>/_runs/`` (the commit deletes them: 0);
* the manifest's size in S3;
* S3 requests by task and operation, counted by a botocore ``before-call`` hook on every
  client the tasks create (``S3Hook`` builds them through boto3).

Targets (issue #25), at 10k partitions: plan + commit <= 60 s, XCom <= 2 MiB per run, and plan
S3 requests not growing with the number of past runs.

Run from the repository root (minutes: the 10k backup uploads 10k segments to moto)::

    .venv/bin/python benchmarks/scale.py [--sizes 1000,5000,10000] [--runs 2] [--records-per-partition 3]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devstack.airflow_env import airflow_env, connection_env, make_airflow_home, migrate  # noqa: E402

TOPIC_PARTITIONS = 1000  # the most partitions per topic; a size of 5,000 is five topics
MEASURED_TASKS = ("plan", "backup", "commit")

# --------------------------------------------------------------------------- what each task costs


class TaskMeter:
    """Per task: wall seconds, the peak RSS it added, and its S3 requests by operation.

    ``dag.test()`` runs tasks one after the other in this process, so one "current task" is enough.
    """

    def __init__(self) -> None:
        self.current = "(outside tasks)"
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak_added_mib: dict[str, float] = defaultdict(float)
        self.requests: dict[str, Counter[str]] = defaultdict(Counter)
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.__init__()

    def wrap(self, cls: type, name: str, profile_to: str | None = None) -> None:
        """Meter ``cls.execute`` as task ``name``; with ``profile_to``, also cProfile it into that file."""
        execute = cls.execute
        meter = self

        def metered(operator: Any, context: Any) -> Any:
            meter.current = name
            before = _reset_peak_rss()
            started = time.perf_counter()
            profiler = cProfile.Profile() if profile_to else None
            try:
                if profiler is None:
                    return execute(operator, context)
                return profiler.runcall(execute, operator, context)
            finally:
                if profiler is not None:
                    profiler.dump_stats(profile_to)
                meter.seconds[name] += time.perf_counter() - started
                meter.peak_added_mib[name] = max(meter.peak_added_mib[name], (_status_kib("VmHWM") - before) / 1024)
                meter.current = "(outside tasks)"

        cls.execute = metered

    def count_request(self, event_name: str, **_: Any) -> None:
        operation = event_name.split(".")[-1]
        with self._lock:
            self.requests[self.current][operation] += 1


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); returns that RSS in KiB."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_kib("VmRSS")


def install_request_counter(meter: TaskMeter) -> None:
    """Count every S3 API call of every botocore client created from now on."""
    import botocore.session

    original: Callable[..., Any] = botocore.session.Session.create_client

    def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(session, *args, **kwargs)
        client.meta.events.register("before-call.s3", meter.count_request)
        return client

    botocore.session.Session.create_client = create_client


# --------------------------------------------------------------------------- one size


def make_topics(bootstrap: str, partitions: int, records_per_partition: int, start: int) -> list[str]:
    from confluent_kafka.admin import AdminClient, NewTopic

    sizes = [TOPIC_PARTITIONS] * (partitions // TOPIC_PARTITIONS) + (
        [partitions % TOPIC_PARTITIONS] if partitions % TOPIC_PARTITIONS else [])
    topics = [f"scale-{partitions}-{i}-{uuid.uuid4().hex[:4]}" for i in range(len(sizes))]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for topic, partitions_of_topic in zip(topics, sizes, strict=True):
        # One topic a request: KRaft refuses a request of more than 10,000 records (POLICY_VIOLATION).
        new = NewTopic(topic, partitions_of_topic, 1, config={"retention.ms": "-1"})
        for future in admin.create_topics([new], operation_timeout=120).values():
            future.result()
    # Records produced before a partition has a leader fail; wait until every one has.
    deadline = time.monotonic() + 120
    while not _all_have_leaders(admin.list_topics(timeout=30).topics, topics):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {topics} have partitions without a leader")
        time.sleep(0.5)
    produce(bootstrap, dict(zip(topics, sizes, strict=True)), records_per_partition, start)
    return topics


def _all_have_leaders(metadata: dict[str, Any], topics: list[str]) -> bool:
    return all(t in metadata and metadata[t].partitions and all(p.leader >= 0 for p in metadata[t].partitions.values())
               for t in topics)


def produce(bootstrap: str, topics: dict[str, int], per_partition: int, start: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    failed: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failed.append(f"{message.topic()}[{message.partition()}]: {error}")
    for i in range(start, start + per_partition):
        for topic, partitions in topics.items():
            for p in range(partitions):
                value = f"{topic}[{p}] record {i}".encode()
                while True:
                    try:
                        producer.produce(topic, value, key=str(i).encode(), partition=p, on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.1)
            producer.poll(0)
    if producer.flush(120) or failed:
        raise RuntimeError(f"records not delivered: {len(failed)} failed, e.g. {failed[:3]}")


def xcom_bytes(db: Path, dag_id: str, run_id: str) -> dict[str, int]:
    """Bytes of every XCom value the run left, by task (what the metadata DB holds for it)."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT task_id, SUM(LENGTH(CAST(value AS BLOB))) FROM xcom WHERE dag_id = ? AND run_id = ? "
            "GROUP BY task_id", (dag_id, run_id)).fetchall()
    return {task: int(size or 0) for task, size in rows}


def run_dag(dag_id: str, conf: dict[str, Any]) -> Any:
    from airflow_kafka_backup.compat import dag_bag_class

    dag = dag_bag_class()(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag(dag_id)
    for task in dag.tasks:
        task.retries = 0
    dag_run = dag.test(run_conf=conf)
    if dag_run.state != "success":
        raise RuntimeError(f"{dag_id} run {dag_run.run_id} ended {dag_run.state}")
    return dag_run


def measure_size(partitions: int, args: argparse.Namespace, bootstrap: str, s3: Any, meter: TaskMeter,
                 db: Path) -> dict[str, Any]:
    from airflow_kafka_backup.engine.storage.key_layout import manifest_key, safe_run_id

    bucket = f"scale-{partitions}-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    topics = make_topics(bootstrap, partitions, args.records_per_partition, 0)
    conf = {"topics": topics, "bucket": bucket, "prefix": "scale"}
    runs = []
    for run in range(args.runs):
        if run:  # one new record per partition: a run with work, after `run` committed runs
            produce(bootstrap, {t: min(TOPIC_PARTITIONS, partitions - i * TOPIC_PARTITIONS)
                                for i, t in enumerate(topics)}, 1, args.records_per_partition + run)
        if run == args.runs - 1 and run and args.past_manifests:
            # The last run plans on a prefix that also holds this many past runs' manifest keys (not even JSON:
            # a plan that listed or read them would pay for them or fail); removed again before the restore.
            past = [f"scale/_manifests/run=0-past-{i:06d}.json" for i in range(args.past_manifests)]
            for key in past:
                s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        meter.reset()
        dag_run = run_dag("kafka_backup", conf)
        manifest = s3.head_object(Bucket=bucket, Key=manifest_key("scale", dag_run.run_id))["ContentLength"]
        parts = [o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"scale/_manifest_parts/run={safe_run_id(dag_run.run_id)}/")
            for o in page.get("Contents", [])]
        runs.append({
            "past_runs": run,
            "seconds": dict(meter.seconds),
            "peak_added_mib": dict(meter.peak_added_mib),
            "s3_requests": {task: dict(ops) for task, ops in meter.requests.items()},
            "xcom_bytes": xcom_bytes(db, "kafka_backup", dag_run.run_id),
            "manifest_bytes": manifest,
            "manifest_parts": len(parts), "largest_part_bytes": max(parts, default=0),
            "past_manifests": args.past_manifests if run == args.runs - 1 and run else 0,
            "working_objects_left": s3.list_objects_v2(Bucket=bucket, Prefix="scale/_runs/").get("KeyCount", 0),
        })
        print(f"  {partitions} partitions, run {run + 1}: {_one_line(runs[-1])}", flush=True)
    if args.past_manifests and args.runs > 1:
        for i in range(0, len(past), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in past[i:i + 1000]]})
    meter.reset()
    restore_conf = {"topics": topics, "bucket": bucket, "prefix": "scale", "dry_run": True,
                    "topic_mapping": {t: f"{t}-restored" for t in topics}}
    run_dag("kafka_restore", restore_conf)
    restore = {"seconds": meter.seconds.get("restore_plan"), "peak_added_mib": meter.peak_added_mib.get("restore_plan"),
               "s3_requests": dict(meter.requests.get("restore_plan", {})),
               "xcom_bytes": restore_xcom_bytes(restore_conf)}
    restore["work_units"] = {"seconds": meter.seconds.get("work_units"),
                             "peak_added_mib": meter.peak_added_mib.get("work_units"),
                             "s3_requests": dict(meter.requests.get("work_units", {}))}
    print(f"  {partitions} partitions, restore plan (dry run): {restore}", flush=True)
    return {"partitions": partitions, "runs": runs, "restore_plan": restore}


def restore_xcom_bytes(conf: dict[str, Any]) -> dict[str, int]:
    """XCom bytes a real (not dry) restore run of ``conf`` would store, without producing anything.

    The plan task runs for real (it creates nothing: the topics are created after the approval),
    with its XCom caught: its return value (the work units' references) and what it pushes. The
    restore tasks' and verify's return values are computed from what they return per work unit
    and per topic. For comparison, ``*_inline`` are what the same run stored before work units
    went to S3: every unit's partitions and segments, and a result row per partition.

    Then the same restore as a run that waits for approval: the plan with ``approval_follows``
    (``approval_plan_return``: the units' digest and the manifests' pin) and the ``work_units``
    task after the approval (``approval_work_units_return``: the references it wrote). Until it,
    such a run returned its units inline (``plan_return_inline``).
    """
    from types import SimpleNamespace

    from airflow_kafka_backup.engine.restore.work_units import read_work_unit
    from airflow_kafka_backup.operators.restore import (
        RESULT_TOTALS,
        KafkaRestorePlanOperator,
        KafkaRestoreWorkUnitsOperator,
    )

    def plan_run(**kwargs: Any) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
        pushed: dict[str, Any] = {}
        plan = KafkaRestorePlanOperator(task_id="plan", topics=conf["topics"], topic_mapping=conf["topic_mapping"],
                                        bucket=conf["bucket"], prefix=conf["prefix"], max_work_units=16, **kwargs)
        context = {"dag": SimpleNamespace(dag_id="kafka_restore"), "run_id": f"scale__xcom_{uuid.uuid4().hex[:6]}",
                   "ti": SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))}
        return plan.execute(context), pushed, context, plan.store

    refs, pushed, _, store = plan_run()
    units = [read_work_unit(store, ref) for ref in refs]
    pending, _, approved_context, _ = plan_run(approval_follows=True)
    work_units = KafkaRestoreWorkUnitsOperator(task_id="work_units", plan=json.loads(json.dumps(pending)),
                                               topics=conf["topics"], topic_mapping=conf["topic_mapping"],
                                               bucket=conf["bucket"], prefix=conf["prefix"])
    approved_refs = work_units.execute(approved_context)
    if [read_work_unit(work_units.store, ref) for ref in approved_refs] != units:
        raise RuntimeError("the approved run's work units differ from the plan's own")
    partitions = sum(len(unit) for unit in units)

    def size(value: Any) -> int:
        return len(json.dumps(value).encode())

    result_row = {"source_topic": conf["topics"][0], "target_topic": conf["topic_mapping"][conf["topics"][0]],
                  "partition": 999, "records_restored": 3, "records_filtered": 0, "segments_restored": 2,
                  "segments_skipped_as_done": 0, "resumed_from": None, "seconds": 0.123, "transactions_committed": 1}
    totals = {"partitions": 625, **dict.fromkeys(RESULT_TOTALS, 123_456)}
    return {
        "plan_return": size(refs),
        "approval_plan_return": size(pending),
        "approval_work_units_return": size(approved_refs),
        **{f"plan_{key}": size(value) for key, value in pushed.items()},
        "restore_returns": len(units) * size(totals),
        "verify_return": size({"restored": 123_456, "partitions": partitions, "manifest": "x" * 80,
                               "by_topic": {t: 123_456 for t in conf["topic_mapping"].values()}}),
        "plan_return_inline": size([[p.to_dict() for p in unit] for unit in units]),
        "restore_returns_inline": partitions * size(result_row),
    }


def _one_line(run: dict[str, Any]) -> str:
    seconds = {k: round(v, 2) for k, v in run["seconds"].items()}
    requests = {task: sum(ops.values()) for task, ops in run["s3_requests"].items()}
    return (f"seconds {seconds}, peak MiB added {_rounded(run['peak_added_mib'])}, "
            f"S3 requests {requests}, XCom bytes {sum(run['xcom_bytes'].values())}, "
            f"manifest bytes {run['manifest_bytes']} (+ {run['manifest_parts']} parts, the largest "
            f"{run['largest_part_bytes']}), past manifests {run['past_manifests']}, "
            f"working objects left {run['working_objects_left']}")


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in values.items()}


def restore_xcom_totals(xcom: dict[str, int]) -> dict[str, int]:
    """A restore run's XCom bytes in all: without an approval step, with one, and with one as before (units inline).

    Common to all: what the plan pushes (report, groups, create, restore id), the restore tasks'
    and verify's returns. The approval step's own question and answer live in Airflow's HITL table,
    not in XCom.
    """
    common = sum(v for k, v in xcom.items() if k.startswith("plan_") and not k.startswith("plan_return")) + xcom[
        "restore_returns"] + xcom["verify_return"]
    return {"no_approval": common + xcom["plan_return"],
            "approval": common + xcom["approval_plan_return"] + xcom["approval_work_units_return"],
            "approval_inline": common + xcom["plan_return_inline"]}


def print_table(results: list[dict[str, Any]]) -> None:
    print("\n| partitions | plan s | commit s | plan+commit s | restore plan s | XCom KiB/run | manifest KiB "
          "(parts, largest KiB) | plan S3 requests (run 1 → last; manifests before the last) | commit S3 requests "
          "| plan / commit peak MiB added |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        first, last = result["runs"][0], result["runs"][-1]
        plan, commit = last["seconds"].get("plan", 0.0), last["seconds"].get("commit", 0.0)
        plan_requests = [sum(r["s3_requests"].get("plan", {}).values()) for r in result["runs"]]
        print(f"| {result['partitions']:,} | {plan:.1f} | {commit:.1f} | {plan + commit:.1f} "
              f"| {result['restore_plan']['seconds']:.1f} | {sum(first['xcom_bytes'].values()) / 1024:,.0f} "
              f"| {first['manifest_bytes'] / 1024:,.0f} ({first['manifest_parts']}, "
              f"{first['largest_part_bytes'] / 1024:,.0f}) | {' → '.join(map(str, plan_requests))} "
              f"({last['past_manifests'] + len(result['runs']) - 1:,}) "
              f"| {sum(last['s3_requests'].get('commit', {}).values())} "
              f"| {last['peak_added_mib'].get('plan', 0):.0f} / {last['peak_added_mib'].get('commit', 0):.0f} |")
    print("\n| partitions | restore plan s (dry run) | restore plan peak MiB added | restore XCom KiB per run, "
          "no approval | approval-gated, now (units inline before) | work_units s | work_units S3 requests |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        restore = result["restore_plan"]
        x = restore_xcom_totals(restore["xcom_bytes"])
        units = restore.get("work_units", {})
        print(f"| {result['partitions']:,} | {restore['seconds']:.1f} | {restore['peak_added_mib']:.0f} "
              f"| {x['no_approval'] / 1024:,.1f} | {x['approval'] / 1024:,.1f} ({x['approval_inline'] / 1024:,.0f}) "
              f"| {units.get('seconds') or 0:.1f} | {sum(units.get('s3_requests', {}).values())} |")
    print(f"\nRestore XCom bytes at {results[-1]['partitions']:,} partitions: "
          f"{results[-1]['restore_plan']['xcom_bytes']}")
    last = results[-1]["runs"][0]
    print(f"\nXCom bytes by task at {results[-1]['partitions']:,} partitions: {last['xcom_bytes']}")
    print(f"S3 requests by task and operation at {results[-1]['partitions']:,} partitions, run 1: "
          f"{json.dumps(last['s3_requests'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="partition counts, comma-separated")
    parser.add_argument("--runs", type=int, default=2, help="backup runs per size (the plan's growth with runs)")
    parser.add_argument("--records-per-partition", type=int, default=3)
    parser.add_argument("--past-manifests", type=int, default=2000,
                        help="manifest keys of past runs added before the last backup run (plans must not list them)")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--profile-restore", metavar="FILE",
                        help="cProfile the restore plan into FILE (pstats; the last size's)")
    args = parser.parse_args()

    home = make_airflow_home()
    dags = home / "dags"
    dags.mkdir()
    for name in ("kafka_backup.py", "kafka_restore.py"):
        shutil.copy(REPO / "dags" / name, dags / name)
    os.environ.update(airflow_env(home, dags_folder=dags))
    os.environ["KAFKA_BACKUP_SCHEDULE"] = "none"
    os.environ.setdefault("AIRFLOW__CORE__MAX_MAP_LENGTH", "1024")

    from devstack.kafka_broker import start_broker
    from devstack.s3_server import start_s3_server

    broker, s3_server = start_broker(), start_s3_server()
    try:
        os.environ.update(connection_env(broker.bootstrap, s3_server.endpoint_url))
        migrate(dict(os.environ))
        from airflow_kafka_backup.operators.backup import KafkaBackupCommitOperator, KafkaBackupPlanOperator
        from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator, KafkaRestoreWorkUnitsOperator

        meter = TaskMeter()
        install_request_counter(meter)
        meter.wrap(KafkaBackupPlanOperator, "plan")
        meter.wrap(KafkaBackupCommitOperator, "commit")
        meter.wrap(KafkaRestorePlanOperator, "restore_plan", args.profile_restore)
        meter.wrap(KafkaRestoreWorkUnitsOperator, "work_units")
        from airflow_kafka_backup.operators.backup import KafkaBackupOperator

        meter.wrap(KafkaBackupOperator, "backup")
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            started = time.monotonic()
            results.append(measure_size(size, args, broker.bootstrap, s3_server.client(), meter,
                                        home / "airflow.db"))
            print(f"  ({size} partitions measured in {time.monotonic() - started:.0f} s)", flush=True)
        print_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        s3_server.stop()
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
