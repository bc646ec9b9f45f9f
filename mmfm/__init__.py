"""mmfm: medical multimodal foundation models.

The package follows the workflow of Sun et al., "Medical Multimodal Foundation Models in Clinical Diagnosis and
Treatment": data -> encoders -> objectives (pretraining) -> tasks (downstream) -> evaluation, with a thin engine
and a thin CLI. Lower layers never import higher ones.
"""

__version__ = "0.1.0"

import logging as _logging

# MONAI announces on every import that the optional GPU DICOM codec (nvImageCodec) is absent; mmfm decodes
# DICOM with pydicom + pylibjpeg, so the message is noise on every CPU machine.
_logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(_logging.ERROR)


_API = ("read_image", "create_encoder", "load_dataset", "config", "pretrain", "train", "evaluate", "federate",
        "federate_server", "federate_client", "continual", "load_trained", "load_assistant",
        "Segmentation", "segment", "segmenter", "Explanation", "explain", "Registration", "register", "predict",
        "zeroshot", "retrieve", "report_gen", "vqa", "chat", "summarize",
        "inspect", "prepare", "shard", "verify_shards", "datasets", "dataset_info", "deid", "label_reports",
        "check_labeller", "pull", "push",
        "zoo_list", "zoo_info", "zoo_add", "zoo_remove", "zoo_export", "create_app", "serve", "report", "quickstart")


def __getattr__(name: str):  # the public API (mmfm.api), imported on first use so `import mmfm` stays light
    if name in _API:
        from mmfm import api

        return getattr(api, name)
    raise AttributeError(f"module 'mmfm' has no attribute '{name}'")


__all__ = list(_API)
