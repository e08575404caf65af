"""What the throughput benchmarks share: the local stack, the records, child phases, RSS and the table.

The benchmarks (``backup_throughput.py``, ``restore_throughput.py``) start a fresh local
stack (a real Kafka broker and a moto S3 server, from ``devstack``), produce one
single-partition topic of N records, and measure each phase in its own child process:
the script re-invokes itself with ``--phase``, the child prints one ``PHASE_RESULT {json}``
line, and the parent collects those into one table.

Records are deterministic: record ``i`` has the 8-byte big-endian key ``i`` and a value
that is a window at a scattered offset into one pseudo-random pool made from :data:`SEED`
(see :class:`Payloads`). So a child can regenerate exactly the records that were produced
without reading them back from Kafka, and the values are still incompressible.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import confluent_kafka  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402

PHASE_MARKER = "PHASE_RESULT "
STALL_TIMEOUT_S = 60.0
MIB = 1024 * 1024
VALUE_POOL_BYTES = 64 * MIB
KEY_BYTES = 8
SEED = 20_240_601

T = TypeVar("T")


@dataclass
class PhaseResult:
    phase: str
    records: int
    bytes: int
    seconds: float
    peak_rss_kib: int
    base_rss_kib: int
    segments: int = 0
    stored_bytes: int = 0
    # CPU seconds of the phase's own process (all its threads, librdkafka's included) and of
    # the broker and S3 server processes while the phase ran (see :func:`run_phase_in_child`).
    client_cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    s3_cpu_s: float = 0.0
    transactions: int = 0  # a restore's committed transactions

    @property
    def server_cpu_s(self) -> float:
        return self.broker_cpu_s + self.s3_cpu_s

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process so far (``/proc/<pid>/stat``), or 0 without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


# --------------------------------------------------------------------------- records


class Payloads:
    """The benchmark's records, the same every time for the same ``value_size``, ``kind`` and ``seed``.

    Values are windows at scattered offsets into one pool, so no time goes into
    generating bytes per record. The pool is far larger than zstd's or gzip's match
    window. ``kind`` ``"random"``: random bytes, as incompressible as can be (a worst case
    for ``--compression``). ``"json"``: JSON-like text, event objects of a few dozen fields
    drawn from small vocabularies with random numbers, ids and timestamps, so it
    compresses about as well as real JSON events do. The pool is made here, before any
    timing starts.
    """

    def __init__(self, value_size: int, seed: int = SEED, kind: str = "random") -> None:
        self.value_size = value_size
        if kind == "json":
            self._pool = _json_pool(VALUE_POOL_BYTES + value_size, seed)
        else:
            self._pool = random.Random(seed).randbytes(VALUE_POOL_BYTES + value_size)

    def records(self, count: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of records 0 .. count - 1."""
        pool, size, pack = self._pool, self.value_size, struct.Struct(">Q").pack
        for i in range(count):
            start = (i * 2_654_435_761) % VALUE_POOL_BYTES
            yield pack(i), pool[start:start + size]


PAYLOADS = ("random", "json")
_WORDS = ("order", "created", "updated", "shipped", "cancelled", "payment", "customer", "invoice", "refund",
          "warehouse", "eu-west-1", "us-east-1", "mobile", "web", "api", "premium", "standard", "trial", "EUR", "USD")


def _json_pool(size: int, seed: int) -> bytes:
    """``size`` bytes of concatenated JSON event objects (see :class:`Payloads`)."""
    rng = random.Random(seed)
    choice, randint, hexid = rng.choice, rng.randint, lambda: f"{rng.getrandbits(64):016x}"
    parts, total = [], 0
    while total < size:
        event = {
            "event_id": f"{hexid()}-{hexid()}", "type": f"{choice(_WORDS)}.{choice(_WORDS)}",
            "timestamp": 1_700_000_000_000 + randint(0, 10**9), "customer_id": randint(1, 10**7),
            "session": hexid(), "region": choice(_WORDS), "channel": choice(_WORDS), "plan": choice(_WORDS),
            "amount": round(rng.random() * 1000, 2), "currency": choice(("EUR", "USD", "GBP")),
            "items": [{"sku": f"SKU-{randint(1, 99999):05d}", "qty": randint(1, 9),
                       "price": round(rng.random() * 200, 2), "tags": [choice(_WORDS) for _ in range(3)]}
                      for _ in range(randint(1, 6))],
            "note": " ".join(choice(_WORDS) for _ in range(randint(3, 20))),
        }
        part = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


def payload_bytes(records: int, value_size: int) -> int:
    """Key + value bytes of ``records`` benchmark records."""
    return records * (KEY_BYTES + value_size)


def produce_all(producer: Any, topic: str, payloads: Iterator[tuple[bytes, bytes]], poll_every: int) -> float:
    """Produce to partition 0 as fast as ``producer`` allows, then flush; returns the seconds taken."""
    started = time.perf_counter()
    for i, (key, value) in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=0)
                break
            except BufferError:
                producer.poll(0.05)
        if i % poll_every == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - started
    if remaining:
        raise RuntimeError(f"{remaining} records were still undelivered after flush")
    return seconds


def produce(bootstrap: str, topic: str, records: int, value_size: int, payload: str = "random") -> float:
    """Produce the benchmark's ``records`` records with a fast, unbounded producer; returns the seconds taken."""
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap,
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "compression.type": "none",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    })
    payloads = Payloads(value_size, kind=payload)
    return produce_all(producer, topic, payloads.records(records), poll_every=5000)


# --------------------------------------------------------------------------- stack


@contextmanager
def local_stack() -> Iterator[tuple[Any, Any]]:
    """A fresh Kafka broker and moto S3 server, stopped (and their data removed) on exit."""
    from devstack.kafka_broker import start_broker
    from devstack.s3_server import start_s3_server

    broker = start_broker()
    try:
        s3_server = start_s3_server()
        try:
            yield broker, s3_server
        finally:
            s3_server.stop()
    finally:
        broker.stop()


def create_topic(bootstrap: str, topic: str, config: dict[str, str] | None = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    new = NewTopic(topic, num_partitions=1, replication_factor=1, config=config or {})
    admin.create_topics([new])[topic].result(timeout=30)


def delete_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    try:
        admin.delete_topics([topic])[topic].result(timeout=30)
    except Exception as error:  # best effort: the benchmark's numbers are already printed
        print(f"warning: could not delete topic {topic}: {error}", file=sys.stderr)


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


# --------------------------------------------------------------------------- the engine's backup


@dataclass
class BackupRun:
    result: Any  # airflow_kafka_backup.engine.backup.loop.BackupResult
    settings: Any  # airflow_kafka_backup.engine.storage.manifest.SegmentSettings
    seconds: float
    base_rss_kib: int
    client_cpu_s: float = 0.0  # this process, all threads, while the backup ran


def engine_backup(
    bootstrap: str, store: Any, prefix: str, topic: str, end: int, compression: str, flush_size: int,
    consumer_options: dict[str, str] | None = None, profile_path: str | None = None, segment_format: str = "jsonl",
    compression_level: int | None = None, segment_checksum: str | None = None,
) -> BackupRun:
    """Back up offsets [0, end) of ``topic``[0] with the engine, exactly as the operator would (minus Airflow)."""
    from airflow_kafka_backup.engine.backup.loop import CONSUMER_OVERRIDES, DEFAULT_GROUP_ID, back_up_ranges
    from airflow_kafka_backup.engine.formats.compression import new_run_compression
    from airflow_kafka_backup.engine.storage.checksums import validate_algorithm
    from airflow_kafka_backup.engine.storage.manifest import PartitionRange, SegmentSettings

    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": DEFAULT_GROUP_ID,
        **CONSUMER_OVERRIDES,
        "isolation.level": "read_committed",
        **(consumer_options or {}),
    })
    level, library = new_run_compression(compression, compression_level)  # as a new backup run records them
    settings = SegmentSettings(
        segment_format=segment_format, compression=compression, flush_size=flush_size, offset_pad_width=10,
        compression_level=level, compression_library=library,
        segment_checksum=validate_algorithm(segment_checksum),  # None: the shipped default, as a new run has it
    )
    ranges = [PartitionRange(topic, 0, 0, end)]
    base = peak_rss_kib()
    cpu_before = cpu_seconds()
    result, seconds = timed(
        lambda: back_up_ranges(consumer, store, prefix, ranges, settings, is_committed=lambda key: False),
        profile_path,
    )
    cpu = cpu_seconds() - cpu_before
    consumer.close()
    if result.records != end or sum(s.records for s in result.segments) != end:
        raise RuntimeError(f"backup wrote {result.records} records in segments, expected {end}")
    return BackupRun(result, settings, seconds, base, cpu)


# --------------------------------------------------------------------------- phases (child processes)


def timed(run: Callable[[], T], profile_path: str | None = None) -> tuple[T, float]:
    """``run()`` and the seconds it took; with ``profile_path``, under cProfile (main thread only)."""
    started = time.perf_counter()
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(run)
        profiler.dump_stats(profile_path)
    else:
        result = run()
    return result, time.perf_counter() - started


def best_of(runs: int, measure: Callable[[], tuple[int, int, float]]) -> tuple[int, int, float]:
    """The fastest (fewest seconds) of ``runs`` calls of ``measure``, each returning (records, bytes, seconds)."""
    return min((measure() for _ in range(runs)), key=lambda r: r[2])


def report(result: PhaseResult) -> None:
    """The child's side of :func:`run_phase_in_child`."""
    print(PHASE_MARKER + json.dumps(asdict(result)), flush=True)


def run_phase_in_child(
    script: str, args: argparse.Namespace, phase: str, end: int, profiled_phase: str,
    extra_args: list[str] | tuple[str, ...] = (), server_pids: Mapping[str, int] | None = None, **options: str,
) -> PhaseResult:
    """Re-invoke ``script`` for one phase; it prints its result as JSON on stdout (see :func:`report`).

    ``options`` become ``--name value`` (underscores as dashes); ``--profile`` is passed on
    for the full-size run of ``profiled_phase``. The CPU time the processes of ``server_pids``
    (``{"broker": pid, "s3": pid}``; a broker given by ``KAFKA_BOOTSTRAP`` has none) use while
    the child runs is added to its result as ``broker_cpu_s`` and ``s3_cpu_s``.
    """
    command = [
        sys.executable, str(Path(script).resolve()), "--phase", phase,
        "--end", str(end), "--value-size", str(args.value_size),
        "--compression", args.compression, "--format", args.format, "--flush-size", str(args.flush_size),
        "--payload", args.payload, *(("--compression-level", str(args.compression_level))
                                     if args.compression_level is not None else ()),
        "--segment-checksum", args.segment_checksum, "--ceiling-runs", str(args.ceiling_runs), *extra_args,
    ]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", value]
    if args.profile and phase == profiled_phase and end == args.records:
        command += ["--profile", args.profile]
    pids = dict(server_pids or {})
    before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, cwd=REPO)
    used = {f"{name}_cpu_s": process_cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(PHASE_MARKER):
            return PhaseResult(**{**json.loads(line[len(PHASE_MARKER):]), **used})
    raise RuntimeError(f"phase {phase} printed no result; stdout: {completed.stdout[-2000:]}")


# --------------------------------------------------------------------------- command line and output


def add_size_arguments(parser: argparse.ArgumentParser, records_help: str, ceiling_help: str) -> None:
    parser.add_argument("--records", type=int, default=1_000_000, help=records_help)
    parser.add_argument("--value-size", type=int, default=1024, help="bytes per record value")
    from airflow_kafka_backup.engine.backup.settings import BackupSettings
    from airflow_kafka_backup.engine.formats.compression import COMPRESSIONS
    from airflow_kafka_backup.engine.formats.segment_codec import FORMATS

    # The shipped defaults unless told otherwise: what BackupSettings.create (and the DAG's Params) use.
    shipped = inspect.signature(BackupSettings.create).parameters
    parser.add_argument("--compression", choices=sorted(COMPRESSIONS), default=shipped["compression"].default,
                        help="segment compression (default: the shipped default)")
    parser.add_argument("--compression-level", type=int, default=None,
                        help="compression level (default: the codec's default for backups)")
    parser.add_argument("--format", choices=sorted(FORMATS), default=shipped["segment_format"].default,
                        help="segment format (default: the shipped default)")
    parser.add_argument("--payload", choices=PAYLOADS, default="random",
                        help="record values: random bytes (incompressible) or JSON-like text (compressible)")
    parser.add_argument("--flush-size", type=int, default=shipped["flush_size"].default,
                        help="records per segment (default: the shipped default)")
    parser.add_argument("--segment-checksum", choices=("crc64nvme", "sha256"),
                        default=shipped["segment_checksum"].default,
                        help="segment checksum (default: the shipped default)")
    parser.add_argument("--ceiling-runs", type=int, default=3, help=ceiling_help)


def add_profile_and_internal_arguments(
    parser: argparse.ArgumentParser, profile_help: str, phases: tuple[str, ...], internal: tuple[str, ...] = (),
) -> None:
    """``--profile``, then the suppressed options of a child phase (``internal`` names more of them)."""
    parser.add_argument("--profile", help=profile_help)
    parser.add_argument("--phase", choices=phases, help=argparse.SUPPRESS)
    parser.add_argument("--end", type=int, help=argparse.SUPPRESS)
    for name in ("bootstrap", "topic", "endpoint-url", "bucket", "prefix", *internal):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)


def check_size_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.records < 1 or args.value_size < 0 or args.flush_size < 1 or args.ceiling_runs < 1:
        parser.error("--records, --flush-size and --ceiling-runs must be positive, --value-size non-negative")


def print_table(results: list[PhaseResult]) -> None:
    """One row a phase; the CPU columns (µs per record) appear when a phase measured them."""
    with_cpu = any(r.client_cpu_s for r in results)
    cpu_header = f" {'CPU µs/rec: client':>18} {'broker':>6} {'S3':>4}" if with_cpu else ""
    header = f"{'phase':<24} {'records':>10} {'seconds':>8} {'records/s':>11} {'MB/s':>8} " \
             f"{'segments':>8} {'stored MB':>9} {'base RSS MiB':>12} {'peak RSS MiB':>12}{cpu_header}"
    print(header)
    print("-" * len(header))
    for r in results:
        cpu = (f" {r.client_cpu_s / r.records * 1e6:>18.1f} {r.broker_cpu_s / r.records * 1e6:>6.1f} "
               f"{r.s3_cpu_s / r.records * 1e6:>4.1f}" if with_cpu else "")
        print(
            f"{r.phase:<24} {r.records:>10,} {r.seconds:>8.2f} {r.records_per_s:>11,.0f} {r.mb_per_s:>8.1f} "
            f"{r.segments or '-':>8} {f'{r.stored_bytes / 1e6:.0f}' if r.segments else '-':>9} "
            f"{r.base_rss_kib / 1024:>12.1f} {r.peak_rss_mib:>12.1f}{cpu}"
        )


def main(args: argparse.Namespace, child_main: Callable[[argparse.Namespace], None],
         parent_main: Callable[[argparse.Namespace], None]) -> None:
    """A benchmark script's entry point: one phase when re-invoked with ``--phase``, else the whole run."""
    (child_main if args.phase else parent_main)(args)


def print_summary(args: argparse.Namespace, phase: str, ratio_name: str, ceiling: PhaseResult, small: PhaseResult,
                  full: PhaseResult, extra: str = "") -> None:
    """The table, then ``phase``/ceiling and the ``RESULT`` line (``extra`` goes inside its parentheses)."""
    print()
    print_table([ceiling, small, full])
    ratio = full.records_per_s / ceiling.records_per_s
    print()
    print(f"{phase}/ceiling (records/s): {ratio:.2f}; peak RSS at N/4 vs N: "
          f"{small.peak_rss_mib:.0f} MiB vs {full.peak_rss_mib:.0f} MiB")
    if full.stored_bytes:
        print(f"stored: {full.stored_bytes:,} bytes for {full.bytes:,} payload bytes (ratio "
              f"{full.stored_bytes / full.bytes:.3f}; {args.payload} values)")
    if ceiling.client_cpu_s and full.client_cpu_s:
        client_ceiling, client_full = (r.client_cpu_s / r.records * 1e6 for r in (ceiling, full))
        print(f"client CPU per record: ceiling {client_ceiling:.1f} µs, {phase} {client_full:.1f} µs "
              f"({client_full / client_ceiling:.2f}x the bare loop's)")

        def per_record(r: PhaseResult) -> float:
            return (r.client_cpu_s + r.server_cpu_s) / r.records * 1e6

        print(f"CPU per record, client + broker + S3 server: ceiling {per_record(ceiling):.1f} µs, {phase} "
              f"{per_record(full):.1f} µs (ratio {per_record(ceiling) / per_record(full):.2f}; on a machine whose "
              f"cores are all busy this bounds the records/s ratio)")
    cpu_ratio = (f"client_cpu_ratio={full.client_cpu_s / full.records / (ceiling.client_cpu_s / ceiling.records):.2f} "
                 if ceiling.client_cpu_s and full.client_cpu_s else "")
    print(
        f"RESULT {ratio_name}={ratio:.2f} {cpu_ratio}{phase}_rps={full.records_per_s:.0f} "
        f"ceiling_rps={ceiling.records_per_s:.0f} {phase}_peak_rss_mib={full.peak_rss_mib:.0f} "
        f"(N={args.records}, value={args.value_size} B {args.payload}, format={args.format}, "
        f"compression={args.compression} level {args.compression_level or 'default'}, flush_size={args.flush_size}, "
        f"segment_checksum={args.segment_checksum}{extra})"
    )
