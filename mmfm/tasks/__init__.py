"""Downstream tasks: a head on an encoder (frozen or fine-tuned), evaluated by metrics that live apart."""

from mmfm.registry import Registry

TASKS: Registry = Registry("task")

from mmfm.tasks import classification, promptable, registration, report_generation, segmentation, vqa  # noqa: E402,F401,I001

__all__ = ["TASKS"]
