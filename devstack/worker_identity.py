"""The host name a Celery worker of the local stack reports for the tasks it runs.

Airflow records on each task instance the host that ran it, through ``[core] hostname_callable``.
On one machine every worker shares the real host name, so the Celery stack points that setting
here and gives each worker its own ``AKB_WORKER_HOSTNAME``: the tests then read from the
api-server which worker ran which task, as they would read distinct hosts in a deployment.
"""

from __future__ import annotations

import os
import socket

HOSTNAME_VARIABLE = "AKB_WORKER_HOSTNAME"


def hostname() -> str:
    """This worker's name, or the machine's when the process is not one of the stack's workers."""
    return os.environ.get(HOSTNAME_VARIABLE) or socket.getfqdn()
