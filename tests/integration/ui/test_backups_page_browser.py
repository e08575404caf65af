"""The "Kafka backups" page in a real browser (Debian's Chromium through Playwright), served by a real api-server.

Backups are made by the real scheduler (a run, then one with allow_data_loss after records were
deleted, which records a gap); the page must show the numbers the backup holds, draw the gap where
the recorded gap is (between the records either side of it, also as laid out by the browser), and
turn the RPO colour from green to red once the lag passes the RPO.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid

import pytest

from devstack.airflow_env import REPO, connection_env
from devstack.airflow_services import AirflowServices
from tests.integration.ui.backups_page_data import PARTITIONS, back_up_with_a_gap

pytestmark = pytest.mark.integration

DAG_ID = "kafka_backup_with_rpo"
RPO_S = 60  # long enough to see green after the runs finish on a busy machine, short enough to wait out
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = REPO / "docs" / "kafka-backups-page.png"


def _run(airflow: AirflowServices, conf: dict) -> str:
    run_id = f"page-{uuid.uuid4().hex[:8]}"
    airflow.trigger_run(DAG_ID, run_id, conf)
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=240)
    assert state == "success", airflow.task_log_tails(DAG_ID)
    return state


def _x(svg: dict, t_ms: int) -> float:
    t0, t1, width = int(svg["data-t0-ms"]), int(svg["data-t1-ms"]), int(svg["data-width"])
    return round(min(max((t_ms - t0) / (t1 - t0), 0.0), 1.0) * width, 2)


def test_page_shows_the_backup_its_gap_and_the_rpo_turning_red(airflow_stack, bucket, tmp_path):
    from playwright.sync_api import sync_playwright

    bootstrap = airflow_stack["bootstrap"]
    extra_env = {**connection_env(bootstrap, airflow_stack["endpoint_url"]), "KAFKA_BACKUP_SCHEDULE": "none",
                 "AKB_TEST_RPO_S": str(RPO_S)}
    dag_files = [REPO / "dags" / "kafka_restore.py", REPO / "tests" / "dags" / "kafka_backup_with_rpo.py"]
    topic = f"pagebrowser-{uuid.uuid4().hex[:6]}"
    conf = {"topics": [topic], "bucket": bucket, "prefix": "ui", "flush_size": 40}
    with AirflowServices(dag_files, extra_env) as airflow, sync_playwright() as playwright:
        airflow.wait_for_dags([DAG_ID])
        made = back_up_with_a_gap(bootstrap, topic, lambda c: _run(airflow, c), conf)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{airflow.api_url}/kafka-backups/?refresh=1")
        section = page.locator(f'section.backup[data-bucket="{bucket}"]')
        assert section.locator("h2").inner_text() == f"s3://{bucket}/ui"

        # The numbers: records, lost offsets and partitions the backup holds.
        backed_up = {p: made.first[p] + made.after[p] for p in range(PARTITIONS)}
        row = section.locator(f'tr.incarnation[data-topic="{topic}"]')
        assert row.locator(".records").inner_text() == f"{sum(len(r) for r in backed_up.values()):,}"
        assert row.locator(".lost").inner_text() == f"{sum(e - s for s, e in made.lost.values()):,}"
        assert row.locator(".partitions").inner_text() == str(PARTITIONS)

        # Green right after the backup: the lag is the age of the commit's measurement, well within the RPO.
        pill = section.locator(".facts .rpo-status")
        assert pill.get_attribute("data-status") == "green", section.inner_text()

        # Clicking the topic shows its partitions, each with its gap drawn where the recorded gap is.
        section.locator(f'details.topic[data-topic="{topic}"] > summary').click()
        for p in range(PARTITIONS):
            part_row = section.locator(f'tr.partition[data-topic="{topic}"][data-partition="{p}"]')
            assert part_row.is_visible()
            assert part_row.locator(".records").inner_text() == f"{len(backed_up[p]):,}"
            assert part_row.locator(".gaps").inner_text() == f"{made.lost[p][0]}..{made.lost[p][1] - 1}"
            svg = section.locator(f'svg.timeline[data-topic="{topic}"][data-partition="{p}"]')
            attrs = svg.evaluate("e => Object.fromEntries([...e.attributes].map(a => [a.name, a.value]))")
            gap = svg.locator("rect.gap")
            assert gap.count() == 1
            assert (int(gap.get_attribute("data-start-offset")), int(gap.get_attribute("data-end-offset"))) == \
                made.lost[p]
            before, after = made.first[p][-1].timestamp, made.after[p][0].timestamp
            assert (int(gap.get_attribute("data-start-ms")), int(gap.get_attribute("data-end-ms"))) == (before, after)
            assert float(gap.get_attribute("x")) == _x(attrs, before)
            # As laid out on screen: the gap lies between the two backed-up spans, which touch it.
            spans = svg.locator("rect.span")
            assert spans.count() == 2
            first_box, second_box = spans.nth(0).bounding_box(), spans.nth(1).bounding_box()
            gap_box = gap.bounding_box()
            assert abs(first_box["x"] + first_box["width"] - gap_box["x"]) < 1.5
            assert abs(gap_box["x"] + gap_box["width"] - second_box["x"]) < 1.5
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        if os.environ.get("AKB_UPDATE_SCREENSHOT"):
            shutil.copy(tmp_path / "page.png", SCREENSHOT)

        # Past the RPO (no backup since), the same page turns red.
        lag_start = int(section.locator(f'svg.timeline[data-topic="{topic}"]:not([data-partition]) rect.lag')
                        .get_attribute("data-start-ms"))
        time.sleep(max(0.0, lag_start / 1000 + RPO_S + 1 - time.time()))
        page.reload()
        assert section.locator(".facts .rpo-status").get_attribute("data-status") == "red"
        assert section.locator(f'tr.incarnation[data-topic="{topic}"] .topic-rpo').get_attribute(
            "data-status") == "red"

        # The nav entry (an external view, Airflow 3.1+): the Airflow UI shows the same page in its frame.
        page.goto(f"{airflow.api_url}/plugin/kafka-backups")
        frame = page.frame_locator("iframe")
        frame.locator(f'section.backup[data-bucket="{bucket}"]').wait_for(timeout=60_000)
        assert frame.locator("h1").inner_text() == "Kafka backups"
        browser.close()
