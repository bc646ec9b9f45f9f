"""Metrics live apart from models. Each states its policy for absent classes and empty ground truth."""

from mmfm.evaluation.metrics.classification import classification_metrics
from mmfm.evaluation.metrics.segmentation import dice_per_class

__all__ = ["classification_metrics", "dice_per_class"]
