"""Stochastic weight averaging and the BatchNorm re-estimation an average needs."""

from __future__ import annotations

import numpy as np
import torch

from xnet_core.model import XNet
from xnet_core.training.sampling import SliceSource


def recalibrate_batchnorm(model: XNet, source: SliceSource, rng: np.random.Generator, batches: int,
                          batch_size: int, device: torch.device, bf16_cpu: bool = False) -> None:
    """Re-estimate BN running statistics as plain averages over ``batches`` full-size batches.

    Keras' momentum 0.99 makes the running statistics lag far behind fast-changing early weights
    (docs/training.md, ``--precise-bn``), and
    crops give other statistics than whole slices. Averaging over whole slices fixes both; the
    recipe's own momentum applies again afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_cpu and device.type == "cpu")
    with torch.no_grad(), autocast:
        for _ in range(batches):
            images, _ = source.batch(rng, batch_size)
            model(torch.from_numpy(images).to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def average_weights(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform mean of same-architecture weights: stochastic weight averaging (Izmailov et al. 2018).

    Checkpoints saved along one constant-learning-rate run lie around a flat region of the loss; their
    mean sits nearer its centre and often generalises better than any one of them (the demo model is
    such a mean: docs/model.md). Floating tensors are averaged in float32;
    integer buffers (BatchNorm's batch counters) come from the last. The BatchNorm running statistics of
    a mean do not belong to its weights: re-estimate them (``recalibrate_batchnorm``) before use.
    """
    if not state_dicts:
        raise ValueError("average_weights needs at least one state dict")
    keys = state_dicts[0].keys()
    for other in state_dicts[1:]:
        if other.keys() != keys or any(other[k].shape != state_dicts[0][k].shape for k in keys):
            raise ValueError("checkpoints of different architectures cannot be averaged")
    return {k: (torch.stack([sd[k].float() for sd in state_dicts]).mean(0) if state_dicts[0][k].is_floating_point()
                else state_dicts[-1][k].clone()) for k in keys}

