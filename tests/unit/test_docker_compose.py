"""Unit tests: docker-compose.yaml and docker/Dockerfile describe the documented stack.

This project's CI has no Docker engine, so the stack is never started; these tests read the real
files and check what ``docker compose`` would be given: services, images, commands, environment,
connections, mounts, dependencies and health checks. ``${VAR:-default}`` is resolved as Compose
resolves it with nothing set in the environment, i.e. what a plain ``docker compose up`` runs.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "Dockerfile.dockerignore"

AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
AIRFLOW_SERVICES = [*AIRFLOW_COMMANDS, "airflow-init"]
BUCKET_SERVICE = "minio-create-bucket"
ALL_SERVICES = {"postgres", "kafka", "minio", BUCKET_SERVICE, *AIRFLOW_SERVICES}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

# $$ (a literal $), ${VAR}, ${VAR:-default} / ${VAR-default}, $VAR: Compose's interpolation syntax.
_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<braced>\w+)(?::?-(?P<default>[^}]*))?\}|\$(?P<bare>\w+)")


def _interpolate(value, missing: set[str]):
    """Resolve Compose variables with an empty environment; names without a default go to ``missing``."""
    if isinstance(value, dict):
        return {key: _interpolate(item, missing) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, missing) for item in value]
    if not isinstance(value, str):
        return value

    def resolve(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("default") is not None:
            return match.group("default")
        missing.add(match.group("braced") or match.group("bare"))
        return ""

    return _INTERPOLATION.sub(resolve, value)


@pytest.fixture(scope="module")
def raw() -> dict:
    """The file as YAML gives it (anchors and merge keys applied), before interpolation."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return _interpolate(raw, set())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def _depends_on(service: dict) -> dict:
    deps = service.get("depends_on", {})
    return {name: {"condition": "service_started"} for name in deps} if isinstance(deps, list) else deps


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, comments dropped and continuation lines joined."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in joined.splitlines() if line.strip()]


def test_every_service_of_the_stack_is_defined(services):
    assert ALL_SERVICES <= set(services), f"missing: {sorted(ALL_SERVICES - set(services))}"


def test_every_variable_has_a_default_so_a_plain_up_works(raw):
    missing: set[str] = set()
    _interpolate(raw, missing)
    assert not missing, f"variables without a default: {sorted(missing)}"


def test_airflow_services_share_the_common_image_and_run_their_component(compose, services):
    common = compose["x-airflow-common"]
    assert common["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
    assert (REPO / common["build"]["context"] / common["build"]["dockerfile"]).is_file()
    for name in AIRFLOW_SERVICES:
        assert services[name]["build"] == common["build"], name
        assert services[name]["image"] == common["image"], name
    for name, command in AIRFLOW_COMMANDS.items():
        assert services[name]["command"] == command, name
        assert services[name].get("restart") == "always", name


def test_airflow_init_migrates_the_database_and_creates_the_admin_user(raw, services):
    init = services["airflow-init"]
    shell, flag, script = init["command"]
    assert (shell, flag) == ("bash", "-c")
    assert "set -euo pipefail" in script
    assert "airflow db migrate" in script
    assert "airflow users create --role Admin" in script
    assert "restart" not in init, "a one-shot service must not be restarted"
    # The login the header advertises is the one created.
    advertised = re.search(r"Airflow UI:\s+(\S+)\s+\(login (\S+) / (\S+)\)", COMPOSE_FILE.read_text())
    assert advertised, "the header must give the UI URL and login"
    env = _env(init)
    assert advertised.groups() == ("http://localhost:8080", env["AIRFLOW_ADMIN_USERNAME"],
                                   env["AIRFLOW_ADMIN_PASSWORD"])
    assert "8080:8080" in services["airflow-apiserver"]["ports"]


def test_header_says_how_to_run_it_and_that_ci_does_not(raw):
    header = COMPOSE_FILE.read_text().split("\n---\n", 1)[0]
    assert "docker compose up" in header
    assert "tests/unit/test_docker_compose.py" in header
    assert "no Docker engine" in header


def test_images_are_pinned_to_versions(compose, services):
    for name, service in services.items():
        image = service["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest", f"{name}: {image}"
        if "build" not in service:
            assert re.search(r"\d", tag), f"{name}: {image} is not a version"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["minio"]["image"].startswith("minio/minio:RELEASE.")
    assert services[BUCKET_SERVICE]["image"].startswith("minio/mc:RELEASE.")


def test_the_airflow_base_image_is_the_pinned_airflow_version():
    pinned = re.search(r"^apache-airflow==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    froms = [args for instruction, args in _dockerfile_instructions() if instruction == "FROM"]
    assert froms == [f"apache/airflow:{pinned}-python3.11"]


def test_dockerfile_installs_the_project_with_its_constraints():
    instructions = _dockerfile_instructions()
    runs = [args for instruction, args in instructions if instruction == "RUN"]
    installs = [shlex.split(args) for args in runs if args.startswith("pip install")]
    assert len(installs) == 1, runs
    argv = installs[0]
    constraints = argv[argv.index("-c") + 1]
    assert constraints.endswith("/constraints.txt")
    project_dir = constraints.rsplit("/", 1)[0]
    assert project_dir in argv, "the project itself must be installed"
    assert "apache-airflow==${AIRFLOW_VERSION}" in argv
    # As the airflow user, which the official image requires for pip installs.
    users = [args for instruction, args in instructions[:instructions.index(("RUN", runs[0]))]
             if instruction == "USER"]
    assert users and users[-1] == "airflow"

    copied: list[str] = []
    for instruction, args in instructions:
        if instruction == "COPY":
            *sources, destination = [word for word in shlex.split(args) if not word.startswith("--")]
            assert destination.startswith(project_dir), args
            copied += sources
    assert {"pyproject.toml", "README.md", "constraints.txt", "airflow_kafka_backup/"} <= set(copied)
    allowed = {line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    for source in copied:
        assert (REPO / source).exists(), source
        assert source in allowed, f"{source} is excluded from the build context"


def test_airflow_environment(services):
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name
        assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64, f"{name}: HS512 wants a 64-byte secret"
        assert env["AIRFLOW__API__SECRET_KEY"], name
        assert env["KAFKA_BACKUP_BUCKET"] == "kafka-backups", name
    # Every Airflow container signs or checks task JWTs with the same secret.
    assert len({_env(services[name])["AIRFLOW__API_AUTH__JWT_SECRET"] for name in AIRFLOW_SERVICES}) == 1
    db = urlsplit(_env(services["airflow-init"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    postgres = _env(services["postgres"])
    assert (db.username, db.password, db.path) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], "/" + postgres["POSTGRES_DB"])


def test_environment_values_are_strings_yaml_cannot_mistype(services):
    for name, service in services.items():
        for key, value in _env(service).items():
            assert isinstance(value, str), f"{name}: {key}={value!r} is a YAML {type(value).__name__}"


def test_connections_point_at_the_kafka_and_minio_services(services):
    kafka_env, minio_env = _env(services["kafka"]), _env(services["minio"])
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        for key in ("AIRFLOW_CONN_KAFKA_DEFAULT", "AIRFLOW_CONN_AWS_DEFAULT"):
            assert "\n" not in env[key], f"{name}: {key} must be one line"

        kafka = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])
        assert kafka["conn_type"] == "kafka"
        assert kafka["extra"] == {"bootstrap.servers": "kafka:9092", "group.id": "airflow-kafka-backup"}
        assert any(listener.endswith("://kafka:9092") for listener in advertised), advertised

        aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
        assert aws["conn_type"] == "aws"
        assert (aws["login"], aws["password"]) == (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"])
        endpoint = urlsplit(aws["extra"]["endpoint_url"])
        assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "minio", 9000)
        assert aws["extra"]["region_name"] == "us-east-1"
        assert aws["extra"]["config_kwargs"] == {"s3": {"addressing_style": "path"}}
    assert "9000:9000" in services["minio"]["ports"]
    assert len(minio_env["MINIO_ROOT_PASSWORD"]) >= 8, "MinIO refuses shorter root passwords"


def test_the_backup_bucket_is_created_in_minio(services):
    minio = services["minio"]
    assert minio["command"] == "server /data --console-address :9001"
    creator = services[BUCKET_SERVICE]
    assert creator["entrypoint"] == ["/bin/sh", "-c"]
    script = creator["command"][0]
    bucket = _env(services["airflow-scheduler"])["KAFKA_BACKUP_BUCKET"]
    assert "mc alias set local http://minio:9000" in script
    assert f"mc mb --ignore-existing local/{bucket}" in script
    assert _env(creator)["MINIO_ROOT_USER"] == _env(minio)["MINIO_ROOT_USER"]
    assert _depends_on(creator) == {"minio": {"condition": "service_healthy"}}


def test_kafka_is_a_single_kraft_node(services):
    env = _env(services["kafka"])
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["CLUSTER_ID"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols), protocols
    assert listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]] == ":9093"
    assert listeners[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == ":9092"
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    for name, address in advertised.items():
        assert listeners[name].rsplit(":", 1)[1] == address.rsplit(":", 1)[1], name
        if address.startswith("localhost:"):
            port = address.rsplit(":", 1)[1]
            assert f"{port}:{port}" in services["kafka"]["ports"], address
    # One broker: the internal topics cannot have more than one replica.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    # The data directory is the volume.
    assert f"kafka-data:{env['KAFKA_LOG_DIRS']}" in services["kafka"]["volumes"]


def test_dags_are_mounted_from_the_repository(services):
    assert (REPO / "dags" / "kafka_backup.py").is_file()
    assert (REPO / "dags" / "kafka_restore.py").is_file()
    for name in AIRFLOW_SERVICES:
        mounts = [volume.split(":") for volume in services[name]["volumes"]]
        dags = [mount for mount in mounts if mount[1] == "/opt/airflow/dags"]
        assert len(dags) == 1, name
        assert Path(dags[0][0]) == Path("./dags") and (REPO / dags[0][0]).is_dir(), name


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: {source}"


def test_every_dependency_is_a_defined_service_in_a_state_it_reaches(services):
    for name, service in services.items():
        for dependency, spec in _depends_on(service).items():
            assert dependency in services, f"{name} depends on undefined {dependency}"
            assert dependency != name
            condition = spec["condition"]
            assert condition in DEPENDS_ON_CONDITIONS, f"{name}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy"
            if condition == "service_completed_successfully":
                assert "restart" not in services[dependency], f"{dependency} must be one-shot"
    for name in AIRFLOW_COMMANDS:
        deps = _depends_on(services[name])
        assert deps["airflow-init"] == {"condition": "service_completed_successfully"}, name
        assert deps["postgres"] == {"condition": "service_healthy"}, name
    assert _depends_on(services["airflow-init"])["postgres"] == {"condition": "service_healthy"}
    scheduler = _depends_on(services["airflow-scheduler"])
    assert scheduler["kafka"] == {"condition": "service_healthy"}
    assert scheduler[BUCKET_SERVICE] == {"condition": "service_completed_successfully"}
    assert scheduler["airflow-apiserver"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("name", ["postgres", "kafka", "minio", *AIRFLOW_COMMANDS])
def test_long_running_services_have_a_healthcheck(services, name):
    check = services[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL"), check
    assert len(check["test"]) > 1


# --- the celery profile (issue #25, docs/scaling.md) ------------------------------------------------
CELERY_WORKERS = ["airflow-worker-1", "airflow-worker-2"]


def test_the_celery_profile_adds_redis_and_workers_and_leaves_the_default_alone(services):
    in_profile = {name for name, service in services.items() if service.get("profiles")}
    assert in_profile == {"redis", *CELERY_WORKERS}
    assert all(services[name]["profiles"] == ["celery"] for name in in_profile)
    assert ALL_SERVICES.isdisjoint(in_profile), "a plain 'docker compose up' still starts the LocalExecutor stack"


def test_the_executor_is_local_unless_the_celery_profile_asks(raw, services):
    for name in [*AIRFLOW_SERVICES, *CELERY_WORKERS]:
        assert _env(services[name])["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert _env(raw["services"][name])["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}", name
    assert "AIRFLOW_EXECUTOR=CeleryExecutor docker compose --profile celery up" in COMPOSE_FILE.read_text()


def test_celery_workers_share_no_disk_and_reach_redis(services):
    hostnames = set()
    for name in CELERY_WORKERS:
        worker = services[name]
        assert worker["command"] == "celery worker", name
        assert worker["image"] == services["airflow-scheduler"]["image"], name
        assert worker["volumes"] == ["./dags:/opt/airflow/dags:ro"], f"{name} mounts more than the DAG files"
        deps = _depends_on(worker)
        assert deps["redis"] == {"condition": "service_healthy"}, name
        assert deps["airflow-apiserver"] == {"condition": "service_healthy"}, "tasks need the execution API"
        assert "inspect ping" in worker["healthcheck"]["test"][1], name
        hostnames.add(worker["hostname"])
    assert hostnames == set(CELERY_WORKERS), "the api-server fetches each worker's task logs by its host name"
    env = _env(services["airflow-scheduler"])
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"]).hostname == "postgres"
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "4"
