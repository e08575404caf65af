"""A stand-in for ``confluent_kafka.Message`` in unit tests: the accessors the engine reads, nothing else."""

from __future__ import annotations

CREATE_TIME = 1  # confluent_kafka.TIMESTAMP_CREATE_TIME


class FakeMessage:
    """What the backup writer and the drill's reader take from a ``confluent_kafka.Message``."""

    def __init__(self, offset: int, key: bytes | None = b"k", value: bytes | None = b"v", headers=None,
                 timestamp: tuple[int, int] = (CREATE_TIME, 5)) -> None:
        self._offset, self._key, self._value, self._headers, self._timestamp = offset, key, value, headers, timestamp

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self):
        return self._headers
