"""Workflows: the library functions the CLI calls (one per command). They wire data, tasks, engine and
evaluation together from a typed config."""
