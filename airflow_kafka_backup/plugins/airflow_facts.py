"""What the api-server's metadata DB says about the backup DAGs: their Params, recent runs, commits and verifies.

Runs in the api-server process (the plugin's FastAPI app), which has the metadata DB; never in a task.
Only the location Params (:data:`~airflow_kafka_backup.ui.locations.LOCATION_PARAMS`) and the commit and
verify tasks' small XCom summaries are read; no connection, no Variable value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_kafka_backup.ui.locations import BACKUP_DAG_MARKER, LOCATION_PARAMS, location_key
from airflow_kafka_backup.ui.rpo import CommitMeasurement

log = logging.getLogger(__name__)

RECENT_RUNS = 50  # per DAG: the confs that may name other locations, and the last commit and verify


@dataclass
class DagFacts:
    dag_id: str
    defaults: dict[str, Any]
    confs: list[dict[str, Any]] = field(default_factory=list)
    # per (bucket, prefix): the last successful commit's lag measurement, and the last finished verify
    commits: dict[tuple[str, str], CommitMeasurement] = field(default_factory=dict)
    verifies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _ms(value: Any) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def param_defaults(dag: Any) -> dict[str, Any]:
    """The location Params' defaults of a (serialized) DAG."""
    out = {}
    for name in LOCATION_PARAMS:
        try:
            param = dag.params.get_param(name) if hasattr(dag.params, "get_param") else dag.params[name]
        except KeyError:
            continue
        out[name] = getattr(param, "value", param)
    return out


def is_backup_dag(dag: Any) -> bool:
    return any(getattr(task, "task_type", type(task).__name__) == BACKUP_DAG_MARKER for task in dag.tasks)


def backup_dag_facts(dag_ids: Iterable[str] | None = None) -> list[DagFacts]:
    """Every backup DAG (built by ``backup_dag``) with its Params' defaults and its recent runs' facts."""
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    wanted = None if dag_ids is None else set(dag_ids)
    out = []
    with create_session() as session:
        for dag_id, dag in sorted(SerializedDagModel.read_all_dags(session=session).items()):
            if (wanted is not None and dag_id not in wanted) or not is_backup_dag(dag):
                continue
            facts = DagFacts(dag_id, param_defaults(dag))
            runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                   .order_by(DagRun.id.desc()).limit(RECENT_RUNS)).all()
            facts.confs = [dict(run.conf or {}) for run in runs]
            where = {run.run_id: location_key(facts.defaults, run.conf) for run in runs}
            tis = session.scalars(select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.task_id.in_(("commit", "verify")),
                TaskInstance.run_id.in_(list(where)), TaskInstance.end_date.is_not(None))
                .order_by(TaskInstance.end_date.desc())).all()
            for ti in tis:
                location = where.get(ti.run_id)
                state = str(getattr(ti.state, "value", ti.state))
                if location is None:
                    continue
                if ti.task_id == "commit" and state == "success" and location not in facts.commits:
                    value = _xcom(session, select, XComModel, ti)
                    lag = value.get("lag") if isinstance(value, dict) else None
                    facts.commits[location] = CommitMeasurement(_ms(ti.end_date) or 0, lag)
                elif ti.task_id == "verify" and state in ("success", "failed") and location not in facts.verifies:
                    value = _xcom(session, select, XComModel, ti) if state == "success" else None
                    summary = value if isinstance(value, dict) else {}
                    facts.verifies[location] = {
                        "dag_id": dag_id, "run_id": ti.run_id, "state": state, "finished_ms": _ms(ti.end_date),
                        "ok": summary.get("ok", state == "success"), "segments": summary.get("segments"),
                        "problems": len(summary.get("problems") or ())}
            out.append(facts)
    return out


def _xcom(session: Any, select: Any, model: Any, ti: Any) -> Any:
    row = session.scalars(select(model).where(
        model.dag_id == ti.dag_id, model.run_id == ti.run_id, model.task_id == ti.task_id,
        model.map_index == -1, model.key == "return_value")).first()
    return None if row is None else model.deserialize_value(row)
