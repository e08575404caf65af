"""Which topics a backup (or a restore) takes: names and ``re:<regex>`` patterns, minus exclusions.

``topics`` and ``exclude_topics`` each mix plain names with ``re:<regex>`` entries (a full
match, as ``consumer_groups`` already reads them). Patterns are resolved anew by every plan,
against the cluster for a backup and against the topics in the backup for a restore, so a
topic created next week is backed up from its first record without anyone editing the DAG.

Internal topics (``__consumer_offsets``, ``__transaction_state``, anything starting with
``__``) are matched only by name: a ``re:.*`` must not back up the broker's own bookkeeping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from airflow_kafka_backup.engine.errors import ConfigurationError

PATTERN_PREFIX = "re:"
INTERNAL_PREFIX = "__"


def is_internal(topic: str) -> bool:
    return topic.startswith(INTERNAL_PREFIX)


def _entries(name: str, value: object, required: bool) -> list[str]:
    """A list of names/patterns, or their comma-separated text (a DAG without native rendering)."""
    if value is None or value == "" or value == []:
        if required:
            raise ConfigurationError(f"{name} must be a non-empty list of topic names or 're:<regex>' patterns.")
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")] if not value.startswith(PATTERN_PREFIX) else [value]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigurationError(f"{name} must be a list of topic names or 're:<regex>' patterns, got {value!r}.")
    return list(dict.fromkeys(v.strip() for v in value))


def _compile(name: str, entry: str) -> re.Pattern:
    try:
        return re.compile(entry[len(PATTERN_PREFIX):])
    except re.error as error:
        raise ConfigurationError(f"{name} pattern {entry!r} is not a regular expression: {error}.") from None


@dataclass(frozen=True)
class TopicSelection:
    """Parsed ``topics`` / ``exclude_topics``; :meth:`resolve` turns it into topic names."""

    names: tuple[str, ...]
    patterns: tuple[re.Pattern, ...]
    exclude_names: frozenset[str]
    exclude_patterns: tuple[re.Pattern, ...]
    entries: tuple[str, ...]  # as given, for the manifest
    exclude_entries: tuple[str, ...]

    @classmethod
    def parse(cls, topics: object, exclude_topics: object = None) -> TopicSelection:
        entries = _entries("topics", topics, required=True)
        excluded = _entries("exclude_topics", exclude_topics, required=False)
        names = [e for e in entries if not e.startswith(PATTERN_PREFIX)]
        exclude_names = {e for e in excluded if not e.startswith(PATTERN_PREFIX)}
        exclude_patterns = tuple(_compile("exclude_topics", e) for e in excluded if e.startswith(PATTERN_PREFIX))
        contradicted = [n for n in names if n in exclude_names or any(p.fullmatch(n) for p in exclude_patterns)]
        if contradicted:
            raise ConfigurationError(
                f"topics names {', '.join(contradicted)}, which exclude_topics also excludes; remove it from one.")
        return cls(tuple(names), tuple(_compile("topics", e) for e in entries if e.startswith(PATTERN_PREFIX)),
                   frozenset(exclude_names), exclude_patterns, tuple(entries), tuple(excluded))

    @property
    def has_patterns(self) -> bool:
        return bool(self.patterns)

    def matches(self, topic: str) -> bool:
        """Named, or matched by a pattern (never an internal topic) and not excluded."""
        if topic in self.names:
            return True
        if is_internal(topic) or topic in self.exclude_names or any(p.fullmatch(topic) for p in self.exclude_patterns):
            return False
        return any(p.fullmatch(topic) for p in self.patterns)

    def resolve(self, available: Iterable[str]) -> list[str]:
        """The named topics (whether ``available`` has them or not: the caller says what is missing) and
        every available topic a pattern matches, sorted."""
        matched = {t for t in available if t not in self.names and self.matches(t)}
        return [*self.names, *sorted(matched)]

    def describe(self, resolved: Sequence[str]) -> dict[str, list[str]]:
        """What the manifest records: the selection as given and what it resolved to (only with patterns)."""
        if not self.has_patterns and not self.exclude_entries:
            return {}
        return {"topics": list(self.entries), "exclude_topics": list(self.exclude_entries),
                "resolved": sorted(resolved)}
