"""Many executions from JSON Lines: reading lines, the local batch, worker processes, progress."""
