"""Airflow plugins shipped with the provider (entry point ``airflow.plugins``)."""
