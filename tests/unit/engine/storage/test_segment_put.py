"""Unit tests: a segment up to the multipart threshold is one PutObject carrying the sha256 we computed.

A real botocore client builds and signs every request; a ``before-send`` handler (botocore's
last step before the wire) records the request's headers and body and answers it, so
nothing leaves the machine. Over ``https``, as with real S3, and over plain ``http``, as
with the local moto server.
"""

from __future__ import annotations

import base64
import hashlib
import io

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from urllib3.response import HTTPResponse

from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

MIB = 1 << 20
UPLOAD_ID = "<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>"


def _store(endpoint: str, threshold: int = 8 * MIB, **config: object) -> tuple[S3ObjectStore, list[dict]]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="AKIATEST",
                          aws_secret_access_key="secret", config=Config(**config) if config else None)
    sent: list[dict] = []

    def answer(request, **_):
        body = request.body.read() if hasattr(request.body, "read") else (request.body or b"")
        sent.append({"method": request.method, "url": request.url, "body": bytes(body),
                     "headers": {k.lower(): v.decode() if isinstance(v, bytes) else v
                                 for k, v in request.headers.items()}})
        reply = UPLOAD_ID.encode() if request.url.endswith("?uploads") else b""
        return AWSResponse(request.url, 200, {"ETag": '"0"', "Content-Length": str(len(reply))},
                           HTTPResponse(body=io.BytesIO(reply), preload_content=False))

    client.meta.events.register("before-send.s3", answer)
    transfer = TransferConfig(multipart_threshold=threshold, multipart_chunksize=max(threshold, 5 * MIB))
    return S3ObjectStore(client=client, bucket="b", transfer_config=transfer), sent


def _segment(tmp_path, size: int) -> tuple[str, bytes, str]:
    data = bytes(range(256)) * (size // 256)
    path = tmp_path / "segment"
    path.write_bytes(data)
    return str(path), data, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("endpoint", ["https://s3.example.com", "http://127.0.0.1:9"])
def test_a_segment_is_one_put_signed_with_our_sha256_and_hashed_by_no_one_else(tmp_path, endpoint):
    store, sent = _store(endpoint)
    path, data, sha256 = _segment(tmp_path, 64 * 1024)
    store.put_file("p/seg", path, sha256)
    (put,) = sent
    headers = put["headers"]
    assert put["method"] == "PUT" and put["body"] == data
    assert headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(sha256)).decode()
    assert headers["x-amz-meta-sha256"] == sha256
    # No checksum of botocore's own, and no second sha256 of the body for the signature: the
    # signed checksum header binds the body (S3 refuses one that does not match it).
    assert not [name for name in headers if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-sha256"]
    assert headers["x-amz-sdk-checksum-algorithm"] == "SHA256" and "x-amz-trailer" not in headers
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert "x-amz-checksum-sha256" in headers["authorization"]  # among the signed headers


def test_explicit_payload_signing_is_kept(tmp_path):
    store, sent = _store("http://127.0.0.1:9", s3={"payload_signing_enabled": True})
    path, _, sha256 = _segment(tmp_path, 4096)
    store.put_file("p/seg", path, sha256)
    (put,) = sent
    assert put["headers"]["x-amz-content-sha256"] == sha256  # botocore hashed the body, as configured


def test_when_required_sends_no_checksum(tmp_path):
    """``request_checksum_calculation=when_required``: for stores that refuse checksum headers."""
    store, sent = _store("https://s3.example.com", request_checksum_calculation="when_required")
    path, _, sha256 = _segment(tmp_path, 4096)
    store.put_file("p/seg", path, sha256)
    (put,) = sent
    assert not [name for name in put["headers"] if name.startswith("x-amz-checksum-")]


def test_a_segment_over_the_threshold_goes_multipart(tmp_path):
    store, sent = _store("https://s3.example.com", threshold=5 * MIB)
    path, _, sha256 = _segment(tmp_path, 6 * MIB)
    store.put_file("p/seg", path, sha256)
    assert [r["method"] for r in sent] == ["POST", "PUT", "PUT", "POST"]  # create, two parts, complete


@pytest.mark.parametrize("endpoint", ["https://s3.example.com", "http://127.0.0.1:9"])
def test_a_segment_held_in_memory_is_the_same_put(tmp_path, endpoint):
    """A segment the backup kept in memory goes as bytes: the same request as from its spool file."""
    path, data, sha256 = _segment(tmp_path, 64 * 1024)
    from_file, sent_file = _store(endpoint)
    from_file.put_file("p/seg", path, sha256)
    from_memory, sent_memory = _store(endpoint)
    from_memory.put_body("p/seg", data, len(data), sha256)
    (put_file,), (put_memory,) = sent_file, sent_memory
    assert put_memory["body"] == put_file["body"] == data
    for name in ("x-amz-checksum-sha256", "x-amz-meta-sha256", "x-amz-content-sha256", "content-length"):
        assert put_memory["headers"][name] == put_file["headers"][name]


def test_a_segment_held_in_memory_over_the_threshold_goes_multipart(tmp_path):
    store, sent = _store("https://s3.example.com", threshold=5 * MIB)
    _, data, sha256 = _segment(tmp_path, 6 * MIB)
    store.put_body("p/seg", data, len(data), sha256)
    assert [r["method"] for r in sent] == ["POST", "PUT", "PUT", "POST"]
    parts = [r for r in sent if r["method"] == "PUT"]  # aws-chunked bodies, each with its decoded length
    assert sum(int(r["headers"]["x-amz-decoded-content-length"]) for r in parts) == len(data)
