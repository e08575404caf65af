"""How objects are written to S3: encryption, canned ACL, multipart part size, retention.

These are the seed connector's ``s3.ssea.name``, ``s3.sse.kms.key.id``,
``s3.sse.customer.key``, ``s3.acl.canned``, ``s3.part.size`` and
``s3.retention.policy.days``. They become S3Hook ``extra_args`` (every upload and
manifest), read arguments (SSE-C must be sent on every read too) and the transfer
config (multipart). Validated when built, so a bad value fails before anything is written.

Object Lock (``object_lock_mode`` + ``object_lock_retention_days``) is not in
``extra_args``: its retain-until date is computed per write (:meth:`S3WriteSettings.object_lock_args`),
so an object written late in a long task is still retained the full number of days.

The SSE-C key is a secret: it is never in ``repr``, an exception message, a manifest or
XCom. Manifests carry only a salted fingerprint, so a restore with a missing or wrong
key fails with a clear message before it reads a segment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_kafka_backup.engine.errors import ConfigurationError

CANNED_ACLS = (
    "private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
    "bucket-owner-read", "bucket-owner-full-control",
)
SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
MAX_OBJECT_LOCK_DAYS = 36_500  # S3's longest default retention: 100 years
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
DEFAULT_PART_SIZE = 26_214_400  # the seed's default
_FINGERPRINT_SALT = b"airflow-kafka-backup/sse-c/v1:"
# Stands in for an SSE-C key that is only read at run time, so conflicts surface at parse time.
PLACEHOLDER_CUSTOMER_KEY = bytes(32)


def decode_customer_key(value: str | bytes) -> bytes:
    """A 256-bit SSE-C key given raw (32 bytes) or base64; the message never echoes the key."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) == 32:
        return raw
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 32:
        raise ConfigurationError("The SSE-C customer key must be 256 bits: 32 raw bytes or their base64 encoding.")
    return decoded


def key_fingerprint(key: bytes) -> str:
    """A salted digest that identifies a key without revealing it (S3 itself exposes an MD5)."""
    return hashlib.sha256(_FINGERPRINT_SALT + key).hexdigest()[:32]


@dataclass(frozen=True)
class S3WriteSettings:
    sse_algorithm: str | None = None
    sse_kms_key_id: str | None = None
    sse_customer_key: bytes | None = field(default=None, repr=False)
    acl: str | None = None
    part_size: int = DEFAULT_PART_SIZE
    object_lock_mode: str | None = None
    object_lock_retention_days: int | None = None

    @classmethod
    def create(
        cls,
        *,
        sse_algorithm: object = None,
        sse_kms_key_id: object = None,
        sse_customer_key: str | bytes | None = None,
        acl: object = None,
        part_size: object = DEFAULT_PART_SIZE,
        object_lock_mode: object = None,
        object_lock_retention_days: object = None,
    ) -> S3WriteSettings:
        algorithm = sse_algorithm or None
        if algorithm is not None and algorithm not in SSE_ALGORITHMS:
            raise ConfigurationError(f"sse_algorithm must be one of {', '.join(SSE_ALGORITHMS)}, got {algorithm!r}.")
        kms_key = sse_kms_key_id or None
        if kms_key is not None and algorithm not in ("aws:kms", "aws:kms:dsse"):
            raise ConfigurationError("sse_kms_key_id needs sse_algorithm 'aws:kms' (or 'aws:kms:dsse').")
        key = decode_customer_key(sse_customer_key) if sse_customer_key else None
        if key is not None and algorithm not in (None, "AES256"):
            raise ConfigurationError(
                f"An SSE-C customer key cannot be combined with sse_algorithm {algorithm!r}: S3 encrypts an "
                "object with either a customer-provided key or a KMS key, not both."
            )
        if acl is not None and acl != "" and acl not in CANNED_ACLS:
            raise ConfigurationError(f"acl must be a canned ACL ({', '.join(CANNED_ACLS)}), got {acl!r}.")
        try:
            size = int(part_size)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigurationError(f"part_size must be a number of bytes, got {part_size!r}.") from None
        if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
            raise ConfigurationError(
                f"part_size must be between {MIN_PART_SIZE} (5 MiB, S3's minimum) and {MAX_PART_SIZE}, got {size}."
            )
        lock_mode, lock_days = validate_object_lock(object_lock_mode, object_lock_retention_days)
        return cls(None if key is not None else algorithm, kms_key, key, acl or None, size,
                   object_lock_mode=lock_mode, object_lock_retention_days=lock_days)

    @property
    def customer_key_fingerprint(self) -> str | None:
        return key_fingerprint(self.sse_customer_key) if self.sse_customer_key else None

    def manifest_encryption(self) -> dict[str, str]:
        """What a manifest records about encryption: the kind, and for SSE-C a key fingerprint."""
        if self.sse_customer_key is not None:
            return {"sse": "SSE-C", "sse_c_key_fingerprint": key_fingerprint(self.sse_customer_key)}
        out = {"sse": self.sse_algorithm} if self.sse_algorithm else {}
        if self.sse_kms_key_id:
            out["kms_key_id"] = self.sse_kms_key_id
        return out

    def check_can_read(self, encryption: dict[str, str], what: str) -> None:
        """Fail before reading (or adding to) objects whose SSE-C key is not the one we have.

        S3 refuses a GET without the key an object was written with, and a GET that gives a
        key for an object written without one. So a backup prefix holds one SSE-C key or none,
        and a backup run under another key (or a key where the backup has none) is refused
        too: a restore could then read no key's worth of it in one go. A new key starts a new prefix.
        """
        wanted = encryption.get("sse_c_key_fingerprint")
        if wanted is None:
            if self.sse_customer_key is not None:
                raise ConfigurationError(
                    f"{what} is not encrypted with a customer-provided key (SSE-C), but sse_customer_key_variable "
                    "gives one: S3 refuses a key for objects stored without one, so a backup prefix holds one "
                    "SSE-C key or none. Leave sse_customer_key_variable unset for it; to start using SSE-C, back up "
                    "to a new prefix."
                )
            return
        if self.sse_customer_key is None:
            raise ConfigurationError(
                f"{what} is encrypted with a customer-provided key (SSE-C); give the same key through "
                "sse_customer_key_variable."
            )
        if key_fingerprint(self.sse_customer_key) != wanted:
            raise ConfigurationError(
                f"The SSE-C key given is not the key {what} was encrypted with (a backup prefix holds one key: "
                "a new key starts a new prefix).")

    def read_args(self) -> dict[str, Any]:
        """Arguments every GET and HEAD needs (SSE-C: the key, on every request)."""
        if self.sse_customer_key is None:
            return {}
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self.sse_customer_key}

    def extra_args(self) -> dict[str, Any]:
        """Arguments for every upload: encryption and ACL."""
        args: dict[str, Any] = dict(self.read_args())
        if self.sse_algorithm:
            args["ServerSideEncryption"] = self.sse_algorithm
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        if self.acl:
            args["ACL"] = self.acl
        return args

    def object_lock_args(self, now: datetime | None = None) -> dict[str, Any]:
        """Object Lock arguments for one write, retained until ``now`` + the retention days.

        Called per write, never cached. S3 refuses an Object Lock PUT without a Content-MD5
        or a checksum, so a CRC32 checksum is asked for explicitly: botocore then sends one
        even when the connection sets ``request_checksum_calculation`` to ``when_required``.
        """
        if self.object_lock_mode is None or self.object_lock_retention_days is None:
            return {}
        now = datetime.now(UTC) if now is None else now
        return {"ObjectLockMode": self.object_lock_mode,
                "ObjectLockRetainUntilDate": now + timedelta(days=self.object_lock_retention_days),
                "ChecksumAlgorithm": "CRC32"}

    def transfer_config_args(self) -> dict[str, int]:
        """Multipart above ``part_size``, in parts of ``part_size``, streamed from the spool file."""
        return {"multipart_threshold": self.part_size, "multipart_chunksize": self.part_size}


def validate_object_lock(mode: object, days: object) -> tuple[str | None, int | None]:
    """``object_lock_mode`` and ``object_lock_retention_days``: both or neither."""
    # "None": a null Param rendered by a DAG without native rendering.
    mode = None if mode in (None, "", "None") else mode
    days = None if days in (None, "", "None") else days
    if (mode is None) != (days is None):
        raise ConfigurationError(
            "object_lock_mode and object_lock_retention_days go together: give both (e.g. GOVERNANCE and 35) "
            "or neither."
        )
    if mode is None:
        return None, None
    if mode not in OBJECT_LOCK_MODES:
        raise ConfigurationError(f"object_lock_mode must be one of {', '.join(OBJECT_LOCK_MODES)}, got {mode!r}.")
    bad = ConfigurationError(
        f"object_lock_retention_days must be a whole number of days from 1 to {MAX_OBJECT_LOCK_DAYS}, got {days!r}."
    )
    if isinstance(days, bool) or (isinstance(days, float) and not days.is_integer()):
        raise bad
    try:
        count = int(days)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise bad from None
    if not 1 <= count <= MAX_OBJECT_LOCK_DAYS:
        raise bad
    return str(mode), count


def check_retention_covers_object_lock(retention_days: int | None, object_lock_retention_days: int | None) -> None:
    """Refuse a lifecycle expiry shorter than the Object Lock window.

    Expiry cannot remove a locked version; it would put a delete marker on top, so the
    backup would look gone (readers list current objects) while its versions are kept and
    billed until the lock ends. Better to say so before anything is written.
    """
    if retention_days is None or object_lock_retention_days is None or retention_days >= object_lock_retention_days:
        return
    raise ConfigurationError(
        f"retention_days ({retention_days}) is shorter than object_lock_retention_days "
        f"({object_lock_retention_days}): the lifecycle rule would hide objects S3 must still keep. Set "
        "retention_days to at least object_lock_retention_days, or leave it unset."
    )


def validate_retention_days(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"retention_days must be a whole number of days (>= 1), got {value!r}.")
    try:
        days = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigurationError(f"retention_days must be a whole number of days (>= 1), got {value!r}.") from None
    if days < 1:
        raise ConfigurationError(f"retention_days must be at least 1, got {days}.")
    return days
