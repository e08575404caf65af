"""The "Kafka backups" page: server-rendered HTML with the inline SVG timeline, no script and no build step.

Rendered from the same JSON the API serves (a list of :func:`~airflow_kafka_backup.ui.overview.backup_overview`),
so what the page says and what a script reads are one thing. Every value is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from airflow_kafka_backup.ui.timeline import STATUS_COLOURS, _time, axis_for, axis_svg, topic_rows

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#212121;font-size:14px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px} h3{font-size:14px;margin:12px 0 4px}
.freshness,.muted{color:#616161;font-size:12px} table{border-collapse:collapse;margin:4px 0}
th,td{border-bottom:1px solid #e0e0e0;padding:3px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.pill{display:inline-block;border-radius:10px;padding:1px 9px;color:#fff;font-weight:600;font-size:12px}
.backup{border:1px solid #cfd8dc;border-radius:6px;padding:10px 14px;margin:14px 0}
.error{color:#b71c1c;font-weight:600} details.topic{margin:2px 0} details.topic>summary{cursor:pointer;list-style:none}
details.topic>summary::-webkit-details-marker{display:none} details.topic>summary .lbl:before{content:'▸ '}
details.topic[open]>summary .lbl:before{content:'▾ '}
.legend span{margin-right:14px;font-size:12px} .sw{display:inline-block;width:12px;height:10px;margin-right:4px}
.prow{display:flex;align-items:center;gap:8px} .prow .lbl{width:160px;font-size:12px;text-align:right}
"""


def _pill(status: str, text: str, css: str = "rpo-status") -> str:
    return (f'<span class="pill {css} rpo-{escape(status)}" data-status="{escape(status)}" '
            f'style="background:{STATUS_COLOURS.get(status, "#757575")}">{escape(text)}</span>')


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _verify(verify: Mapping[str, Any] | None) -> str:
    if not verify:
        return '<span class="muted last-verify" data-state="none">never run</span>'
    state = str(verify.get("state"))
    colour = {"success": "green", "failed": "red"}.get(state, "unknown")
    detail = f" ({verify['problems']} problems)" if verify.get("problems") else ""
    return (f'{_pill(colour, state, "last-verify")} <span class="muted">{escape(verify.get("dag_id", ""))} / '
            f'{escape(str(verify.get("run_id", "")))}, {escape(_time(verify.get("finished_ms")))}{escape(detail)}'
            "</span>")


def _topics_table(topics: Mapping[str, Sequence[Mapping[str, Any]]], rpo: Mapping[str, Any]) -> str:
    """Every topic incarnation's totals, always in view (the timeline below opens to its partitions)."""
    rows = []
    for topic, incarnations in topics.items():
        topic_rpo = rpo["topics"].get(topic)
        for n, i in enumerate(incarnations):
            offsets = sum((p["end_offset"] or 0) - (p["start_offset"] or 0) - p["lost_offsets"]
                          for p in i["by_partition"] if p["start_offset"] is not None)
            latest = n == len(incarnations) - 1
            lag = (f'{escape(_age(topic_rpo["lag_s"]))} {_pill(topic_rpo["status"], topic_rpo["status"], "topic-rpo")}'
                   if topic_rpo and latest else "-")
            rows.append(
                f'<tr class="incarnation" data-topic="{escape(topic)}" data-topic-id="{escape(str(i["topic_id"]))}">'
                f'<td>{escape(topic)}</td>'
                f'<td>{escape(i["topic_id"] or "(before topic IDs)")}{" (gone)" if i["gone"] else ""}</td>'
                f'<td class="n partitions">{i["partitions"]}</td><td class="n offsets">{_num(offsets)}</td>'
                f'<td>{escape(_time(i["min_timestamp"]))} .. {escape(_time(i["max_timestamp"]))}</td>'
                f'<td class="n records">{_num(i["records"])}</td><td class="n segments">{_num(i["segments"])}</td>'
                f'<td class="n bytes" data-bytes="{i["bytes"]}">{_bytes(i["bytes"])}</td>'
                f'<td class="n lost">{_num(i["lost_offsets"])}</td><td class="lag">{lag}</td></tr>')
    return ('<table class="topics"><tr><th>topic</th><th>topic ID</th><th class="n">partitions</th>'
            '<th class="n">offsets</th><th>record times</th><th class="n">records</th><th class="n">segments</th>'
            '<th class="n">bytes</th><th class="n">lost (gaps)</th><th>lag vs RPO</th></tr>' + "".join(rows)
            + "</table>")


def _partition_table(topic: str, incarnations: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for i in incarnations:
        for p in i["by_partition"]:
            gaps = ", ".join(f"{g['start_offset']}..{g['end_offset'] - 1}" for g in p["gaps"]) or "-"
            problems = "".join(f'<div class="error">{escape(x)}</div>' for x in p["problems"])
            rows.append(
                f'<tr class="partition" data-topic="{escape(topic)}" data-partition="{p["partition"]}">'
                f'<td>{p["partition"]}</td><td class="n">{_num(p["start_offset"])}</td>'
                f'<td class="n">{_num(p["end_offset"])}</td>'
                f'<td>{escape(_time(p["min_timestamp"]))} .. {escape(_time(p["max_timestamp"]))}</td>'
                f'<td class="n records">{_num(p["records"])}</td><td class="n">{_num(p["segments"])}</td>'
                f'<td class="n">{_bytes(p["bytes"])}</td><td class="gaps">{escape(gaps)}{problems}</td></tr>')
    return ('<table class="partitions"><tr><th>partition</th><th class="n">first offset</th><th class="n">end offset'
            '</th><th>record times</th><th class="n">records</th><th class="n">segments</th><th class="n">bytes</th>'
            '<th>gaps (offsets lost)</th></tr>' + "".join(rows) + "</table>")


def _restores(restores: Sequence[Mapping[str, Any]]) -> str:
    if not restores:
        return '<p class="muted restores-none">No verified restore from this backup.</p>'
    rows = []
    for r in restores:
        mapping = ", ".join(f"{s} → {t}" for s, t in r["topic_mapping"].items())
        rows.append(f'<tr class="restore" data-restore-id="{escape(r["restore_id"])}">'
                    f'<td>{escape(r["restore_id"])}</td><td>{escape(_time(r["finished_ms"]))}</td>'
                    f'<td>{escape(_time(r["from_timestamp"]) if r["from_timestamp"] else "-")} .. '
                    f'{escape(_time(r["until_timestamp"]) if r["until_timestamp"] else "end")}</td>'
                    f'<td>{escape(mapping)}</td>'
                    f'<td class="n records">{_num(sum(r["records_restored"].values()))}</td></tr>')
    return ('<table class="restores"><tr><th>restore</th><th>verified at</th><th>record times</th><th>topics</th>'
            '<th class="n">records</th></tr>' + "".join(rows) + "</table>")


def _backup(overview: Mapping[str, Any], now_ms: int) -> str:
    where = f"s3://{overview['bucket']}/{overview['prefix']}"
    rpo = overview["rpo"]
    rpo_text = (f"RPO {overview['rpo_seconds']:.0f} s: {rpo['status']}" if overview["rpo_seconds"]
                else "no RPO set")
    head = (f'<section class="backup" data-bucket="{escape(overview["bucket"])}" '
            f'data-prefix="{escape(overview["prefix"])}"><h2>{escape(where)}</h2>'
            f'<div class="muted">written by {escape(", ".join(overview["dag_ids"]))}</div>'
            '<table class="facts">'
            f'<tr><th>last commit</th><td class="last-commit" data-ms="{overview["last_commit_ms"] or ""}">'
            f'{escape(_time(overview["last_commit_ms"]))} ({escape(_age(overview["last_commit_age_s"]))} ago)</td></tr>'
            f'<tr><th>lag vs RPO</th><td>{_pill(rpo["status"], rpo_text)}</td></tr>'
            f'<tr><th>last verify</th><td>{_verify(overview["last_verify"])}</td></tr></table>')
    if overview["error"]:
        return head + f'<p class="error">{escape(overview["error"])}</p></section>'
    coverage = overview["coverage"]
    axis = axis_for(overview, now_ms)
    parts = [head, f'<h3>Topics ({len(coverage["topics"])}, {coverage["manifests"]} committed runs)</h3>',
             '<div class="legend">'
             '<span><i class="sw" style="background:#1565c0"></i>backed up</span>'
             '<span><i class="sw" style="background:#d50000"></i>gap (records lost)</span>'
             '<span><i class="sw" style="background:#6a1b9a"></i>restore</span>'
             '<span>▏ now, ┆ now − RPO, tint: lag</span></div>',
             f'<div class="prow"><span class="lbl"></span>{axis_svg(axis)}</div>']
    if not coverage["topics"]:
        parts.append('<p class="muted">No committed backup run yet.</p>')
    else:
        parts.insert(2, _topics_table(coverage["topics"], rpo))
        parts.insert(3, '<h3>Coverage timeline <span class="muted">(click a topic for its partitions)</span></h3>')
    for topic, incarnations in coverage["topics"].items():
        topic_rpo = rpo["topics"].get(topic)
        row, partition_rows = topic_rows(axis, topic, incarnations, coverage["restores"], now_ms, topic_rpo,
                                         overview["rpo_seconds"])
        parts.append(
            f'<details class="topic" data-topic="{escape(topic)}"><summary><div class="prow">'
            f'<span class="lbl"><b>{escape(topic)}</b></span>{row}</div></summary>'
            + "".join(f'<div class="prow"><span class="lbl">{escape(label)}</span>{svg}</div>'
                      for label, svg in partition_rows)
            + _partition_table(topic, incarnations) + "</details>")
    parts.append("<h3>Restores</h3>" + _restores(coverage["restores"]))
    for problem in coverage["problems"]:
        parts.append(f'<p class="error">{escape(problem)}</p>')
    return "".join(parts) + "</section>"


def render_page(overviews: Sequence[Mapping[str, Any]], now_ms: int, ttl_s: float, api_path: str = "api/backups"
                ) -> str:
    """The whole page. ``overviews``: the locations this user may see."""
    fetched = [o["fetched_ms"] for o in overviews if o["fetched_ms"] is not None]
    oldest = min(fetched, default=None)
    freshness = (f"S3 data read {escape(_age((now_ms - oldest) / 1000))} ago (at {escape(_time(oldest))}; kept "
                 f"{ttl_s:.0f} s). " if oldest is not None else "")
    body = "".join(_backup(o, now_ms) for o in overviews) or (
        '<p class="muted none">No backup DAG that you may read writes to a bucket this Airflow knows of.</p>')
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Kafka backups</title>"
            f"<style>{CSS}</style></head><body><h1>Kafka backups</h1>"
            f'<div class="freshness" data-oldest-fetch-ms="{oldest or ""}" data-now-ms="{now_ms}">{freshness}'
            f'Page at {escape(_time(now_ms))}. <a href="?refresh=1">Read S3 again</a> · '
            f'<a href="{escape(api_path)}">JSON</a></div>' + body + "</body></html>")
