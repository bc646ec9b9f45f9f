"""Zero-shot classification with an aligned image-text model: each class is described by prompts, the prompts'
text embeddings are averaged into one class embedding (prompt ensembling, as in CLIP), and an image goes to the
class whose embedding is most similar. No labelled image is used.

Reference: Radford et al., CLIP, 2021 (Sec. 3.1.4, prompt engineering and ensembling).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmfm.encoders.dual import DualEncoder
from mmfm.errors import ConfigError
from mmfm.tasks.retrieval import embed_batches

DEFAULT_TEMPLATES = ["{name}.", "an image of {name}.", "a medical image showing {name}.", "a scan centred on {name}."]


def class_prompts(class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                  synonyms: dict[str, list[str]] | None = None) -> list[list[str]]:
    """Prompts per class: every template filled with the class name (underscores as spaces) and its synonyms."""
    if not templates or any("{name}" not in t for t in templates):
        raise ConfigError("every prompt template needs a {name} placeholder", "e.g. 'a CT image of {name}.'")
    out = []
    for c in class_names:
        names = [c.replace("_", " ")] + list((synonyms or {}).get(c, []))
        out.append([t.format(name=n) for n in names for t in templates])
    return out


@torch.no_grad()
def class_embeddings(model: DualEncoder, prompts: list[list[str]]) -> torch.Tensor:
    """(K, E): the normalised mean of each class's normalised prompt embeddings."""
    model.eval()
    return F.normalize(torch.stack([model.encode_text(p).float().mean(0) for p in prompts]).cpu(), dim=-1)


@torch.no_grad()
def zero_shot_probs(model: DualEncoder, images: torch.Tensor, prompts: list[list[str]],
                    batch_size: int = 64) -> torch.Tensor:
    """(N, K) class probabilities: softmax of the model's scaled cosine similarities."""
    model.eval()
    classes = class_embeddings(model, prompts)                                  # (K, E)
    v = embed_batches(model.encode_image, images, batch_size)                   # (N, E)
    scale = model.logit_scale.detach().exp().clamp(max=100).cpu()
    return F.softmax(scale * v @ classes.T, dim=1)
