"""What a restore does with target topics that already hold records: refuse, append, or resume.

Triggering a restore again, as an operator in an incident does after a failed run, must never
double the target. So a target that holds records is refused, naming it and its record count,
unless ``if_target_not_empty`` says otherwise:

- ``fail`` (default): refuse, before anything is written. When the records come from an
  unfinished restore of the same backup, the refusal names it and how to continue it.
- ``append``: restore everything after what the target holds.
- ``resume``: continue the one unfinished restore of this backup that wrote into these targets,
  under its restore id: its progress, offset maps and transactional ids, so its zombie producers
  are fenced at once and every record lands exactly once.

A run that finds records it wrote itself (its own earlier attempt, cleared and run again)
resumes them whatever the setting: that is what clearing a run means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.restore.attempts import EarlierRestore
from airflow_kafka_backup.engine.storage.key_layout import safe_run_id

POLICIES = ("fail", "append", "resume")


@dataclass(frozen=True)
class TargetDecision:
    restore_id: str  # the restore id the run's tasks use: its own, or the one it resumes
    summary: str  # what applies, for the plan's log, the dry run and the approval report


def check_policy(value: object) -> str:
    if value not in POLICIES:
        raise ConfigurationError(f"if_target_not_empty must be one of {', '.join(POLICIES)}, got {value!r}.")
    return str(value)


def decide(policy: str, own_restore_id: str, counts: Mapping[str, int],
           earlier: Sequence[EarlierRestore]) -> TargetDecision:
    """``counts``: records each existing target holds; ``earlier``: the restores of this backup into them."""
    policy = check_policy(policy)
    full = {t: n for t, n in sorted(counts.items()) if n > 0}
    if not full:
        return TargetDecision(own_restore_id, "Every target topic is new or empty.")
    held = ", ".join(f"{t} holds {n:,} records" for t, n in full.items())
    own = "/".join(safe_run_id(part) for part in own_restore_id.split("/", 1))
    others = [e for e in earlier if e.restore_id != own]
    if any(e.restore_id == own for e in earlier) and not others:
        return TargetDecision(own_restore_id, f"{held}: written by this run before; it resumes them exactly once.")
    unfinished = [e for e in others if not e.finished]
    if policy == "append":
        return TargetDecision(own_restore_id, f"{held}; if_target_not_empty is append: the restore adds every "
                                              "record after them.")
    if policy == "resume":
        if len(unfinished) == 1:
            restore_id = unfinished[0].restore_id
            return TargetDecision(restore_id, f"{held}; resuming the unfinished restore {restore_id} exactly once "
                                              "(its producers are fenced, its progress kept).")
        if not unfinished:
            raise ConfigurationError(
                f"if_target_not_empty is resume, but no unfinished restore of this backup wrote into the targets "
                f"({held}){_finished(others)}: there is nothing to resume. Use append to add the records after "
                "what the targets hold, or restore into new topics.")
        raise ConfigurationError(
            f"if_target_not_empty is resume, but {len(unfinished)} unfinished restores of this backup wrote into the "
            f"targets ({held}): {', '.join(e.restore_id for e in unfinished)}. Clear the one to continue instead.")
    hint = ""
    if unfinished:
        names = ", ".join(e.restore_id for e in unfinished)
        hint = (f" They hold records of the unfinished restore {names} (DAG id/run id): set if_target_not_empty "
                "to resume, or clear that run, to continue it exactly once.")
    raise ConfigurationError(
        f"The target topics already hold records: {held}.{hint}{_finished(others)} Restoring into them again would "
        "duplicate records; set if_target_not_empty to append to add them anyway, or restore into new topics "
        "(topic_mapping).")


def _finished(earlier: Sequence[EarlierRestore]) -> str:
    done = [e.restore_id for e in earlier if e.finished]
    return f" The finished restore(s) {', '.join(done)} restored into them." if done else ""
