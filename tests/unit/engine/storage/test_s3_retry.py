"""Unit tests: ``s3_retry_backoff_ms`` (the seed's ``s3.retry.backoff.ms``) swaps only botocore's retry backoff.

The retries here are botocore's own, for real: requests to a loopback port nobody listens
on fail with a connection error, which botocore's standard mode retries. Only the sleeps
between attempts are recorded instead of slept.
"""

from __future__ import annotations

import json
import socket
import time
import types

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from airflow_kafka_backup import cli
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage import s3_retry
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.s3_retry import set_retry_backoff, validate_retry_backoff_ms


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """What botocore's endpoint would sleep between attempts, recorded instead."""
    recorded: list[float] = []
    fake_time = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    fake_time.sleep = recorded.append
    monkeypatch.setattr(botocore.endpoint, "time", fake_time)
    return recorded


def _client(port: int, **retries):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries=retries, connect_timeout=1, read_timeout=1))


def _fail(client) -> None:
    with pytest.raises(EndpointConnectionError):
        client.head_object(Bucket="b", Key="k")


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
@pytest.mark.parametrize("base_ms", [0, 40, 300])
def test_the_waits_between_retries_grow_from_the_base(closed_port, sleeps, mode, base_ms):
    client = _client(closed_port, mode=mode, max_attempts=4)  # botocore: 4 retries, 5 attempts
    set_retry_backoff(client, base_ms, random=lambda: 1.0)
    _fail(client)
    assert sleeps == pytest.approx([base_ms / 1000 * 2 ** k for k in range(4)])


def test_the_waits_are_full_jitter_under_botocores_20_s_cap(closed_port, sleeps, monkeypatch):
    monkeypatch.setattr(s3_retry, "jitter", lambda: 0.25)  # the default random source
    client = _client(closed_port, mode="standard", max_attempts=4)
    set_retry_backoff(client, 8_000)
    _fail(client)
    assert sleeps == pytest.approx([0.25 * 8, 0.25 * 16, 0.25 * 20, 0.25 * 20])


def test_without_the_setting_botocores_backoff_is_untouched(closed_port, sleeps):
    _fail(_client(closed_port, mode="standard", max_attempts=4))
    assert len(sleeps) == 4
    # botocore's base for a connection error is 50 ms: waits of 300 ms * 2**k cannot come from it.
    assert all(wait <= 0.05 * 2 ** k for k, wait in enumerate(sleeps)), sleeps


def test_max_attempts_stay_what_botocore_resolved(closed_port, sleeps):
    client = _client(closed_port, mode="standard")  # no max_attempts: botocore's default, 3 attempts
    set_retry_backoff(client, 10, random=lambda: 1.0)
    _fail(client)
    assert sleeps == pytest.approx([0.01, 0.02])
    sleeps.clear()
    client = _client(closed_port, mode="standard", total_max_attempts=2)
    set_retry_backoff(client, 10, random=lambda: 1.0)
    _fail(client)
    assert sleeps == pytest.approx([0.01])


def _needs_retry(client, status: int, code: str, attempts: int = 1) -> list:
    """The answers of every ``needs-retry`` handler to one failed S3 call, as botocore's endpoint asks them."""
    operation = client.meta.service_model.operation_model("PutObject")
    response = AWSResponse("http://127.0.0.1/b/k", status, {}, None)
    parsed = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    answers = client.meta.events.emit(
        "needs-retry.s3.PutObject", response=(response, parsed), endpoint=None, operation=operation,
        attempts=attempts, caught_exception=None, request_dict={"context": {}})
    return [answer for _, answer in answers if answer is not None]


def test_one_handler_decides_with_botocores_conditions_and_the_given_base(closed_port):
    client = _client(closed_port, mode="standard", max_attempts=4)
    set_retry_backoff(client, 100, random=lambda: 1.0)
    # S3's throttling answer: botocore would back off from 1 s; the base given applies to every retry.
    assert _needs_retry(client, 503, "SlowDown") == [pytest.approx(0.1)]
    assert _needs_retry(client, 500, "InternalError", attempts=3) == [pytest.approx(0.4)]
    assert _needs_retry(client, 500, "InternalError", attempts=5) == []  # attempts used up
    assert _needs_retry(client, 403, "AccessDenied") == []  # not retryable: botocore's conditions decide
    set_retry_backoff(client, 7, random=lambda: 1.0)  # again: replaces, never stacks
    assert _needs_retry(client, 503, "SlowDown", attempts=2) == [pytest.approx(0.014)]


def test_other_clients_keep_their_own_backoff(closed_port):
    swapped, other = _client(closed_port, mode="standard"), _client(closed_port, mode="standard")
    set_retry_backoff(swapped, 20_000, random=lambda: 1.0)
    assert _needs_retry(swapped, 500, "InternalError") == [pytest.approx(20.0)]
    (delay,) = _needs_retry(other, 500, "InternalError")
    assert delay <= 0.05


def test_legacy_retry_mode_is_refused_naming_the_setting_and_the_source(closed_port):
    client = _client(closed_port, mode="legacy", max_attempts=2)
    with pytest.raises(ConfigurationError, match=r"s3_retry_backoff_ms .* needs botocore's 'standard' or "
                                                 r"'adaptive' retry mode, but connection 'aws_x' uses 'legacy'"):
        S3ObjectStore(client=client, bucket="b").set_retry_backoff(100, source="connection 'aws_x'")


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), (0, 0), ("200", 200), (200.0, 200), (20_000, 20_000)])
def test_valid_values(value, expected):
    assert validate_retry_backoff_ms(value) == expected


@pytest.mark.parametrize("value", [-1, 20_001, True, 1.5, "fast", "-5", [100]])
def test_bad_values_are_refused_naming_the_setting(value):
    with pytest.raises(ConfigurationError, match="s3_retry_backoff_ms must be a whole number of milliseconds "
                                                 "from 0 to 20000"):
        validate_retry_backoff_ms(value)


# ---------------------------------------------------------------------------------------------------------------
# The operator argument and the DAG Param


def _aws_connection(monkeypatch, port: int, retries: dict) -> str:
    conn_id = f"aws_retry_{retries['mode']}"
    extra = {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1",
             "config_kwargs": {"retries": retries, "connect_timeout": 1}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "aws", "login": "test", "password": "test", "extra": extra}))
    return conn_id


def test_the_operator_applies_it_to_its_store(closed_port, sleeps, monkeypatch):
    from airflow_kafka_backup.operators.s3 import S3BackupBaseOperator

    monkeypatch.setattr(s3_retry, "jitter", lambda: 1.0)
    conn_id = _aws_connection(monkeypatch, closed_port, {"mode": "standard", "max_attempts": 3})
    operator = S3BackupBaseOperator(task_id="t", bucket="b", aws_conn_id=conn_id, s3_retry_backoff_ms="25")
    with pytest.raises(EndpointConnectionError):
        operator.store.head("k")
    assert sleeps == pytest.approx([0.025, 0.05, 0.1])
    sleeps.clear()
    with pytest.raises(EndpointConnectionError):  # unset: botocore's own backoff
        S3BackupBaseOperator(task_id="u", bucket="b", aws_conn_id=conn_id).store.head("k")
    assert len(sleeps) == 3 and sleeps != pytest.approx([0.025, 0.05, 0.1])


def test_the_operator_refuses_a_legacy_connection_when_it_builds_its_store(closed_port, monkeypatch):
    from airflow_kafka_backup.operators.s3 import S3BackupBaseOperator

    conn_id = _aws_connection(monkeypatch, closed_port, {"mode": "legacy"})
    operator = S3BackupBaseOperator(task_id="t", bucket="b", aws_conn_id=conn_id, s3_retry_backoff_ms=100)
    with pytest.raises(ConfigurationError, match=f"connection '{conn_id}' uses 'legacy'"):
        operator.store  # noqa: B018
    assert S3BackupBaseOperator(task_id="u", bucket="b", aws_conn_id=conn_id).store is not None  # unset: fine


def test_bad_values_fail_when_the_dag_is_parsed_and_templates_wait_for_the_run():
    from airflow_kafka_backup.dag_factories import backup_dag, restore_dag
    from airflow_kafka_backup.operators.s3 import S3BackupBaseOperator

    with pytest.raises(ConfigurationError, match="s3_retry_backoff_ms"):
        S3BackupBaseOperator(task_id="t", bucket="b", s3_retry_backoff_ms="soon")
    S3BackupBaseOperator(task_id="t", bucket="b", s3_retry_backoff_ms="{{ params.s3_retry_backoff_ms }}")
    with pytest.raises(ConfigurationError, match="s3_retry_backoff_ms"):
        backup_dag("bad_backoff", topics=["t"], bucket="b", s3_retry_backoff_ms=-1)
    with pytest.raises(ConfigurationError, match="s3_retry_backoff_ms"):
        restore_dag("bad_backoff_restore", s3_retry_backoff_ms=50_000)


def test_it_is_a_param_of_both_dags_and_reaches_every_task():
    import copy

    from airflow_kafka_backup.dag_factories import backup_dag, restore_dag

    for dag in (backup_dag("backoff_backup", topics=["t"], bucket="b", s3_retry_backoff_ms=200),
                restore_dag("backoff_restore")):
        param = dag.params.get_param("s3_retry_backoff_ms")
        assert param.value == (200 if dag.dag_id == "backoff_backup" else None)
        assert copy.deepcopy(param).resolve(0) == 0 and copy.deepcopy(param).resolve(None) is None
        for bad in (-1, 20_001, "soon"):
            with pytest.raises(Exception):  # noqa: B017 - Airflow's ParamValidationError, whatever its module
                copy.deepcopy(param).resolve(bad)
        # The RPO guard reads XCom; the approval and topic creation touch no S3.
        s3_tasks = [t for t in dag.tasks if t.task_id not in ("check_rpo", "approval", "create_topics")]
        assert len(s3_tasks) == len(dag.tasks) - (1 if dag.dag_id == "backoff_backup" else
                                                  1 + ("approval" in dag.task_ids))
        for task in s3_tasks:
            assert "s3_retry_backoff_ms" in task.template_fields, task.task_id
            assert getattr(task, "s3_retry_backoff_ms", None) == "{{ params.s3_retry_backoff_ms }}" or (
                task.partial_kwargs.get("s3_retry_backoff_ms") == "{{ params.s3_retry_backoff_ms }}"), task.task_id


def test_only_the_base_changes_a_retry_after_answer_is_still_honoured_as_botocore_does():
    from types import SimpleNamespace

    from botocore.retries import standard

    backoff = s3_retry.BackoffFromBase(100, random=lambda: 0.5)
    plain = standard.RetryContext(attempt_number=3, http_response=SimpleNamespace(headers={}))
    assert backoff.delay_amount(plain) == pytest.approx(0.5 * 0.1 * 4)
    hinted = standard.RetryContext(attempt_number=3, http_response=SimpleNamespace(
        headers={"x-amz-retry-after": "3000"}))
    assert backoff.delay_amount(hinted) == pytest.approx(3.0)


def test_a_null_param_rendered_as_the_string_none_means_unset():
    from airflow_kafka_backup.engine.storage.s3_settings import validate_object_lock

    assert s3_retry.validate_retry_backoff_ms("None") is None
    assert validate_object_lock("None", "None") == (None, None)


@pytest.fixture
def aws_environment(monkeypatch, tmp_path):
    """Test credentials and no retry settings of the machine's own: botocore's defaults (legacy mode)."""
    for name in ("AWS_PROFILE", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_the_cli_backs_off_from_its_flag_in_standard_mode(closed_port, sleeps, aws_environment, monkeypatch, capsys):
    monkeypatch.setattr(s3_retry, "jitter", lambda: 1.0)
    code = cli.main(["ls", "--bucket", "b", "--endpoint-url", f"http://127.0.0.1:{closed_port}",
                     "--s3-retry-backoff-ms", "40"])
    # The environment's legacy mode has no base to set: the CLI asks for standard (3 attempts).
    assert sleeps == pytest.approx([0.04, 0.08])
    assert code == cli.EXIT_USAGE
    assert "kafka-backup: S3: Could not connect to the endpoint URL" in capsys.readouterr().err


class _Stop(Exception):
    """Ends a CLI command once its S3 client is built."""


def test_the_cli_keeps_the_environments_adaptive_mode(closed_port, sleeps, aws_environment, monkeypatch):
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setattr(s3_retry, "jitter", lambda: 1.0)
    built = []

    def keep_the_client(store) -> None:
        built.append(store.client)
        raise _Stop

    monkeypatch.setattr(cli.S3ObjectStore, "check_bucket", keep_the_client)
    with pytest.raises(_Stop):
        cli.main(["ls", "--bucket", "b", "--endpoint-url", f"http://127.0.0.1:{closed_port}",
                  "--s3-retry-backoff-ms", "40"])
    (client,) = built
    assert client.meta.config.retries["mode"] == "adaptive"
    _fail(client)
    assert sleeps == pytest.approx([0.04])


def test_a_bad_cli_backoff_is_refused_before_any_request(closed_port, sleeps, aws_environment, capsys):
    code = cli.main(["verify", "--bucket", "b", "--endpoint-url", f"http://127.0.0.1:{closed_port}",
                     "--s3-retry-backoff-ms", "-5"])
    assert code == cli.EXIT_USAGE
    assert "s3_retry_backoff_ms must be a whole number of milliseconds from 0 to 20000, got '-5'" in (
        capsys.readouterr().err)
    assert sleeps == []
