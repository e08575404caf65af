"""A CeleryExecutor deployment on loopback: the four services, Redis, and Celery workers that share no disk.

Real deployments run tasks on Celery (or Kubernetes) workers on other machines. :class:`CeleryServices`
starts what :class:`~devstack.airflow_services.AirflowServices` starts (scheduler, dag-processor,
api-server, triggerer on a SQLite ``AIRFLOW_HOME``) with the ``CeleryExecutor``, a Redis broker
(Debian's ``redis-server``), and N ``airflow celery worker`` processes. Each worker gets a
directory of its own holding its ``HOME``, ``TMPDIR`` and ``AIRFLOW_HOME`` (its own copy of the
DAG files, its own task logs), and its metadata DB setting points at a file of its own that is
never migrated: Airflow 3 workers reach Variables, XCom and task state only through the
api-server's Execution API, and :meth:`CeleryServices.worker_db_tables` lets a test check so.

Why SQLite still works: Airflow 3.3 refuses SQLite only for its C library's version, not by
executor; only the scheduler, dag-processor, api-server and triggerer open the DB (as with the
LocalExecutor stack). Celery's result backend is Redis too (database 1), so the workers need no
database at all. PostgreSQL would be needed only for several schedulers.

Each worker reports its own host name for the tasks it runs (:mod:`devstack.worker_identity`);
its Celery node name is ``<name>@<machine>``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from devstack.airflow_env import REPO
from devstack.airflow_services import AirflowServices, _signal_group
from devstack.redis_server import RedisServer, start_redis_server
from devstack.worker_identity import HOSTNAME_VARIABLE

NO_DB = "no-metadata-db.sqlite"  # named by a worker's settings, never migrated


def celery_env(broker: RedisServer, parallelism: int, heartbeat_timeout: int) -> dict[str, str]:
    """The CeleryExecutor's settings for every process of the stack.

    ``heartbeat_timeout``: seconds after which the scheduler gives up on a task whose worker
    stopped heartbeating (default 300) and retries it elsewhere; the tests kill a worker.
    """
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),  # running tasks over all workers
        "AIRFLOW__CELERY__BROKER_URL": broker.url(0),
        "AIRFLOW__CELERY__RESULT_BACKEND": broker.url(1),
        # How long Redis keeps an unacknowledged task of a dead worker before handing it out again.
        # The scheduler's own heartbeat check retries the task long before that.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(heartbeat_timeout),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.worker_identity.hostname",
        # Every process, the workers' task processes included, imports the hostname callable from here.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


class CeleryServices(AirflowServices):
    """Scheduler, dag-processor, api-server, triggerer, Redis and ``workers`` Celery workers.

        with CeleryServices(dag_files, extra_env, workers=2) as airflow:
            airflow.trigger_run(...)
            {ti["hostname"] for ti in airflow.task_instances(...)}  # the workers' names

    :param workers: how many Celery workers, named ``worker-1`` ... (their task instances' host names).
    :param concurrency: task slots per worker.
    """

    def __init__(self, dag_files: Iterable[Path], extra_env: dict[str, str] | None = None, *, workers: int = 2,
                 concurrency: int = 2, heartbeat_timeout: int = 20, start_timeout: float = 180.0) -> None:
        self.dag_files = [Path(f) for f in dag_files]
        super().__init__(self.dag_files, extra_env, parallelism=workers * concurrency, start_timeout=start_timeout)
        self.worker_names = [f"worker-{i}" for i in range(1, workers + 1)]
        self.concurrency = concurrency
        self.heartbeat_timeout = heartbeat_timeout
        self.broker: RedisServer | None = None
        self.killed: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.broker = start_redis_server()
        self.env.update(celery_env(self.broker, self.parallelism, self.heartbeat_timeout))
        super().start()
        for name in self.worker_names:
            self.start_worker(name)
        self.wait_for_workers(self.worker_names)

    def stop(self, timeout: float = 20.0) -> None:
        try:
            super().stop(timeout)
        finally:
            if self.broker is not None:
                self.broker.stop()

    @property
    def parallelism(self) -> int:
        return len(self.worker_names) * self.concurrency

    def worker_dir(self, name: str) -> Path:
        """Everything of one worker: ``home``, ``tmp`` and ``airflow`` (its AIRFLOW_HOME)."""
        return self.home / "workers" / name

    def worker_env(self, name: str) -> dict[str, str]:
        """The deployment's settings, with the worker's own HOME, TMPDIR, AIRFLOW_HOME, DAG files and name."""
        root = self.worker_dir(name)
        airflow_home = root / "airflow"
        return {
            **self.env,
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(airflow_home / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / NO_DB}",
            HOSTNAME_VARIABLE: name,
        }

    def start_worker(self, name: str) -> None:
        """``airflow celery worker`` as ``name``, in its own session; its directories are made on first start."""
        root = self.worker_dir(name)
        for sub in ("home", "tmp", "airflow/dags"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for dag_file in self.dag_files:
            shutil.copy(dag_file, root / "airflow" / "dags" / dag_file.name)
        # --skip-serve-logs: the workers would all want the one log-server port; logs stay on the worker.
        args = ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", str(self.concurrency),
                "--skip-serve-logs", "--without-mingle", "--without-gossip"]
        self._spawn(name, args, self.worker_env(name))

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (Celery's pool and the task processes it forked)."""
        process = self.processes.pop(name)
        _signal_group(process, signal.SIGKILL)
        process.wait()
        self.killed.append(name)

    def wait_for_workers(self, names: Iterable[str], timeout: float = 120.0) -> None:
        """Until each worker answers a Celery ping (it has connected to Redis and takes tasks)."""
        from celery import Celery

        wanted = {f"{name}@" for name in names}
        answered: set[str] = set()
        app = Celery(broker=self.broker.url(0))
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.check_alive()
                nodes = {node for reply in app.control.ping(timeout=2.0) for node in reply}
                answered = {prefix for prefix in wanted if any(node.startswith(prefix) for node in nodes)}
                if answered == wanted:
                    return
                time.sleep(0.5)
        finally:
            app.close()
        raise TimeoutError(f"Celery workers {sorted(wanted - answered)} did not answer within {timeout}s\n"
                           f"{self.log_tails()}")

    # -- what the workers left ---------------------------------------------------------------------

    def task_log_folders(self) -> list[Path]:
        return [self.home / "logs", *(self.worker_dir(name) / "airflow" / "logs" for name in self.worker_names)]

    def worker_db_tables(self) -> dict[str, list[str]]:
        """The tables in each worker's own metadata DB file (none: it was never migrated).

        Airflow's CLI opens the configured DB when it starts, which creates the empty file;
        no table in it after the tasks ran shows they got along without a metadata DB.
        """
        tables = {}
        for name in self.worker_names:
            path = self.worker_dir(name) / "airflow" / NO_DB
            with closing(sqlite3.connect(path)) as connection:
                tables[name] = [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]
        return tables
