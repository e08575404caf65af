"""Time-based rotation, judged on record timestamps only (never the wall clock).

- ``rotate_interval_ms`` (the seed's ``rotate.interval.ms``): a segment never spans more
  than this much record time (max timestamp - min timestamp).
- ``rotate_schedule_interval_ms`` with ``timezone`` (the seed's
  ``rotate.schedule.interval.ms``): segments are cut at clock-aligned boundaries, e.g.
  every hour on the hour in Europe/Zurich, counted from local midnight. A segment holds
  records of one window only.

The connector judged both on the wall clock, which made file boundaries depend on when
the task ran and broke exactly-once. Here the same records always cut the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_kafka_backup.engine.errors import ConfigurationError

_OFFSET_CACHE_GRANULARITY_MS = 15 * 60 * 1000  # every tz transition falls on a quarter hour


@dataclass
class TimeRotation:
    interval_ms: int | None = None
    schedule_interval_ms: int | None = None
    timezone_name: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False)
    _offsets: dict[int, int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (("rotate_interval_ms", self.interval_ms),
                            ("rotate_schedule_interval_ms", self.schedule_interval_ms)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigurationError(f"{name} must be a positive number of milliseconds or unset, got {value!r}.")
        try:
            self._zone = ZoneInfo(self.timezone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"Unknown timezone {self.timezone_name!r}; use an IANA name such as "
                                     "'Europe/Zurich'.") from None

    @property
    def enabled(self) -> bool:
        return self.interval_ms is not None or self.schedule_interval_ms is not None

    def window(self, timestamp_ms: int) -> int | None:
        """The clock-aligned window a record falls in (local time, aligned to local midnight)."""
        if self.schedule_interval_ms is None:
            return None
        return (timestamp_ms + self._utc_offset_ms(timestamp_ms)) // self.schedule_interval_ms

    def cuts_before(self, min_ts: int, max_ts: int, window: int | None, timestamp_ms: int) -> bool:
        """Whether a record with ``timestamp_ms`` must start a new segment."""
        if self.interval_ms is not None and max(max_ts, timestamp_ms) - min(min_ts, timestamp_ms) > self.interval_ms:
            return True
        return window is not None and self.window(timestamp_ms) != window

    def _utc_offset_ms(self, timestamp_ms: int) -> int:
        bucket = timestamp_ms // _OFFSET_CACHE_GRANULARITY_MS
        offset = self._offsets.get(bucket)
        if offset is None:
            moment = datetime.fromtimestamp(bucket * _OFFSET_CACHE_GRANULARITY_MS / 1000, timezone.utc)
            offset = int(moment.astimezone(self._zone).utcoffset().total_seconds() * 1000)
            self._offsets[bucket] = offset
        return offset
