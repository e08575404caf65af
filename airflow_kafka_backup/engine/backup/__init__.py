"""The backup engine: plan a run, consume its ranges, write and upload segments, keep checkpoints."""
