"""Data layer: samples as dicts, readers, modality presets, the dataset catalog, splits and corpora."""
