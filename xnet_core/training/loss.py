"""The training loss: the paper's BCE + (1 - batch soft Dice) + L2 on the kernels (reference in docs/design.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xnet_core.model import XNet


def xnet_loss(logits: torch.Tensor, target: torch.Tensor, model: XNet | None = None,
              slice_dice_weight: float = 0.0) -> torch.Tensor:
    """The official loss: BCE + (1 - batch soft Dice) [+ L2 on the 73 kernels when ``model``].

    ``slice_dice_weight`` > 0 adds that many times (1 - mean soft Dice of the slices that hold lesion).
    Batch Dice pools every voxel of the batch, so a 30-voxel lesion next to a 3,000-voxel one gets 1 %
    of the Dice gradient; per slice it counts as much as the large one (the idea of Kofler et al.'s
    blob loss, 2022, at slice rather than lesion level). Not in the paper; 0 keeps its recipe. Where a
    slice's lesion is missed, its gradient raises the probability inside the lesion and hardly lowers it
    outside (that pull scales with the overlap), so a large weight makes a model fire on look-alikes
    (docs/training.md, ``--slice-dice``).
    """
    probs = torch.sigmoid(logits.float())
    bce = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target)
    soft_dice = 2 * (target * probs).sum() / (target.sum() + probs.sum())
    loss = bce + (1 - soft_dice)
    if slice_dice_weight > 0:
        loss = loss + slice_dice_weight * (1 - _lesion_slice_dice(probs, target))
    return loss + model.l2_penalty() if model is not None else loss


def _lesion_slice_dice(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean soft Dice over the slices of a batch that hold lesion (1 when none does: nothing to weigh).

    Masked rather than indexed, so that no step waits for the device to say whether any slice holds lesion.
    """
    dims = tuple(range(1, target.dim()))
    truth = target.sum(dim=dims)
    lesion = (truth > 0).float()
    dice = 2 * (target * probs).sum(dim=dims) / (truth + probs.sum(dim=dims)).clamp_min(1e-7)
    count = lesion.sum()
    mean = (dice * lesion).sum() / count.clamp_min(1)
    return torch.where(count > 0, mean, torch.ones_like(mean))


def loss_description(slice_dice_weight: float) -> str:
    extra = f" + {slice_dice_weight:g} (1 - mean soft Dice of lesion slices)" if slice_dice_weight > 0 else ""
    return f"BCE + (1 - batch soft Dice){extra} + 1e-5 L2 (73 kernels)"

