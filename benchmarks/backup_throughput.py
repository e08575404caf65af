"""Backup throughput and memory, measured against what the Kafka client itself can do.

What it measures, on a fresh local stack (a real Kafka broker and a moto S3 server,
from ``devstack``), for one single-partition topic of ``--records`` records of
``--value-size`` bytes:

* ``ceiling``: a bare ``confluent_kafka.Consumer`` loop that reads the partition and
  touches every record's key and value. No Python code can back records up faster
  than it can read them, so this is the upper bound for the machine it runs on. The
  fastest of ``--ceiling-runs`` reads counts (the first read also warms up the broker),
  which makes the reported ratio conservative.
* ``backup``: the engine's ``back_up_ranges`` (no Airflow), which encodes the records
  into ``--format`` segments compressed with ``--compression`` (the shipped defaults unless told
  otherwise), hashes them, spools them to local disk and uploads them to S3 - at two backlog
  sizes (N/4 and N).

MB/s counts record payload (key + value) bytes in both phases; "stored MB" is what the
backup wrote to S3, and the summary gives it as a ratio of the payload. Values are random
bytes, i.e. incompressible, or with ``--payload json`` JSON-like text (see :class:`common.Payloads`).

CPU per record is split into the client (the phase's own process, all its threads), the
broker and the S3 server, each counted while the phase ran; the speed target is the
client's CPU per record against the bare loop's.

Why the ceiling is measured in the same run: absolute records/s depend on the CPU, the
disk, the page cache and whatever else the machine is doing, so a number measured
yesterday on another box says nothing. Measured back to back against the same broker,
the same topic and the same (page-cached) log segments, the ratio backup/ceiling is mostly a
property of our code rather than of the hardware.

Each phase runs in its own child process (this script re-invoked with ``--phase``), so
its peak RSS (``VmHWM`` read inside the child, see :func:`common.peak_rss_kib`) belongs to that
phase alone; "base RSS" is the same figure just before the measured work starts
(interpreter, imports, client objects). Running the backup at N/4 and at N shows
whether memory grows with the backlog (it should not: segments are streamed to a spool
file and uploads are bounded).

Run from the repository root::

    .venv/bin/python benchmarks/backup_throughput.py [--records 1000000] [--value-size 1024]
        [--compression none|gzip|zstd] [--compression-level L] [--format jsonl|msgpack|avro]
        [--flush-size 10000] [--payload random|json]
        [--consumer-option KEY=VALUE ...] [--profile backup.prof]

``--consumer-option`` lays librdkafka settings over the engine's consumer config, to try
tuning without editing the engine; ``--profile`` writes cProfile stats (main thread only)
of the full-size backup.

The last line is ``RESULT backup_vs_consume_ratio=...``, meant to be quoted.
"""

from __future__ import annotations

import argparse
import time
import uuid

import common as bench  # benchmarks/common.py, beside this script
import confluent_kafka
from confluent_kafka import KafkaError, TopicPartition

# --------------------------------------------------------------------------- phases (child processes)


def phase_ceiling(bootstrap: str, topic: str, end: int, runs: int) -> bench.PhaseResult:
    """The fastest of ``runs`` bare reads of offsets [0, end) (the first read also warms the broker's JIT)."""
    base = bench.peak_rss_kib()
    cpu_before = bench.cpu_seconds()
    best = bench.best_of(runs, lambda: read_once(bootstrap, topic, end))
    cpu = (bench.cpu_seconds() - cpu_before) / runs
    return bench.PhaseResult(f"ceiling (best of {runs})", *best, bench.peak_rss_kib(), base, client_cpu_s=cpu)


def read_once(bootstrap: str, topic: str, end: int) -> tuple[int, int, float]:
    """Read offsets [0, end) with a bare consumer, touching every key and value; (records, bytes, seconds)."""
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "bench",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    })
    last = end - 1
    records = total_bytes = 0
    started = last_progress = time.perf_counter()
    consumer.assign([TopicPartition(topic, 0, 0)])
    done = False
    while not done:
        messages = consumer.consume(num_messages=10_000, timeout=0.5)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"Kafka error: {error}")
            value, key = message.value(), message.key()
            total_bytes += (len(value) if value else 0) + (len(key) if key else 0)
            records += 1
            if message.offset() >= last:
                done = True
                break
        now = time.perf_counter()
        if messages:
            last_progress = now
        elif now - last_progress > bench.STALL_TIMEOUT_S:
            raise RuntimeError(f"ceiling: no records for {bench.STALL_TIMEOUT_S:.0f}s after {records} records")
    seconds = time.perf_counter() - started
    consumer.close()
    return records, total_bytes, seconds


def phase_backup(
    bootstrap: str, topic: str, end: int, endpoint_url: str, bucket: str, prefix: str,
    compression: str, flush_size: int, consumer_options: dict[str, str], profile_path: str | None,
    segment_format: str, compression_level: int | None, segment_checksum: str,
) -> bench.PhaseResult:
    """Back up offsets [0, end) with the engine, exactly as the operator would (minus Airflow)."""
    from boto3.s3.transfer import TransferConfig

    from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
    from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings

    # The operator's multipart settings (the default part_size), as its S3Hook is given them.
    transfer_config = TransferConfig(**S3WriteSettings.create().transfer_config_args())
    store = S3ObjectStore(client=bench.s3_client(endpoint_url), bucket=bucket, transfer_config=transfer_config)
    run = bench.engine_backup(
        bootstrap, store, prefix, topic, end, compression, flush_size, consumer_options, profile_path, segment_format,
        compression_level, segment_checksum,
    )
    result = run.result
    return bench.PhaseResult(f"backup N={end:,}", result.records, result.bytes, run.seconds, bench.peak_rss_kib(),
                             run.base_rss_kib, len(result.segments), sum(s.bytes for s in result.segments),
                             client_cpu_s=run.client_cpu_s)


def run_phase(args: argparse.Namespace, phase: str, end: int, **extra: str) -> bench.PhaseResult:
    """Re-invoke this script for one phase; it prints its result as JSON on stdout."""
    options = [arg for option in args.consumer_option for arg in ("--consumer-option", option)]
    return bench.run_phase_in_child(__file__, args, phase, end, "backup", options, server_pids=args.server_pids,
                                    **extra)


def consumer_options(args: argparse.Namespace) -> dict[str, str]:
    return dict(option.split("=", 1) for option in args.consumer_option)


def child_main(args: argparse.Namespace) -> None:
    if args.phase == "ceiling":
        result = phase_ceiling(args.bootstrap, args.topic, args.end, args.ceiling_runs)
    else:
        result = phase_backup(
            args.bootstrap, args.topic, args.end, args.endpoint_url, args.bucket, args.prefix,
            args.compression, args.flush_size, consumer_options(args), args.profile, args.format,
            args.compression_level, args.segment_checksum,
        )
    bench.report(result)


# --------------------------------------------------------------------------- parent


def parent_main(args: argparse.Namespace) -> None:
    n, quarter = args.records, max(1, args.records // 4)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    bucket = "bench"
    print(f"Starting Kafka and S3 (N={n:,}, value={args.value_size} B {args.payload}, format={args.format}, "
          f"compression={args.compression} level {args.compression_level or 'default'}, "
          f"segment checksum {args.segment_checksum}, "
          f"flush_size={args.flush_size:,}, backup consumer options: {consumer_options(args) or 'engine defaults'})",
          flush=True)
    with bench.local_stack() as (broker, s3_server):
        # The broker's and the S3 server's CPU time is counted per phase, as in the restore benchmark.
        args.server_pids = {"s3": s3_server.process.pid}
        if getattr(broker, "process", None) is not None:
            args.server_pids["broker"] = broker.process.pid
        bench.create_topic(broker.bootstrap, topic)
        seconds = bench.produce(broker.bootstrap, topic, n, args.value_size, args.payload)
        bench.check_high_watermark(broker.bootstrap, topic, n)
        print(f"Produced {n:,} records to {topic} in {seconds:.1f}s ({n / seconds:,.0f} records/s)", flush=True)
        client = s3_server.client()
        client.create_bucket(Bucket=bucket)
        topic_args = {"bootstrap": broker.bootstrap, "topic": topic}
        s3 = {"endpoint_url": s3_server.endpoint_url, "bucket": bucket}

        ceiling = run_phase(args, "ceiling", n, **topic_args)
        print(f"ceiling done: {ceiling.records_per_s:,.0f} records/s", flush=True)
        small = run_phase(args, "backup", quarter, **topic_args, **s3, prefix=f"bench/n={quarter}")
        bench.empty_bucket(client, bucket)
        print(f"backup N/4 done: {small.records_per_s:,.0f} records/s", flush=True)
        full = run_phase(args, "backup", n, **topic_args, **s3, prefix=f"bench/n={n}")
        bench.empty_bucket(client, bucket)
        print(f"backup N done: {full.records_per_s:,.0f} records/s", flush=True)
        bench.delete_topic(broker.bootstrap, topic)

    extra = "".join(f", {option}" for option in args.consumer_option)
    bench.print_summary(args, "backup", "backup_vs_consume_ratio", ceiling, small, full, extra)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    bench.add_size_arguments(
        parser, "records to produce and back up (N)", "bare reads for the ceiling; the fastest counts"
    )
    parser.add_argument(
        "--consumer-option", action="append", default=[], metavar="KEY=VALUE",
        help="extra librdkafka setting for the backup's consumer, laid over the engine's (repeatable)",
    )
    # --profile, then the internal options of one phase in a child process.
    bench.add_profile_and_internal_arguments(
        parser, "write cProfile stats of the full-size backup phase to this file", ("ceiling", "backup")
    )
    args = parser.parse_args(argv)
    args.server_pids = {}
    bench.check_size_arguments(parser, args)
    if any("=" not in option for option in args.consumer_option):
        parser.error("--consumer-option takes KEY=VALUE")
    return args


def main(argv: list[str] | None = None) -> None:
    bench.main(parse_args(argv), child_main, parent_main)


if __name__ == "__main__":
    main()
