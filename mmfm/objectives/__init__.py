"""Pretraining proxy tasks (review Section III, Fig. 4). Each objective takes a batch dict and returns named
losses (``loss`` is the sum of the ``*_loss`` terms); it holds its own heads and knows the encoder only through
the encoder interface."""

from mmfm.objectives import (  # noqa: F401,E402  (register objectives)
    clip,
    combined,
    contrastive,
    dae,
    gloria,
    masked,
    mrem,
    report_text,
    voco,
)
from mmfm.objectives.base import OBJECTIVES, Objective, build_objective

__all__ = ["OBJECTIVES", "Objective", "build_objective"]
