"""Unit tests: a segment up to the multipart threshold is one PutObject carrying the checksum we computed.

A real botocore client builds and signs every request; a ``before-send`` handler (botocore's
last step before the wire) records the request's headers and body and answers it, so
nothing leaves the machine. Over ``https``, as with real S3, and over plain ``http``, as
with the local moto server.
"""

from __future__ import annotations

import io

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from urllib3.response import HTTPResponse

from airflow_kafka_backup.engine.storage.checksums import CRC64NVME, SHA256, Checksum, checksum_of
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


def _segment(tmp_path, size: int, algorithm: str = CRC64NVME) -> tuple[str, bytes, Checksum]:
    data = bytes(range(256)) * (size // 256)
    path = tmp_path / "segment"
    path.write_bytes(data)
    return str(path), data, checksum_of(algorithm, data)


@pytest.mark.parametrize("algorithm", [CRC64NVME, SHA256])
@pytest.mark.parametrize("endpoint", ["https://s3.example.com", "http://127.0.0.1:9"])
def test_a_segment_is_one_put_signed_with_our_checksum_and_hashed_by_no_one_else(tmp_path, endpoint, algorithm):
    store, sent = _store(endpoint)
    path, data, checksum = _segment(tmp_path, 64 * 1024, algorithm)
    store.put_file("p/seg", path, checksum)
    (put,) = sent
    headers = put["headers"]
    assert put["method"] == "PUT" and put["body"] == data
    ours = f"x-amz-checksum-{algorithm}"
    assert headers[ours] == checksum.s3_value()
    assert headers[f"x-amz-meta-{algorithm}"] == checksum.value
    # No checksum of botocore's own, and no second sha256 of the body for the signature: the
    # signed checksum header binds the body (S3 refuses one that does not match it).
    assert not [name for name in headers if name.startswith("x-amz-checksum-") and name != ours]
    assert headers["x-amz-sdk-checksum-algorithm"] == algorithm.upper() and "x-amz-trailer" not in headers
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert ours in headers["authorization"]  # among the signed headers


def test_the_crc64nvme_sent_is_s3s_form_of_the_bytes(tmp_path):
    """What S3 checks: base64 of the 8 big-endian bytes of CRC-64/NVME, as botocore would compute it."""
    from botocore.httpchecksum import CrtCrc64NvmeChecksum

    store, sent = _store("https://s3.example.com")
    path, data, checksum = _segment(tmp_path, 64 * 1024)
    store.put_file("p/seg", path, checksum)
    theirs = CrtCrc64NvmeChecksum()
    theirs.update(data)
    assert sent[0]["headers"]["x-amz-checksum-crc64nvme"] == theirs.b64digest()


def test_explicit_payload_signing_is_kept(tmp_path):
    store, sent = _store("http://127.0.0.1:9", s3={"payload_signing_enabled": True})
    path, data, checksum = _segment(tmp_path, 4096)
    store.put_file("p/seg", path, checksum)
    (put,) = sent
    # botocore hashed the body, as configured
    assert put["headers"]["x-amz-content-sha256"] == checksum_of(SHA256, data).value


def test_when_required_sends_no_checksum(tmp_path):
    """``request_checksum_calculation=when_required``: for stores that refuse checksum headers."""
    store, sent = _store("https://s3.example.com", request_checksum_calculation="when_required")
    path, _, checksum = _segment(tmp_path, 4096)
    store.put_file("p/seg", path, checksum)
    (put,) = sent
    assert not [name for name in put["headers"] if name.startswith("x-amz-checksum-")]
    assert put["headers"]["x-amz-meta-crc64nvme"] == checksum.value  # still stored, for verify and re-runs


def test_a_segment_over_the_threshold_goes_multipart_with_our_crc_as_its_full_object_checksum(tmp_path):
    store, sent = _store("https://s3.example.com", threshold=5 * MIB)
    path, _, checksum = _segment(tmp_path, 6 * MIB)
    store.put_file("p/seg", path, checksum)
    assert [r["method"] for r in sent] == ["POST", "PUT", "PUT", "POST"]  # create, two parts, complete
    create, complete = sent[0]["headers"], sent[-1]["headers"]
    assert create["x-amz-checksum-algorithm"] == "CRC64NVME" and create["x-amz-checksum-type"] == "FULL_OBJECT"
    assert complete["x-amz-checksum-crc64nvme"] == checksum.s3_value()  # S3 checks the whole object against it


def test_a_sha256_segment_over_the_threshold_goes_multipart_as_before(tmp_path):
    """S3 has no full-object sha256 for multipart uploads: the sha256 is the metadata's only."""
    store, sent = _store("https://s3.example.com", threshold=5 * MIB)
    path, _, checksum = _segment(tmp_path, 6 * MIB, SHA256)
    store.put_file("p/seg", path, checksum)
    assert [r["method"] for r in sent] == ["POST", "PUT", "PUT", "POST"]
    assert sent[0]["headers"]["x-amz-meta-sha256"] == checksum.value
    assert "x-amz-checksum-sha256" not in sent[-1]["headers"]


def test_multipart_uploads_stay_on_boto3s_own_transfer_manager():
    """With awscrt installed, boto3's ``auto`` would pick the CRT's transfer manager on some EC2 types."""
    from airflow_kafka_backup.engine.storage.object_store import _classic_transfers

    auto = TransferConfig(multipart_threshold=5 * MIB)
    assert _classic_transfers(auto).preferred_transfer_client == "classic"
    assert auto.preferred_transfer_client == "auto"  # the hook's own config is left as it is
    crt = TransferConfig(preferred_transfer_client="crt")
    assert _classic_transfers(crt) is crt and _classic_transfers(None) is None


@pytest.mark.parametrize("endpoint", ["https://s3.example.com", "http://127.0.0.1:9"])
def test_a_segment_held_in_memory_is_the_same_put(tmp_path, endpoint):
    """A segment the backup kept in memory goes as bytes: the same request as from its spool file."""
    path, data, checksum = _segment(tmp_path, 64 * 1024)
    from_file, sent_file = _store(endpoint)
    from_file.put_file("p/seg", path, checksum)
    from_memory, sent_memory = _store(endpoint)
    from_memory.put_body("p/seg", data, len(data), checksum)
    (put_file,), (put_memory,) = sent_file, sent_memory
    assert put_memory["body"] == put_file["body"] == data
    for name in ("x-amz-checksum-crc64nvme", "x-amz-meta-crc64nvme", "x-amz-content-sha256", "content-length"):
        assert put_memory["headers"][name] == put_file["headers"][name]


def test_a_segment_held_in_memory_over_the_threshold_goes_multipart(tmp_path):
    store, sent = _store("https://s3.example.com", threshold=5 * MIB)
    _, data, checksum = _segment(tmp_path, 6 * MIB)
    store.put_body("p/seg", data, len(data), checksum)
    assert [r["method"] for r in sent] == ["POST", "PUT", "PUT", "POST"]
    parts = [r for r in sent if r["method"] == "PUT"]  # aws-chunked bodies, each with its decoded length
    assert sum(int(r["headers"]["x-amz-decoded-content-length"]) for r in parts) == len(data)
