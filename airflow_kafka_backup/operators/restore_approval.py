"""The restore's approval step: a person reads the plan's report and approves or rejects it (Airflow 3.1+).

Airflow's human-in-the-loop ``ApprovalOperator`` (standard provider) shows the report, the
Markdown the plan task pushed (XCom key ``report``), under the UI's *Required Actions* and
waits (3.3: in the ``awaiting_input`` state; 3.1 and 3.2: deferred to the triggerer). Approve:
the run goes on to create the topics and restore. Reject: every task after it is skipped, so the
run ends with nothing created or written.

It asks no one when there is nothing to approve: a dry run (the plan already logged the same
report) is skipped, and with the ``require_approval`` Param off it passes at once. On Airflow 3.0
there is no ``ApprovalOperator``: :data:`KafkaRestoreApprovalOperator` is ``None`` and the
restore DAG has no approval step (see :func:`airflow_kafka_backup.dag_factories.restore_dag`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow_kafka_backup.compat import AirflowSkipException, ApprovalOperator
from airflow_kafka_backup.engine.settings import as_bool

log = logging.getLogger(__name__)

REPORT_TEMPLATE = "{{ ti.xcom_pull(task_ids='plan', key='report') }}"


def approval_wanted(require_approval: object, dry_run: object) -> str | None:
    """Why no one is asked (a dry run, or approval switched off), or None when the step must ask."""
    if as_bool("dry_run", dry_run):
        return "Dry run: nothing to approve; the plan task's log shows the report."
    if not as_bool("require_approval", require_approval):
        return "require_approval is off: the restore goes ahead without asking."
    return None


if ApprovalOperator is not None:

    class KafkaRestoreApprovalOperator(ApprovalOperator):  # type: ignore[misc,valid-type]
        """Ask for approval of the restore plan; the body is the plan's Markdown report.

        ``require_approval`` and ``dry_run`` are the restore Params (templated), checked before anyone
        is asked. Rejection skips every downstream task (``ignore_downstream_trigger_rules``), so the
        verify task, which runs after skipped restores, is skipped too.
        """

        template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "require_approval", "dry_run")

        def __init__(self, *, require_approval: Any = True, dry_run: Any = False, **kwargs: Any) -> None:
            kwargs.setdefault("subject", "Approve the Kafka restore {{ dag_run.run_id }}?")
            kwargs.setdefault("body", REPORT_TEMPLATE)
            super().__init__(ignore_downstream_trigger_rules=True, **kwargs)
            self.require_approval = require_approval
            self.dry_run = dry_run

        def execute(self, context: Any) -> Any:
            reason = approval_wanted(self.require_approval, self.dry_run)
            if reason is None:
                return super().execute(context)
            log.info(reason)
            if as_bool("dry_run", self.dry_run):
                raise AirflowSkipException(reason)
            return None

else:  # Airflow 3.0
    KafkaRestoreApprovalOperator = None  # type: ignore[assignment,misc]
