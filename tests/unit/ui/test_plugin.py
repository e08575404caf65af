"""The plugin shell: registered with the FastAPI app (and, from Airflow 3.1, the nav entry), authenticated by
the auth manager, and showing each user only the backups of DAGs they may read."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from airflow_kafka_backup.compat import airflow_at_least
from airflow_kafka_backup.engine.coverage import summarize_coverage
from airflow_kafka_backup.plugins import kafka_backups
from airflow_kafka_backup.plugins.airflow_facts import DagFacts
from airflow_kafka_backup.ui.rpo import CommitMeasurement


class FakeAuthManager:
    """Tokens are user names; alice may read orders_backup, bob payments_backup, admin both."""

    readable = {"alice": {"orders_backup"}, "bob": {"payments_backup"},
                "admin": {"orders_backup", "payments_backup", "other_dag"}}

    async def get_user_from_token(self, token: str) -> str:
        import jwt

        if token not in self.readable:
            raise jwt.InvalidTokenError("bad token")
        return token

    def get_authorized_dag_ids(self, *, user: str, method: str = "GET") -> set[str]:
        assert method == "GET"
        return self.readable[user]


@pytest.fixture
def client(monkeypatch):
    facts = [
        DagFacts("orders_backup", {"bucket": "b", "prefix": "orders", "rpo_seconds": 3600}, [{"prefix": "adhoc"}],
                 {("b", "orders"): CommitMeasurement(10**13, {})}),
        DagFacts("payments_backup", {"bucket": "b", "prefix": "payments", "sse_customer_key_variable": "pay_key"}),
    ]
    read = []

    def read_location(location):
        read.append(location.key)
        return summarize_coverage(location.bucket, location.prefix, []), None

    monkeypatch.setattr(kafka_backups, "_auth_manager", FakeAuthManager)
    monkeypatch.setattr(kafka_backups, "_dag_facts", lambda refresh: facts)
    monkeypatch.setattr(kafka_backups, "_read_location", read_location)
    monkeypatch.setattr(kafka_backups, "_cache", kafka_backups.TTLCache(60))
    client = TestClient(kafka_backups.create_app())
    client.read = read
    return client


def _prefixes(answer) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [b["prefix"] for b in answer.json()["backups"]]


def test_each_user_sees_only_the_backups_of_dags_they_may_read(client):
    assert _prefixes(client.get("/api/backups", headers={"Authorization": "Bearer alice"})) == ["adhoc", "orders"]
    assert _prefixes(client.get("/api/backups", headers={"Authorization": "Bearer bob"})) == ["payments"]
    assert _prefixes(client.get("/api/backups", headers={"Authorization": "Bearer admin"})) == [
        "adhoc", "orders", "payments"]
    page = client.get("/", cookies={"_token": "alice"})  # the UI's cookie, as in the nav's iframe
    assert page.status_code == 200 and "s3://b/orders" in page.text and "payments" not in page.text
    # Cached: three users, three prefixes, each read from S3 once.
    assert sorted(client.read) == [("b", "adhoc"), ("b", "orders"), ("b", "payments")]


def test_no_token_or_a_bad_one_shows_nothing(client):
    assert client.get("/api/backups").status_code == 401
    assert client.get("/").status_code == 401
    assert client.get("/api/backups", headers={"Authorization": "Bearer mallory"}).status_code == 403
    assert client.read == []


def test_json_names_no_secret_and_no_connection(client):
    body = client.get("/api/backups", headers={"Authorization": "Bearer bob"}).text
    assert "pay_key" not in body and "aws_default" not in body


def test_the_plugin_registers_its_app_and_on_3_1_its_nav_entry():
    plugin = kafka_backups.KafkaBackupsPlugin
    assert plugin.name == "kafka_backups"
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/kafka-backups" and app["app"] is not None
    views = getattr(plugin, "external_views", [])
    if airflow_at_least("3.1.0"):  # external views came with 3.1; 3.0 reaches the page by its URL
        (view,) = views
        assert view["href"] == "kafka-backups/" and view["url_route"] == "kafka-backups"
    else:
        assert views == []
