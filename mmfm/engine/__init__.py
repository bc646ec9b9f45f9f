"""The thin training engine: one loop for every objective and task, checkpoints, distributed, logging."""
