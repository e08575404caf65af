"""The restore drill operator: one task that restores a recent window of the backup into scratch topics,
compares it with the source still in Kafka, projects the RTO, cleans up and writes the report to S3.

The work is the engine's (:mod:`airflow_kafka_backup.engine.drill.run`); this shell builds the
Kafka clients from the ``kafka`` connections, emits the metrics, returns the summary (XCom) and
fails the run, naming the partition and first differing offset, when the drill finds a difference.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from collections.abc import Sequence
from typing import Any

import confluent_kafka
from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook
from airflow.sdk import Context

from airflow_kafka_backup import __version__
from airflow_kafka_backup.compat import AirflowFailException, airflow_version
from airflow_kafka_backup.engine.drill.planning import (
    DEFAULT_RECORDS_PER_PARTITION,
    DEFAULT_SCRATCH_PREFIX,
    DrillSettings,
)
from airflow_kafka_backup.engine.drill.report import DrillReport
from airflow_kafka_backup.engine.drill.run import DrillClients, DrillContext, run_drill
from airflow_kafka_backup.engine.errors import KafkaBackupError
from airflow_kafka_backup.engine.restore.loop import COMMIT_INTERVAL_S, validate_commit_interval
from airflow_kafka_backup.engine.settings import check_isolation_level
from airflow_kafka_backup.hooks.kafka import (
    KafkaGroupConsumerHook,
    KafkaRangeConsumerHook,
    KafkaTransactionalProducerHook,
    first_bootstrap_server,
)
from airflow_kafka_backup.metrics import emit_drill
from airflow_kafka_backup.operators.restore import restore_id_of
from airflow_kafka_backup.operators.s3 import NAME, S3BackupBaseOperator, fail_fast_on_user_errors

log = logging.getLogger(__name__)


def tool_versions() -> dict[str, str]:
    """What the report records about the tools that ran the drill."""
    versions = {"airflow-kafka-backup": __version__, "apache-airflow": airflow_version(),
                "confluent-kafka": confluent_kafka.version()[0], "librdkafka": confluent_kafka.libversion()[0],
                "python": platform.python_version()}
    for dist in ("apache-airflow-providers-apache-kafka", "apache-airflow-providers-amazon"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


class KafkaRestoreDrillOperator(S3BackupBaseOperator):
    """Run a restore drill; returns its summary (also pushed as XCom ``drill_summary``, passed or failed). A drill
    that finds a difference fails the task (no retry), naming the partition and the first differing source
    offset; its report is in S3 either way.

    ``target_kafka_conn_id``: where the scratch topics go (default: ``kafka_conn_id``, the source cluster).
    """

    template_fields: Sequence[str] = (
        *S3BackupBaseOperator.s3_template_fields, "topics", "kafka_conn_id", "target_kafka_conn_id",
        "scratch_prefix", "records_per_partition", "partitions_per_topic", "isolation_level",
        "commit_interval_seconds",
    )
    text_fields = {**S3BackupBaseOperator.text_fields, "target_kafka_conn_id": NAME, "scratch_prefix": NAME}

    def __init__(self, *, topics: Sequence[str] | str, kafka_conn_id: str = "kafka_default",
                 target_kafka_conn_id: str | None = None, scratch_prefix: str = DEFAULT_SCRATCH_PREFIX,
                 records_per_partition: int | str = DEFAULT_RECORDS_PER_PARTITION,
                 partitions_per_topic: int | str | None = None, isolation_level: str = "read_committed",
                 commit_interval_seconds: float | str = COMMIT_INTERVAL_S, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.topics = topics
        self.kafka_conn_id = kafka_conn_id
        self.target_kafka_conn_id = target_kafka_conn_id
        self.scratch_prefix = scratch_prefix
        self.records_per_partition = records_per_partition
        self.partitions_per_topic = partitions_per_topic
        self.isolation_level = isolation_level
        self.commit_interval_seconds = commit_interval_seconds

    @fail_fast_on_user_errors
    def execute(self, context: Context) -> dict:
        settings = DrillSettings.create(topics=self.topics, scratch_prefix=self.scratch_prefix,
                                        records_per_partition=self.records_per_partition,
                                        partitions_per_topic=self.partitions_per_topic)
        isolation = check_isolation_level(self.isolation_level)
        commit_interval_s = validate_commit_interval(self.commit_interval_seconds)
        if not self.bucket:
            raise KafkaBackupError("bucket is required: the S3 bucket holding the backup.")
        self.check_bucket()
        source = self.kafka_conn_id
        target = self.target_kafka_conn_id if self.target_kafka_conn_id not in (None, "", "None") else source
        ctx = DrillContext(restore_id_of(context), target, first_bootstrap_server(source),
                           first_bootstrap_server(target), tool_versions(), isolation, commit_interval_s)
        try:
            report, key = run_drill(self.store, self.key_prefix, settings, self._clients(source, target, isolation),
                                    ctx, check_manifest=lambda m: self.s3_settings.check_can_read(
                                        m.encryption, f"backup run {m.run_id}"))
        except Exception:  # a drill that could not even start (nothing to drill, a foreign scratch topic) failed too
            emit_drill(context["dag"].dag_id, False, None)
            raise
        summary = {**report.summary(), "report": f"s3://{self.bucket}/{key}"}
        emit_drill(context["dag"].dag_id, report.passed, summary["projected_rto_seconds"])
        self._log_summary(report, summary)
        context["ti"].xcom_push(key="drill_summary", value=summary)  # also when the drill failed
        if not report.passed:
            raise self._failure(report, key)
        return summary

    def _clients(self, source: str, target: str, isolation: str) -> DrillClients:
        def new_producer(transactional_id: str, largest: int | None):
            return KafkaTransactionalProducerHook(target, transactional_id=transactional_id,
                                                  largest_record_bytes=largest).get_conn

        return DrillClients(
            source_admin=KafkaAdminClientHook(kafka_config_id=source).get_conn,
            target_admin=KafkaAdminClientHook(kafka_config_id=target).get_conn,
            source_consumer=lambda: KafkaRangeConsumerHook(source, isolation).get_conn,
            target_consumer=lambda: KafkaRangeConsumerHook(target, "read_committed").get_conn,
            new_producer=new_producer,
            group_consumer=lambda group: KafkaGroupConsumerHook(target, group_id=group).get_conn,
            transaction_timeout_s=KafkaTransactionalProducerHook(target, transactional_id="-").transaction_timeout_s(),
        )

    @staticmethod
    def _log_summary(report: DrillReport, summary: dict) -> None:
        rto = summary["projected_rto_seconds"]
        log.info("Restore drill %s: %s. %d partitions, %d records compared, %d restored, %d consumer-group "
                 "checks, %.1f s; projected RTO for the whole backup %s (at %s records/s). Report: %s",
                 report.drill_id, report.result.upper(), summary["partitions"], summary["records_compared"],
                 summary["records_restored"], summary["groups_checked"], summary["duration_seconds"] or 0,
                 "unknown" if rto is None else f"{rto:.1f} s",
                 "?" if summary["records_per_second"] is None else f"{summary['records_per_second']:.0f}",
                 summary["report"])
        for problem in summary["cleanup_problems"]:
            log.warning("Drill cleanup: %s (the next drill on this connection retries it)", problem)

    @staticmethod
    def _failure(report: DrillReport, key: str) -> Exception:
        failure = report.failure or {}
        if "partition" in failure:
            target = f" (target offset {failure['target_offset']})" if failure.get("target_offset") is not None \
                else ""
            return AirflowFailException(
                f"Restore drill failed: {failure['partition']} differs first at source offset "
                f"{failure['source_offset']}{target}: {failure['reason']}. Report: s3://{report.backup['bucket']}/{key}")
        # An error (S3, Kafka, a segment failing its checksum): a retry runs the drill again from scratch.
        return KafkaBackupError(f"Restore drill failed: {failure.get('error')}. Report: "
                                f"s3://{report.backup['bucket']}/{key}")
