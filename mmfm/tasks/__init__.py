"""Downstream tasks: a head on an encoder (frozen or fine-tuned), evaluated by metrics that live apart."""

from mmfm.registry import Registry

TASKS: Registry = Registry("task")

from mmfm.tasks import classification, report_generation, segmentation, vqa  # noqa: E402,F401  (register)

__all__ = ["TASKS"]
