"""Kafka hooks: the Kafka provider's hooks, with the settings a backup or restore needs.

Each class overrides one method; the connection (type ``kafka``, librdkafka config in
its extra, MSK IAM / OAuth callbacks) is handled by the provider's base hook.
"""

from __future__ import annotations

from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook
from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook

from airflow_kafka_backup.backup import CONSUMER_OVERRIDES, DEFAULT_GROUP_ID


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
        return super()._get_client(config)
