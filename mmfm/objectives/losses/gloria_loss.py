"""GLoRIA's local loss: words attend to image regions; word-context similarities give an image-report score.

For report j and image i: a_jlk = softmax_k(temp_attention * cos(w_jl, v_ik)) (attention of word l over region k),
c_jl = sum_k a_jlk v_ik (the word's visual context), and the local score
S(i, j) = log( sum_l exp(temp_word * cos(c_jl, w_jl)) ) / temp_word over the report's words. The (N, N) scores,
scaled by ``temp_local``, enter eq. (6)'s symmetric cross-entropy. Under DDP the features are all-gathered.
Reference: Huang et al., GLoRIA, ICCV 2021 (temperatures 4, 5, 10 as in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.objectives.losses.full_precision import full_precision
from mmfm.objectives.losses.gather import gather_with_grad


@full_precision
def local_scores(regions: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor, temp_attention: float = 4.0,
                 temp_word: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """regions: (Ni, K, E); words: (Nt, L, E); word_mask: (Nt, L) bool. Returns scores (Ni, Nt) and the
    attention maps (Ni, Nt, L, K)."""
    v = F.normalize(regions.float(), dim=-1)
    w = F.normalize(words.float(), dim=-1)
    sim = torch.einsum("ike,jle->ijlk", v, w)                         # (Ni, Nt, L, K)
    attn = F.softmax(temp_attention * sim, dim=-1)                    # over regions
    context = torch.einsum("ijlk,ike->ijle", attn, v)                 # (Ni, Nt, L, E)
    word_sim = F.cosine_similarity(context, w[None], dim=-1)          # (Ni, Nt, L)
    word_sim = (temp_word * word_sim).masked_fill(~word_mask[None], float("-inf"))
    scores = torch.logsumexp(word_sim, dim=-1) / temp_word            # (Ni, Nt)
    return scores, attn


class GloriaLocalLoss(nn.Module):
    def __init__(self, temp_attention: float = 4.0, temp_word: float = 5.0, temp_local: float = 10.0,
                 gather: bool = True) -> None:
        super().__init__()
        self.ta, self.tw, self.tl, self.gather = temp_attention, temp_word, temp_local, gather

    @full_precision
    def forward(self, regions: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        if self.gather:
            regions, words = gather_with_grad(regions), gather_with_grad(words)
            word_mask = gather_with_grad(word_mask.to(torch.uint8)).bool()
        empty = ~word_mask.any(1)
        if empty.any():  # a report with no words scores -inf everywhere; let it attend to its first token instead
            word_mask = word_mask.clone()
            word_mask[empty, 0] = True
        scores, _ = local_scores(regions, words, word_mask, self.ta, self.tw)
        logits = self.tl * scores                                       # (N, N) image -> text
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
