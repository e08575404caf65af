"""airflow-kafka-backup: back up Apache Kafka topics to S3 and restore them, run by Airflow 3.

The engine modules (planning, segment_codec, key_layout, manifest, backup, ...) import
nothing from Airflow; ``operators``, ``hooks`` and ``dag_factories`` are thin layers on them.
"""

from __future__ import annotations

__version__ = "0.1.0"

# The oldest Airflow this provider is tested on (`make test-floor`). pyproject.toml and
# get_provider_info() state the same floor; tests/unit/test_compat.py checks that they agree.
MIN_AIRFLOW_VERSION = "3.0.6"

# The package's install requirements, as pyproject.toml lists them (and the same test checks).
DEPENDENCIES = [
    f"apache-airflow>={MIN_AIRFLOW_VERSION},<4",
    "apache-airflow-providers-amazon>=9.12.0",
    "apache-airflow-providers-apache-kafka>=1.10.2",
    "confluent-kafka>=2.6",
    "zstandard>=0.22",
    "isal>=1.9",
    "pybase64>=1.4",
    "msgspec>=0.18",
    "fastavro>=1.9",
    "awscrt>=0.23.4",
    'backports.zstd; python_version < "3.14"',
]


def get_provider_info() -> dict:
    """Provider metadata for Airflow's ProvidersManager (``airflow providers list``).

    ``dependencies`` is where Apache Airflow's own providers state their floor (its ``apache-airflow>=``
    entry is their minimum Airflow version), so tools that read provider metadata see ours the same way.
    """
    return {
        "package-name": "airflow-kafka-backup",
        "name": "Kafka Backup",
        "description": "Back up Apache Kafka topics to Amazon S3 (or S3-compatible stores) and restore them.",
        "versions": [__version__],
        "dependencies": list(DEPENDENCIES),
        "state": "ready",
        "integrations": [
            {"integration-name": "Kafka Backup", "external-doc-url": "https://kafka.apache.org/",
             "tags": ["software"]},
        ],
        "operators": [
            {"integration-name": "Kafka Backup", "python-modules": [
                "airflow_kafka_backup.operators.backup", "airflow_kafka_backup.operators.restore",
                "airflow_kafka_backup.operators.drill",
                "airflow_kafka_backup.operators.restore_approval"]},
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
