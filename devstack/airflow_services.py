"""A real Airflow deployment on loopback: scheduler, dag-processor, api-server and triggerer as processes.

``dag.test()`` runs every task inside the test process. To prove the provider works the
way it is deployed (each task in its own process talking to the Execution API, deferred
sensors handed to the triggerer), :class:`AirflowServices` starts the four services with
the ``LocalExecutor`` on a throwaway ``AIRFLOW_HOME`` of its own. It never shares the
pytest session's SQLite file: a scheduler and in-process tests writing one SQLite file
lock each other out.

    with AirflowServices(dag_files, extra_env=connection_env(...)) as airflow:
        airflow.trigger_run("kafka_backup", "run-1", {"topics": ["orders"], "bucket": "b"})
        assert airflow.wait_for_run("kafka_backup", "run-1", timeout=120) == "success"
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from devstack.airflow_env import airflow_env, make_airflow_home, migrate
from devstack.kafka_broker import free_port

AIRFLOW = Path(sys.executable).with_name("airflow")
SERVICES = ("scheduler", "dag-processor", "api-server", "triggerer")
FINISHED = {"success", "failed"}


def services_env(home: Path, dags_folder: Path, api_port: int, parallelism: int = 2) -> dict[str, str]:
    """Settings the four services need to find each other, on top of :func:`airflow_env`.

    Each is needed, not decoration: task processes reach the api-server only through
    ``execution_api_server_url`` (default ``http://localhost:8080``); the scheduler signs
    task tokens and the api-server checks them, so both must share ``jwt_secret``; log
    servers get free ports so parallel runs do not collide on 8793/8794.
    """
    base_url = f"http://127.0.0.1:{api_port}"
    return {
        **airflow_env(home, dags_folder=dags_folder),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),  # LocalExecutor's worker processes
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # HS512 warns below 64 bytes
        # No login: every REST caller is admin. Only ever on loopback, for tests.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Defaults are tuned for production (refresh 300 s, reparse 30 s); tests want seconds.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        # A task's Execution API call times out after 5 s and is retried; on a busy 2-core machine
        # with one SQLite writer a slow answer is normal, and a retried "start" can meet its own success.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class AirflowServices:
    """Scheduler, dag-processor, api-server and triggerer on a fresh SQLite ``AIRFLOW_HOME``.

    A context manager: entering migrates the DB, starts the services and waits until the
    api-server reports all of them healthy; leaving stops every process group (even when
    the body failed) and removes the home, unless the body failed or ``keep_home`` was
    set, so its logs stay for inspection.

    :param dag_files: copied into the home's own dags folder before anything starts.
    :param extra_env: more environment (connections, DAG file settings) for every service and task.
    :param parallelism: LocalExecutor worker processes.
    """

    def __init__(self, dag_files: Iterable[Path], extra_env: dict[str, str] | None = None,
                 *, parallelism: int = 2, start_timeout: float = 120.0) -> None:
        self.home = make_airflow_home()
        self.dags_folder = self.home / "dags"
        self.dags_folder.mkdir()
        for dag_file in dag_files:
            shutil.copy(dag_file, self.dags_folder / Path(dag_file).name)
        self.api_port = free_port()
        self.env = {**services_env(self.home, self.dags_folder, self.api_port, parallelism), **(extra_env or {})}
        self.start_timeout = start_timeout
        self.processes: dict[str, subprocess.Popen] = {}
        self.keep_home = False  # set to keep logs and DB after leaving, e.g. when a test failed

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def __enter__(self) -> AirflowServices:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if not (self.keep_home or exc_type is not None):
            shutil.rmtree(self.home, ignore_errors=True)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate the DB, start the four services, wait until all report healthy."""
        migrate(self.env)
        for name in SERVICES:
            self._spawn(name)
        self._wait_until_healthy(self.start_timeout)
        self._warm_up_execution_api()

    def _spawn(self, name: str, args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """One service in its own session, so stopping it also reaches the workers it forked.

        ``args`` default to the service's name; ``env`` defaults to the deployment's environment.
        """
        if args is None:
            args = [name, "--port", str(self.api_port)] if name == "api-server" else [name]
        with self.log_path(name).open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [str(AIRFLOW), *args], env={**os.environ, **(self.env if env is None else env)}, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every process group, wait for a graceful exit, then SIGKILL what is left."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in self.processes.values():
            _signal_group(process, signal.SIGKILL)  # also orphaned children of a service that did exit
            process.wait()

    def _wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self.request("GET", "/api/v2/monitor/health")
                if all(component.get("status") == "healthy" for component in health.values()):
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(1)
        raise TimeoutError(f"Airflow services not healthy within {timeout}s: {health}\n{self.log_tails()}")

    def _warm_up_execution_api(self) -> None:
        """The Execution API builds its versioned routes on the first request (seconds on this machine).

        Pay that here rather than in the first task's first call; the ping also checks task
        tokens can be validated (the JWT settings).
        """
        ping = self.request("GET", "/execution/health/ping", timeout=60)
        if ping.get("failing"):
            raise RuntimeError(f"Execution API not ready: {ping}\n{self.log_tails()}")

    def check_alive(self) -> None:
        """Fail at once, with its log, when a service has died."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {process.returncode}\n{self.log_tails()}")

    # -- logs --------------------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def log_tails(self, lines: int = 40) -> str:
        """The end of every service's log, for assertion messages."""
        names = self.processes or dict.fromkeys(SERVICES)
        parts = [f"--- {name} ({self.log_path(name)}) ---\n{_tail(self.log_path(name), lines)}" for name in names]
        return "\n".join(parts)

    def task_log_folders(self) -> list[Path]:
        """Where task logs are written: the home's ``logs`` (a deployment with remote workers has more)."""
        return [self.home / "logs"]

    def task_log_tails(self, dag_id: str, lines: int = 25) -> str:
        """The end of every task log of ``dag_id``: where a failed task says why."""
        logs = sorted(path for folder in self.task_log_folders() for path in folder.glob(f"dag_id={dag_id}/**/*.log"))
        return "\n".join(f"--- {path} ---\n{_tail(path, lines)}" for path in logs)

    # -- REST API and CLI --------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """A JSON call to the api-server (no token needed: all users are admins here)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, f"{method} {path}: HTTP {error.code} {error.read()[:2000]!r}") from None

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``airflow <args>`` against this deployment; fails with its output when it fails."""
        result = subprocess.run([str(AIRFLOW), *args], env={**os.environ, **self.env}, capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} exited {result.returncode}:\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 90.0) -> None:
        """Until the dag-processor has serialized every DAG (a run cannot be triggered before)."""
        deadline = time.monotonic() + timeout
        missing = set(dag_ids)
        while missing:
            self.check_alive()
            for dag_id in sorted(missing):
                try:
                    self.request("GET", f"/api/v2/dags/{dag_id}/details")
                    missing.discard(dag_id)
                except ApiError as error:
                    if error.status != 404:
                        raise
            if missing and time.monotonic() > deadline:
                errors = self.request("GET", "/api/v2/importErrors")
                raise TimeoutError(f"DAGs {sorted(missing)} not parsed within {timeout}s; import errors: "
                                   f"{errors}\n{self.log_tails()}")
            if missing:
                time.sleep(1)

    def trigger_run(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """A manual run through the REST API (``POST /api/v2/dags/{dag_id}/dagRuns``)."""
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, mapped ones included (one row per map index)."""
        answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return answer["task_instances"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240.0) -> str:
        """Until the run finishes (``success`` or ``failed``); raises on timeout or a dead service."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.dag_run(dag_id, run_id)["state"]
            if state in FINISHED:
                return state
            time.sleep(1)
        states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in self.task_instances(dag_id, run_id)}
        raise TimeoutError(f"{dag_id} {run_id} not finished within {timeout}s; tasks: {states}\n{self.log_tails()}")


class ApiError(OSError):
    """An HTTP error answer from the api-server, with its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the process group the service leads (it was started with ``start_new_session``)."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
