"""Restore throughput and memory, measured against what the Kafka client itself can do.

What it measures, on a fresh local stack (a real Kafka broker and a moto S3 server,
from ``devstack``), for one single-partition topic of ``--records`` records of
``--value-size`` bytes that the engine has backed up to S3 (``back_up_ranges`` into
``--format`` segments (JSON Lines by default) of ``--flush-size`` records, ``--compression``, plus a committed
run manifest, so the restore planner sees a real backup):

* ``ceiling``: a bare ``confluent_kafka.Producer`` loop, with the restore producer's
  settings less the transactions (:data:`CEILING_PRODUCER_CONFIG`), that produces the
  same records (same keys and values, no headers) to a fresh topic and flushes. No
  Python code can restore records faster than the client can produce them, so this is
  the upper bound for the machine it runs on. The records are regenerated from the same
  seed in the child (see :class:`common.Payloads`), not read back from Kafka, so the
  ceiling measures producing only.
* ``restore``: the engine's ``plan_restore`` + ``restore_partition`` (no Airflow): per
  segment, download and verify it (size, checksum), decode it and produce its records with
  the original timestamps; per transaction (whole segments, as many as
  ``restore.COMMIT_INTERVAL_S`` of work holds), write the segments' offset-map chunks to S3
  and commit the progress offset - into a fresh target topic, at two backlog sizes (N/4 and N; the
  N/4 restore reads its own backup of the first N/4 records, so neither run filters).

MB/s counts record payload (key + value) bytes in both phases; "stored MB" is what the
restore downloaded from S3 (the segments). Values are random bytes, i.e. incompressible.

Why the ceiling is measured in the same run: absolute records/s depend on the CPU, the
disk, the page cache and whatever else the machine is doing, so a number measured
yesterday on another box says nothing. Measured back to back against the same broker,
the ratio restore/ceiling is mostly a property of our code rather than of the hardware.

Each phase runs in its own child process (this script re-invoked with ``--phase``), so
its peak RSS (``VmHWM`` read inside the child, see :func:`common.peak_rss_kib`) belongs to
that phase alone; "base RSS" is the same figure just before the measured work starts
(interpreter, imports, client objects, the plan; for the ceiling also the 64 MiB pool the
values are cut from). Running the restore at N/4 and at N shows whether memory grows with
the backlog (it should not: segments are spooled to local disk one at a time and the
producer's queue is bounded). One small transaction before the phases makes the broker
create and load its transaction state and consumer offsets topics, which the first
restore would otherwise pay for.

Run from the repository root::

    .venv/bin/python benchmarks/restore_throughput.py [--records 1000000] [--value-size 1024]
        [--compression none|gzip|zstd] [--format jsonl|msgpack|avro] [--flush-size 100000] [--profile restore.prof]

``--profile`` writes cProfile stats (main thread only) of the full-size restore.

The last line is ``RESULT restore_vs_produce_ratio=...``, meant to be quoted.
"""

from __future__ import annotations

import argparse
import uuid

import common as bench  # benchmarks/common.py, beside this script
import confluent_kafka
from confluent_kafka import TopicPartition

TOPIC_CONFIG = {"retention.ms": "-1"}
# The engine's restore producer settings (``restore.PRODUCER_OVERRIDES``) as they were when
# this benchmark was written, less the transactions; kept here so that tuning the engine
# does not move the ceiling it is measured against.
CEILING_PRODUCER_CONFIG = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "queue.buffering.max.kbytes": 65536,
}
BACKUP_PREFIX = "bench"
QUARTER_PREFIX = "bench-quarter"


# --------------------------------------------------------------------------- setup (parent)


def back_up(bootstrap: str, store, prefix: str, topic: str, end: int, args: argparse.Namespace) -> None:
    """Back up offsets [0, end) with the engine and commit a run manifest, so that ``plan_restore`` sees it."""
    from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, write_manifest

    run = bench.engine_backup(bootstrap, store, prefix, topic, end, args.compression, args.flush_size,
                              segment_format=args.format, compression_level=args.compression_level,
                              segment_checksum=args.segment_checksum)
    write_manifest(store, prefix, RunManifest("bench-run", run.settings, [PartitionRange(topic, 0, 0, end)],
                                              run.result.segments))
    print(f"Backed up {end:,} records to s3://{store.bucket}/{prefix} in {run.seconds:.1f}s "
          f"({len(run.result.segments)} segments)", flush=True)


def warm_up_transactions(bootstrap: str, topic: str) -> None:
    """One small transaction with group offsets, so that no measured phase pays for the broker creating
    and loading its transaction state and consumer offsets topics (the first restore would)."""
    from confluent_kafka import Consumer, Producer

    bench.create_topic(bootstrap, topic, TOPIC_CONFIG)
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-group"})
    producer = Producer({  # log_level 3: no "coordinator load in progress: retrying" warning, which is the point
        "bootstrap.servers": bootstrap, **CEILING_PRODUCER_CONFIG, "transactional.id": topic, "log_level": 3,
    })
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(topic, value=b"warm-up", partition=0)
    producer.flush(60)
    producer.send_offsets_to_transaction([TopicPartition(topic, 0, 1)], group.consumer_group_metadata(), 60)
    producer.commit_transaction(60)
    group.close()
    bench.delete_topic(bootstrap, topic)


# --------------------------------------------------------------------------- phases (child processes)


def phase_ceiling(bootstrap: str, topic: str, end: int, value_size: int, runs: int,
                  payload: str = "random") -> bench.PhaseResult:
    """The fastest of ``runs`` bare produces of the ``end`` records, each to a fresh topic named after ``topic``."""
    payloads = bench.Payloads(value_size, kind=payload)
    base = bench.peak_rss_kib()
    counter = iter(range(runs))

    def produce_once() -> tuple[int, int, float]:
        target = f"{topic}-{next(counter)}"
        bench.create_topic(bootstrap, target, TOPIC_CONFIG)
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, **CEILING_PRODUCER_CONFIG})
        # Set-up, untimed: knowing the brokers before the idempotent producer asks for its id spares
        # the 500 ms wait that restore._restore_with_producer avoids the same way.
        producer.list_topics(target, timeout=30)
        seconds = bench.produce_all(producer, target, payloads.records(end), poll_every=1000)
        del producer
        bench.check_high_watermark(bootstrap, target, end)
        bench.delete_topic(bootstrap, target)
        return end, bench.payload_bytes(end, value_size), seconds

    cpu_before = bench.cpu_seconds()
    best = bench.best_of(runs, produce_once)
    cpu = (bench.cpu_seconds() - cpu_before) / runs  # each run's topic set-up and check included
    return bench.PhaseResult(f"ceiling (best of {runs})", *best, bench.peak_rss_kib(), base, client_cpu_s=cpu)


def phase_restore(
    bootstrap: str, topic: str, target: str, end: int, value_size: int, endpoint_url: str, bucket: str,
    prefix: str, profile_path: str | None,
) -> bench.PhaseResult:
    """Restore the backup under ``prefix`` into ``target`` with the engine, as the operator would (minus Airflow)."""
    from confluent_kafka import Consumer, Producer

    from airflow_kafka_backup.engine.restore.loop import (
        PRODUCER_OVERRIDES,
        progress_group,
        restore_partition,
        transactional_id,
    )
    from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
    from airflow_kafka_backup.engine.storage.key_layout import restore_prefix
    from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

    restore_id = f"bench-restore-{uuid.uuid4().hex[:8]}"
    store = S3ObjectStore(client=bench.s3_client(endpoint_url), bucket=bucket)
    settings = RestoreSettings.create(topics=[topic], topic_mapping={topic: target})
    plan = plan_restore(store, prefix, settings)
    (unit,) = plan.partitions
    if unit.upper_bound_records != end:
        raise RuntimeError(f"the plan holds {unit.upper_bound_records} records, expected {end}")
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": progress_group(restore_id)})
    config = {
        "bootstrap.servers": bootstrap, **PRODUCER_OVERRIDES,
        "transactional.id": transactional_id(restore_id, target, unit.partition),
    }
    base = bench.peak_rss_kib()
    cpu_before = bench.cpu_seconds()
    result, seconds = bench.timed(
        lambda: restore_partition(lambda: Producer(config), group, store, restore_prefix(prefix, restore_id), unit),
        profile_path,
    )
    cpu = bench.cpu_seconds() - cpu_before
    group.close()
    if result.records_restored != end or result.records_filtered:
        raise RuntimeError(f"restore produced {result.records_restored} records "
                           f"({result.records_filtered} filtered), expected {end}")
    return bench.PhaseResult(
        f"restore N={end:,}", result.records_restored, bench.payload_bytes(end, value_size), seconds,
        bench.peak_rss_kib(), base, result.segments_restored, sum(s.bytes for s in unit.segments), cpu,
        transactions=result.transactions_committed,
    )


def child_main(args: argparse.Namespace) -> None:
    if args.phase == "ceiling":
        result = phase_ceiling(args.bootstrap, args.topic, args.end, args.value_size, args.ceiling_runs, args.payload)
    else:
        result = phase_restore(args.bootstrap, args.topic, args.target, args.end, args.value_size,
                               args.endpoint_url, args.bucket, args.prefix, args.profile)
    bench.report(result)


# --------------------------------------------------------------------------- parent


def restore_into_fresh_topic(args: argparse.Namespace, bootstrap: str, end: int, server_pids: dict[str, int],
                             **extra: str) -> bench.PhaseResult:
    """Restore into a new target topic, check what landed there, then drop it."""
    target = f"{extra['topic']}-restored-{uuid.uuid4().hex[:6]}"
    bench.create_topic(bootstrap, target, TOPIC_CONFIG)
    result = bench.run_phase_in_child(__file__, args, "restore", end, "restore", server_pids=server_pids,
                                      bootstrap=bootstrap, target=target, **extra)
    # Each transaction's commit marker takes an offset of its own.
    bench.check_high_watermark(bootstrap, target, end + result.transactions)
    bench.delete_topic(bootstrap, target)
    return result


def parent_main(args: argparse.Namespace) -> None:
    from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

    n, quarter = args.records, max(1, args.records // 4)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    bucket = "bench"
    print(f"Starting Kafka and S3 (N={n:,}, value={args.value_size} B {args.payload}, format={args.format}, "
          f"compression={args.compression} level {args.compression_level or 'default'}, "
          f"flush_size={args.flush_size:,})", flush=True)
    with bench.local_stack() as (broker, s3_server):
        bootstrap = broker.bootstrap
        # The broker's and the S3 server's CPU time is counted per phase: on a small machine they share
        # the cores with the phase.
        server_pids = {"s3": s3_server.process.pid}
        if getattr(broker, "process", None) is not None:
            server_pids["broker"] = broker.process.pid
        bench.create_topic(bootstrap, topic, TOPIC_CONFIG)
        seconds = bench.produce(bootstrap, topic, n, args.value_size, args.payload)
        bench.check_high_watermark(bootstrap, topic, n)
        print(f"Produced {n:,} records to {topic} in {seconds:.1f}s ({n / seconds:,.0f} records/s)", flush=True)
        client = s3_server.client()
        client.create_bucket(Bucket=bucket)
        store = S3ObjectStore(client=client, bucket=bucket)
        back_up(bootstrap, store, BACKUP_PREFIX, topic, n, args)
        back_up(bootstrap, store, QUARTER_PREFIX, topic, quarter, args)
        warm_up_transactions(bootstrap, f"{topic}-warm-up")
        s3 = {"topic": topic, "endpoint_url": s3_server.endpoint_url, "bucket": bucket}

        small = restore_into_fresh_topic(args, bootstrap, quarter, server_pids, **s3, prefix=QUARTER_PREFIX)
        print(f"restore N/4 done: {small.records_per_s:,.0f} records/s", flush=True)
        # Ceiling and full restore take turns, so that a burst of load from elsewhere on the machine
        # slows one round of both rather than one side only; the fastest round of each counts.
        one_run = argparse.Namespace(**{**vars(args), "ceiling_runs": 1})
        ceilings, fulls = [], []
        for round_number in range(1, args.ceiling_runs + 1):
            ceilings.append(bench.run_phase_in_child(__file__, one_run, "ceiling", n, "restore",
                                                     server_pids=server_pids, bootstrap=bootstrap,
                                                     topic=f"{topic}-ceiling-{round_number}"))
            fulls.append(restore_into_fresh_topic(args, bootstrap, n, server_pids, **s3, prefix=BACKUP_PREFIX))
            print(f"round {round_number}: ceiling {ceilings[-1].records_per_s:,.0f} records/s, "
                  f"restore N {fulls[-1].records_per_s:,.0f} records/s ({fulls[-1].segments} segments in "
                  f"{fulls[-1].transactions} transactions)", flush=True)
        bench.delete_topic(bootstrap, topic)
    ceiling = min(ceilings, key=lambda r: r.seconds)
    ceiling.phase = f"ceiling (best of {len(ceilings)})"
    full = min(fulls, key=lambda r: r.seconds)
    full.phase = f"restore N (best of {len(fulls)})"

    bench.print_summary(args, "restore", "restore_vs_produce_ratio", ceiling, small, full)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    bench.add_size_arguments(parser, "records to produce, back up and restore (N)",
                             "rounds of a bare produce (the ceiling) and a full restore, taking turns; the "
                             "fastest of each counts")
    # --profile, then the internal options of one phase in a child process.
    bench.add_profile_and_internal_arguments(
        parser, "write cProfile stats of the full-size restore phase to this file", ("ceiling", "restore"),
        internal=("target",),
    )
    args = parser.parse_args(argv)
    bench.check_size_arguments(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    bench.main(parse_args(argv), child_main, parent_main)


if __name__ == "__main__":
    main()
