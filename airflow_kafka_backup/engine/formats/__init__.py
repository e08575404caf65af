"""Segment file formats (JSON Lines, msgpack, Avro) and their compression; nothing here touches S3."""
