"""The "Kafka backups" page: an Airflow plugin serving an HTML page and a JSON API from the api-server.

Registered through the ``airflow.plugins`` entry point. Its FastAPI app is mounted at
``/kafka-backups``: ``/kafka-backups/`` is the page, ``/kafka-backups/api/backups`` the JSON. On
Airflow 3.1+ an external view puts "Kafka backups" in the UI's Browse menu (the page in an
iframe); Airflow 3.0 has no external views, so there the page is reached by its URL (the app
itself works the same).

A thin shell: which prefixes (:mod:`airflow_kafka_backup.ui.locations`, from the DAGs' Params
and runs, :mod:`.airflow_facts`), what they cover (:mod:`airflow_kafka_backup.engine.coverage`,
manifests only, through the DAG's ``aws`` connection), the RPO colour
(:mod:`airflow_kafka_backup.ui.rpo`) and the HTML (:mod:`airflow_kafka_backup.ui.page`) live
elsewhere. Access follows the auth manager: a user sees a prefix only when they may read a DAG
that writes to it, and only those DAGs' runs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_kafka_backup.compat import airflow_at_least, conf
from airflow_kafka_backup.engine.coverage import BackupCoverage, read_coverage
from airflow_kafka_backup.ui.cache import TTLCache
from airflow_kafka_backup.ui.locations import BackupLocation, locations_of, visible
from airflow_kafka_backup.ui.overview import backup_overview
from airflow_kafka_backup.ui.page import render_page

log = logging.getLogger(__name__)

URL_PREFIX = "/kafka-backups"
API_PATH = "api/backups"
TTL_S = conf.getfloat("kafka_backup", "ui_cache_ttl_seconds", fallback=60.0)
TOKEN_COOKIE = "_token"  # the UI's JWT cookie (base_auth_manager.COOKIE_NAME_JWT_TOKEN, Airflow 3.1+)

_cache = TTLCache(TTL_S)


# -- access --------------------------------------------------------------------------------------


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


async def current_user(request: Request) -> Any:
    """The caller, as Airflow's own routes find them: a bearer token, else the UI's ``_token`` cookie.

    Airflow does not authenticate plugin apps (a mount inherits none of the core API's dependencies),
    so this app does it itself; without a valid token nothing is shown.
    """
    from jwt import ExpiredSignatureError, InvalidTokenError

    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE)
    if not token:
        raise HTTPException(401, "Not authenticated: log in to Airflow first.")
    try:
        return await _auth_manager().get_user_from_token(token)
    except ExpiredSignatureError:
        raise HTTPException(401, "Token expired: log in to Airflow again.") from None
    except InvalidTokenError:
        raise HTTPException(403, "Invalid token.") from None


def readable_dag_ids(user: Any) -> set[str]:
    return set(_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


# -- data ----------------------------------------------------------------------------------------


def _dag_facts(refresh: bool) -> list[Any]:
    from airflow_kafka_backup.plugins.airflow_facts import backup_dag_facts

    return _cache.get("dags", backup_dag_facts, refresh)[0]


def _read_location(location: BackupLocation) -> tuple[BackupCoverage | None, str | None]:
    """The coverage of one prefix through its DAG's ``aws`` connection, or why it could not be read."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_kafka_backup.engine.errors import KafkaBackupError
    from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
    from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings

    where = f"s3://{location.bucket}/{location.prefix}"
    try:
        key = _customer_key(location.sse_customer_key_variable)
        settings = S3WriteSettings.create(sse_customer_key=key)
        hook = S3Hook(aws_conn_id=location.aws_conn_id)
        store = S3ObjectStore.from_s3_hook(hook, location.bucket, read_args=settings.read_args())
        return read_coverage(store, location.prefix, settings.check_can_read), None
    except KafkaBackupError as error:  # ConfigurationError and IntegrityError: messages that name the problem
        return None, f"{where}: {error}"
    except Exception as error:  # S3 or the connection: the class and S3's error code, never arguments
        code = getattr(error, "response", {}).get("Error", {}).get("Code") if hasattr(error, "response") else None
        log.warning("Kafka backups page: reading %s failed: %s", where, type(error).__name__)
        return None, f"{where} could not be read through connection {location.aws_conn_id!r}: " \
                     f"{type(error).__name__}{f' ({code})' if code else ''}"


def _customer_key(variable: str | None) -> str | None:
    """An SSE-C backup's key, read from its Variable only to read the manifests; it goes nowhere else."""
    if not variable:
        return None
    from airflow_kafka_backup.compat import server_variable

    value = server_variable(variable)
    if not value:
        from airflow_kafka_backup.engine.errors import ConfigurationError

        raise ConfigurationError(f"the Airflow Variable {variable!r} (sse_customer_key_variable) is not set, so "
                                 "the SSE-C encrypted manifests cannot be read.")
    return value


def overviews(user: Any, refresh: bool = False, now_ms: int | None = None) -> list[dict[str, Any]]:
    """The JSON of every backup location the user may see."""
    readable = readable_dag_ids(user)
    facts = [f for f in _dag_facts(refresh) if f.dag_id in readable]
    locations = visible(locations_of((f.dag_id, f.defaults, f.confs) for f in facts), readable)
    out = []
    for location in locations:
        (coverage, error), fetched_ms = _cache.get(("s3", location.key, location.aws_conn_id),
                                                   lambda loc=location: _read_location(loc), refresh)
        mine = [f for f in facts if f.dag_id in location.dag_ids]
        commits = [f.commits[location.key] for f in mine if location.key in f.commits]
        verifies = [f.verifies[location.key] for f in mine if location.key in f.verifies]
        out.append(backup_overview(
            location, coverage, fetched_ms, now_ms if now_ms is not None else int(time.time() * 1000),
            max(commits, key=lambda c: c.measured_ms, default=None),
            max(verifies, key=lambda v: v["finished_ms"] or 0, default=None), error))
    return out


# -- the app ---------------------------------------------------------------------------------------


def create_app() -> FastAPI:
    app = FastAPI(title="Kafka backups", description="Coverage, gaps, RPO and restores of the Kafka backups "
                                                     "this Airflow writes (airflow-kafka-backup).")

    @app.get("/", response_class=HTMLResponse)
    def page(refresh: bool = False, user: Any = Depends(current_user)) -> HTMLResponse:  # noqa: B008
        now_ms = int(time.time() * 1000)
        return HTMLResponse(render_page(overviews(user, refresh, now_ms), now_ms, TTL_S, API_PATH),
                            headers={"Cache-Control": "no-store"})

    @app.get(f"/{API_PATH}")
    def api(refresh: bool = False, user: Any = Depends(current_user)) -> JSONResponse:  # noqa: B008
        now_ms = int(time.time() * 1000)
        return JSONResponse({"generated_ms": now_ms, "cache_ttl_s": TTL_S,
                             "backups": overviews(user, refresh, now_ms)}, headers={"Cache-Control": "no-store"})

    return app


def _external_views() -> list[dict[str, Any]]:
    """The nav entry (Airflow 3.1+): the page in an iframe under Browse."""
    return [{"name": "Kafka backups", "href": URL_PREFIX.lstrip("/") + "/", "destination": "nav",
             "category": "browse", "url_route": "kafka-backups"}]


class KafkaBackupsPlugin(AirflowPlugin):
    name = "kafka_backups"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Kafka backups"}]
    if airflow_at_least("3.1.0"):
        external_views = _external_views()
