"""mmfm: medical multimodal foundation models.

The package follows the workflow of Sun et al., "Medical Multimodal Foundation Models in Clinical Diagnosis and
Treatment": data -> encoders -> objectives (pretraining) -> tasks (downstream) -> evaluation, with a thin engine
and a thin CLI. Lower layers never import higher ones.
"""

__version__ = "0.1.0"
