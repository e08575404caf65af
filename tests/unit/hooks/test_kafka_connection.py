"""Unit tests: the seed's ``retry.backoff.ms`` lives in the ``kafka`` connection's extra and reaches every client.

Each client the operators build (the range consumer of the backup and the backlog sensor,
the group consumer and the transactional producer of the restore, the admin client of
every plan) is built here from a connection, as the operators build it. librdkafka's own
dump of the configuration it runs with (``debug: conf``, written to stderr when the
client is created) shows what it took; an invalid value is refused by librdkafka, named.
No broker is needed: creating a client does not wait for one.
"""

from __future__ import annotations

import json
import re
import socket

import pytest
from confluent_kafka import KafkaException

_DUMP_LINE = re.compile(r"\|CONF\|rdkafka#\w+-\d+\| \[thrd:app\]:\s+([\w.]+) = (.*)$")


def _clients(conn_id: str) -> dict:
    """Every kind of librdkafka client the operators build from a ``kafka`` connection, unbuilt."""
    from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

    from airflow_kafka_backup.hooks.kafka import (
        KafkaGroupConsumerHook,
        KafkaRangeConsumerHook,
        KafkaTransactionalProducerHook,
    )

    return {
        "range consumer": lambda: KafkaRangeConsumerHook(conn_id, "read_committed").get_conn,
        "group consumer": lambda: KafkaGroupConsumerHook(conn_id, group_id="g").get_conn,
        "transactional producer": lambda: KafkaTransactionalProducerHook(conn_id, transactional_id="t").get_conn,
        "admin client": lambda: KafkaAdminClientHook(kafka_config_id=conn_id).get_conn,
    }


def _kafka_connection(monkeypatch, **extra) -> str:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn_id = "kafka_retry_backoff"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": f"127.0.0.1:{port}", **extra}}))
    return conn_id


def _close(client) -> None:
    if hasattr(client, "close"):  # consumers; producers and admin clients go with their last reference
        client.close()


def test_retry_backoff_ms_from_the_connection_is_what_every_client_runs_with(monkeypatch, capfd):
    # The seed's default, 5000 ms: above librdkafka's default retry.backoff.max.ms (1000), which would
    # cap it (with a CONFWARN), so the connection raises that too.
    conn_id = _kafka_connection(monkeypatch, **{"retry.backoff.ms": 5000, "retry.backoff.max.ms": 5000,
                                                "debug": "conf"})
    for kind, build in _clients(conn_id).items():
        capfd.readouterr()
        client = build()
        dump = capfd.readouterr().err
        _close(client)
        effective = dict(m.groups() for m in map(_DUMP_LINE.search, dump.splitlines()) if m)
        assert effective, f"{kind}: librdkafka dumped no configuration: {dump[-2000:]}"
        assert effective.get("retry.backoff.ms") == "5000", f"{kind}: {effective.get('retry.backoff.ms')}"
        assert effective.get("retry.backoff.max.ms") == "5000", kind
        assert "CONFWARN" not in dump, dump


def test_a_value_librdkafka_refuses_fails_every_client_naming_it(monkeypatch):
    conn_id = _kafka_connection(monkeypatch, **{"retry.backoff.ms": 0})
    for kind, build in _clients(conn_id).items():
        with pytest.raises(KafkaException, match='"retry.backoff.ms" value 0 is outside allowed range'):
            _close(build())
            pytest.fail(f"{kind} accepted retry.backoff.ms 0")


@pytest.mark.parametrize("extra,seconds", [({}, 60.0), ({"transaction.timeout.ms": "300000"}, 300.0),
                                           ({"transaction.timeout.ms": 900000}, 900.0)])
def test_the_restore_reads_the_producers_transaction_timeout_from_the_connection(monkeypatch, extra, seconds):
    """The restore names it when a transaction outlives it (see transaction.RestoreTransaction._timed_out)."""
    from airflow_kafka_backup.hooks.kafka import KafkaTransactionalProducerHook

    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_TX_TIMEOUT", json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": "127.0.0.1:1", **extra}}))
    hook = KafkaTransactionalProducerHook("kafka_tx_timeout", transactional_id="t")
    assert hook.transaction_timeout_s() == seconds


def _effective(build, capfd) -> dict[str, str]:
    capfd.readouterr()
    client = build()
    dump = capfd.readouterr().err
    _close(client)
    return dict(m.groups() for m in map(_DUMP_LINE.search, dump.splitlines()) if m)


def test_the_backup_consumer_builds_with_fetch_limits_smaller_than_a_record(monkeypatch, capfd):
    """librdkafka refuses a consumer whose fetch.max.bytes is below its message.max.bytes (1 MB by default);
    the backup's consumer lowers message.max.bytes (a limit on what it sends) instead of failing."""
    from confluent_kafka import Consumer

    from airflow_kafka_backup.hooks.kafka import KafkaRangeConsumerHook

    small = {"fetch.max.bytes": 1000, "max.partition.fetch.bytes": 1000}
    with pytest.raises(KafkaException, match="fetch.max.bytes` must be >= `message.max.bytes"):
        Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g", **small})  # what the fix is for
    conn_id = _kafka_connection(monkeypatch, **small, debug="conf")
    effective = _effective(lambda: KafkaRangeConsumerHook(conn_id, "read_committed").get_conn, capfd)
    assert (effective["fetch.max.bytes"], effective["message.max.bytes"]) == ("1000", "1000")
    assert effective["fetch.message.max.bytes"] == "1000"  # librdkafka's name for max.partition.fetch.bytes


def test_the_restore_producer_is_sized_for_the_largest_record_unless_the_connection_says(monkeypatch, capfd):
    from airflow_kafka_backup.engine.record_size import PRODUCER_HEADROOM_BYTES
    from airflow_kafka_backup.hooks.kafka import KafkaTransactionalProducerHook

    ten_mb = 10 << 20
    conn_id = _kafka_connection(monkeypatch, debug="conf")
    sized = _effective(lambda: KafkaTransactionalProducerHook(conn_id, transactional_id="t",
                                                              largest_record_bytes=ten_mb).get_conn, capfd)
    assert sized["message.max.bytes"] == str(ten_mb + PRODUCER_HEADROOM_BYTES)
    unknown = _effective(lambda: KafkaTransactionalProducerHook(conn_id, transactional_id="t").get_conn, capfd)
    assert "message.max.bytes" not in unknown  # librdkafka's default (dumped only when set): sizes unknown
    conn_id = _kafka_connection(monkeypatch, debug="conf", **{"message.max.bytes": 2_000_000})
    own = _effective(lambda: KafkaTransactionalProducerHook(conn_id, transactional_id="t",
                                                            largest_record_bytes=ten_mb).get_conn, capfd)
    assert own["message.max.bytes"] == "2000000"
