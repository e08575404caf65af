"""The drill report: the evidence an auditor asks for, one JSON object per drill, kept in the bucket.

    <prefix>/_drills/<started, UTC, YYYYmmddTHHMMSSZ>-<drill id>.json

Keys sort by start time, so the newest report is listed last. The report says what was
drilled (topics, partitions, source offsets, scratch topics, clusters), the record counts
and digests of both sides, the consumer-group checks, the result (and, on failure, the
partition and first differing offset), the duration, the measured throughput and projected
RTO, what was cleaned up, and the versions of the tools. It holds no record bytes and no secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from airflow_kafka_backup.engine.storage.key_layout import safe_restore_id
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

DRILLS_DIR = "_drills"
PENDING_DIR = "_pending"
REPORT_VERSION = 1


def drills_prefix(prefix: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), DRILLS_DIR) if p) + "/"


def report_key(prefix: str, drill_id: str, started: datetime) -> str:
    return f"{drills_prefix(prefix)}{started.astimezone(UTC):%Y%m%dT%H%M%SZ}-{safe_restore_id(drill_id)}.json"


def pending_key(prefix: str, drill_id: str) -> str:
    return f"{drills_prefix(prefix)}{PENDING_DIR}/{safe_restore_id(drill_id)}.json"


@dataclass
class DrillReport:
    drill_id: str
    started: str  # ISO-8601, UTC
    backup: dict  # {"bucket", "prefix"}
    source_cluster: str
    target_cluster: str
    versions: dict[str, str]
    result: str = "failed"  # "passed" or "failed"
    finished: str | None = None
    duration_seconds: float | None = None
    failure: dict | None = None  # {"partition": "orders[2]", "source_offset": 1234, "reason": ...} or {"error": ...}
    plan: dict = field(default_factory=dict)
    partitions: list[dict] = field(default_factory=list)
    consumer_groups: list[dict] = field(default_factory=list)
    rto: dict | None = None
    cleanup: dict = field(default_factory=dict)
    report_version: int = REPORT_VERSION

    @property
    def passed(self) -> bool:
        return self.result == "passed"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    def summary(self) -> dict:
        """What goes to XCom and the log: the verdict and the figures, not every partition."""
        return {
            "drill_id": self.drill_id, "result": self.result, "failure": self.failure,
            "partitions": len(self.partitions),
            "records_compared": sum(p["source"]["records"] for p in self.partitions),
            "records_restored": sum(p["restored"]["records"] for p in self.partitions),
            "groups_checked": len(self.consumer_groups),
            "duration_seconds": self.duration_seconds,
            "projected_rto_seconds": (self.rto or {}).get("projected_seconds"),
            "records_per_second": (self.rto or {}).get("records_per_second"),
            "cleanup_problems": self.cleanup.get("problems", []),
        }


def write_report(store: S3ObjectStore, prefix: str, report: DrillReport) -> str:
    key = report_key(prefix, report.drill_id, datetime.fromisoformat(report.started))
    store.put_bytes(key, report.to_json())
    return key


def list_reports(store: S3ObjectStore, prefix: str) -> Iterator[tuple[str, dict]]:
    """Every drill report under the prefix, oldest first: (key, report as JSON)."""
    pending = drills_prefix(prefix) + PENDING_DIR + "/"
    for key in sorted(store.list_keys(drills_prefix(prefix))):
        if key.startswith(pending) or not key.endswith(".json"):
            continue
        yield key, json.loads(store.get_bytes(key))
