"""Target topics of a restore: checked, and created when missing, before anything is produced."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.errors import ConfigurationError

ADMIN_TIMEOUT_S = 30.0
TIMESTAMP_TYPE_CONFIG = "message.timestamp.type"

log = logging.getLogger(__name__)


def restore_topic_configs(topic: str, recorded: Mapping[str, str], overrides: Mapping[str, object]) -> dict[str, str]:
    """Configs for a target the restore creates: the source topic's recorded ones, then ``topic_configs``.

    A recorded ``message.timestamp.type=LogAppendTime`` becomes ``CreateTime``: on a
    LogAppendTime topic the broker stamps every record with the time it is appended, so the
    restored records would lose the timestamps they were backed up with. The value given
    in ``topic_configs`` is the user's choice and is kept as it is.
    """
    configs = {**recorded, **{k: str(v) for k, v in overrides.items()}}
    if TIMESTAMP_TYPE_CONFIG not in overrides and configs.get(TIMESTAMP_TYPE_CONFIG) == "LogAppendTime":
        configs[TIMESTAMP_TYPE_CONFIG] = "CreateTime"
        log.warning("%s: the source topic had message.timestamp.type=LogAppendTime; the target is created with "
                    "CreateTime so that the restored records keep their backed-up timestamps. Set it back once "
                    "the restore is done, or pass it in topic_configs to keep it.", topic)
    return configs


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
