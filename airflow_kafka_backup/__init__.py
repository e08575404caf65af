"""airflow-kafka-backup: back up Apache Kafka topics to S3 and restore them, run by Airflow 3.

The engine modules (planning, segment_codec, key_layout, manifest, backup, ...) import
nothing from Airflow; ``operators``, ``hooks`` and ``dag_factories`` are thin layers on them.
"""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Provider metadata for Airflow's ProvidersManager (``airflow providers list``)."""
    return {
        "package-name": "airflow-kafka-backup",
        "name": "Kafka Backup",
        "description": "Back up Apache Kafka topics to Amazon S3 (or S3-compatible stores) and restore them.",
        "versions": [__version__],
        "state": "ready",
        "integrations": [
            {"integration-name": "Kafka Backup", "external-doc-url": "https://kafka.apache.org/",
             "tags": ["software"]},
        ],
        "operators": [
            {"integration-name": "Kafka Backup", "python-modules": [
                "airflow_kafka_backup.operators.backup", "airflow_kafka_backup.operators.restore"]},
        ],
        "sensors": [
            {"integration-name": "Kafka Backup", "python-modules": ["airflow_kafka_backup.sensors.backlog"]},
        ],
        "triggers": [
            {"integration-name": "Kafka Backup", "python-modules": ["airflow_kafka_backup.triggers.backlog"]},
        ],
        "hooks": [
            {"integration-name": "Kafka Backup", "python-modules": ["airflow_kafka_backup.hooks.kafka"]},
        ],
    }
