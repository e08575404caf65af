"""The seed's ``s3.retention.policy.days``: a lifecycle rule expiring the backup after N days.

Idempotent and polite: our rule has a fixed ID per prefix, is added or updated in
place, and every other rule on the bucket is put back exactly as it was.

On a versioned bucket (Object Lock needs one) expiry only puts a delete marker on the
current version; the versions themselves stay. With ``versioned`` the rule also expires a
version a day after it stops being current, which S3 does only once its Object Lock
retention has ended.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from airflow_kafka_backup.engine.errors import ConfigurationError

RULE_ID_PREFIX = "airflow-kafka-backup:"


def check_retention_prefix(bucket: str, prefix: str) -> None:
    """A retention rule needs a prefix: on the bucket's root it would expire every object in it."""
    if not prefix.strip("/"):
        raise ConfigurationError(
            f"retention_days needs a prefix: with an empty prefix the lifecycle rule would expire every object in "
            f"S3 bucket {bucket!r}, not only the backup's. Give the backup a prefix, or leave retention_days unset."
        )


def retention_rule(prefix: str, days: int, versioned: bool = False) -> dict[str, Any]:
    rule = {
        "ID": f"{RULE_ID_PREFIX}{prefix}",
        "Filter": {"Prefix": f"{prefix}/" if prefix else ""},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        # Parts of uploads that died mid-way are not objects, so expiry alone never removes them.
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }
    if versioned:
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": 1}
    return rule


def current_rules(client, bucket: str) -> list[dict[str, Any]]:
    try:
        return client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return []
        raise


def ensure_retention_rule(client, bucket: str, prefix: str, days: int, versioned: bool = False) -> str:
    """Put our rule for ``prefix``; returns ``created``, ``updated`` or ``unchanged``.

    Refuses an empty prefix: the rule would expire every object in the bucket, not the backup's.
    """
    check_retention_prefix(bucket, prefix)
    wanted = retention_rule(prefix, days, versioned)
    rules = current_rules(client, bucket)
    ours = [r for r in rules if r.get("ID") == wanted["ID"]]
    if ours and all(ours[0].get(k) == wanted.get(k) for k in {*wanted, "NoncurrentVersionExpiration"}):
        return "unchanged"
    others = [r for r in rules if r.get("ID") != wanted["ID"]]
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [*others, wanted]})
    return "updated" if ours else "created"
