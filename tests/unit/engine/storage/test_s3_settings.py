"""Unit tests: S3 write settings are validated, and the SSE-C key never leaks from them."""

from __future__ import annotations

import base64
import os

import pytest

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.retention import ensure_retention_rule
from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings, validate_retention_days

KEY = os.urandom(32)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"part_size": 1024}, "part_size must be between 5242880"),
    ({"acl": "world-writable"}, "acl must be a canned ACL"),
    ({"sse_algorithm": "ROT13"}, "sse_algorithm must be one of"),
    ({"sse_kms_key_id": "alias/k"}, "sse_kms_key_id needs sse_algorithm 'aws:kms'"),
    ({"sse_algorithm": "aws:kms", "sse_customer_key": KEY}, "cannot be combined with sse_algorithm 'aws:kms'"),
    ({"sse_customer_key": "too-short"}, "must be 256 bits"),
])
def test_bad_values_are_refused_with_a_message_naming_them(kwargs, message):
    with pytest.raises(ConfigurationError, match=message) as raised:
        S3WriteSettings.create(**kwargs)
    assert base64.b64encode(KEY).decode() not in str(raised.value)


def test_retention_days_are_validated():
    assert validate_retention_days(None) is None and validate_retention_days("3") == 3
    with pytest.raises(ConfigurationError, match="at least 1"):
        validate_retention_days(0)


def test_sse_c_key_is_sent_on_reads_and_writes_but_never_shown():
    settings = S3WriteSettings.create(sse_customer_key=base64.b64encode(KEY).decode(), acl="private")
    assert settings.sse_customer_key == KEY
    assert settings.read_args() == {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY}
    assert settings.extra_args()["ACL"] == "private"
    encryption = settings.manifest_encryption()
    assert encryption["sse"] == "SSE-C" and KEY.hex() not in repr(settings) and str(KEY) not in repr(settings)
    assert base64.b64encode(KEY).decode() not in str(encryption)
    settings.check_can_read(encryption, "run r")
    with pytest.raises(ConfigurationError, match="not the key run r was encrypted with"):
        S3WriteSettings.create(sse_customer_key=os.urandom(32)).check_can_read(encryption, "run r")
    with pytest.raises(ConfigurationError, match="give the same key"):
        S3WriteSettings.create().check_can_read(encryption, "run r")


def test_kms_settings_become_upload_arguments():
    settings = S3WriteSettings.create(sse_algorithm="aws:kms", sse_kms_key_id="alias/backup", part_size=8 << 20)
    assert settings.extra_args() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/backup"}
    assert settings.read_args() == {}
    assert settings.transfer_config_args() == {"multipart_threshold": 8 << 20, "multipart_chunksize": 8 << 20}


class FakeLifecycleClient:
    """Unit-test stand-in for the two S3 lifecycle calls."""

    def __init__(self, rules):
        self.rules = rules
        self.puts = 0

    def get_bucket_lifecycle_configuration(self, Bucket):
        return {"Rules": list(self.rules)}

    def put_bucket_lifecycle_configuration(self, Bucket, LifecycleConfiguration):
        self.puts += 1
        self.rules = LifecycleConfiguration["Rules"]


def test_retention_rule_is_merged_idempotently():
    foreign = {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 9}}
    client = FakeLifecycleClient([foreign])
    assert ensure_retention_rule(client, "b", "kb", 3) == "created"
    assert ensure_retention_rule(client, "b", "kb", 3) == "unchanged"
    assert ensure_retention_rule(client, "b", "kb", 5) == "updated"
    assert client.puts == 2 and client.rules[0] == foreign and len(client.rules) == 2


@pytest.mark.parametrize("raised,problem", [
    ("not found", "'ssec_key' \\(sse_customer_key_variable\\) does not exist; it must hold the SSE-C key"),
    ("backend down", "'ssec_key' \\(sse_customer_key_variable\\) could not be read \\(ConnectionError\\)"),
])
def test_an_sse_c_key_variable_that_cannot_be_read_is_named_without_the_backends_text(monkeypatch, raised, problem):
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    from airflow_kafka_backup.engine.errors import ConfigurationError
    from airflow_kafka_backup.operators import s3 as s3_operators
    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    def get(key):
        if raised == "not found":
            raise AirflowRuntimeError(ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND, detail={"key": key}))
        raise ConnectionError("vault at https://user:hunter2@vault.internal refused")

    monkeypatch.setattr(s3_operators, "Variable", type("V", (), {"get": staticmethod(get)}))
    plan = KafkaRestorePlanOperator(task_id="plan", topics=["t"], bucket="b", sse_customer_key_variable="ssec_key")
    with pytest.raises(ConfigurationError, match=problem) as refused:
        plan.s3_settings  # noqa: B018 - reading it fetches the key
    assert "hunter2" not in str(refused.value)


def test_a_key_for_objects_stored_without_one_is_refused_for_reads_too():
    """S3 refuses such a GET: the restore plan and verify say so before they read a segment."""
    from airflow_kafka_backup.engine.errors import ConfigurationError
    from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings

    with pytest.raises(ConfigurationError, match="backup run r is not encrypted with a customer-provided key"):
        S3WriteSettings.create(sse_customer_key=b"k" * 32).check_can_read({}, "backup run r")
    S3WriteSettings.create().check_can_read({}, "backup run r")
    S3WriteSettings.create().check_can_read({"sse": "aws:kms"}, "backup run r")
