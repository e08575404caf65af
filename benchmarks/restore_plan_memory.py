"""Restore plan memory and time against the number of past runs, on an in-memory store (no Kafka, no S3).

Builds a backup of ``--partitions`` partitions (topics of up to 1,000) with ``--runs`` committed
runs of one segment per partition each, then plans restores through ``plan_restore`` and prints,
per case, the peak Python memory the plan allocated (``tracemalloc``, over what the store already
holds) and its CPU time (of a second plan without ``tracemalloc``; CPU time, since the machine is shared):

* ``all``: every topic, no window (the plan names every segment: it cannot be small);
* ``one topic``: the first topic only;
* ``last run``: every topic, a time window holding only the newest run's records.

Run from the repository root; ``PYTHONPATH`` picks the code measured (e.g. another checkout)::

    .venv/bin/python benchmarks/restore_plan_memory.py [--partitions 1000,5000] [--runs 1,5,10]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc

from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.manifest import (
    PartitionRange,
    RunManifest,
    SegmentInfo,
    SegmentSettings,
    write_manifest,
)
from airflow_kafka_backup.engine.storage.object_store import ObjectEntry

TOPIC_PARTITIONS = 1000
T0 = 1_790_000_000_000  # run r's records are stamped T0 + r hours
HOUR = 3_600_000
SETTINGS = SegmentSettings("msgpack", "zstd", 10_000, 20)


class MemoryStore:
    bucket = "bench"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.objects[key] = data

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def list_entries(self, prefix: str) -> list[ObjectEntry]:
        return [ObjectEntry(k, len(self.objects[k]), 0, None) for k in self.list_keys(prefix)]


def backup(partitions: int, runs: int) -> tuple[MemoryStore, list[str]]:
    store = MemoryStore()
    topics = [f"scale-{partitions}-{i}-abcd" for i in range((partitions + TOPIC_PARTITIONS - 1) // TOPIC_PARTITIONS)]
    tps = [(t, p) for i, t in enumerate(topics)
           for p in range(min(TOPIC_PARTITIONS, partitions - i * TOPIC_PARTITIONS))]
    for run in range(runs):
        ranges, segments = [], []
        for topic, p in tps:
            first = run * 3
            key = f"bk/{topic}/partition={p}/{topic}+{p}+{first:010d}.msgpack.zst"
            ranges.append(PartitionRange(topic, p, first, first + 3, topic_id=f"id-{topic}"))
            segments.append(SegmentInfo(key, topic, p, first, first + 2, 3, T0 + run * HOUR, T0 + run * HOUR + 2,
                                        300, Checksum(SHA256, f"{run:032x}{p:032x}"), 60, f"id-{topic}"))
            store.objects[key] = b""
        write_manifest(store, "bk", RunManifest(f"scheduled__{run:05d}", SETTINGS, ranges, segments,
                                                topics=[{"topic": t, "partitions": TOPIC_PARTITIONS} for t in topics],
                                                incarnations={t: [f"id-{t}"] for t in topics}))
    return store, topics


def measure(store: MemoryStore, settings: RestoreSettings) -> tuple[float, float, int]:
    """(peak MiB, CPU seconds, planned segments): the time from a plan without tracemalloc, which slows it."""
    gc.collect()
    started = time.process_time()
    plan_restore(store, "bk", settings)
    seconds = time.process_time() - started
    gc.collect()
    tracemalloc.start()
    plan = plan_restore(store, "bk", settings)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20, seconds, sum(len(p.segments) for p in plan.partitions)


def xcom_bytes(store: MemoryStore, topics: list[str], units: int = 16) -> tuple[int, int]:
    """(the work units as XCom carries them now: references, as it carried them before: every partition and
    segment) of a real restore of every topic, in ``units`` work units as the plan task balances them."""
    from airflow_kafka_backup.engine.backup.planning import balance
    from airflow_kafka_backup.engine.restore.work_units import write_work_units

    plan = plan_restore(store, "bk", RestoreSettings.create(topics=topics))
    balanced = balance(plan.partitions, lambda p: p.upper_bound_records, lambda p: (p.source_topic, p.partition),
                       units)
    refs = write_work_units(MemoryStore(), "bk/_restores/kafka_restore/manual__2026-12-03T16:52:11.897286_00_00",
                            balanced)
    inline = [[p.to_dict() for p in unit] for unit in balanced]
    return len(json.dumps(refs).encode()), len(json.dumps(inline).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", default="1000,5000")
    parser.add_argument("--runs", default="1,5,10")
    parser.add_argument("--xcom", action="store_true", help="print the work units' XCom bytes instead")
    args = parser.parse_args()
    if args.xcom:
        print("| partitions | runs | work units' XCom bytes | before (inline) |\n|---|---|---|---|")
        for partitions in map(int, args.partitions.split(",")):
            for runs in map(int, args.runs.split(",")):
                refs, inline = xcom_bytes(*backup(partitions, runs))
                print(f"| {partitions:,} | {runs} | {refs:,} | {inline:,} |", flush=True)
        return
    print("| partitions | runs | case | planned segments | peak MiB | CPU seconds |")
    print("|---|---|---|---|---|---|")
    for partitions in map(int, args.partitions.split(",")):
        for runs in map(int, args.runs.split(",")):
            store, topics = backup(partitions, runs)
            cases = {
                "all": RestoreSettings.create(topics=topics),
                "one topic": RestoreSettings.create(topics=topics[:1]),
                "last run": RestoreSettings.create(topics=topics, from_timestamp=T0 + (runs - 1) * HOUR),
            }
            for case, settings in cases.items():
                mib, seconds, segments = measure(store, settings)
                print(f"| {partitions:,} | {runs} | {case} | {segments:,} | {mib:.0f} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
