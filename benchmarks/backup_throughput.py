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
  into JSON Lines segments (optionally compressed), hashes them, spools them to local
  disk and uploads them to S3 - at two backlog sizes (N/4 and N).

Why the ceiling is measured in the same run: absolute records/s depend on the CPU, the
disk, the page cache and whatever else the machine is doing, so a number measured
yesterday on another box says nothing. Measured back to back against the same broker,
the same topic and the same (page-cached) log segments, the ratio backup/ceiling is a
property of our code, not of the hardware.

Each phase runs in its own child process (this script re-invoked with ``--phase``), so
its peak RSS (``VmHWM`` read inside the child, see :func:`peak_rss_kib`) belongs to that
phase alone; "base RSS" is the same figure just before the measured work starts
(interpreter, imports, client objects). Running
the backup at N/4 and at N shows whether memory grows with the backlog (it should not:
segments are streamed to a spool file and uploads are bounded).

Run from the repository root::

    .venv/bin/python benchmarks/backup_throughput.py [--records 1000000] [--value-size 1024]
        [--compression none|gzip|zstd] [--flush-size 100000] [--consumer-option KEY=VALUE ...]
        [--profile backup.prof]

``--consumer-option`` lays librdkafka settings over the engine's consumer config, to try
tuning without editing the engine; ``--profile`` writes cProfile stats (main thread only)
of the full-size backup.

The last line is ``RESULT backup_vs_consume_ratio=...``, meant to be quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import confluent_kafka  # noqa: E402
from confluent_kafka import KafkaError, TopicPartition  # noqa: E402

PHASE_MARKER = "PHASE_RESULT "
STALL_TIMEOUT_S = 60.0
MIB = 1024 * 1024


@dataclass
class PhaseResult:
    phase: str
    records: int
    bytes: int
    seconds: float
    peak_rss_kib: int
    base_rss_kib: int
    segments: int = 0

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024


def peak_rss_kib() -> int:
    """This process's peak resident set size so far, in KiB.

    ``VmHWM`` from ``/proc/self/status`` where there is one. ``ru_maxrss`` is not used on
    Linux because it survives ``execve``: a child started by ``subprocess`` reports at
    least the parent's peak RSS (which, after producing N records, is the producer's
    queue), not its own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


# --------------------------------------------------------------------------- setup


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)


def delete_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    try:
        admin.delete_topics([topic])[topic].result(timeout=30)
    except Exception as error:  # best effort: the benchmark's numbers are already printed
        print(f"warning: could not delete topic {topic}: {error}", file=sys.stderr)


def produce(bootstrap: str, topic: str, records: int, value_size: int) -> float:
    """Produce ``records`` records as fast as the client allows; returns the seconds taken."""
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap,
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "compression.type": "none",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    })
    # One random block; each value is a window into it, so no time goes into os.urandom.
    spread = 251
    block = os.urandom(value_size + spread)
    pack = struct.Struct(">Q").pack
    started = time.perf_counter()
    for i in range(records):
        start = i % spread
        key, value = pack(i), block[start:start + value_size]
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=0)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 5000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - started
    if remaining:
        raise RuntimeError(f"{remaining} records were still undelivered after flush")
    return seconds


def check_high_watermark(bootstrap: str, topic: str, expected: int) -> None:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-check"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    finally:
        consumer.close()
    if (low, high) != (0, expected):
        raise RuntimeError(f"{topic}[0] holds offsets [{low}, {high}), expected [0, {expected})")


def s3_client(endpoint_url: str) -> Any:
    import boto3

    from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY

    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
    )


def empty_bucket(client: Any, bucket: str) -> None:
    """Drop uploaded segments so the (in-memory) moto server does not grow across phases."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


# --------------------------------------------------------------------------- phases (child processes)


def phase_ceiling(bootstrap: str, topic: str, end: int, runs: int) -> PhaseResult:
    """The fastest of ``runs`` bare reads of offsets [0, end) (the first read also warms the broker's JIT)."""
    base = peak_rss_kib()
    best = min((read_once(bootstrap, topic, end) for _ in range(runs)), key=lambda r: r[2])
    return PhaseResult(f"ceiling (best of {runs})", *best, peak_rss_kib(), base)


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
        elif now - last_progress > STALL_TIMEOUT_S:
            raise RuntimeError(f"ceiling: no records for {STALL_TIMEOUT_S:.0f}s after {records} records")
    seconds = time.perf_counter() - started
    consumer.close()
    return records, total_bytes, seconds


def phase_backup(
    bootstrap: str, topic: str, end: int, endpoint_url: str, bucket: str, prefix: str,
    compression: str, flush_size: int, consumer_options: dict[str, str], profile_path: str | None,
) -> PhaseResult:
    """Back up offsets [0, end) with the engine, exactly as the operator would (minus Airflow)."""
    from airflow_kafka_backup.backup import CONSUMER_OVERRIDES, DEFAULT_GROUP_ID, back_up_ranges
    from airflow_kafka_backup.manifest import PartitionRange, SegmentSettings
    from airflow_kafka_backup.object_store import S3ObjectStore

    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": DEFAULT_GROUP_ID,
        **CONSUMER_OVERRIDES,
        "isolation.level": "read_committed",
        **consumer_options,
    })
    store = S3ObjectStore(client=s3_client(endpoint_url), bucket=bucket)
    settings = SegmentSettings(
        segment_format="jsonl", compression=compression, flush_size=flush_size, offset_pad_width=10
    )
    ranges = [PartitionRange(topic, 0, 0, end)]
    base = peak_rss_kib()

    def run() -> Any:
        return back_up_ranges(consumer, store, prefix, ranges, settings, is_committed=lambda key: False)

    started = time.perf_counter()
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(run)
        profiler.dump_stats(profile_path)
    else:
        result = run()
    seconds = time.perf_counter() - started
    consumer.close()
    if result.records != end or sum(s.records for s in result.segments) != end:
        raise RuntimeError(f"backup wrote {result.records} records in segments, expected {end}")
    return PhaseResult(f"backup N={end:,}", result.records, result.bytes, seconds, peak_rss_kib(), base,
                       len(result.segments))


def run_phase_in_child(args: argparse.Namespace, phase: str, end: int, **extra: str) -> PhaseResult:
    """Re-invoke this script for one phase; it prints its result as JSON on stdout."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--phase", phase,
        "--bootstrap", extra["bootstrap"], "--topic", extra["topic"], "--end", str(end),
        "--compression", args.compression, "--flush-size", str(args.flush_size),
        "--ceiling-runs", str(args.ceiling_runs),
        *(arg for option in args.consumer_option for arg in ("--consumer-option", option)),
    ]
    for name in ("endpoint_url", "bucket", "prefix"):
        if name in extra:
            command += [f"--{name.replace('_', '-')}", extra[name]]
    if args.profile and phase == "backup" and end == args.records:
        command += ["--profile", args.profile]
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, cwd=REPO)
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(PHASE_MARKER):
            return PhaseResult(**json.loads(line[len(PHASE_MARKER):]))
    raise RuntimeError(f"phase {phase} printed no result; stdout: {completed.stdout[-2000:]}")


def consumer_options(args: argparse.Namespace) -> dict[str, str]:
    return dict(option.split("=", 1) for option in args.consumer_option)


def child_main(args: argparse.Namespace) -> None:
    if args.phase == "ceiling":
        result = phase_ceiling(args.bootstrap, args.topic, args.end, args.ceiling_runs)
    else:
        result = phase_backup(
            args.bootstrap, args.topic, args.end, args.endpoint_url, args.bucket, args.prefix,
            args.compression, args.flush_size, consumer_options(args), args.profile,
        )
    print(PHASE_MARKER + json.dumps(asdict(result)), flush=True)


# --------------------------------------------------------------------------- parent


def print_table(results: list[PhaseResult]) -> None:
    header = f"{'phase':<20} {'records':>10} {'seconds':>8} {'records/s':>11} {'MB/s':>8} " \
             f"{'segments':>8} {'base RSS MiB':>12} {'peak RSS MiB':>12}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.phase:<20} {r.records:>10,} {r.seconds:>8.2f} {r.records_per_s:>11,.0f} {r.mb_per_s:>8.1f} "
            f"{r.segments or '-':>8} {r.base_rss_kib / 1024:>12.1f} {r.peak_rss_mib:>12.1f}"
        )


def parent_main(args: argparse.Namespace) -> None:
    from devstack.kafka_broker import start_broker
    from devstack.s3_server import start_s3_server

    n, quarter = args.records, max(1, args.records // 4)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    bucket = "bench"
    print(f"Starting Kafka and S3 (N={n:,}, value={args.value_size} B, compression={args.compression}, "
          f"flush_size={args.flush_size:,}, backup consumer options: {consumer_options(args) or 'engine defaults'})",
          flush=True)
    broker = start_broker()
    try:
        s3_server = start_s3_server()
        try:
            create_topic(broker.bootstrap, topic)
            seconds = produce(broker.bootstrap, topic, n, args.value_size)
            check_high_watermark(broker.bootstrap, topic, n)
            print(f"Produced {n:,} records to {topic} in {seconds:.1f}s ({n / seconds:,.0f} records/s)", flush=True)
            client = s3_server.client()
            client.create_bucket(Bucket=bucket)
            common = {"bootstrap": broker.bootstrap, "topic": topic}
            s3 = {"endpoint_url": s3_server.endpoint_url, "bucket": bucket}

            ceiling = run_phase_in_child(args, "ceiling", n, **common)
            print(f"ceiling done: {ceiling.records_per_s:,.0f} records/s", flush=True)
            small = run_phase_in_child(args, "backup", quarter, **common, **s3, prefix=f"bench/n={quarter}")
            empty_bucket(client, bucket)
            print(f"backup N/4 done: {small.records_per_s:,.0f} records/s", flush=True)
            full = run_phase_in_child(args, "backup", n, **common, **s3, prefix=f"bench/n={n}")
            empty_bucket(client, bucket)
            print(f"backup N done: {full.records_per_s:,.0f} records/s", flush=True)
            delete_topic(broker.bootstrap, topic)
        finally:
            s3_server.stop()
    finally:
        broker.stop()

    print()
    print_table([ceiling, small, full])
    ratio = full.records_per_s / ceiling.records_per_s
    extra = "".join(f", {option}" for option in args.consumer_option)
    print()
    print(f"backup/ceiling (records/s): {ratio:.2f}; peak RSS at N/4 vs N: "
          f"{small.peak_rss_mib:.0f} MiB vs {full.peak_rss_mib:.0f} MiB")
    print(
        f"RESULT backup_vs_consume_ratio={ratio:.2f} backup_rps={full.records_per_s:.0f} "
        f"ceiling_rps={ceiling.records_per_s:.0f} backup_peak_rss_mib={full.peak_rss_mib:.0f} "
        f"(N={n}, value={args.value_size} B, compression={args.compression}{extra})"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records to produce and back up (N)")
    parser.add_argument("--value-size", type=int, default=1024, help="bytes per record value")
    parser.add_argument("--compression", choices=("none", "gzip", "zstd"), default="none")
    parser.add_argument("--flush-size", type=int, default=100_000, help="records per segment")
    parser.add_argument("--ceiling-runs", type=int, default=3, help="bare reads for the ceiling; the fastest counts")
    parser.add_argument(
        "--consumer-option", action="append", default=[], metavar="KEY=VALUE",
        help="extra librdkafka setting for the backup's consumer, laid over the engine's (repeatable)",
    )
    parser.add_argument("--profile", help="write cProfile stats of the full-size backup phase to this file")
    # Internal: one phase in a child process.
    parser.add_argument("--phase", choices=("ceiling", "backup"), help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--end", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint-url", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.records < 1 or args.value_size < 0 or args.flush_size < 1 or args.ceiling_runs < 1:
        parser.error("--records, --flush-size and --ceiling-runs must be positive, --value-size non-negative")
    if any("=" not in option for option in args.consumer_option):
        parser.error("--consumer-option takes KEY=VALUE")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
