"""Target topics of a restore: checked, and created when missing, before anything is produced."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.record_size import TOPIC_MAX_MESSAGE_BYTES, largest, record_size_problems
from airflow_kafka_backup.engine.restore.planning import PartitionRestore
from airflow_kafka_backup.engine.topics.offsets import snapshot_offsets

ADMIN_TIMEOUT_S = 30.0
TIMESTAMP_TYPE_CONFIG = "message.timestamp.type"
RETENTION_CONFIG = "retention.ms"
CLEANUP_POLICY_CONFIG = "cleanup.policy"
BEFORE_MAX_CONFIG = "message.timestamp.before.max.ms"
AFTER_MAX_CONFIG = "message.timestamp.after.max.ms"
# The broker setting behind each topic config the checks read, for topics not created yet.
_BROKER_DEFAULT_OF = {
    TIMESTAMP_TYPE_CONFIG: "log.message.timestamp.type",
    CLEANUP_POLICY_CONFIG: "log.cleanup.policy",
    BEFORE_MAX_CONFIG: "log.message.timestamp.before.max.ms",
    AFTER_MAX_CONFIG: "log.message.timestamp.after.max.ms",
    TOPIC_MAX_MESSAGE_BYTES: "message.max.bytes",
}
# A broker setting no topic config lifts: the largest request the broker reads. Carried in
# broker_topic_defaults() under its own name, for the record size check.
SOCKET_REQUEST_MAX_BYTES = "socket.request.max.bytes"
# log.retention.ms, else log.retention.minutes, else log.retention.hours (Kafka's own order).
_BROKER_RETENTION = (("log.retention.ms", 1), ("log.retention.minutes", 60_000), ("log.retention.hours", 3_600_000))

_NO_LIMIT = str(2**63 - 1)  # Long.MAX_VALUE: Kafka's "no limit" for the timestamp bounds
Span = tuple[int | None, int | None]  # (oldest, newest) record timestamp in ms; None: unknown

log = logging.getLogger(__name__)


def restore_topic_configs(topic: str, recorded: Mapping[str, str], overrides: Mapping[str, object],
                          broker_defaults: Mapping[str, str] | None = None) -> dict[str, str]:
    """Configs for a target the restore creates: the source topic's recorded ones, then ``topic_configs``.

    When the topic would be ``LogAppendTime`` (recorded so, or the broker's default, see
    :func:`broker_topic_defaults`), it is created ``CreateTime``, with a warning: on a
    LogAppendTime topic the broker stamps every record with the time it is appended, so the
    restored records would lose the timestamps they were backed up with. A value given in
    ``topic_configs`` is the user's choice and is kept as it is. Otherwise the configs are the
    source's, exactly.
    """
    configs = {**recorded, **{k: str(v) for k, v in overrides.items()}}
    if TIMESTAMP_TYPE_CONFIG not in overrides:
        recorded_type = configs.get(TIMESTAMP_TYPE_CONFIG)
        if (recorded_type or (broker_defaults or {}).get(TIMESTAMP_TYPE_CONFIG)) == "LogAppendTime":
            log.warning("%s: the %s is message.timestamp.type=LogAppendTime; the target is created with CreateTime so "
                        "that the restored records keep their backed-up timestamps. Pass it in topic_configs to keep "
                        "LogAppendTime.", topic, "source topic" if recorded_type else "broker's default")
            configs[TIMESTAMP_TYPE_CONFIG] = "CreateTime"
    return configs


def timestamp_spans(partitions: Iterable[PartitionRestore]) -> dict[str, Span]:
    """Per target topic, the span of its restored records' timestamps (see ``PartitionRestore.timestamp_span``)."""
    spans: dict[str, Span] = {}
    for p in partitions:
        oldest, newest = p.timestamp_span()
        was_oldest, was_newest = spans.get(p.target_topic, (None, None))
        spans[p.target_topic] = (min((t for t in (oldest, was_oldest) if t is not None), default=None),
                                 max((t for t in (newest, was_newest) if t is not None), default=None))
    return spans


def check_targets_keep_records(admin, spans: Mapping[str, Span], new_topic_configs: Mapping[str, Mapping[str, str]],
                               now_ms: int, broker_defaults: Mapping[str, str] | None = None) -> None:
    """Fail, before anything is produced, when a target would not keep the restored records as they were backed up.

    Checked against each target's effective configs: those of an existing topic as the
    broker reports them, those of a topic to create from ``new_topic_configs`` over the
    broker's defaults (``broker_defaults``, read here when not given). See
    :func:`record_keeping_problems` for what is refused. A config the restore is not allowed
    to read (no DescribeConfigs ACL) is not checked, with a warning.
    """
    existing = sorted(t for t in spans if t not in new_topic_configs)
    effective = _topic_configs(admin, existing)
    if new_topic_configs:
        defaults = broker_topic_defaults(admin) if broker_defaults is None else broker_defaults
        effective.update({t: {**defaults, **configs} for t, configs in new_topic_configs.items()})
    problems = []
    for topic in sorted(spans):
        if topic in effective:
            problems += record_keeping_problems(topic, effective[topic], spans[topic], now_ms,
                                                created=topic in new_topic_configs)
    if problems:
        raise ConfigurationError("Cannot restore: " + "; ".join(problems) + ".")


def record_keeping_problems(topic: str, configs: Mapping[str, str], span: Span, now_ms: int,
                            created: bool) -> list[str]:
    """What in ``configs`` would change or lose the records restored into ``topic``, each with its fix.

    - ``LogAppendTime`` on an existing target: the broker would restamp every record with
      the time of the restore. (A target the restore creates gets ``CreateTime`` where it
      would be ``LogAppendTime`` (see :func:`restore_topic_configs`), so ``LogAppendTime``
      there is the user's choice.)
    - Records older than ``retention.ms`` (with ``cleanup.policy`` delete): the broker would
      delete them minutes after the restore wrote them, and the restore would have "succeeded".
    - Records outside ``message.timestamp.before.max.ms`` / ``after.max.ms``: the broker
      refuses them, which would fail the restore halfway.
    """
    def fix(name: str, value: str) -> str:
        if created:
            return f'add "{name}": "{value}" to topic_configs'
        return (f"set {name}={value} on the topic (kafka-configs.sh --alter --entity-type topics --entity-name "
                f"{topic} --add-config {name}={value})")

    if configs.get(TIMESTAMP_TYPE_CONFIG) == "LogAppendTime":
        if created:
            return []  # the broker stamps the records: none of the checks below apply
        return [f"target topic {topic} has {TIMESTAMP_TYPE_CONFIG}=LogAppendTime, so the broker would stamp every "
                "restored record with the time of the restore instead of its backed-up timestamp ("
                f"{fix(TIMESTAMP_TYPE_CONFIG, 'CreateTime')} for the restore, or restore into a new topic)"]
    oldest, newest = span
    problems = []
    retention = _as_int(configs.get(RETENTION_CONFIG))
    deletes = "delete" in configs.get(CLEANUP_POLICY_CONFIG, "delete").replace(" ", "").split(",")
    if deletes and retention is not None and retention >= 0 and oldest is not None and now_ms - oldest > retention:
        problems.append(
            f"the records to restore into {topic} go back to {_iso(oldest)}, older than its {RETENTION_CONFIG}="
            f"{retention} ({_duration(retention)}), so the broker would delete them within minutes of the restore ("
            f"{fix(RETENTION_CONFIG, '-1')}, or restore from a later from_timestamp)")
    before = _as_int(configs.get(BEFORE_MAX_CONFIG))
    if before is not None and oldest is not None and now_ms - oldest > before:
        problems.append(
            f"the records to restore into {topic} go back to {_iso(oldest)}, but its {BEFORE_MAX_CONFIG}={before} "
            f"({_duration(before)}) makes the broker refuse records that old ({fix(BEFORE_MAX_CONFIG, _NO_LIMIT)}, "
            "or restore from a later from_timestamp)")
    after = _as_int(configs.get(AFTER_MAX_CONFIG))
    if after is not None and newest is not None and newest - now_ms > after:
        problems.append(
            f"the records to restore into {topic} reach {_iso(newest)}, but its {AFTER_MAX_CONFIG}={after} "
            f"({_duration(after)}) makes the broker refuse records that far ahead of its clock ("
            f"{fix(AFTER_MAX_CONFIG, _NO_LIMIT)}, or restore up to an earlier until_timestamp)")
    return problems


def largest_records(partitions: Iterable[PartitionRestore]) -> dict[str, int | None]:
    """Per target topic, its largest record to restore (see ``PartitionRestore.largest_record_bytes``)."""
    out: dict[str, int | None] = {}
    for p in partitions:
        out[p.target_topic] = largest((out.get(p.target_topic), p.largest_record_bytes()))
    return out


def check_targets_take_records(admin, largest_by_topic: Mapping[str, int | None],
                               new_topic_configs: Mapping[str, Mapping[str, str]],
                               broker_defaults: Mapping[str, str] | None = None,
                               compressed: Callable[[], bool] = lambda: False) -> None:
    """Fail, before anything is produced, when a target cannot take the largest record the restore would write to it.

    Checked like :func:`check_targets_keep_records`: an existing topic's ``max.message.bytes``
    as the broker reports it (the broker's ``message.max.bytes`` when the topic has none of its
    own), a new topic's from ``new_topic_configs`` over the broker's defaults; and every target
    against the broker's ``socket.request.max.bytes``. Targets whose largest record is not
    known (backed up before record sizes were recorded) are not checked.

    ``compressed()``: whether the restore producer compresses (the connection sets
    ``compression.type``), asked only when there is a problem. The broker then limits the
    compressed batch, which may fit where the record would not: the problems are logged as
    warnings instead of refusing the restore.
    """
    sized = {t: n for t, n in largest_by_topic.items() if n is not None}
    if not sized:
        return
    existing = sorted(t for t in sized if t not in new_topic_configs)
    effective = _topic_configs(admin, existing)
    defaults = broker_topic_defaults(admin) if broker_defaults is None else broker_defaults
    effective.update({t: {**defaults, **configs} for t, configs in new_topic_configs.items()})
    socket_limit = _as_int(defaults.get(SOCKET_REQUEST_MAX_BYTES))
    problems = []
    for topic in sorted(sized):
        if topic in effective:
            problems += record_size_problems(topic, sized[topic], effective[topic],
                                             created=topic in new_topic_configs, socket_request_max_bytes=socket_limit)
    if not problems:
        return
    if compressed():
        log.warning("The restore producer compresses, so these records may still fit once compressed: %s.",
                    "; ".join(problems))
        return
    raise ConfigurationError("Cannot restore: " + "; ".join(problems) + ".")


def _topic_configs(admin, topics: list[str]) -> dict[str, dict[str, str]]:
    """The effective configs of existing topics; a topic whose configs cannot be read is left out, with a warning."""
    if not topics:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    out = {}
    for resource, future in admin.describe_configs(resources, request_timeout=ADMIN_TIMEOUT_S).items():
        try:
            entries = future.result()
        except KafkaException as error:
            log.warning("Could not read the configs of target topic %s (%s): its retention and timestamp settings "
                        "are not checked against the records to restore.", resource.name, error)
            continue
        out[resource.name] = {name: entry.value for name, entry in entries.items() if entry.value is not None}
    return out


def broker_topic_defaults(admin) -> dict[str, str]:
    """The topic configs a new topic gets from the broker, for those the checks read; {} when they cannot be read."""
    brokers = admin.list_topics(timeout=ADMIN_TIMEOUT_S).brokers
    resource = ConfigResource(ResourceType.BROKER, str(min(brokers)))
    try:
        entries = admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)[resource].result()
    except KafkaException as error:
        log.warning("Could not read the broker's default topic configs (%s): the retention and timestamp settings "
                    "of the topics the restore creates are checked only where topic_configs or the backup set "
                    "them.", error)
        return {}
    values = {name: entry.value for name, entry in entries.items() if entry.value is not None}
    defaults = {topic_config: values[name] for topic_config, name in _BROKER_DEFAULT_OF.items() if name in values}
    if SOCKET_REQUEST_MAX_BYTES in values:
        defaults[SOCKET_REQUEST_MAX_BYTES] = values[SOCKET_REQUEST_MAX_BYTES]
    for name, unit_ms in _BROKER_RETENTION:
        if _as_int(values.get(name)) is not None:
            retention = int(values[name])
            defaults[RETENTION_CONFIG] = str(retention * unit_ms if retention >= 0 else retention)
            break
    return defaults


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _duration(ms: int) -> str:
    for unit, size in (("days", 86_400_000), ("hours", 3_600_000), ("minutes", 60_000), ("seconds", 1000)):
        if ms >= size:
            return f"{ms / size:.3g} {unit}"
    return f"{ms} ms"


def missing_target_topics(admin, needed_partitions: Mapping[str, int], create: bool) -> list[str]:
    """Targets that must be created; fails when a target is too small, or missing while ``create`` is off."""
    metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
    missing, problems = [], []
    for topic, needed in sorted(needed_partitions.items()):
        md = metadata.get(topic)
        if md is None or md.error is not None:
            missing.append(topic)
        elif len(md.partitions) < needed:
            problems.append(f"target topic {topic} has {len(md.partitions)} partitions but the backup needs {needed}")
    if missing and not create:
        problems.append(f"target topic(s) {', '.join(missing)} do not exist and create_topics is off")
    if problems:
        raise ConfigurationError("Cannot restore: " + "; ".join(problems) + ".")
    return missing


def refused_configs(admin, topic: str, partitions: int, replication_factor: int,
                    configs: Mapping[str, str]) -> dict[str, str]:
    """The configs the broker would refuse for a new topic, each with the broker's reason."""
    refused = {}
    for name, value in sorted(configs.items()):
        probe = NewTopic(topic, partitions, replication_factor, config={name: value})
        future = admin.create_topics([probe], validate_only=True, operation_timeout=ADMIN_TIMEOUT_S)[topic]
        try:
            future.result()
        except Exception as error:
            refused[name] = str(error)
    return refused


def create_topics(admin, partitions: Mapping[str, int], configs: Mapping[str, Mapping[str, str]] | None = None,
                  replication_factors: Mapping[str, int] | None = None, *, validate_only: bool = False) -> None:
    """Create topics with their configs and wait until every partition has a leader.

    Replication factors are capped at the number of brokers. Configs the broker refuses
    fail the restore, named one by one, before any topic is created: never silently dropped.
    ``validate_only`` (a dry run) asks the broker the same questions and stops there, creating
    nothing: a config the real run would refuse fails the dry run too.
    """
    if not partitions:
        return
    brokers = len(admin.list_topics(timeout=ADMIN_TIMEOUT_S).brokers)
    factors = {t: max(1, min((replication_factors or {}).get(t, brokers), brokers)) for t in partitions}
    problems = []
    for topic, n in sorted(partitions.items()):
        refused = refused_configs(admin, topic, n, factors[topic], (configs or {}).get(topic, {}))
        problems += [f"{topic}: {name} ({reason})" for name, reason in refused.items()]
    if problems:
        raise ConfigurationError("The broker refuses these topic configs: " + "; ".join(problems)
                                 + ". Override them with topic_configs.")
    if validate_only:
        return
    new = [NewTopic(t, n, factors[t], config=dict((configs or {}).get(t, {}))) for t, n in sorted(partitions.items())]
    for topic, future in admin.create_topics(new, operation_timeout=ADMIN_TIMEOUT_S).items():
        try:
            future.result()
        except Exception as error:
            raise ConfigurationError(f"Could not create target topic {topic}: {error}") from None
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
        if all(t in md and len(md[t].partitions) == n and all(p.leader >= 0 for p in md[t].partitions.values())
               for t, n in partitions.items()):
            return
        time.sleep(0.2)
    raise ConfigurationError(f"Created topics {sorted(partitions)} but their partitions have no leader yet.")


def target_record_counts(admin, targets: Mapping[str, int]) -> dict[str, int]:
    """What each existing target already holds in the partitions a restore writes: its end minus its log start
    offsets, summed (transaction markers and compacted-away offsets count too: an upper bound)."""
    tps = [(topic, p) for topic, partitions in targets.items() for p in range(partitions)]
    counts = dict.fromkeys(targets, 0)
    for (topic, _), bounds in snapshot_offsets(admin, tps, "read_uncommitted").items():
        counts[topic] += bounds.end - bounds.log_start
    return counts
