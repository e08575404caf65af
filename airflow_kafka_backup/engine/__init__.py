"""The engine: planning, segment formats, storage, and the backup and restore loops.

Nothing here imports Airflow (an import-linter contract in ``pyproject.toml`` keeps it so):
it is handed Kafka clients, an S3 client and plain settings. ``operators``, ``sensors``,
``triggers``, ``hooks`` and ``dag_factories`` are the thin Airflow shell around it.

- ``backup/``: planning a run, manual ranges, the partition writer and its rotation, the
  uploader, checkpoints, the backlog, and the backup loop;
- ``restore/``: planning a restore, the restore loop, attempts, the restore manifest, the
  offset map, target topics and consumer-group offsets;
- ``storage/``: the object store, key layout, S3 settings and retries, retention, the writer
  lock and the run manifests (the commit point);
- ``formats/``: the segment codecs (JSON Lines, msgpack, Avro) and compression;
- ``topics/``: topic selection by pattern, topic metadata and incarnations (shared by both);
- at the root: records, errors, record sizes, settings, time windows, offset chains, verify.

``backup`` and ``restore`` do not import each other; ``formats`` does not import ``storage``.
"""
