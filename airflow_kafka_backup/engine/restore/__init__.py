"""The restore engine: plan from manifests, produce exactly once, record and verify the offset map."""
