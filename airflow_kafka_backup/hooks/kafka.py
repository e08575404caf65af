"""Kafka hooks: the Kafka provider's hooks, with the settings a backup or restore needs.

Each class overrides one method; the connection (type ``kafka``, librdkafka config in
its extra, MSK IAM / OAuth callbacks) is handled by the provider's base hook.
"""

from __future__ import annotations

from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook
from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

from airflow_kafka_backup.engine.backup.loop import CONSUMER_OVERRIDES, DEFAULT_GROUP_ID
from airflow_kafka_backup.engine.record_size import (
    LIBRDKAFKA_MESSAGE_MAX_BYTES,
    MESSAGE_MAX_BYTES,
    producer_size_config,
)
from airflow_kafka_backup.engine.restore.loop import PRODUCER_OVERRIDES
from airflow_kafka_backup.engine.restore.transaction import TRANSACTION_TIMEOUT_S


def first_bootstrap_server(kafka_config_id: str) -> str:
    """The first ``host:port`` of the connection's ``bootstrap.servers``: the server in ``kafka://`` asset URIs.

    Read from the connection's extra, where every Kafka provider version keeps it; the provider's
    ``_build_config`` (private, and missing in provider 1.10.x) would also build OAuth callbacks for nothing.
    """
    extra = KafkaBaseHook.get_connection(kafka_config_id).extra_dejson
    return str(extra.get("bootstrap.servers", "")).split(",")[0].strip()


class KafkaRangeConsumerHook(KafkaConsumerHook):
    """A consumer that reads exact offset ranges: no auto-commit, no offset reset, EOF events.

    :param kafka_config_id: the ``kafka`` connection.
    :param isolation_level: ``read_committed`` (default) or ``read_uncommitted``.
    """

    def __init__(
        self,
        kafka_config_id: str = KafkaBaseHook.default_conn_name,
        isolation_level: str = "read_committed",
    ) -> None:
        super().__init__(topics=[], kafka_config_id=kafka_config_id)
        self.isolation_level = isolation_level

    def _get_client(self, config):
        config = {"group.id": DEFAULT_GROUP_ID, **config, **CONSUMER_OVERRIDES,
                  "isolation.level": self.isolation_level}
        return super()._get_client(consumer_fetch_config(config))


def consumer_fetch_config(config: dict) -> dict:
    """``config`` with ``message.max.bytes`` at most ``fetch.max.bytes``, which librdkafka requires of a consumer.

    A connection that sets ``fetch.max.bytes`` below 1 MB (librdkafka's default ``message.max.bytes``)
    would otherwise fail to create the backup's consumer (``fetch.max.bytes must be >=
    message.max.bytes``). ``message.max.bytes`` limits only the requests a consumer sends, and
    the broker still returns a record larger than ``fetch.max.bytes`` / ``max.partition.fetch.bytes``
    on its own, so lowering it loses nothing: records of any size the broker took back up.
    """
    if "fetch.max.bytes" not in config:
        return config
    fetch_max = int(config["fetch.max.bytes"])
    if fetch_max >= int(config.get(MESSAGE_MAX_BYTES, LIBRDKAFKA_MESSAGE_MAX_BYTES)):
        return config
    return {**config, MESSAGE_MAX_BYTES: fetch_max}


class KafkaTransactionalProducerHook(KafkaProducerHook):
    """An idempotent, transactional producer with a bounded queue (exactly-once restores).

    :param kafka_config_id: the ``kafka`` connection.
    :param transactional_id: stable per restore and target partition, so a retry fences its zombie.
    :param largest_record_bytes: the largest record it will produce (from the manifests), which sizes
        ``message.max.bytes`` and the queue (see :func:`~airflow_kafka_backup.engine.record_size.producer_size_config`);
        the connection's own ``message.max.bytes`` wins. None: unknown, the connection's settings as they are.
    """

    def __init__(self, kafka_config_id: str = KafkaBaseHook.default_conn_name, *, transactional_id: str,
                 largest_record_bytes: int | None = None) -> None:
        super().__init__(kafka_config_id=kafka_config_id)
        self.transactional_id = transactional_id
        self.largest_record_bytes = largest_record_bytes

    def compresses(self) -> bool:
        """Whether the connection makes producers compress (then the broker limits compressed batches)."""
        extra = self.get_connection(self.kafka_config_id).extra_dejson
        codec = extra.get("compression.type", extra.get("compression.codec", "none"))
        return str(codec).lower() not in ("none", "")

    def transaction_timeout_s(self) -> float:
        """The connection's ``transaction.timeout.ms`` in seconds (librdkafka's default: 60)."""
        extra = self.get_connection(self.kafka_config_id).extra_dejson
        return float(extra.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_S * 1000)) / 1000

    def _get_client(self, config):
        consumer_only = ("group.id", "enable.auto.commit", "auto.offset.reset", "isolation.level")
        config = {k: v for k, v in config.items() if k not in consumer_only}
        return super()._get_client({**config, **PRODUCER_OVERRIDES,
                                    **producer_size_config(self.largest_record_bytes, config),
                                    "transactional.id": self.transactional_id})


class KafkaGroupConsumerHook(KafkaConsumerHook):
    """A consumer of one named group, never subscribed: for committed offsets and group metadata.

    Always ``read_committed``: librdkafka then fetches committed offsets as stable, waiting
    for transactions still completing, so a restore's progress (and the attempt that
    committed it) is never read from before its last commit, whatever the connection says.

    :param kafka_config_id: the ``kafka`` connection.
    :param group_id: the consumer group.
    """

    def __init__(self, kafka_config_id: str = KafkaBaseHook.default_conn_name, *, group_id: str) -> None:
        super().__init__(topics=[], kafka_config_id=kafka_config_id)
        self.group_id = group_id

    def _get_client(self, config):
        return super()._get_client({**config, "group.id": self.group_id, "enable.auto.commit": False,
                                    "isolation.level": "read_committed"})
