"""The restore plan as a person reads it before approving: Markdown, built from the plan alone.

The approval step shows it (Airflow's human-in-the-loop body is Markdown), the dry run logs the
same text, and nothing here talks to Kafka or S3: the plan task gathers the facts (which targets
exist and how many records they hold, which groups move) and hands them in. An operator in an
incident decides on this page, so it says what will be written where, how much, from which
point in time and incarnation, what happens to targets that already hold records, and how long
it should take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from airflow_kafka_backup.engine.restore.planning import RestorePlan

# One restore task produced 108k-246k records/s on the 2-core benchmark machine (docs/benchmarks.md);
# the estimate takes about the low end, so it errs long rather than short.
ESTIMATED_RECORDS_PER_S_PER_TASK = 100_000


@dataclass(frozen=True)
class ReportFacts:
    """What the plan task learned beyond the plan: the targets' state and the choices made."""

    bucket: str
    prefix: str
    new_topics: Sequence[str]  # targets the restore creates after approval
    target_records: Mapping[str, int]  # existing target -> records it holds now
    if_target_not_empty: str
    decision: str  # TargetDecision.summary: which case applies
    groups: Mapping[str, str] = field(default_factory=dict)  # source group -> target group, when moved
    restore_consumer_groups: bool = False
    work_units: int = 1  # parallel restore tasks
    dry_run: bool = False


def restore_report(plan: RestorePlan, facts: ReportFacts) -> str:
    """The Markdown report of ``plan``: header, per-topic table, consumer groups, estimated duration."""
    by_topic = _topic_totals(plan)
    records = sum(t["records"] for t in by_topic.values())
    size = sum(t["bytes"] for t in by_topic.values())
    partitions = sum(t["partitions"] for t in by_topic.values())
    lines = []
    if facts.dry_run:
        lines += ["**DRY RUN: nothing will be created or written.** This is the report the approval step would show.",
                  ""]
    lines += [
        f"### Restore {len(by_topic)} topic(s): {partitions} partitions, at most {records:,} records, "
        f"{_size(size)}",
        "",
        f"- **Backup:** `s3://{facts.bucket}/{facts.prefix}`" if facts.prefix else
        f"- **Backup:** `s3://{facts.bucket}` (bucket root)",
        f"- **Time window:** {_window(plan)}",
        f"- **Targets that hold records** (if_target_not_empty = `{facts.if_target_not_empty}`): {facts.decision}",
        "",
        "| Source topic | Target topic | Target now | Partitions | Records (at most) | Size in S3 | Incarnation |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for source, totals in sorted(by_topic.items()):
        target = plan.topic_mapping.get(source, source)
        incarnation = _incarnation(plan.incarnations.get(source))
        lines.append(f"| {source} | {target} | {_target_state(target, facts)} | {totals['partitions']} | "
                     f"{totals['records']:,} | {_size(totals['bytes'])} | {incarnation} |")
    lines += ["", "Records are counted from whole segments: a time window or offset bounds restore fewer.", ""]
    lines += _groups_section(plan, facts)
    lines += ["", f"**Estimated duration:** {_estimate(records, facts.work_units, partitions)}"]
    if not facts.dry_run:
        lines += ["", "**Approve** to create the new topics and restore; **Reject** ends the run with nothing "
                      "created or written."]
    return "\n".join(lines) + "\n"


def _topic_totals(plan: RestorePlan) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {t: {"partitions": 0, "records": 0, "bytes": 0} for t in plan.partition_counts}
    for p in plan.partitions:
        row = totals.setdefault(p.source_topic, {"partitions": 0, "records": 0, "bytes": 0})
        row["partitions"] += 1
        row["records"] += p.upper_bound_records
        row["bytes"] += sum(s.bytes for s in p.segments)
    return totals


def _target_state(target: str, facts: ReportFacts) -> str:
    if target in facts.new_topics:
        return "new (created after approval)"
    held = facts.target_records.get(target, 0)
    return f"existing, {held:,} records" if held else "existing, empty"


def _window(plan: RestorePlan) -> str:
    first = plan.partitions[0] if plan.partitions else None
    since = first.from_timestamp if first else None
    until = first.until_timestamp if first else None
    if since is None and until is None:
        return "everything in the backup (no time window)"
    parts = []
    if since is not None:
        parts.append(f"from {_time(since)}")
    parts.append(f"until {_time(until)} (exclusive, the point in time)" if until is not None else "to the end")
    return " ".join(parts)


def _incarnation(incarnation: Mapping | None) -> str:
    if not incarnation:
        return "-"
    topic_id = incarnation.get("topic_id") or "recorded before topic IDs"
    text = f"{incarnation.get('number', 1)} of {incarnation.get('of', 1)}, id `{topic_id}`"
    if incarnation.get("min_timestamp") is not None:
        text += f", records {_time(incarnation['min_timestamp'])} to {_time(incarnation['max_timestamp'])}"
    return text


def _groups_section(plan: RestorePlan, facts: ReportFacts) -> list[str]:
    recorded = sorted(plan.group_offsets)
    if not facts.restore_consumer_groups:
        if recorded:
            return [f"**Consumer groups:** none moved (restore_consumer_groups is off); the backup recorded "
                    f"{len(recorded)}: {', '.join(recorded)}."]
        return ["**Consumer groups:** none moved (restore_consumer_groups is off)."]
    if not facts.groups:
        return ["**Consumer groups:** the backup recorded none for these topics; none moved."]
    lines = ["**Consumer groups to move** (after the restore is verified; each resumes at the first restored "
             "record at or after the offset it had committed):", "",
             "| Group | Target group | Target topic | Partition | Source offset | Target offset |",
             "|---|---|---|---:|---:|---|"]
    for group, target_group in sorted(facts.groups.items()):
        for topic, offsets in sorted(plan.group_offsets.get(group, {}).items()):
            if topic not in plan.topic_mapping:
                continue
            for partition, offset in sorted(offsets.items(), key=lambda kv: int(kv[0])):
                lines.append(f"| {group} | {target_group} | {plan.topic_mapping[topic]} | {partition} | {offset:,} | "
                             "first restored record at or after the source offset |")
    return lines


def _estimate(records: int, work_units: int, partitions: int) -> str:
    tasks = max(1, min(work_units, partitions or 1))
    seconds = records / (ESTIMATED_RECORDS_PER_S_PER_TASK * tasks)
    span = "under a minute" if seconds < 60 else f"about {_duration(seconds)}"
    return (f"{span} of producing ({tasks} parallel task(s) at about {ESTIMATED_RECORDS_PER_S_PER_TASK:,} records/s "
            "each, the low end of the benchmarks), plus task start-up; a slower broker or network takes longer.")


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes / 60:.1f} h"


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} bytes"
