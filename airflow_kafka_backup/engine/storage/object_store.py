"""The object store the engine reads and writes: an S3 bucket through a boto3 client.

The Airflow layer builds it from ``S3Hook`` (``S3ObjectStore.from_s3_hook``), so the
``aws`` connection's endpoint, region, profile and botocore config apply, and the
hook's ``extra_args`` (encryption, ACL) and ``transfer_config`` (multipart) reach every
upload. The engine itself never imports Airflow.
"""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.checksums import Checksum, metadata

DEFAULT_MULTIPART_THRESHOLD = 8 << 20  # boto3's TransferConfig default, for a store built without one
_NOT_FOUND = ("404", "NoSuchKey", "NotFound")
_ALREADY_THERE = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")  # If-None-Match: * refused


@dataclass
class S3ObjectStore:
    """One bucket. ``extra_args`` go with every write; ``read_args`` with every read.

    ``object_lock_args``, when set, is called for every write and its result (Object Lock
    mode and a retain-until date computed at that moment) goes with it too.
    """

    client: Any
    bucket: str
    extra_args: dict[str, Any] = field(default_factory=dict)
    read_args: dict[str, Any] = field(default_factory=dict)
    transfer_config: Any = None
    object_lock_args: Callable[[], dict[str, Any]] | None = None

    @classmethod
    def from_s3_hook(cls, hook: Any, bucket: str, read_args: dict[str, Any] | None = None) -> S3ObjectStore:
        return cls(
            client=hook.get_conn(),
            bucket=bucket,
            extra_args=dict(hook.extra_args),
            read_args=dict(read_args or {}),
            transfer_config=hook.transfer_config,
        )

    def __repr__(self) -> str:  # extra_args may hold an SSE-C key
        return f"S3ObjectStore(bucket={self.bucket!r})"

    def _explain(self, error: ClientError, key: str) -> Exception:
        """S3's answers to SSE-C mistakes, as messages that say what to do."""
        code = str(error.response.get("Error", {}).get("Code", ""))
        message = str(error.response.get("Error", {}).get("Message", "")).lower()
        if code in ("400", "InvalidRequest") and "not applicable" in message and "SSECustomerKey" in self.read_args:
            return ConfigurationError(  # S3: "The encryption parameters are not applicable to this object."
                f"s3://{self.bucket}/{key} is stored without a customer-provided key (SSE-C), but "
                "sse_customer_key_variable gives one: read it without one (a backup prefix holds one SSE-C key, "
                "or none)."
            )
        if code in ("400", "InvalidRequest") and "encrypt" in message:
            return ConfigurationError(
                f"s3://{self.bucket}/{key} is encrypted with a customer-provided key (SSE-C); "
                "give the same key through sse_customer_key_variable."
            )
        if code in ("403", "AccessDenied") and "SSECustomerKey" in self.read_args:
            return ConfigurationError(
                f"Access to s3://{self.bucket}/{key} was denied: the SSE-C key given is probably not the key it "
                "was written with."
            )
        return error

    def disable_expect_continue(self) -> None:
        """Upload bodies without waiting for ``100 Continue`` (the seed's ``s3.http.send.expect.continue=false``).

        botocore adds ``Expect: 100-continue`` to uploads in one documented event handler;
        some S3-compatible stores and proxies mishandle it.
        """
        from botocore import handlers

        self.client.meta.events.unregister("before-call.s3", handlers.add_expect_header)

    def set_retry_backoff(self, base_ms: int, source: str = "the client") -> None:
        """Back off from ``base_ms`` between S3 retries (the seed's ``s3.retry.backoff.ms``); see :mod:`.s3_retry`."""
        from airflow_kafka_backup.engine.storage.s3_retry import set_retry_backoff

        set_retry_backoff(self.client, base_ms, source=source)

    def check_bucket(self) -> None:
        """Fail with a message naming the bucket when it is missing or not ours to use."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise ConfigurationError(f"S3 bucket {self.bucket!r} does not exist.") from None
            if code in ("403", "AccessDenied"):
                raise ConfigurationError(f"Access to S3 bucket {self.bucket!r} is denied.") from None
            raise

    def is_versioned(self) -> bool | None:
        """Versioning is on (or suspended, so versions exist); ``None`` when not allowed to ask."""
        try:
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code", "") in ("403", "AccessDenied"):
                return None
            raise
        return status in ("Enabled", "Suspended")

    def write_args(self) -> dict[str, Any]:
        """Arguments for one write: ``extra_args``, plus Object Lock retention counted from now."""
        return {**self.extra_args, **(self.object_lock_args() if self.object_lock_args else {})}

    def check_object_lock(self) -> None:
        """Fail, naming the bucket, unless Object Lock is enabled on it (else no object can be retained)."""
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket).get("ObjectLockConfiguration", {})
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("403", "AccessDenied"):
                raise ConfigurationError(
                    f"Reading the Object Lock configuration of S3 bucket {self.bucket!r} was denied: "
                    "object_lock_mode needs s3:GetBucketObjectLockConfiguration on the bucket."
                ) from None
            if code not in ("ObjectLockConfigurationNotFoundError", "404"):
                raise
            config = {}
        if config.get("ObjectLockEnabled") != "Enabled":
            raise ConfigurationError(
                f"S3 bucket {self.bucket!r} does not have Object Lock enabled, so object_lock_mode cannot retain "
                "its objects. Object Lock needs a versioned bucket with Object Lock enabled (at creation, or later "
                "with PutObjectLockConfiguration); use such a bucket or unset object_lock_mode."
            )

    def put_file(self, key: str, path: str, checksum: Checksum) -> None:
        """Upload a local file whose checksum is ``checksum`` (see :meth:`put_body`)."""
        with open(path, "rb") as body:
            self.put_body(key, body, os.path.getsize(path), checksum)

    def put_body(self, key: str, body: bytes | BinaryIO, size: int, checksum: Checksum) -> None:
        """Upload ``size`` bytes whose checksum is ``checksum``: one PutObject up to the multipart threshold.

        ``body`` is the bytes themselves (a segment held in memory) or a seekable file open for
        reading (a spool file); the caller closes it. The checksum is also stored in the object's
        metadata (``x-amz-meta-crc64nvme`` or ``-sha256``), for quick verification and re-runs.

        Up to the transfer config's ``multipart_threshold`` (``part_size``) the bytes go in one
        PutObject, streamed, that carries ``checksum`` as its ``ChecksumCRC64NVME`` (or
        ``ChecksumSHA256``): S3 checks the bytes it receives against the checksum computed while
        the segment was written, and botocore computes no checksum of its own (see
        :func:`_sign_with_our_checksum`). The transfer manager (s3transfer) would have cost twice
        the client CPU for the same single PUT. Without Object Lock, a connection whose
        ``request_checksum_calculation`` is ``when_required`` (for stores that refuse checksum
        headers) gets none. Larger bodies go multipart through the transfer manager, in parts of
        the configured size; a CRC64-NVME goes with them as the object's full-object checksum, which
        S3 checks when it completes the upload (it has no full-object sha256 for multipart uploads).
        """
        args = {**self.write_args(), "Metadata": metadata(checksum)}
        sends_checksum = "ChecksumAlgorithm" in args or _checksums_when_supported(self.client)
        if size > getattr(self.transfer_config, "multipart_threshold", DEFAULT_MULTIPART_THRESHOLD):
            if sends_checksum and checksum.s3_algorithm == "CRC64NVME":
                args.pop("ChecksumAlgorithm", None)  # s3transfer names the full-object checksum's algorithm
                args[checksum.s3_argument] = checksum.s3_value()
            stream = io.BytesIO(body) if isinstance(body, bytes) else body
            self.client.upload_fileobj(stream, self.bucket, key, ExtraArgs=args,
                                       Config=_classic_transfers(self.transfer_config))
            return
        # Object Lock asks for a checksum (ChecksumAlgorithm): ours is one. S3 wants the algorithm
        # named too (x-amz-sdk-checksum-algorithm) for a locked object.
        args.pop("ChecksumAlgorithm", None)
        if sends_checksum:
            args["ChecksumAlgorithm"] = checksum.s3_algorithm
            args[checksum.s3_argument] = checksum.s3_value()
            _register_checksum_signing(self.client)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **args)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **self.write_args()
        )

    def create_if_absent(self, key: str, data: bytes, content_type: str = "application/json") -> bool:
        """Write ``data`` at ``key`` unless an object is there (``If-None-Match: *``); whether this call wrote it.

        Atomic in S3: of any number of callers, exactly one creates the object. The writer lock and
        the commit log are built on it.
        """
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*",
                                   ContentType=content_type, **self.write_args())
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _ALREADY_THERE:
                return False
            raise

    def get_bytes_if_exists(self, key: str) -> bytes | None:
        """The object's bytes, or ``None`` when the key does not exist: one GET either way (no HEAD first)."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **self.read_args)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise self._explain(error, key) from None

    def head(self, key: str) -> dict[str, Any] | None:
        """Object metadata, or ``None`` when the key does not exist."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key, **self.read_args)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise self._explain(error, key) from None

    def get_bytes(self, key: str) -> bytes:
        return self.open_stream(key).read()

    def open_stream(self, key: str) -> BinaryIO:
        """A streaming body: read in chunks, never the whole object at once."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **self.read_args)["Body"]
        except ClientError as error:
            raise self._explain(error, key) from None

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """Keys under ``prefix`` in order; with ``start_after``, only those after it (S3 skips the rest)."""
        paginator = self.client.get_paginator("list_objects_v2")
        after = {"StartAfter": start_after} if start_after else {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **after):
            for obj in page.get("Contents", ()):
                yield obj["Key"]

    def list_entries(self, prefix: str) -> Iterator[ObjectEntry]:
        """Keys with their size, ``LastModified`` (a manifest's is its run's commit time) and ETag."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                modified = obj.get("LastModified")
                yield ObjectEntry(obj["Key"], int(obj.get("Size", 0)),
                                  int(modified.timestamp() * 1000) if modified is not None else None,
                                  obj.get("ETag"))

    def list_folders(self, prefix: str) -> Iterator[str]:
        """The "folders" right below ``prefix`` (ending in ``/``), without listing what is inside them."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                yield common["Prefix"]

    def delete_keys(self, keys: list[str]) -> int:
        """Delete ``keys`` (a thousand per request, S3's limit); returns how many were deleted.

        Only a drill deletes, and only what it wrote itself (see ``engine.drill.cleanup``). In a
        versioned bucket this leaves delete markers, as any delete does.
        """
        deleted = 0
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            answer = self.client.delete_objects(Bucket=self.bucket,
                                                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:
                raise ConfigurationError(f"Could not delete from s3://{self.bucket}: " + "; ".join(
                    f"{e.get('Key')}: {e.get('Code')} {e.get('Message')}" for e in errors[:5]))
            deleted += len(batch)
        return deleted

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (which must end with ``/``: a folder, never a partial name)."""
        if not prefix.endswith("/") or prefix == "/":
            raise ValueError(f"delete_prefix needs a folder ending in '/', got {prefix!r}")
        return self.delete_keys(list(self.list_keys(prefix)))


@dataclass(frozen=True)
class ObjectEntry:
    key: str
    size: int
    last_modified_ms: int | None
    # Names the object's bytes: the same until the key is written again (whatever its encryption).
    etag: str | None = None


def _checksums_when_supported(client: Any) -> bool:
    """Whether the client sends checksums on its own (botocore's default ``request_checksum_calculation``)."""
    config = getattr(getattr(client, "meta", None), "config", None)
    return getattr(config, "request_checksum_calculation", "when_supported") != "when_required"


def _classic_transfers(config: Any) -> Any:
    """``config`` with boto3's own (s3transfer) transfer manager, never the CRT's.

    With ``awscrt`` installed (for CRC64-NVME), boto3 would move multipart uploads to the CRT's
    transfer manager on the EC2 instance types it is optimised for, when the config says
    ``auto`` (its default): another client, with its own credentials and threads, that the
    rest of this store's settings were not made for. A config that asks for ``crt`` keeps it.
    """
    if getattr(config, "preferred_transfer_client", None) != "auto":
        return config
    classic = copy.copy(config)
    classic.preferred_transfer_client = "classic"
    return classic


def _register_checksum_signing(client: Any) -> None:
    """Have ``client`` sign PutObjects that carry our checksum as botocore signs its own checksums."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is not None:  # unique_id: registered once a client, however many stores share it
        events.register("before-sign.s3.PutObject", _sign_with_our_checksum, unique_id=_SIGNING_HANDLER_ID)


_SIGNING_HANDLER_ID = "airflow-kafka-backup-segment-checksum"
_CHECKSUM_HEADERS = {f"x-amz-checksum-{name}": name for name in ("crc64nvme", "sha256")}


def _sign_with_our_checksum(request: Any, **_: Any) -> None:
    """A PutObject carrying our ``x-amz-checksum-*`` header: no second hash of the body for the signature.

    botocore's SigV4 signer for S3 hashes the whole body for the signature unless it knows a
    checksum header protects it. For the checksums it computes itself it records that in the
    request's context; this records ours the same way, so over HTTPS the body is sent as
    ``UNSIGNED-PAYLOAD`` exactly as with botocore's own checksum. Over plain HTTP botocore
    signs every body; there the signed checksum header already binds the body (S3 refuses a
    body that does not match it, ``BadDigest``), so the payload hash is dropped there too,
    unless the client's ``s3`` config sets ``payload_signing_enabled`` itself.
    """
    header = next((name for name in _CHECKSUM_HEADERS if name in request.headers), None)
    if header is None:
        return
    context = request.context
    context.setdefault("checksum", {})["request_algorithm"] = {
        "algorithm": _CHECKSUM_HEADERS[header], "in": "header", "name": header}
    config = context.get("client_config")
    s3_config = dict(getattr(config, "s3", None) or {})
    if config is not None and "payload_signing_enabled" not in s3_config:
        context["client_config"] = config.merge(Config(s3={**s3_config, "payload_signing_enabled": False}))
