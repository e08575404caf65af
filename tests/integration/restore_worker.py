"""A restore in its own process, so a test can SIGKILL it midway: the engine with plain clients.

    python -m tests.integration.restore_worker '<json: bootstrap, endpoint_url, bucket, prefix, topic,
                                                 target, restore_id[, commit_interval_s]>'
"""

from __future__ import annotations

import json
import sys

from confluent_kafka import Consumer, Producer

from airflow_kafka_backup.engine.restore.loop import (
    COMMIT_INTERVAL_S,
    PRODUCER_OVERRIDES,
    progress_group,
    restore_partition,
    transactional_id,
)
from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
from airflow_kafka_backup.engine.storage.key_layout import restore_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY


def main(args: dict) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=args["endpoint_url"], region_name=REGION,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    store = S3ObjectStore(client=client, bucket=args["bucket"])
    settings = RestoreSettings.create(topics=[args["topic"]], topic_mapping={args["topic"]: args["target"]})
    plan = plan_restore(store, args["prefix"], settings)
    group = Consumer({"bootstrap.servers": args["bootstrap"], "group.id": progress_group(args["restore_id"])})
    for unit in plan.partitions:
        config = {"bootstrap.servers": args["bootstrap"], **PRODUCER_OVERRIDES,
                  "transactional.id": transactional_id(args["restore_id"], unit.target_topic, unit.partition)}
        result = restore_partition(lambda config=config: Producer(config), group, store,
                                   restore_prefix(args["prefix"], args["restore_id"]), unit,
                                   commit_interval_s=args.get("commit_interval_s", COMMIT_INTERVAL_S))
        print(json.dumps(result.to_dict()), flush=True)
    group.close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
