"""The restore drill DAG factory: prove on a schedule that the backups restore (see docs/drills.md).

    from airflow_kafka_backup.dag_factories import restore_drill_dag
    dag = restore_drill_dag("orders_drill", schedule="@weekly", topics=["orders"], bucket="my-backups")

One task, no approval step: it restores the last ``records_per_partition`` records of each
drilled partition (those both backed up and still in Kafka) into scratch topics named
``<scratch_prefix><topic>``, compares every record with the source, checks consumer-group
translation, projects the RTO, deletes what it made (also on failure) and writes its report
under ``<prefix>/_drills/``. It lives in its own module; ``dag_factories`` re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import DAG, Param

from airflow_kafka_backup.dag_factories import PREFIX_HELP, _dag_arguments, _s3_arguments, _validate_defaults, s3_params
from airflow_kafka_backup.engine.drill.planning import (
    DEFAULT_RECORDS_PER_PARTITION,
    DEFAULT_SCRATCH_PREFIX,
    DrillSettings,
)
from airflow_kafka_backup.engine.restore.loop import COMMIT_INTERVAL_S, MAX_COMMIT_INTERVAL_S
from airflow_kafka_backup.engine.settings import ISOLATION_LEVELS
from airflow_kafka_backup.operators.drill import KafkaRestoreDrillOperator


def drill_params(
    *,
    topics: Sequence[str] = ("re:.*",),
    bucket: str | None = None,
    prefix: str = "kafka-backup",
    kafka_conn_id: str = "kafka_default",
    target_kafka_conn_id: str | None = None,
    aws_conn_id: str = "aws_default",
    scratch_prefix: str = DEFAULT_SCRATCH_PREFIX,
    records_per_partition: int = DEFAULT_RECORDS_PER_PARTITION,
    partitions_per_topic: int | None = None,
    isolation_level: str = "read_committed",
    commit_interval_seconds: float = COMMIT_INTERVAL_S,
    **s3_defaults: Any,
) -> dict[str, Param]:
    """The drill DAG's Params; the task validates them all again before anything is written."""
    return {
        "topics": Param(list(topics), type="array", items={"type": "string", "minLength": 1},
                        description="Backed-up topics to drill: names, and 're:<regex>' patterns matched against "
                                    "the topics in the backup ('re:.*': all)."),
        "bucket": Param(bucket, type=["null", "string"], description="S3 bucket holding the backup."),
        "prefix": Param(prefix, type="string", description=PREFIX_HELP),
        "kafka_conn_id": Param(kafka_conn_id, type="string",
                               description="The kafka connection of the source cluster, whose records are compared."),
        "target_kafka_conn_id": Param(target_kafka_conn_id, type=["null", "string"],
                                      description="The kafka connection to restore the scratch topics into "
                                                  "(another cluster); null: the source cluster."),
        "aws_conn_id": Param(aws_conn_id, type="string", description="Airflow connection of type aws."),
        "scratch_prefix": Param(scratch_prefix, type="string", minLength=1,
                                description="Scratch topics and the drill's consumer groups are named "
                                            "<scratch_prefix><name>; they are deleted when the drill ends."),
        "records_per_partition": Param(records_per_partition, type="integer", minimum=1,
                                       description="Restore and compare the last this many offsets of each "
                                                   "drilled partition (those both backed up and still in Kafka)."),
        "partitions_per_topic": Param(partitions_per_topic, type=["null", "integer"], minimum=1,
                                      description="Drill a random sample of this many partitions per topic "
                                                  "(another sample each run); null: every partition."),
        "isolation_level": Param(isolation_level, enum=list(ISOLATION_LEVELS),
                                 description="How the source is read: as the backup read it."),
        "commit_interval_seconds": Param(commit_interval_seconds, type="number", minimum=0,
                                         maximum=MAX_COMMIT_INTERVAL_S,
                                         description="The restore's transaction length (see the restore DAG)."),
        **s3_params(**s3_defaults),
    }


def restore_drill_dag(
    dag_id: str = "kafka_restore_drill",
    *,
    schedule: Any = "@weekly",
    dag_kwargs: dict[str, Any] | None = None,
    **param_defaults: Any,
) -> DAG:
    """Build the drill DAG: one ``drill`` task (:class:`KafkaRestoreDrillOperator`) on ``schedule``.

    ``param_defaults`` are the Params' defaults (see :func:`drill_params`). A drill that finds a
    difference fails the run, naming the partition and the first differing offset.
    """
    params = drill_params(**param_defaults)
    _validate_defaults(params)
    values = {name: p.value for name, p in params.items()}
    DrillSettings.create(topics=values["topics"], scratch_prefix=values["scratch_prefix"],
                         records_per_partition=values["records_per_partition"],
                         partitions_per_topic=values["partitions_per_topic"])
    with DAG(
        dag_id,
        schedule=schedule,
        params=params,
        render_template_as_native_obj=True,
        catchup=False,
        max_active_runs=1,  # two drills of one DAG would fight over the same scratch topics
        tags=["kafka", "restore", "drill"],
        doc_md=__doc__,
        **_dag_arguments(dag_kwargs),
    ) as dag:
        KafkaRestoreDrillOperator(
            task_id="drill",
            topics="{{ params.topics }}",
            kafka_conn_id="{{ params.kafka_conn_id }}",
            target_kafka_conn_id="{{ params.target_kafka_conn_id }}",
            scratch_prefix="{{ params.scratch_prefix }}",
            records_per_partition="{{ params.records_per_partition }}",
            partitions_per_topic="{{ params.partitions_per_topic }}",
            isolation_level="{{ params.isolation_level }}",
            commit_interval_seconds="{{ params.commit_interval_seconds }}",
            **_s3_arguments(),
        )
    return dag
