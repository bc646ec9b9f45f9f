"""Evaluation protocols usable on any encoder: frozen features with a linear probe (several heads trained on one
frozen pass) or k-NN; full fine-tuning lives in :mod:`mmfm.workflows.evaluate` (it needs the engine)."""

from mmfm.evaluation.protocols.batchnorm import refit_batchnorm
from mmfm.evaluation.protocols.features import extract_features
from mmfm.evaluation.protocols.knn import knn_predict
from mmfm.evaluation.protocols.linear_probe import linear_probe

__all__ = ["extract_features", "knn_predict", "linear_probe", "refit_batchnorm"]
