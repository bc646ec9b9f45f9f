"""Downstream tasks: a head on an encoder (frozen or fine-tuned), evaluated by metrics that live apart."""

from mmfm.registry import Registry

TASKS: Registry = Registry("task")

from mmfm.tasks import classification, segmentation  # noqa: E402,F401  (register the tasks)

__all__ = ["TASKS"]
