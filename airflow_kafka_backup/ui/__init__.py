"""The "Kafka backups" page's pure parts: which prefixes, RPO status, the timeline SVG and the HTML.

Nothing here imports Airflow (an import-linter contract keeps it so): the plugin
(:mod:`airflow_kafka_backup.plugins.kafka_backups`) reads Airflow's DAGs, runs and auth manager
and hands plain values in, so all of it is unit-tested without a server.
"""
