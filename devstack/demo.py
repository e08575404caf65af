"""`make demo`: back up a real Kafka topic to S3 through the `kafka_backup` DAG, and show what landed.

Starts the local stack (Kafka 4 KRaft broker, moto S3 server, a throwaway Airflow
home), produces sample records, runs ``airflow dags test kafka_backup`` with the CLI
an operator would use, prints the objects and records in the bucket, and stops
everything. The DAG's own log goes to a file whose path is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devstack.airflow_env import airflow_env, connection_env, make_airflow_home, migrate
from devstack.kafka_broker import start_broker
from devstack.s3_server import start_s3_server

TOPIC = "orders"
BUCKET = "demo-backups"
RECORDS = 5_000


def produce_sample(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, 3, 1)])[TOPIC].result()
    time.sleep(1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    for i in range(RECORDS):
        key = None if i % 10 == 0 else f"customer-{i % 97}".encode()
        value = b"" if i % 25 == 0 else json.dumps({"order": i, "amount": i % 500}).encode()
        headers = [("source", b"demo"), ("trace", None)] if i % 3 == 0 else []
        producer.produce(TOPIC, key=key, value=value, headers=headers)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(30)


def show_bucket(s3) -> None:
    from airflow_kafka_backup.engine.formats.compression import get_compression
    from airflow_kafka_backup.engine.formats.segment_codec import get_format
    from airflow_kafka_backup.engine.storage.manifest import load_manifests
    from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

    store = S3ObjectStore(client=s3, bucket=BUCKET)
    print(f"\nObjects in s3://{BUCKET}:")
    print(f"  {'key':<62} {'bytes':>7}")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", ()):
            print(f"  {obj['Key']:<62} {obj['Size']:>7}")
    total = 0
    print("\nSegments named by the committed manifest:")
    print(f"  {'topic[partition]':<18} {'offsets':>13} {'records':>8}  checksum")
    for manifest in load_manifests(store, "kafka-backup"):
        for seg in manifest.segments:
            total += seg.records
            offsets = f"{seg.first_offset}..{seg.last_offset}"
            print(f"  {seg.topic + f'[{seg.partition}]':<18} {offsets:>13} {seg.records:>8}  {seg.checksum}")
        first = manifest.segments[0]
        body = store.open_stream(first.key)
        record = next(iter(get_format(manifest.settings.segment_format).decode(
            body, get_compression(manifest.settings.compression))))
        print(f"\nFirst record of {first.key} (bytes shown as Python bytes; null stays None):")
        print(f"  {record}")
    print(f"\n{total} of {RECORDS} produced records are in the backup.")
    if total != RECORDS:
        raise SystemExit("demo failed: record count mismatch")


def main() -> None:
    print("Starting Kafka (KRaft) and the moto S3 server…", flush=True)
    broker = start_broker()
    s3_server = start_s3_server()
    try:
        home = make_airflow_home()
        env = {**os.environ, **airflow_env(home), **connection_env(broker.bootstrap, s3_server.endpoint_url)}
        print(f"Kafka at {broker.bootstrap}, S3 at {s3_server.endpoint_url}, AIRFLOW_HOME={home}", flush=True)
        migrate(env)
        s3 = s3_server.client()
        s3.create_bucket(Bucket=BUCKET)
        produce_sample(broker.bootstrap)
        print(f"Produced {RECORDS} records to '{TOPIC}' (3 partitions).", flush=True)
        conf = json.dumps({"topics": [TOPIC], "bucket": BUCKET, "flush_size": 1000})
        log_path = home / "dags-test.log"
        print(f"Running: airflow dags test kafka_backup -c '{conf}'  (log: {log_path})", flush=True)
        with log_path.open("w") as log:
            result = subprocess.run(
                [str(Path(sys.executable).with_name("airflow")), "dags", "test", "kafka_backup", "-c", conf],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        summary = [line for line in log_path.read_text().splitlines()
                   if "[airflow_kafka_backup" in line or "DagRun Finished" in line]
        for line in summary:
            print("  " + line.split("] ", 1)[-1].split(" [airflow", 1)[0][:150])
        if result.returncode != 0:
            raise SystemExit(f"airflow dags test failed; see {log_path}")
        show_bucket(s3)
    finally:
        s3_server.stop()
        broker.stop()


if __name__ == "__main__":
    main()
