"""A backup in its own process, so a test can SIGKILL it midway: the engine with plain clients.

    python -m tests.integration.backup_worker '<json: bootstrap, endpoint_url, bucket, prefix, run_id,
                                                ranges, flush_size[, compression, spool_dir, consumer_config]>'

``ranges`` is a list of ``PartitionRange`` dicts (the plan); the worker backs them up with
``back_up_ranges``, then commits the run's manifest (as the commit task does) and prints
a JSON summary as its last line. ``consumer_config`` is laid over the consumer's config
(e.g. a smaller prefetch, so a test can restart the broker while records are still to fetch).
"""

from __future__ import annotations

import json
import sys

from confluent_kafka import Consumer

from airflow_kafka_backup.engine.backup.loop import CONSUMER_OVERRIDES, DEFAULT_GROUP_ID, back_up_ranges
from airflow_kafka_backup.engine.storage.manifest import (
    PartitionRange,
    RunManifest,
    SegmentSettings,
    load_manifests,
    write_manifest,
)
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY


def main(args: dict) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=args["endpoint_url"], region_name=REGION,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    store = S3ObjectStore(client=client, bucket=args["bucket"])
    prefix = args["prefix"]
    ranges = [PartitionRange(**r) for r in args["ranges"]]
    settings = SegmentSettings(segment_format="jsonl", compression=args.get("compression", "gzip"),
                               flush_size=int(args["flush_size"]), offset_pad_width=10)
    committed = {s.key for m in load_manifests(store, prefix) for s in m.segments}
    consumer = Consumer({"bootstrap.servers": args["bootstrap"], "group.id": DEFAULT_GROUP_ID, **CONSUMER_OVERRIDES,
                         "isolation.level": "read_committed", **args.get("consumer_config", {})})
    try:
        result = back_up_ranges(consumer, store, prefix, ranges, settings, committed.__contains__,
                                spool_dir=args.get("spool_dir"))
    finally:
        consumer.close()
    key = write_manifest(store, prefix, RunManifest(args["run_id"], settings, ranges, result.segments))
    print(json.dumps({"manifest": key, "segments": len(result.segments), "records": result.records,
                      "skipped_uploads": result.skipped_uploads}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
