"""The "Kafka backups" JSON API and page, served by Airflow's own FastAPI app, over backups made by real DAG runs.

The app is Airflow's (``airflow.api_fastapi.app.create_app``) with the plugin mounted from its entry
point, so the mount, the auth manager and the DB reads are the real ones; S3 is the moto server.
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.helpers import run_dag
from tests.integration.ui.backups_page_data import PARTITIONS, back_up_with_a_gap

pytestmark = pytest.mark.integration


@pytest.fixture
def airflow_api(airflow_stack, monkeypatch):
    """Airflow's API app with every caller an admin (SimpleAuthManager, as devstack runs it)."""
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    monkeypatch.setenv("AIRFLOW__KAFKA_BACKUP__UI_CACHE_TTL_SECONDS", "60")
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    purge_cached_app()
    with TestClient(create_app("core")) as client:
        yield client
    purge_cached_app()


def test_api_shows_coverage_gap_rpo_verify_and_restore_of_real_backups(airflow_api, airflow_stack, bucket):
    bootstrap = airflow_stack["bootstrap"]
    topic = f"page-{uuid.uuid4().hex[:6]}"
    conf = {"topics": [topic], "bucket": bucket, "prefix": "pg", "flush_size": 40}
    made = back_up_with_a_gap(bootstrap, topic, lambda c: run_dag("kafka_backup_with_rpo", c).state, conf)
    until = made.after[0][10].timestamp  # a point-in-time restore: partition 0 up to its 11th record after the gap
    restore = {"topics": [topic], "bucket": bucket, "prefix": "pg", "topic_mapping": {topic: f"{topic}-r"},
               "until_timestamp": until}
    assert run_dag("kafka_restore", restore).state == "success"

    answer = airflow_api.get("/kafka-backups/api/backups", params={"refresh": "true"})
    assert answer.status_code == 200, answer.text
    (backup,) = [b for b in answer.json()["backups"] if b["bucket"] == bucket]
    assert backup["prefix"] == "pg" and "kafka_backup_with_rpo" in backup["dag_ids"]
    assert backup["error"] is None
    coverage = backup["coverage"]
    assert coverage["manifests"] == 2
    (incarnation,) = coverage["topics"][topic]
    assert incarnation["partitions"] == PARTITIONS
    backed_up = {p: made.first[p] + made.after[p] for p in range(PARTITIONS)}
    assert incarnation["records"] == sum(len(r) for r in backed_up.values())
    assert incarnation["lost_offsets"] == sum(end - start for start, end in made.lost.values())
    assert incarnation["min_timestamp"] == min(r.timestamp for rs in backed_up.values() for r in rs)
    assert incarnation["max_timestamp"] == max(r.timestamp for rs in backed_up.values() for r in rs)
    for partition in incarnation["by_partition"]:
        p = partition["partition"]
        (gap,) = partition["gaps"]
        assert (gap["start_offset"], gap["end_offset"]) == made.lost[p]
        # The gap sits in time between the last record before it and the first after it.
        assert gap["after_timestamp"] == made.first[p][-1].timestamp
        assert gap["before_timestamp"] == made.after[p][0].timestamp
        assert [(s["start_offset"], s["end_offset"]) for s in partition["spans"]] == [
            (0, made.lost[p][0]), (made.lost[p][1], made.after[p][-1].offset + 1)]
        assert partition["records"] == len(backed_up[p])
    assert coverage["problems"] == []

    # The lag right after the commit is within the test DAG's 20 s RPO: green.
    assert backup["rpo_seconds"] == 20
    assert backup["rpo"]["topics"][topic]["source"] == "measured"
    assert backup["rpo"]["status"] == backup["rpo"]["topics"][topic]["status"]
    assert backup["rpo"]["topics"][topic]["status"] in ("green", "amber", "red")
    assert backup["last_commit_age_s"] is not None and backup["last_commit_age_s"] >= 0
    assert backup["last_verify"]["state"] == "success" and backup["last_verify"]["ok"] is True

    (restored,) = coverage["restores"]
    assert restored["until_timestamp"] == until
    assert restored["topic_mapping"] == {topic: f"{topic}-r"}
    assert restored["records_restored"][topic] == sum(
        1 for rs in backed_up.values() for r in rs if r.timestamp < until)

    # The page says the same, and how fresh its data is.
    page = airflow_api.get("/kafka-backups/")
    assert page.status_code == 200
    html = page.text
    assert f'data-bucket="{bucket}"' in html and "S3 data read" in html
    # This backup's section only: the page lists every backup this Airflow's DAG runs name, and other
    # tests' backups (in this process's Airflow DB) have gaps, or buckets since deleted, of their own.
    section = re.search(rf'<section class="backup" data-bucket="{bucket}".*?</section>', html, re.S).group(0)
    gaps = re.findall(r'<rect class="gap"[^>]*data-partition="(\d+)" data-start-offset="(\d+)" '
                      r'data-end-offset="(\d+)"', section)
    assert sorted({(int(p), int(s), int(e)) for p, s, e in gaps}) == [
        (p, *made.lost[p]) for p in range(PARTITIONS)]
    assert "could not be read" not in section
