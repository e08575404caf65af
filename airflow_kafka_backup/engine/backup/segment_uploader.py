"""Uploads closed segments in the background while the consumer keeps reading.

At most ``max_pending`` segments wait in their spools (memory or local disk) at once, so
disk and memory stay bounded however large the backlog. Before each upload the object is looked up:

- same checksum already there: skip (a retry or re-run; the bytes are identical). An object an
  older version uploaded may carry another algorithm's checksum (sha256, before CRC64-NVME): then
  the segment's bytes are checksummed once more in that algorithm to compare, and the segment is
  recorded with the object's checksum, as the manifest that committed it records it;
- different bytes there, and a committed manifest names the key: refuse
  (:class:`ConflictError`), because committed backup bytes are never replaced;
- different bytes there, not committed: leftovers of a failed attempt; overwrite.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from airflow_kafka_backup.engine.backup.partition_writer import ClosedSegment
from airflow_kafka_backup.engine.errors import ConflictError
from airflow_kafka_backup.engine.storage.checksums import checksum_of, stored_checksum
from airflow_kafka_backup.engine.storage.manifest import SegmentInfo
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

log = logging.getLogger(__name__)


class SegmentUploader:
    def __init__(
        self,
        store: S3ObjectStore,
        is_committed: Callable[[str], bool],
        max_pending: int = 2,
    ) -> None:
        self._store = store
        self._is_committed = is_committed
        self._max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=max_pending, thread_name_prefix="segment-upload")
        self._pending: deque[Future] = deque()
        self.uploaded: list[SegmentInfo] = []
        self.skipped = 0

    def submit(self, segment: ClosedSegment) -> None:
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        self._pending.append(self._executor.submit(self._upload, segment))

    def drain(self) -> list[SegmentInfo]:
        """Wait for every upload; re-raises the first failure."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)
        return sorted(self.uploaded, key=lambda s: (s.topic, s.partition, s.first_offset))

    def close_on_error(self) -> None:
        for future in self._pending:
            future.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _upload(self, segment: ClosedSegment) -> None:
        info = segment.info
        try:
            existing = self._store.head(info.key)
            if existing is not None:
                stored, ours = stored_checksum(existing), info.checksum
                if stored is not None and stored.algorithm != ours.algorithm:
                    with segment.spool.opened() as body:  # rare: an object an older version uploaded
                        ours = checksum_of(stored.algorithm, body)
                if stored == ours and existing.get("ContentLength", info.bytes) == info.bytes:
                    self.skipped += 1
                    self.uploaded.append(replace(info, checksum=stored))
                    return
                if self._is_committed(info.key):
                    raise ConflictError(
                        f"s3://{self._store.bucket}/{info.key} is part of a committed backup and holds "
                        f"different bytes ({stored}) than this run produced ({ours}) "
                        f"for offsets {info.first_offset}..{info.last_offset}; refusing to overwrite it. "
                        "Kafka no longer returns the records that were backed up (compaction or a "
                        "recreated topic): back up to a new prefix."
                    )
                log.info("Replacing uncommitted leftover %s from an earlier attempt", info.key)
            with segment.spool.opened() as body:
                self._store.put_body(info.key, body, segment.spool.size, info.checksum)
            self.uploaded.append(info)
        finally:
            segment.spool.discard()
