"""One backup prefix as the page and the JSON API show it: S3's coverage plus what Airflow knows about it.

The coverage (from the manifests) is cached; the lag against the RPO is judged at each request,
so the colour moves with the clock even while the S3 data is served from the cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_kafka_backup.engine.coverage import BackupCoverage
from airflow_kafka_backup.ui.locations import BackupLocation
from airflow_kafka_backup.ui.rpo import CommitMeasurement, topic_rpo, worst


def backup_overview(location: BackupLocation, coverage: BackupCoverage | None, fetched_ms: int | None,
                    now_ms: int, measurement: CommitMeasurement | None = None,
                    last_verify: Mapping[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
    """The JSON of one location. ``error``: why S3 could not be read (a message naming the problem, no secret)."""
    rpo_s = location.rpo
    body: dict[str, Any] = {
        "bucket": location.bucket, "prefix": location.prefix, "dag_ids": sorted(location.dag_ids),
        "rpo_seconds": rpo_s, "fetched_ms": fetched_ms,
        "fetched_age_s": None if fetched_ms is None else round((now_ms - fetched_ms) / 1000, 3),
        "error": error, "last_verify": dict(last_verify) if last_verify else None,
        "last_commit_ms": None, "last_commit_age_s": None, "coverage": None,
        "rpo": {"status": "unknown" if rpo_s is not None else "none", "topics": {}},
    }
    if coverage is None:
        return body
    body["coverage"] = coverage.to_dict()
    last = coverage.last_commit_ms
    body["last_commit_ms"] = last
    body["last_commit_age_s"] = None if last is None else round((now_ms - last) / 1000, 3)
    topics = {}
    for topic, incarnations in sorted(coverage.topics.items()):
        if incarnations and incarnations[-1].gone:
            continue  # gone from the cluster: nothing more to back up, so no lag
        topics[topic] = topic_rpo(topic, rpo_s, now_ms, last, measurement).to_dict()
    body["rpo"] = {"status": worst(t["status"] for t in topics.values()) if topics else body["rpo"]["status"],
                   "topics": topics}
    return body
