"""Restore drills: restore a recent window of the backup into scratch topics, compare it with the source
still in Kafka, project the recovery time, write the evidence to S3 and clean up (see docs/drills.md)."""
