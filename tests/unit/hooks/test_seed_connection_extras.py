"""Unit tests: the seed's ``s3.wan.mode`` is the ``aws`` connection's ``config_kwargs.s3.use_accelerate_endpoint``.

Transfer Acceleration is served only by AWS's ``<bucket>.s3-accelerate.amazonaws.com``, so
no local endpoint can show it. The store a task builds from its connection (``S3Hook``
over ``AIRFLOW_CONN_*`` JSON) is used as is; a ``before-send`` handler, botocore's last
step before the wire, records where each request would go and answers it, so nothing
leaves the machine. Also here: how the other connection extras fail, with no server.
"""

from __future__ import annotations

import io
import json
import uuid
from urllib.parse import unquote, urlsplit

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointResolutionError, ProfileNotFound
from urllib3.response import HTTPResponse

from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum

BUCKET = "kafka-backups"
KEY = "prefix/_manifests/run=r.json"


@pytest.fixture(autouse=True)
def no_aws_files(tmp_path, monkeypatch):
    """No shared AWS file or ``AWS_*`` variable of the machine's: only the connection decides."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_S3_USE_ACCELERATE_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _store(monkeypatch, **extra):
    """The store a task builds from an ``aws`` connection with this extra."""
    from airflow_kafka_backup.operators.s3 import S3BackupBaseOperator

    conn_id = f"aws_wan_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "aws", "login": "AKIAWANMODE", "password": "secret", "extra": extra}))
    return S3BackupBaseOperator(task_id="t", bucket=BUCKET, aws_conn_id=conn_id).store


def _answer_locally(store) -> list[tuple[str, str]]:
    """Answer every request of ``store`` here with an empty ``200``; the ``(method, url)`` of each."""
    sent: list[tuple[str, str]] = []

    def answer(request, **_):
        sent.append((request.method, request.url))
        body = b"{}" if request.method == "GET" and urlsplit(request.url).path.strip("/") else b""
        return AWSResponse(request.url, 200, {"ETag": '"0"', "Content-Length": str(len(body))},
                           HTTPResponse(body=io.BytesIO(body), preload_content=False))

    store.client.meta.events.register("before-send.s3", answer)
    return sent


def _every_kind_of_request(store, tmp_path) -> None:
    """A segment upload (through the transfer manager), a manifest write, a read, a head and a listing."""
    segment = tmp_path / "segment"
    segment.write_bytes(b"records")
    store.put_file("prefix/t/partition=0/t+0+0000000000.jsonl.gz", str(segment), Checksum(SHA256, "00"))
    store.put_bytes(KEY, b"{}")
    assert store.get_bytes(KEY) == b"{}"
    assert store.head(KEY) is not None
    list(store.list_keys("prefix/"))


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3", None])
def test_use_accelerate_endpoint_sends_every_request_to_the_accelerate_host(monkeypatch, tmp_path, region):
    extra = {"config_kwargs": {"s3": {"use_accelerate_endpoint": True}}}
    store = _store(monkeypatch, **extra, **({"region_name": region} if region else {}))
    sent = _answer_locally(store)
    _every_kind_of_request(store, tmp_path)
    assert [method for method, _ in sent] == ["PUT", "PUT", "GET", "HEAD", "GET"]
    assert {urlsplit(url).netloc for _, url in sent} == {f"{BUCKET}.s3-accelerate.amazonaws.com"}
    assert all(url.startswith("https://") for _, url in sent)


def test_without_it_requests_go_to_the_regional_host(monkeypatch, tmp_path):
    store = _store(monkeypatch, region_name="eu-west-3")
    sent = _answer_locally(store)
    _every_kind_of_request(store, tmp_path)
    assert {urlsplit(url).netloc for _, url in sent} == {f"{BUCKET}.s3.eu-west-3.amazonaws.com"}


def test_path_style_gives_way_to_the_accelerate_host(monkeypatch, tmp_path):
    """Accelerate is virtual-hosted only; botocore keeps it over ``addressing_style: path``."""
    store = _store(monkeypatch, region_name="eu-west-3",
                   config_kwargs={"s3": {"use_accelerate_endpoint": True, "addressing_style": "path"}})
    sent = _answer_locally(store)
    store.put_bytes(KEY, b"{}")
    assert [unquote(url) for _, url in sent] == [f"https://{BUCKET}.s3-accelerate.amazonaws.com/{KEY}"]


def test_accelerate_with_an_endpoint_url_fails_at_the_first_request(monkeypatch):
    store = _store(monkeypatch, region_name="eu-west-3", endpoint_url="http://127.0.0.1:9",
                   config_kwargs={"s3": {"use_accelerate_endpoint": True}})
    sent = _answer_locally(store)
    with pytest.raises(EndpointResolutionError, match="A custom endpoint cannot be combined with S3 Accelerate"):
        store.put_bytes(KEY, b"{}")
    assert sent == []


def test_a_profile_the_worker_does_not_have_fails_naming_it(monkeypatch):
    with pytest.raises(ProfileNotFound, match=r"The config profile \(kafka-backup\) could not be found"):
        _store(monkeypatch, profile_name="kafka-backup", region_name="eu-west-3")
