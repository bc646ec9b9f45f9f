"""Losses: tensors in, a scalar out; they know nothing about models."""

from mmfm.objectives.losses.contrastive_loss import InfoNCELoss, MultiPositiveNCELoss, NTXentLoss
from mmfm.objectives.losses.gather import gather_with_grad
from mmfm.objectives.losses.masked_recon_loss import masked_reconstruction_loss
from mmfm.objectives.losses.voco_loss import VoCoLoss

__all__ = ["InfoNCELoss", "MultiPositiveNCELoss", "NTXentLoss", "VoCoLoss", "gather_with_grad",
           "masked_reconstruction_loss"]
