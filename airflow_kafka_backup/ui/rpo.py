"""The lag of a backup against its RPO, as green, amber or red.

The lag of a topic is the age of its oldest record not yet in a committed backup. The commit
task measures it right after each commit (its XCom ``lag``: records waiting and the oldest's
timestamp); records produced after that measurement are newer than it. So, judged now:

- the commit measured records waiting: the lag is the age of the oldest of them;
- it measured none: the lag is at most the age of the measurement (the commit);
- no measurement (another Airflow committed last, or the commit could not reach Kafka): the
  age of the last commit, the best S3 alone can say.

Green while the lag is within :data:`AMBER_FRACTION` of the RPO, amber up to the RPO, red past it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

AMBER_FRACTION = 0.75
STATUSES = ("green", "amber", "red", "unknown", "none")  # none: the DAG sets no RPO
_SEVERITY = {"none": 0, "green": 1, "unknown": 2, "amber": 3, "red": 4}


def rpo_status(lag_s: float | None, rpo_s: float | None) -> str:
    if rpo_s is None:
        return "none"
    if lag_s is None:
        return "unknown"
    if lag_s > rpo_s:
        return "red"
    if lag_s > AMBER_FRACTION * rpo_s:
        return "amber"
    return "green"


def worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=_SEVERITY.__getitem__, default="none")


@dataclass(frozen=True)
class TopicRpo:
    topic: str
    recovery_point_ms: int | None  # everything older is backed up
    lag_s: float | None
    status: str
    source: str  # "measured": the commit's lag measurement; "commit_time": the last commit's time only
    records_waiting: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CommitMeasurement:
    """The last commit task's XCom: when it ran, and per topic ``{"records", "oldest_timestamp_ms"}``."""

    measured_ms: int
    lag: Mapping[str, Mapping[str, Any]] | None


def topic_rpo(topic: str, rpo_s: float | None, now_ms: int, last_commit_ms: int | None,
              measurement: CommitMeasurement | None) -> TopicRpo:
    """One topic's lag and status now (see the module docstring)."""
    # A measurement older than the last commit in S3 describes a state that commit has moved past.
    usable = measurement is not None and measurement.lag is not None and (
        last_commit_ms is None or measurement.measured_ms >= last_commit_ms)
    entry = measurement.lag.get(topic) if usable else None  # type: ignore[union-attr]
    if entry is not None:
        waiting = int(entry.get("records") or 0)
        oldest = entry.get("oldest_timestamp_ms")
        point = int(oldest) if waiting and oldest is not None else measurement.measured_ms  # type: ignore[union-attr]
        source = "measured"
    else:
        waiting, point, source = None, last_commit_ms, "commit_time"
    lag_s = None if point is None else max(0.0, (now_ms - point) / 1000)
    return TopicRpo(topic, point, None if lag_s is None else round(lag_s, 3), rpo_status(lag_s, rpo_s), source,
                    waiting)
