"""Losses: tensors in, a scalar out; they know nothing about models."""

from mmfm.objectives.losses.clip_loss import ClipLoss, semantic_targets, soft_cross_entropy
from mmfm.objectives.losses.contrastive_loss import InfoNCELoss, MultiPositiveNCELoss, NTXentLoss
from mmfm.objectives.losses.gather import gather_with_grad
from mmfm.objectives.losses.gloria_loss import GloriaLocalLoss, local_scores
from mmfm.objectives.losses.masked_recon_loss import masked_reconstruction_loss
from mmfm.objectives.losses.voco_loss import VoCoLoss

__all__ = ["ClipLoss", "GloriaLocalLoss", "InfoNCELoss", "MultiPositiveNCELoss", "NTXentLoss", "VoCoLoss",
           "gather_with_grad", "local_scores", "masked_reconstruction_loss", "semantic_targets",
           "soft_cross_entropy"]
