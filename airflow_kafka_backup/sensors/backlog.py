"""``KafkaBacklogSensor``: wait until there is enough to back up, or it has waited long enough.

The sync path (``poke``, in ``poke`` or ``reschedule`` mode) and the deferrable path
(``execute`` -> :class:`KafkaBacklogTrigger` in the triggerer -> ``execute_complete``)
share one check: :func:`~airflow_kafka_backup.triggers.backlog.check_backlog` and
:func:`~airflow_kafka_backup.triggers.backlog.backlog_is_due`, kept beside the trigger so that the
trigger needs nothing from this module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator, Context

from airflow_kafka_backup.compat import conf
from airflow_kafka_backup.engine.backup.checkpoint import resolve_state
from airflow_kafka_backup.engine.errors import ConfigurationError, KafkaBackupError
from airflow_kafka_backup.engine.storage.manifest import checkpoints_to_json
from airflow_kafka_backup.engine.topics.incarnations import BackupState
from airflow_kafka_backup.engine.topics.selection import TopicSelection
from airflow_kafka_backup.operators.backup import get_checkpoint_variable
from airflow_kafka_backup.operators.s3 import S3BackupBaseOperator
from airflow_kafka_backup.triggers.backlog import KafkaBacklogTrigger, backlog_is_due, check_backlog

log = logging.getLogger(__name__)


class KafkaBacklogSensor(BaseSensorOperator, S3BackupBaseOperator):
    """Wait until the records not yet backed up reach ``min_records``, or the oldest is ``max_age_s`` old.

    "Not yet backed up" is measured from the same checkpoints the backup plans from
    (the Variable, recovered from the S3 manifests when behind) to the end offsets.

    :param deferrable: hand the wait to the triggerer and free the worker slot; defaults to
        ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (*S3BackupBaseOperator.s3_template_fields, "topics", "exclude_topics",
                                      "kafka_conn_id", "min_records", "max_age_s", "isolation_level")
    ui_color = "#d8e8f8"

    def __init__(
        self,
        *,
        topics: Sequence[str] | str,
        exclude_topics: Sequence[str] | str | None = None,
        kafka_conn_id: str = "kafka_default",
        min_records: int | str = 1,
        max_age_s: float | str | None = None,
        isolation_level: str = "read_committed",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.topics = topics
        self.exclude_topics = exclude_topics
        self.kafka_conn_id = kafka_conn_id
        self.min_records = min_records
        self.max_age_s = max_age_s
        self.isolation_level = isolation_level
        self.deferrable = deferrable

    def _thresholds(self) -> tuple[int, float | None]:
        try:
            min_records = int(self.min_records)
            max_age = None if self.max_age_s in (None, "", "None") else float(self.max_age_s)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"min_records must be a whole number and max_age_s a number of seconds, got "
                f"{self.min_records!r} and {self.max_age_s!r}."
            ) from None
        if min_records < 1 or (max_age is not None and max_age <= 0):
            raise ConfigurationError("min_records must be at least 1 and max_age_s greater than 0.")
        return min_records, max_age

    def _state(self) -> BackupState:
        prefix = self.key_prefix
        cached = get_checkpoint_variable(self.bucket, prefix)
        state = resolve_state(self.store, prefix, cached).state
        return state

    @staticmethod
    def _current_ids(state: BackupState) -> dict[str, str]:
        return {t: h[-1] for t, h in state.histories.items() if h}

    def poke(self, context: Context) -> bool:
        min_records, max_age = self._thresholds()
        state = self._state()
        backlog = check_backlog(self.kafka_conn_id, TopicSelection.parse(self.topics, self.exclude_topics),
                                state.checkpoints, self.isolation_level, max_age is not None,
                                self._current_ids(state))
        reason = backlog_is_due(backlog, min_records, max_age)
        log.info("Backlog: %d records %s", backlog.records, f"- {reason}" if reason else "- waiting")
        return reason is not None

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        min_records, max_age = self._thresholds()
        selection = TopicSelection.parse(self.topics, self.exclude_topics)
        state = self._state()
        checkpoints, topic_ids = state.checkpoints, self._current_ids(state)
        backlog = check_backlog(self.kafka_conn_id, selection, checkpoints, self.isolation_level, max_age is not None,
                                topic_ids)
        reason = backlog_is_due(backlog, min_records, max_age)
        if reason:
            log.info("Backlog due at once: %s", reason)
            return {"records": backlog.records, "reason": reason}
        self.defer(
            trigger=KafkaBacklogTrigger(
                kafka_conn_id=self.kafka_conn_id, topics=list(selection.entries),
                exclude_topics=list(selection.exclude_entries), topic_ids=topic_ids,
                checkpoints=checkpoints_to_json(checkpoints),
                isolation_level=self.isolation_level, min_records=min_records, max_age_s=max_age,
                poll_interval_s=float(self.poke_interval),
            ),
            method_name="execute_complete",
            timeout=self.execution_timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "success":
            raise KafkaBackupError(f"Measuring the Kafka backlog failed: {event.get('message')}")
        log.info("Backlog due: %s", event["reason"])
        return {"records": event["records"], "reason": event["reason"]}
