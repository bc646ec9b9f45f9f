"""Pretraining proxy tasks (review Section III, Fig. 4). Each objective takes a batch dict and returns named
losses (``loss`` is the sum of the ``*_loss`` terms); it holds its own heads and knows the encoder only through
the encoder interface."""

from mmfm.objectives import combined, contrastive, dae, masked, voco  # noqa: F401,E402  (register objectives)
from mmfm.objectives.base import OBJECTIVES, Objective, build_objective

__all__ = ["OBJECTIVES", "Objective", "build_objective"]
