"""Trust (the review's Section VI-C/D): calibration by temperature scaling and explanations of trained models.

Reads models (tasks) and results (evaluation); the training engine's differential privacy lives in
:mod:`mmfm.engine.privacy`.
"""
