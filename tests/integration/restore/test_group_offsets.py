"""Consumer-group offsets and topic configs: captured by the backup, translated exactly by the restore."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic, ResourceType

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from tests.helpers import create_topics, read_backup, read_kafka, run_dag

pytestmark = pytest.mark.integration

CONFIGS = {"retention.ms": "-1", "max.message.bytes": "2000000", "segment.bytes": "10485760"}


def _commit(bootstrap: str, group: str, topic: str, partition: int, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
    consumer.close()


def _committed(admin: AdminClient, group: str, topic: str, partition: int) -> int:
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    return next(tp.offset for tp in result.topic_partitions if (tp.topic, tp.partition) == (topic, partition))


def _topic_configs(admin: AdminClient, topic: str) -> dict[str, str]:
    (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return {k: e.value for k, e in future.result().items() if e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value}


def test_groups_resume_at_exactly_the_right_record_and_configs_round_trip(corpus, bucket, s3, caplog, capfd):
    caplog.set_level("INFO")
    bootstrap = corpus["bootstrap"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    run = uuid.uuid4().hex[:6]
    topic, compact = f"grp-{run}", corpus["compact"]
    create_topics(bootstrap, NewTopic(topic, 1, 1, config=CONFIGS))
    producer = Producer({"bootstrap.servers": bootstrap})
    # Ten minutes ahead (within the broker's one-hour tolerance), so a cut in the middle of this topic
    # keeps every record of the corpus's compacted topic, which was produced before the test.
    base = int(time.time() * 1000) + 600_000
    for i in range(100):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), timestamp=base + i * 1000)
    producer.flush(30)

    compact_offsets = [r.offset for r in read_kafka(bootstrap, [compact])[(compact, 0)]]
    gap = max(o for o in range(compact_offsets[-1]) if o not in compact_offsets)  # compacted away
    groups = {  # group -> (topic, committed source offset)
        f"g-{run}-start": (topic, 0), f"g-{run}-middle": (topic, 50), f"g-{run}-end": (topic, 100),
        f"g-{run}-beyond-cut": (topic, 80), f"g-{run}-gap": (compact, gap),
    }
    for group, (t, offset) in groups.items():
        _commit(bootstrap, group, t, 0, offset)

    conf = {"topics": [topic, compact], "bucket": bucket, "prefix": "grp", "consumer_groups": [f"re:g-{run}-.*"]}
    assert run_dag("kafka_backup", conf).state == "success"

    mapping = {topic: f"{topic}-restored", compact: f"{compact}-restored-{run}"}
    renamed = {f"g-{run}-start": f"g-{run}-start-restored"}
    cut = base + 70 * 1000  # records 0..69 of `topic` are before the cut; all compact records are older
    restore = {"topics": [topic, compact], "bucket": bucket, "prefix": "grp", "topic_mapping": mapping,
               "until_timestamp": cut, "restore_consumer_groups": True, "group_mapping": renamed}
    assert run_dag("kafka_restore", {**restore, "dry_run": True}).state == "success"
    assert "Consumer groups to move (dry run)" in caplog.text + "".join(capfd.readouterr())
    assert _topic_exists(admin, mapping[topic]) is False, "a dry run creates nothing"

    assert run_dag("kafka_restore", restore).state == "success"
    assert _topic_configs(admin, mapping[topic]) == CONFIGS

    source = read_backup(S3ObjectStore(client=s3, bucket=bucket), "grp")  # what the restore promises to bring back
    target = read_kafka(bootstrap, list(mapping.values()))
    for group, (t, source_offset) in groups.items():
        restored = target[(mapping[t], 0)]
        kept = [r for r in source[(t, 0)] if r.timestamp < cut]
        assert [(r.key, r.value) for r in restored] == [(r.key, r.value) for r in kept]
        committed = _committed(admin, renamed.get(group, group), mapping[t], 0)
        # The first restored record whose source offset is >= the group's offset, if any.
        expected = next((i for i, r in enumerate(kept) if r.offset >= source_offset), None)
        if expected is None:
            assert restored and committed == restored[-1].offset + 1, group
        else:
            assert committed == restored[expected].offset, group
            assert (restored[expected].key, restored[expected].value) == (kept[expected].key, kept[expected].value)


def test_a_group_with_active_members_is_refused(corpus, bucket):
    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    bootstrap = corpus["bootstrap"]
    topic = corpus["tricky"][2]
    group = f"active-{uuid.uuid4().hex[:6]}"
    _commit(bootstrap, group, topic, 0, 5)
    conf = {"topics": [topic], "bucket": bucket, "prefix": "grp", "consumer_groups": [group]}
    assert run_dag("kafka_backup", conf).state == "success"
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 10_000})
    member.subscribe([topic])
    deadline = time.monotonic() + 30
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    try:
        plan = KafkaRestorePlanOperator(task_id="plan", topics=[topic], bucket=bucket, prefix="grp",
                                        topic_mapping={topic: f"{topic}-{group}"}, restore_consumer_groups=True)
        with pytest.raises(ConfigurationError, match=f"Consumer group\\(s\\) {group} \\(1 members\\) have active"):
            plan.execute({"dag": SimpleNamespace(dag_id="kafka_restore"), "run_id": "manual__active", "ti": _NoXCom()})
    finally:
        member.close()


def _topic_exists(admin: AdminClient, topic: str) -> bool:
    return topic in admin.list_topics(timeout=10).topics


def test_configs_the_broker_refuses_are_named_before_anything_is_created(corpus, bucket):
    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    topic = corpus["tricky"][0]
    assert run_dag("kafka_backup", {"topics": [topic], "bucket": bucket, "prefix": "cfg"}).state == "success"
    target = f"{topic}-badcfg-{uuid.uuid4().hex[:4]}"
    plan = KafkaRestorePlanOperator(task_id="plan", topics=[topic], bucket=bucket, prefix="cfg",
                                    topic_mapping={topic: target},
                                    topic_configs={"cleanup.policy": "shred", "retention.ms": "-1"})
    with pytest.raises(ConfigurationError, match=f"refuses these topic configs: {target}: cleanup.policy"):
        plan.execute({"dag": SimpleNamespace(dag_id="kafka_restore"), "run_id": "manual__badcfg", "ti": _NoXCom()})
    assert not _topic_exists(AdminClient({"bootstrap.servers": corpus["bootstrap"]}), target)


class _NoXCom:
    """The plan pushes its group selection to XCom; outside a task there is nowhere to push it."""

    def xcom_push(self, key, value) -> None:
        pass
