"""The coverage timeline: one row per topic (and per partition), time running across, as inline SVG.

Backed-up spans are blue bars from their first to their last record's timestamp; a recorded
gap (records retention deleted before they were backed up) is a red bar between the records
either side of it; a restore is a purple mark at the point in time it restored to (or when it
ran); the "now" line is at the right, the RPO line (now minus the RPO) dashed before it, and
the stretch from the recovery point to now is tinted green, amber or red.

Works on the JSON the API serves (:func:`~airflow_kafka_backup.ui.overview.backup_overview`), so
the picture and the numbers come from one source. Every mark carries ``data-*`` attributes with
the times and offsets it stands for, which the browser test checks against the backup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Any

WIDTH = 900
ROW_HEIGHT = 22
STATUS_COLOURS = {"green": "#2e7d32", "amber": "#ef8f00", "red": "#c62828", "unknown": "#757575", "none": "#9e9e9e"}
SPAN_COLOUR, GAP_COLOUR, RESTORE_COLOUR = "#1565c0", "#d50000", "#6a1b9a"
MIN_MARK_PX = 3.0


@dataclass(frozen=True)
class Axis:
    """Maps epoch milliseconds to x pixels: ``t0_ms`` at 0, ``t1_ms`` at ``width``."""

    t0_ms: int
    t1_ms: int
    width: int = WIDTH

    def x(self, t_ms: float) -> float:
        span = max(1, self.t1_ms - self.t0_ms)
        return round(min(max((t_ms - self.t0_ms) / span, 0.0), 1.0) * self.width, 2)

    def attributes(self) -> str:
        return f'data-t0-ms="{self.t0_ms}" data-t1-ms="{self.t1_ms}" data-width="{self.width}"'


def axis_for(overview: Mapping[str, Any], now_ms: int) -> Axis:
    """From the oldest record (or restore point, or RPO line) to now, with a margin after now."""
    times = [now_ms]
    for incarnations in (overview.get("coverage") or {}).get("topics", {}).values():
        times += [i["min_timestamp"] for i in incarnations if i["min_timestamp"] is not None]
    times += [p for r in (overview.get("coverage") or {}).get("restores", ()) for p in [_restore_point(r)] if p]
    times += [t["recovery_point_ms"] for t in overview.get("rpo", {}).get("topics", {}).values()
              if t.get("recovery_point_ms") is not None]
    if overview.get("rpo_seconds"):
        times.append(now_ms - int(overview["rpo_seconds"] * 1000))
    t0 = min(times)
    if t0 >= now_ms:
        t0 = now_ms - 60_000
    return Axis(t0, now_ms + max(1000, (now_ms - t0) // 40))


def _restore_point(restore: Mapping[str, Any]) -> int | None:
    return restore.get("until_timestamp") or restore.get("finished_ms")


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bar(axis: Axis, start_ms: int, end_ms: int, y: float, height: float, colour: str, css: str, title: str,
         data: Mapping[str, Any]) -> str:
    x0, x1 = axis.x(start_ms), axis.x(end_ms)
    width = max(MIN_MARK_PX, x1 - x0)
    attrs = " ".join(f'data-{k}="{escape(str(v))}"' for k, v in data.items())
    return (f'<rect class="{css}" x="{x0}" y="{y}" width="{round(width, 2)}" height="{height}" fill="{colour}" '
            f'{attrs}><title>{escape(title)}</title></rect>')


def row_svg(axis: Axis, label: str, spans: Sequence[Mapping[str, Any]], gaps: Sequence[Mapping[str, Any]],
            restores: Sequence[Mapping[str, Any]], now_ms: int, rpo: Mapping[str, Any] | None,
            rpo_seconds: float | None, attributes: Mapping[str, Any]) -> str:
    """One row: ``spans`` ({start_ms, end_ms, ...}), ``gaps`` (coverage gaps with their partition), restores."""
    h = ROW_HEIGHT
    parts = [f'<rect class="track" x="0" y="2" width="{axis.width}" height="{h - 4}" fill="#eceff1"/>']
    if rpo is not None and rpo.get("recovery_point_ms") is not None:
        parts.append(_bar(axis, rpo["recovery_point_ms"], now_ms, 0, h, STATUS_COLOURS[rpo["status"]], "lag",
                          f"lag {rpo['lag_s']:.0f}s, RPO {rpo['status']}",
                          {"status": rpo["status"], "start-ms": rpo["recovery_point_ms"], "end-ms": now_ms})
                     .replace("<rect ", '<rect opacity="0.3" ', 1))
    for s in spans:
        parts.append(_bar(axis, s["start_ms"], s["end_ms"], 4, h - 8, SPAN_COLOUR, "span",
                          f"backed up: {_time(s['start_ms'])} .. {_time(s['end_ms'])}",
                          {"start-ms": s["start_ms"], "end-ms": s["end_ms"]}))
    for g in gaps:
        start = g["after_timestamp"] if g["after_timestamp"] is not None else g["before_timestamp"]
        end = g["before_timestamp"] if g["before_timestamp"] is not None else g["after_timestamp"]
        if start is None or end is None:
            continue  # a gap with no backed-up record either side has no place in time
        parts.append(_bar(axis, start, end, 1, h - 2, GAP_COLOUR, "gap",
                          f"gap: partition {g['partition']} offsets {g['start_offset']}..{g['end_offset'] - 1} "
                          f"lost ({g['offsets']} records), between {_time(start)} and {_time(end)}",
                          {"partition": g["partition"], "start-offset": g["start_offset"],
                           "end-offset": g["end_offset"], "start-ms": start, "end-ms": end}))
    for r in restores:
        point = _restore_point(r)
        if point is None:
            continue
        x = axis.x(point)
        what = "restored up to" if r.get("until_timestamp") else "restored (all of the backup) at"
        parts.append(f'<path class="restore" d="M{x - 5},0 L{x + 5},0 L{x},8 Z M{x},0 L{x},{h}" '
                     f'stroke="{RESTORE_COLOUR}" fill="{RESTORE_COLOUR}" data-restore-id="{escape(r["restore_id"])}" '
                     f'data-at-ms="{point}"><title>{escape(r["restore_id"])}: {what} {_time(point)}</title></path>')
    if rpo_seconds:
        x = axis.x(now_ms - rpo_seconds * 1000)
        parts.append(f'<line class="rpo-line" x1="{x}" y1="0" x2="{x}" y2="{h}" stroke="#424242" '
                     f'stroke-dasharray="3,2" data-at-ms="{int(now_ms - rpo_seconds * 1000)}">'
                     f'<title>now - RPO ({rpo_seconds:.0f}s)</title></line>')
    x_now = axis.x(now_ms)
    parts.append(f'<line class="now-line" x1="{x_now}" y1="0" x2="{x_now}" y2="{h}" stroke="#000" stroke-width="2" '
                 f'data-at-ms="{now_ms}"><title>now: {_time(now_ms)}</title></line>')
    attrs = " ".join(f'data-{k}="{escape(str(v))}"' for k, v in attributes.items())
    return (f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{axis.width}" height="{h}" '
            f'viewBox="0 0 {axis.width} {h}" role="img" aria-label="{escape(label)}" {axis.attributes()} {attrs}>'
            + "".join(parts) + "</svg>")


def axis_svg(axis: Axis, ticks: int = 5) -> str:
    labels = []
    for i in range(ticks + 1):
        t = axis.t0_ms + (axis.t1_ms - axis.t0_ms) * i // ticks
        anchor = "start" if i == 0 else "end" if i == ticks else "middle"
        labels.append(f'<text x="{axis.x(t)}" y="12" font-size="10" text-anchor="{anchor}">'
                      f'{escape(_time(t).removesuffix(" UTC"))}</text>')
    return (f'<svg class="axis" width="{axis.width}" height="16" viewBox="0 0 {axis.width} 16" '
            f'{axis.attributes()}>' + "".join(labels) + "</svg>")


def partition_spans(partition: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"start_ms": s["min_timestamp"], "end_ms": s["max_timestamp"], "start_offset": s["start_offset"],
             "end_offset": s["end_offset"]} for s in partition["spans"] if s["min_timestamp"] is not None]


def topic_rows(axis: Axis, topic: str, incarnations: Sequence[Mapping[str, Any]],
               restores: Sequence[Mapping[str, Any]], now_ms: int, rpo: Mapping[str, Any] | None,
               rpo_seconds: float | None) -> tuple[str, list[tuple[str, str]]]:
    """The topic's row (every partition's spans merged, every gap) and one row per partition."""
    partitions = [(i, p) for i in incarnations for p in i["by_partition"]]
    topic_restores = [r for r in restores if topic in r.get("records_restored", {}) or topic in r.get("topic_mapping",
                                                                                                       {})]
    all_gaps = [{**g, "partition": p["partition"]} for _, p in partitions for g in p["gaps"]]
    merged = merge_intervals((s["start_ms"], s["end_ms"]) for _, p in partitions for s in partition_spans(p))
    row = row_svg(axis, f"{topic}: coverage timeline", [{"start_ms": s, "end_ms": e} for s, e in merged], all_gaps,
                  topic_restores, now_ms, rpo, rpo_seconds, {"topic": topic})
    per_partition = []
    for incarnation, p in partitions:
        label = f"partition {p['partition']}"
        if len(incarnations) > 1:
            label += f" (topic ID {incarnation['topic_id'] or 'before IDs'})"
        per_partition.append((label, row_svg(
            axis, f"{topic} {label}", partition_spans(p), [{**g, "partition": p["partition"]} for g in p["gaps"]],
            topic_restores, now_ms, None, rpo_seconds, {"topic": topic, "partition": p["partition"]})))
    return row, per_partition
