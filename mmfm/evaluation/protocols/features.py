"""One frozen pass of an encoder over a dataset."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 64,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N, D) and labels (N,) of ``dataset`` items ``{"image", "label"}``."""
    was = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    feats, labels = [], []
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size), disable=not progress, desc="features"):
        feats.append(encoder(batch["image"].to(device))["pooled"].float().cpu())
        labels.append(batch["label"])
    encoder.train(was)
    return torch.cat(feats), torch.cat(labels)
