"""Time windows given as Params: ISO-8601 or epoch milliseconds, checked so a typo cannot select nothing.

Shared by the backup (manual runs by ``from_timestamp`` / ``until_timestamp``) and the restore
(point in time).
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow_kafka_backup.engine.errors import ConfigurationError

# Epoch values from 1 up to this are refused: as milliseconds they fall before March 1973, years
# before Kafka, while epoch seconds of any date from 1973 to the year 5138 and dates written
# without dashes (20240101) land here. Read as milliseconds, such a bound would filter out
# every record and the run would "succeed" having restored nothing.
_MIN_EPOCH_MS = 100_000_000_000


def parse_timestamp(name: str, value: object) -> int | None:
    """ISO-8601 (naive means UTC) or epoch milliseconds -> epoch milliseconds.

    0 is accepted (the beginning of time); other epoch values below :data:`_MIN_EPOCH_MS` are
    refused as probably seconds or a date without dashes.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be ISO-8601 or epoch milliseconds, got {value!r}.")
    if isinstance(value, int):
        return _epoch_ms(name, value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return _epoch_ms(name, int(text))
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"{name} must be ISO-8601 or epoch milliseconds, got {value!r}.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def parse_time_window(from_timestamp: object, until_timestamp: object) -> tuple[int | None, int | None]:
    """``from_timestamp`` / ``until_timestamp`` in epoch ms; a window that holds no instant is refused.

    Refused rather than run: no record would match, and the run would "succeed" having done nothing.
    """
    start, until = parse_timestamp("from_timestamp", from_timestamp), parse_timestamp("until_timestamp",
                                                                                       until_timestamp)
    if start is not None and until is not None and start >= until:
        raise ConfigurationError(
            f"from_timestamp ({from_timestamp}) must be before until_timestamp ({until_timestamp}).")
    return start, until


def _epoch_ms(name: str, value: int) -> int:
    if 0 < value < _MIN_EPOCH_MS:
        raise ConfigurationError(
            f"{name} {value} is epoch milliseconds before March 1973: it looks like epoch seconds or a date "
            f"without dashes. Give epoch milliseconds (e.g. {value * 1000} if it was seconds) or ISO-8601 "
            "(e.g. 2024-01-01T00:00:00Z)."
        )
    return value
