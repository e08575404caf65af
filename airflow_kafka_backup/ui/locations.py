"""Which backups this Airflow knows: the (bucket, prefix) its backup DAGs write to.

A backup DAG's Params name the bucket and prefix by default; a run's conf may name others
(``airflow dags trigger kafka_backup -c '{"bucket": ...}'``). Each location lists the DAGs that
write to it, so the page shows a location only to users who may read one of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.settings import clean_prefix

# The operator class only a backup DAG has (see dag_factories.backup_dag).
BACKUP_DAG_MARKER = "KafkaBackupCommitOperator"
# The Params that say where a backup lives and how to read it; no other value leaves this module.
LOCATION_PARAMS = ("bucket", "prefix", "aws_conn_id", "sse_customer_key_variable", "rpo_seconds")


@dataclass
class BackupLocation:
    bucket: str
    prefix: str
    aws_conn_id: str = "aws_default"
    sse_customer_key_variable: str | None = None  # the Variable's name; the key is read only to read manifests
    dag_ids: set[str] = field(default_factory=set)
    rpo_seconds: dict[str, float | None] = field(default_factory=dict)  # per DAG

    @property
    def key(self) -> tuple[str, str]:
        return (self.bucket, self.prefix)

    @property
    def rpo(self) -> float | None:
        """The strictest RPO any of its DAGs sets."""
        return min((r for r in self.rpo_seconds.values() if r is not None), default=None)


def _rpo(value: Any) -> float | None:
    try:
        rpo = None if value in (None, "", "None") else float(value)
    except (TypeError, ValueError):
        return None
    return rpo if rpo is not None and rpo > 0 else None


def location_key(defaults: Mapping[str, Any], conf: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """``(bucket, prefix)`` a run with ``conf`` writes to (its Params' ``defaults`` overlaid), or None when it
    names no bucket or a prefix the run would refuse."""
    conf = conf or {}
    bucket = conf.get("bucket", defaults.get("bucket"))
    prefix = conf.get("prefix", defaults.get("prefix"))
    if not bucket or not isinstance(bucket, str | int) or isinstance(bucket, bool):
        return None
    try:
        return str(bucket), clean_prefix("kafka-backup" if prefix is None else str(prefix))
    except ConfigurationError:
        return None


def locations_of(dags: Iterable[tuple[str, Mapping[str, Any], Iterable[Mapping[str, Any] | None]]]
                 ) -> list[BackupLocation]:
    """``dags``: per backup DAG, its id, its Params' defaults and the conf of its recent runs.

    A run's conf is laid over the defaults, as the run itself renders its Params. Values that
    cannot be a location (no bucket, a bad prefix) are left out.
    """
    found: dict[tuple[str, str], BackupLocation] = {}
    for dag_id, defaults, confs in dags:
        for conf in [{}, *(c or {} for c in confs)]:
            key = location_key(defaults, conf)
            if key is None:
                continue
            values = {name: conf.get(name, defaults.get(name)) for name in LOCATION_PARAMS}
            location = found.setdefault(key, BackupLocation(
                *key, str(values["aws_conn_id"] or "aws_default"), values["sse_customer_key_variable"] or None))
            location.dag_ids.add(dag_id)
            location.rpo_seconds.setdefault(dag_id, _rpo(values["rpo_seconds"]))
    return sorted(found.values(), key=lambda loc: loc.key)


def visible(locations: Iterable[BackupLocation], readable_dag_ids: set[str]) -> list[BackupLocation]:
    """The locations a user may see: those written by a DAG they may read (only those DAGs are named)."""
    out = []
    for location in locations:
        dags = location.dag_ids & readable_dag_ids
        if dags:
            out.append(BackupLocation(location.bucket, location.prefix, location.aws_conn_id,
                                      location.sse_customer_key_variable, dags,
                                      {d: r for d, r in location.rpo_seconds.items() if d in dags}))
    return out
