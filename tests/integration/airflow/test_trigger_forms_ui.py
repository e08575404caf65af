"""The trigger forms and the restore's approval step in a real browser, against the real api-server.

Debian's Chromium, driven by Playwright (``executable_path``: no browser download), opens the
Airflow 3 UI that :class:`~devstack.airflow_services.AirflowServices` serves: the forms' sections
and required marks, a number the form must not rewrite, the date-time picker, and a restore that
waits at the approval, having written nothing (its work units are written after the approval, from
the backup runs the approver saw, even though another backup commits meanwhile), until it is approved
(records land exactly once) or rejected (nothing is written). One services stack and one browser
for the module; each test loads a few pages.

Set ``AKB_SCREENSHOTS`` to a folder to keep screenshots of both forms (``AKB_SCREENSHOTS=docs/images``
made the ones in the docs).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from airflow_kafka_backup.engine.storage.key_layout import restore_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.time_window import parse_timestamp
from devstack.airflow_env import REPO, connection_env
from devstack.airflow_services import AirflowServices
from tests.helpers import create_topics, produce_tricky, read_kafka

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("AKB_CHROMIUM", "/usr/bin/chromium")
PREFIX = "ui"
WAITING = ("awaiting_input", "deferred")  # HITL: Airflow 3.3 parks the task; 3.1 and 3.2 defer it


@pytest.fixture(scope="module")
def airflow(airflow_stack, request) -> Iterator[AirflowServices]:
    env = {**connection_env(airflow_stack["bootstrap"], airflow_stack["endpoint_url"]),
           "KAFKA_BACKUP_SCHEDULE": "none"}  # a manual backup DAG: its form marks topics and bucket required
    failed_before = request.session.testsfailed
    with AirflowServices([REPO / "dags" / "kafka_backup.py", REPO / "dags" / "kafka_restore.py"], env) as services:
        services.wait_for_dags(["kafka_backup", "kafka_restore"])
        yield services
        services.keep_home = request.session.testsfailed > failed_before


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    yield page
    page.close()


def _screenshot(page, name: str) -> None:
    """With ``AKB_SCREENSHOTS`` set: the whole form, in a window tall enough that it does not scroll."""
    folder = os.environ.get("AKB_SCREENSHOTS")
    if folder:
        size = page.viewport_size
        page.set_viewport_size({"width": 1100, "height": 2000})
        page.wait_for_timeout(500)
        _form(page).screenshot(path=str(Path(folder) / name))
        page.set_viewport_size(size)


def _open_trigger_form(page, airflow: AirflowServices, dag_id: str):
    page.goto(f"{airflow.api_url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    page.get_by_text(f"Trigger Dag - {dag_id}").wait_for()
    return _form(page)


def _form(page):
    """The trigger dialog (the date-time picker's popover is a dialog too)."""
    return page.locator('[data-scope="dialog"][data-part="content"]')


def _labels(dialog) -> dict[str, bool]:
    """Every field label of the form -> whether it carries the required mark."""
    return dict(dialog.locator('label[data-part="label"]').evaluate_all(
        "labels => labels.map(l => [l.childNodes[0].textContent.trim(), l.hasAttribute('data-required')])"))


def _sections(dialog) -> list[str]:
    return [t.strip() for t in dialog.locator('[data-scope="accordion"][data-part="item-trigger"]').all_inner_texts()]


def test_backup_form_groups_marks_and_keeps_a_refused_number(airflow, page):
    dialog = _open_trigger_form(page, airflow, "kafka_backup")
    assert {"Connections", "Segments: size, rotation, format", "Reading Kafka", "Retention and RPO", "Object Lock",
            "Manual and backfill runs", "Dangerous switches", "Encryption and ACL",
            "S3 transfer tuning"} <= set(_sections(dialog))
    labels = _labels(dialog)
    assert {name for name, required in labels.items() if required} - {"Logical Date"} == {
        "Topics", "S3 bucket", "Key prefix", "Kafka connection", "AWS connection", "Flush size (records per segment)",
        "Timezone (IANA)", "Compression", "Segment format", "Segment checksum", "Offset pad width (digits)",
        "Isolation level",
        "Parallel backup tasks (at most)", "Multipart part size (bytes)"}, labels
    for unmarked in ("Excluded topics", "Allow data loss", "Force unlock", "Offset ranges (manual run)",
                     "Consumer groups to record", "Rotate interval (ms)", "Object Lock mode"):
        assert labels[unmarked] is False, unmarked
    _screenshot(page, "trigger-form-backup.png")

    page.locator("#element_topics").fill("orders")
    page.locator("#element_bucket").fill("some-bucket")
    dialog.get_by_role("button", name="Segments: size, rotation, format").click()
    flush_size = page.locator('[id="number-input:element_flush_size"] input')
    flush_size.fill("0")
    flush_size.press("Tab")  # a `minimum` would raise it to 1 here, without a word
    assert flush_size.input_value() == "0"
    dialog.get_by_role("button", name="Trigger").last.click()
    page.get_by_text("Invalid input for param flush_size").first.wait_for()
    assert flush_size.input_value() == "0"
    assert airflow.request("GET", "/api/v2/dags/kafka_backup/dagRuns")["total_entries"] == 0  # no run created


@pytest.fixture(scope="module")
def backed_up(airflow, airflow_stack, s3_server) -> dict[str, Any]:
    """Two topics backed up by the kafka_backup DAG under the real scheduler, then deleted from Kafka, so
    each restore below writes into a topic that does not exist until the approval."""
    bootstrap = airflow_stack["bootstrap"]
    bucket = f"ui-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=bucket)
    topics = [f"ui-approved-{uuid.uuid4().hex[:6]}", f"ui-rejected-{uuid.uuid4().hex[:6]}"]
    for i, topic in enumerate(topics):
        create_topics(bootstrap, NewTopic(topic, 2, 1, config={"retention.ms": "-1"}))
        produce_tricky(bootstrap, topic, 2, 40, seed=11 + i)
    source = read_kafka(bootstrap, topics)
    airflow.trigger_run("kafka_backup", "ui-backup", {"topics": topics, "bucket": bucket, "prefix": PREFIX})
    assert airflow.wait_for_run("kafka_backup", "ui-backup") == "success", airflow.task_log_tails("kafka_backup")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        future.result()
    _wait_until(lambda: not set(topics) & set(admin.list_topics(timeout=10).topics), "topics deleted")
    return {"bucket": bucket, "topics": topics, "source": source, "admin": admin, "bootstrap": bootstrap,
            "store": S3ObjectStore(client=s3_server.client(), bucket=bucket)}


def _wait_until(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(1)


def _approval_state(airflow: AirflowServices, run_id: str) -> str | None:
    return {t["task_id"]: t["state"] for t in airflow.task_instances("kafka_restore", run_id)}.get("approval")


def _wait_for_approval(airflow: AirflowServices, run_id: str) -> None:
    def waiting() -> bool:
        airflow.check_alive()
        state = _approval_state(airflow, run_id)
        assert state not in ("failed", "upstream_failed", "skipped", "success"), (
            f"{state}\n{airflow.task_log_tails('kafka_restore')}")
        return state in WAITING
    _wait_until(waiting, f"{run_id} waiting at the approval")


def _answer_in_the_ui(page, airflow: AirflowServices, run_id: str, answer: str) -> None:
    """Open the approval task's Required Actions page and press Approve or Reject, until the task is done.

    Airflow 3.3.2 on a busy machine sometimes processes the executor's "process exited" event before
    the resumed task's final state, takes the task for killed and retries it; a retried approval asks
    again (the provider documents this). Then the same answer is given again: the answer, not Airflow's
    bookkeeping, is under test.
    """
    for _ in range(3):
        page.goto(f"{airflow.api_url}/dags/kafka_restore/runs/{run_id}/tasks/approval/required_actions")
        page.get_by_text("Restore 1 topic(s)").first.wait_for()  # the plan's report, rendered
        page.get_by_role("button", name=answer).click()
        _wait_until(lambda: _approval_state(airflow, run_id) not in WAITING, f"{run_id} answered")
        _wait_until(lambda: _approval_state(airflow, run_id) in ("success", "failed", *WAITING),
                    f"{run_id} approval finished")
        if _approval_state(airflow, run_id) not in WAITING:
            return
        # asked again after Airflow's retry: answer again
    raise AssertionError(f"{run_id}: the approval asked three times\n{airflow.task_log_tails('kafka_restore')}")


def _contents(records: dict, topic: str) -> dict[int, list[tuple]]:
    """Per partition, in order: what a restore must reproduce (offsets differ: transaction markers take some)."""
    return {p: [(r.key, r.value, r.headers, r.timestamp) for r in rs] for (t, p), rs in records.items() if t == topic}


def test_restore_from_the_form_waits_for_approval_then_lands_exactly_once(airflow, page, backed_up):
    topic = backed_up["topics"][0]
    dialog = _open_trigger_form(page, airflow, "kafka_restore")
    labels = _labels(dialog)
    assert {name for name, required in labels.items() if required} - {"Logical Date"} == {
        "Topics to restore", "S3 bucket", "Key prefix", "If a target topic already holds records",
        "Kafka connection", "AWS connection", "Parallel restore tasks (at most)", "Commit interval (seconds)",
        "Multipart part size (bytes)"}, labels
    for unmarked in ("Dry run (plan only)", "Topic mapping (source -> target)", "Require approval",
                     "From (time)", "Until (point in time, exclusive)"):
        assert labels[unmarked] is False, unmarked
    assert {"Connections", "Target topics", "What to restore: incarnations and offsets", "Consumer groups",
            "Tuning", "Dangerous switches"} <= set(_sections(dialog))
    page.locator("#element_topics").fill(topic)
    page.locator("#element_bucket").fill(backed_up["bucket"])
    page.locator("#element_prefix").fill(PREFIX)
    # The point in time through the date-time picker: a popover with a date and a time box (UTC).
    until_row = dialog.locator('[role="group"]', has_text="Until (point in time, exclusive)")
    until_row.get_by_test_id("datetime-input").click()
    page.get_by_placeholder("YYYY/MM/DD").last.fill("2030/01/01")
    page.get_by_placeholder("HH:mm").last.fill("10:00")
    page.keyboard.press("Escape")
    _screenshot(page, "trigger-form-restore.png")
    dialog.get_by_role("button", name="Trigger").last.click()

    _wait_until(lambda: airflow.request("GET", "/api/v2/dags/kafka_restore/dagRuns")["total_entries"] >= 1,
                "the run the form created")
    run = airflow.request("GET", "/api/v2/dags/kafka_restore/dagRuns")["dag_runs"][0]
    until = run["conf"]["until_timestamp"]
    assert isinstance(until, str) and until.startswith("2030-01-01T10:00"), run["conf"]
    assert parse_timestamp("until_timestamp", until) == int(datetime(2030, 1, 1, 10, tzinfo=timezone.utc)
                                                            .timestamp() * 1000)
    run_id = run["dag_run_id"]
    _wait_for_approval(airflow, run_id)
    assert topic not in backed_up["admin"].list_topics(timeout=10).topics  # nothing created before approval
    folder = restore_prefix(PREFIX, f"kafka_restore/{run_id}")
    assert list(backed_up["store"].list_keys(folder)) == []  # nor written: not even the work units
    # XCom holds no work unit either: the units' digest and the pin of the manifests the plan read.
    handed = airflow.request("GET", f"/api/v2/dags/kafka_restore/dagRuns/{run_id}/taskInstances/plan"
                                    "/xcomEntries/return_value?deserialize=true")["value"]
    assert "pending_work_units" in handed and len(str(handed)) < 1000, handed
    details = airflow.request("GET", f"/api/v2/dags/kafka_restore/dagRuns/{run_id}/hitlDetails")["hitl_details"]
    assert any("new (created after approval)" in (d.get("body") or "") for d in details), details
    # The scheduled backups go on while the run waits: one commits a manifest to the same prefix, which the
    # approved restore must leave out (it restores what the approver read).
    _back_up_another_topic(airflow, backed_up)

    _answer_in_the_ui(page, airflow, run_id, "Approve")
    assert airflow.wait_for_run("kafka_restore", run_id) == "success", airflow.task_log_tails("kafka_restore")
    expected = _contents(backed_up["source"], topic)
    assert sum(map(len, expected.values())) == 40
    assert _contents(read_kafka(backed_up["bootstrap"], [topic]), topic) == expected  # every record, once
    states = {t["task_id"]: t["state"] for t in airflow.task_instances("kafka_restore", run_id)}
    assert states["work_units"] == "success", states
    assert [k for k in backed_up["store"].list_keys(folder) if "/work-units/" in k]  # written after the approval


def _back_up_another_topic(airflow: AirflowServices, backed_up: dict[str, Any]) -> None:
    """A backup run of a new topic into the same bucket and prefix, committed (a new manifest)."""
    other = f"ui-meanwhile-{uuid.uuid4().hex[:6]}"
    create_topics(backed_up["bootstrap"], NewTopic(other, 1, 1, config={"retention.ms": "-1"}))
    produce_tricky(backed_up["bootstrap"], other, 1, 5, seed=99)
    run_id = f"ui-backup-meanwhile-{uuid.uuid4().hex[:6]}"
    airflow.trigger_run("kafka_backup", run_id, {"topics": [other], "bucket": backed_up["bucket"], "prefix": PREFIX})
    assert airflow.wait_for_run("kafka_backup", run_id) == "success", airflow.task_log_tails("kafka_backup")


def test_a_rejected_restore_ends_with_nothing_written(airflow, page, backed_up):
    topic = backed_up["topics"][1]
    run_id = f"rejected-{uuid.uuid4().hex[:6]}"
    airflow.trigger_run("kafka_restore", run_id, {"topics": [topic], "bucket": backed_up["bucket"], "prefix": PREFIX})
    _wait_for_approval(airflow, run_id)
    _answer_in_the_ui(page, airflow, run_id, "Reject")
    assert airflow.wait_for_run("kafka_restore", run_id) == "success"  # a decision, not a failure
    states = {t["task_id"]: t["state"] for t in airflow.task_instances("kafka_restore", run_id)}
    assert states["approval"] == "success" and {states[t] for t in states if t not in ("plan", "approval")} == {
        "skipped"}, states
    assert topic not in backed_up["admin"].list_topics(timeout=10).topics  # no topic created
    written = list(backed_up["store"].list_keys(restore_prefix(PREFIX, f"kafka_restore/{run_id}")))
    assert written == []  # nothing in S3 either
