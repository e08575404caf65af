"""The one place that imports what moved between Airflow 3 releases.

The provider supports every Airflow from :data:`airflow_kafka_backup.MIN_AIRFLOW_VERSION` to the
latest 3.x (see ``docs/compatibility.md``). Some names the operators need live in different
modules across that range; importing them anywhere but here is how the shipped DAGs came to
fail on 3.0 and 3.1 (issue #21). Each import tries the newest home first, so a current Airflow
gets its Task SDK name and an older one the name it had then.

This module imports Airflow: the engine modules (planning, backup, restore, ...) must not import it.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from airflow_kafka_backup import MIN_AIRFLOW_VERSION

log = logging.getLogger(__name__)

# TriggerRule: in the Task SDK from 3.1; in 3.0 only in core's airflow.utils (gone from there in 3.3).
try:
    from airflow.sdk import TriggerRule
except ImportError:  # Airflow 3.0
    from airflow.utils.trigger_rule import TriggerRule  # type: ignore[no-redef]

# conf: the Task SDK's own configuration parser from 3.2; before that, core's (the same [section] keys).
try:
    from airflow.sdk.configuration import conf
except ImportError:  # Airflow 3.0, 3.1
    from airflow.configuration import conf  # type: ignore[no-redef,attr-defined]

# render_template_to_string: in the Task SDK's context module from 3.1; in 3.0 a core helper.
try:
    from airflow.sdk.definitions.context import render_template_to_string
except ImportError:  # Airflow 3.0
    from airflow.utils.helpers import render_template_to_string  # type: ignore[no-redef]

# Stats: the Task SDK's from 3.2 (airflow.sdk.observability.stats); core's airflow.stats before.
try:
    from airflow.sdk.observability.stats import Stats
except ImportError:  # Airflow 3.0, 3.1
    from airflow.stats import Stats  # type: ignore[no-redef]

# AirflowFailException: fails a task without its retries. In the Task SDK from 3.1; core's before.
try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.0
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

# AirflowSkipException: ends a task as skipped. In the Task SDK from 3.1; core's before.
try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.0
    from airflow.exceptions import AirflowSkipException  # type: ignore[no-redef]

# ApprovalOperator: human-in-the-loop, in the standard provider, for Airflow 3.1+ only (on 3.0 the module
# refuses to import with AirflowOptionalProviderFeatureException). None there: the restore DAG then has no
# approval step (see dag_factories.restore_dag and docs/restore.md).
try:
    from airflow.providers.standard.operators.hitl import ApprovalOperator
except Exception:  # noqa: BLE001 - ImportError, or the provider's "needs Airflow 3.1+" exception on 3.0
    ApprovalOperator = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag


def airflow_version() -> str:
    """The running Airflow's version, e.g. ``"3.1.0"``."""
    from airflow import __version__

    return __version__


def version_tuple(version: str) -> tuple[int, ...]:
    """``"3.1.0rc1"`` -> ``(3, 1, 0)``: enough to compare releases without depending on ``packaging``."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(n) for n in match.groups() if n is not None)


def airflow_at_least(version: str) -> bool:
    """Whether the running Airflow is ``version`` or newer: for features that need a newer release."""
    return version_tuple(airflow_version()) >= version_tuple(version)


def variable_keys_may_contain_slash() -> bool:
    """Whether the Task SDK can read and write a Variable whose key has ``/`` in it.

    Airflow 3.0's Execution API routes ``/variables/{variable_key}``; 3.1 made it
    ``{variable_key:path}``. On 3.0 such a key answers 404: a read looks like a missing
    Variable, a write fails the task.
    """
    return airflow_at_least("3.1.0")


def dag_bag_class() -> type[DagBag]:
    """``DagBag``: ``airflow.dag_processing.dagbag`` in current releases, ``airflow.models.dagbag`` in 3.0 and 3.1.

    Imported on call, not at module import: it pulls in the scheduler side of core, which
    operators running in a worker never need.
    """
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0, 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag


def mask_secret(secret: Any, name: str | None = None) -> None:
    """Mask ``secret`` in task logs: ``airflow.sdk.log`` from 3.1, the Task SDK's secrets masker in 3.0.

    Imported on call, as the operators always did: only a running task masks anything.
    """
    try:
        from airflow.sdk.log import mask_secret as mask
    except ImportError:  # Airflow 3.0
        from airflow.sdk.execution_time.secrets_masker import mask_secret as mask  # type: ignore[no-redef]
    mask(secret, name)


def server_variable(key: str) -> str | None:
    """A Variable read in a server process (the api-server, for the plugin's page), not in a task.

    Core's ``airflow.models.Variable`` reads the metadata DB and the secrets backends there; the Task
    SDK's goes through a task's supervisor, which the api-server does not have. The same call in 3.0 to 3.3.
    """
    from airflow.models.variable import Variable as CoreVariable

    return CoreVariable.get(key, default_var=None)


def warn_if_below_floor() -> str | None:
    """Log (once, at import) when the running Airflow is older than the floor this provider is tested on.

    pip refuses such an install, but a copy vendored into a DAG bundle or a ``--no-deps`` install does
    not go through pip's check: the log line says why later failures may come, instead of an ImportError
    from somewhere deep. Returns the message, or ``None`` when the version is supported.
    """
    running = airflow_version()
    if version_tuple(running) >= version_tuple(MIN_AIRFLOW_VERSION):
        return None
    message = (f"airflow-kafka-backup needs Airflow >= {MIN_AIRFLOW_VERSION}; this is Airflow {running}. "
               "See docs/compatibility.md.")
    log.warning(message)
    return message


warn_if_below_floor()

__all__ = ["AirflowFailException", "AirflowSkipException", "ApprovalOperator",
           "Stats", "TriggerRule", "airflow_at_least", "airflow_version", "conf",
           "dag_bag_class", "mask_secret", "render_template_to_string", "server_variable",
           "variable_keys_may_contain_slash", "version_tuple", "warn_if_below_floor"]
