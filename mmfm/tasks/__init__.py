"""Downstream tasks: a head on an encoder (frozen or fine-tuned), evaluated by metrics that live apart."""

from mmfm.registry import Registry

TASKS: Registry = Registry("task")

from mmfm.tasks import (  # noqa: E402,F401,I001  (register)
    classification, detection, promptable, registration, report_generation, segmentation, vqa)

__all__ = ["TASKS"]
