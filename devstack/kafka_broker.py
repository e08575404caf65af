"""A real single-node Apache Kafka 4.x broker (KRaft) on loopback, for tests, demo and benchmarks.

The broker jars come from Maven Central through ``devstack/pom.xml`` into a cache
folder (``$AKB_CACHE``, default ``~/.cache/airflow-kafka-backup``), so a fresh
machine needs only Java 17 and Maven. When ``KAFKA_BOOTSTRAP`` is set, callers use
that broker instead and nothing is started.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from devstack.processes import stop_process

POM = Path(__file__).with_name("pom.xml")
KAFKA_VERSION = "4.1.1"


def cache_dir() -> Path:
    return Path(os.environ.get("AKB_CACHE", Path.home() / ".cache" / "airflow-kafka-backup"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch_kafka_jars() -> Path:
    """Resolve the broker's jars with Maven once; later calls reuse the cache folder."""
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    libs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-Dkafka.version={KAFKA_VERSION}", f"-DoutputDirectory={libs}",
        ],
        check=True,
    )
    marker.touch()
    return libs


SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
# A SASL/PLAIN listener, so tests can show that SASL passwords never leak.
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
  required user_{sasl_user}="{sasl_password}";
log.dirs={log_dir}
num.partitions=1
# One node: internal topics and transactions must work with a single replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Tests compact and expire topics on purpose; let the broker act within seconds.
log.cleaner.backoff.ms=200
log.retention.check.interval.ms=500
log.segment.delete.delay.ms=0
file.delete.delay.ms=0
auto.create.topics.enable=false
"""


SASL_USER = "alice"
SASL_PASSWORD = "alice-s3cret-" + uuid.uuid4().hex  # new per process: a leak check can search for it


@dataclass
class KafkaBroker:
    """A broker process we started; ``stop()`` kills it and removes its data.

    ``sasl_bootstrap`` is the SASL/PLAIN listener (user ``SASL_USER``, ``SASL_PASSWORD``);
    ``None`` for an external broker (``KAFKA_BOOTSTRAP``).
    """

    bootstrap: str
    sasl_bootstrap: str | None = None
    process: subprocess.Popen | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    properties: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        stop_process(self.process, timeout=20)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _kafka_uuid() -> str:
    """A cluster id as Kafka writes them: 16 random bytes, URL-safe base64 without padding.

    Never starting with ``-``, which StorageTool's argument parser would take for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _wait_for_port(port: int, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Kafka exited with {process.returncode}; log: {log_path.read_text()[-4000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"Kafka did not listen on {port} within {timeout}s; log: {log_path}")


def _wait_until_ready(bootstrap: str, timeout: float) -> None:
    """Listening is not serving: wait until the broker answers metadata requests."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        try:
            if admin.list_topics(timeout=5).brokers:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def start_broker(timeout: float = 90.0) -> KafkaBroker:
    """Start a fresh broker, or return ``KAFKA_BOOTSTRAP``'s broker when that is set."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        return KafkaBroker(bootstrap=os.environ["KAFKA_BOOTSTRAP"])
    libs = fetch_kafka_jars()
    workdir = Path(tempfile.mkdtemp(prefix="akb-kafka-"))
    port, controller_port, sasl_port = free_port(), free_port(), free_port()
    config = workdir / "server.properties"
    config.write_text(SERVER_PROPERTIES.format(
        port=port, controller_port=controller_port, sasl_port=sasl_port, log_dir=workdir / "data",
        sasl_user=SASL_USER, sasl_password=SASL_PASSWORD,
    ))
    log4j = workdir / "log4j2.properties"
    log4j.write_text(
        "rootLogger.level=WARN\nrootLogger.appenderRef.out.ref=OUT\n"
        "appender.out.type=Console\nappender.out.name=OUT\n"
        "appender.out.layout.type=PatternLayout\nappender.out.layout.pattern=[%d] %p %m (%c)%n\n"
    )
    java = [
        "java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*",
    ]
    subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "--standalone",
         "-t", _kafka_uuid(), "-c", str(config)],
        check=True, capture_output=True,
    )
    log_path = workdir / "kafka.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*java, "kafka.Kafka", str(config)], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    broker = KafkaBroker(
        bootstrap=f"127.0.0.1:{port}", sasl_bootstrap=f"127.0.0.1:{sasl_port}", process=process,
        workdir=workdir, log_path=log_path,
    )
    try:
        _wait_for_port(port, process, log_path, timeout)
        _wait_until_ready(broker.bootstrap, timeout)
    except BaseException:
        broker.stop()
        raise
    return broker


if __name__ == "__main__":
    started = start_broker()
    print(started.bootstrap, flush=True)
    try:
        started.process.wait() if started.process else None
    except KeyboardInterrupt:
        started.stop()
