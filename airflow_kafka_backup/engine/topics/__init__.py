"""Topics as both engines see them: selection by name and pattern, metadata, incarnations."""
