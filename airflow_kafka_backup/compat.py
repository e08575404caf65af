"""The one place that imports what moved between Airflow 3 releases (placeholder, merged with issue #21's)."""

from __future__ import annotations

__all__ = ["AirflowFailException", "Stats"]

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
