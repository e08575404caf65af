"""``kafka-backup``: look at a backup without Airflow.

    kafka-backup ls      --bucket B [--prefix P]                    topics and their incarnations in the backup
    kafka-backup verify  --bucket B [--prefix P] [--topic T] [--quick]
    kafka-backup inspect --bucket B KEY [--limit N]                 one segment, as JSON lines
    kafka-backup drills  --bucket B [--prefix P] [--json]           past restore drills and their results

S3 access comes from the usual AWS environment (profile, region, credentials, retry
mode) plus ``--endpoint-url`` for S3-compatible stores. ``--s3-retry-backoff-ms`` is the
operators' ``s3_retry_backoff_ms``: the base of the backoff between S3 retries, in
botocore's ``standard`` retry mode (or ``adaptive``, when the environment asks for it).
An SSE-C key is read from the environment
variable named by ``--sse-customer-key-env``, never from the command line (where
``ps`` would show it).

Exit codes: 0 ok; 1 the backup has problems (verify), the segment is damaged
(inspect) or the latest drill failed (drills); 2 bad usage or configuration (missing
bucket, key, wrong encryption key, no credentials, an endpoint that does not answer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from base64 import b64encode
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError

from airflow_kafka_backup.engine.drill.report import list_reports
from airflow_kafka_backup.engine.errors import ConfigurationError, IntegrityError, KafkaBackupError
from airflow_kafka_backup.engine.formats.compression import get_compression
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.settings import clean_prefix
from airflow_kafka_backup.engine.storage.checksums import ChecksumReader
from airflow_kafka_backup.engine.storage.manifest import load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.s3_retry import RETRY_MODES, validate_retry_backoff_ms
from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings
from airflow_kafka_backup.engine.topics.incarnations import incarnation_of, longest_histories, summarize
from airflow_kafka_backup.engine.verify import verify_backup

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kafka-backup", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bucket", required=True)
    common.add_argument("--prefix", default="kafka-backup")
    common.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"))
    common.add_argument("--region", default=None)
    common.add_argument("--profile", default=None)
    common.add_argument("--sse-customer-key-env", metavar="VAR",
                        help="name of an environment variable holding the SSE-C key")
    common.add_argument("--s3-retry-backoff-ms", metavar="MS", default=None,
                        help="base of the backoff between S3 retries, in milliseconds (default: botocore's)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", parents=[common], help="list backed-up topics")
    verify = sub.add_parser("verify", parents=[common], help="check every committed segment and offset chain")
    verify.add_argument("--topic", action="append", dest="topics", help="only these topics (repeatable)")
    verify.add_argument("--quick", action="store_true", help="compare stored checksums instead of downloading")
    inspect = sub.add_parser("inspect", parents=[common], help="decode one segment to JSON lines")
    inspect.add_argument("key", help="the segment's object key")
    inspect.add_argument("--limit", type=int, default=None, help="print at most this many records")
    drills = sub.add_parser("drills", parents=[common], help="list past restore drill reports")
    drills.add_argument("--json", action="store_true", help="print every report in full, one JSON object a line")
    return parser


def _store(args: argparse.Namespace) -> tuple[S3ObjectStore, S3WriteSettings]:
    import boto3
    from botocore.config import Config

    backoff_ms = validate_retry_backoff_ms(args.s3_retry_backoff_ms)
    key = None
    if args.sse_customer_key_env:
        key = os.environ.get(args.sse_customer_key_env)
        if not key:
            raise ConfigurationError(f"Environment variable {args.sse_customer_key_env} is not set.")
    settings = S3WriteSettings.create(sse_customer_key=key)
    session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
    client = session.client("s3", endpoint_url=args.endpoint_url)
    if backoff_ms is not None and (client.meta.config.retries or {}).get("mode") not in RETRY_MODES:
        # A base to set needs a retry mode that has one: standard, unless the environment chose adaptive.
        client = session.client("s3", endpoint_url=args.endpoint_url, config=Config(retries={"mode": "standard"}))
    store = S3ObjectStore(client=client, bucket=args.bucket, extra_args=settings.extra_args(),
                          read_args=settings.read_args())
    if backoff_ms is not None:
        store.set_retry_backoff(backoff_ms, source="--s3-retry-backoff-ms")
    store.check_bucket()
    return store, settings


def _check_encryption(store: S3ObjectStore, settings: S3WriteSettings, prefix: str) -> list:
    manifests = list(load_manifests(store, prefix))
    for m in manifests:
        settings.check_can_read(m.encryption, f"backup run {m.run_id}")
    return manifests


def cmd_ls(args: argparse.Namespace) -> int:
    store, settings = _store(args)
    manifests = _check_encryption(store, settings, args.prefix)
    print(f"{'topic':<40} {'topic ID':<24} {'partitions':>10} {'segments':>9} {'records':>12}  record times (ms)")
    for name, incarnations in sorted(summarize(manifests).items()):
        for i in incarnations:  # oldest first: a recreated topic has one row per incarnation
            times = f"{i.min_timestamp}..{i.max_timestamp}" if i.min_timestamp is not None else "-"
            gone = "  (gone from the cluster)" if i.gone else ""
            print(f"{name:<40} {i.topic_id or '-':<24} {len(i.partitions):>10} {i.segments:>9} {i.records:>12}  "
                  f"{times}{gone}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    store, settings = _store(args)
    manifests = _check_encryption(store, settings, args.prefix)
    report = verify_backup(store, args.prefix, args.topics, deep=not args.quick, manifests=manifests)
    print(report.table())
    print(f"\n{report.manifests} manifests, {report.segments_checked} segments "
          f"{'hashed' if not args.quick else 'checked'}: {'OK' if report.ok else 'PROBLEMS'}")
    for problem in report.problems:
        print(f"  PROBLEM {problem}")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_inspect(args: argparse.Namespace) -> int:
    store, settings = _store(args)
    manifests = _check_encryption(store, settings, args.prefix)
    found = [(m, s) for m in manifests for s in m.segments if s.key == args.key]
    if not found:
        raise ConfigurationError(f"No committed manifest under {args.prefix} names the segment {args.key!r}.")
    manifest, seg = found[0]
    # On stderr, so that stdout stays JSON lines for jq: which run and which topic incarnation it belongs to.
    incarnation = incarnation_of(seg.topic, seg.topic_id, longest_histories(manifests))
    print(f"# {seg.key}: {seg.topic}[{seg.partition}] offsets {seg.first_offset}..{seg.last_offset}, run "
          f"{manifest.run_id}, topic ID {incarnation or '(recorded before topic IDs)'}", file=sys.stderr)
    reader = ChecksumReader(store.open_stream(seg.key), [seg.checksum.algorithm])
    fmt, codec = get_format(manifest.settings.segment_format), get_compression(manifest.settings.compression)
    for n, record in enumerate(fmt.decode(reader, codec)):
        if args.limit is not None and n >= args.limit:
            return EXIT_OK
        print(json.dumps({
            "partition": record.partition, "offset": record.offset, "timestamp": record.timestamp,
            "timestamp_type": record.timestamp_type, "key": _b64(record.key), "value": _b64(record.value),
            "headers": [[name, _b64(v)] for name, v in record.headers],
        }))
    while reader.read(1 << 20):  # anything the decoder left unread counts too
        pass
    if (actual := reader.mismatch(seg.checksum, seg.bytes)) is not None:
        raise IntegrityError(f"s3://{store.bucket}/{seg.key}: {actual}, the manifest says "
                             f"{seg.checksum.describe(seg.bytes)}")
    return EXIT_OK


def cmd_drills(args: argparse.Namespace) -> int:
    """The drill reports under ``<prefix>/_drills/``, oldest first. Exit 1 when the latest drill failed."""
    store, _ = _store(args)
    reports = list(list_reports(store, args.prefix))
    if args.json:
        for _, report in reports:
            print(json.dumps(report, sort_keys=True))
    else:
        print(f"{'started (UTC)':<26} {'result':<7} {'partitions':>10} {'records':>9} {'seconds':>8} "
              f"{'RTO (s)':>9}  drill / first difference")
        for _, r in reports:
            rto = (r.get("rto") or {}).get("projected_seconds")
            failure = r.get("failure") or {}
            where = (f"  {failure['partition']} at source offset {failure.get('source_offset')}: {failure['reason']}"
                     if "partition" in failure else f"  {failure['error']}" if "error" in failure else "")
            print(f"{r['started'][:26]:<26} {r['result']:<7} {len(r.get('partitions', [])):>10} "
                  f"{sum(p['source']['records'] for p in r.get('partitions', [])):>9} "
                  f"{r.get('duration_seconds') or 0:>8.1f} {'-' if rto is None else f'{rto:.1f}':>9}  "
                  f"{r['drill_id']}{where}")
        if not reports:
            print(f"(no drill reports under s3://{args.bucket}/{args.prefix}/_drills/)")
    return EXIT_PROBLEMS if reports and reports[-1][1].get("result") != "passed" else EXIT_OK


def _b64(data: bytes | None) -> str | None:
    return None if data is None else b64encode(data).decode("ascii")


COMMANDS = {"ls": cmd_ls, "verify": cmd_verify, "inspect": cmd_inspect, "drills": cmd_drills}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.prefix = clean_prefix(args.prefix)  # as the operators read it
        return COMMANDS[args.command](args)
    except ConfigurationError as error:
        print(f"kafka-backup: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BotoCoreError as error:  # no credentials, an endpoint that does not answer, ...
        print(f"kafka-backup: S3: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (IntegrityError, KafkaBackupError) as error:
        print(f"kafka-backup: {error}", file=sys.stderr)
        return EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
