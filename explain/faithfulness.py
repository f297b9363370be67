"""Does a map say something about the model? Deletion / insertion curves and the randomisation test.

* Deletion and insertion (Petsiuk et al., RISE 2018): brain pixels are ranked by the map (largest
  first; ties in raster order), removed from the slice (set to the background value 0) or inserted
  into an empty brain, in ``steps`` equal portions; after each portion the model runs again and the
  frozen target's mean lesion probability is recorded. A faithful map makes the deletion curve fall
  fast (low AUC) and the insertion curve rise fast (high AUC). Compare with a random map's curves.
* Model-parameter randomisation (Adebayo et al., "Sanity checks for saliency maps", 2018): the
  layers are re-initialised cumulatively from the head down (the training initialiser, seeded) and
  the map is recomputed for the same frozen target; the Spearman correlation between the original
  and each randomised map, over the brain pixels, must fall. A map that survives randomisation is
  an edge detector, not an explanation.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from explain.targets import Target

Predict = Callable[[np.ndarray], np.ndarray]  # [N, H, W] -> probabilities [N, H, W]

# Cascade order for X-Net, head first (the deepest layers of the decoder are nearest the output).
CASCADE = ("head", "decoders.3", "up_convs.3", "decoders.2", "up_convs.2", "decoders.1", "up_convs.1",
           "decoders.0", "up_convs.0", "fsm", "encoders.4", "encoders.3", "encoders.2", "encoders.1",
           "encoders.0")


@dataclass
class Curve:
    fractions: list[float]  # share of brain pixels removed (deletion) or inserted (insertion)
    scores: list[float]  # target's mean lesion probability after each step
    auc: float

    def as_dict(self) -> dict:
        return asdict(self)


def _ranking(saliency: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Flat indices of brain pixels, most relevant first; ties keep raster order (stable sort)."""
    inside = np.flatnonzero(brain.ravel())
    order = np.argsort(-saliency.ravel()[inside], kind="stable")
    return inside[order]


def deletion_insertion(image: np.ndarray, brain: np.ndarray, saliency: np.ndarray, target: Target,
                       predict: Predict, steps: int = 20) -> tuple[Curve, Curve]:
    """Deletion and insertion curves of one map on one model slice ``[H, W]``."""
    ranked = _ranking(saliency, brain)
    counts = np.linspace(0, ranked.size, steps + 1).round().astype(int)
    deleted, inserted = [], []
    empty = np.where(brain, 0.0, image).astype(np.float32)  # brain removed, background kept
    for count in counts:
        chosen = ranked[:count]
        less = image.astype(np.float32).ravel().copy()
        less[chosen] = 0.0
        more = empty.ravel().copy()
        more[chosen] = image.ravel()[chosen]
        deleted.append(less.reshape(image.shape))
        inserted.append(more.reshape(image.shape))
    scores = target.mean_probability(predict(np.stack(deleted + inserted)))
    fractions = (counts / max(ranked.size, 1)).tolist()
    return (_curve(fractions, scores[: steps + 1]), _curve(fractions, scores[steps + 1:]))


def _curve(fractions: list[float], scores: np.ndarray) -> Curve:
    return Curve(fractions, [float(s) for s in scores], float(np.trapezoid(scores, fractions)))


def random_map(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The baseline every method must beat."""
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def rank_correlation(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """Spearman correlation over ``where``; 0 when either map is constant there (it then shares
    no ranking with the other)."""
    x, y = a[where > 0].ravel(), b[where > 0].ravel()
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y)[0])


def _reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """The training initialiser (Keras he_normal, truncated; BN scale 1, shift 0); BN running
    statistics stay, as in Adebayo et al., who randomise the learned weights."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            std = math.sqrt(2.0 / (layer.in_channels // layer.groups * kh * kw))
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator).clamp_(-2, 2) * std)
                if layer.bias is not None:
                    layer.bias.zero_()
        elif isinstance(layer, nn.BatchNorm2d):
            with torch.no_grad():
                layer.weight.fill_(1.0)
                layer.bias.zero_()


@dataclass
class RandomisationStep:
    randomised_down_to: str  # this stage and every stage nearer the head are re-initialised
    spearman: dict[str, float]  # per method: original vs randomised map

    def as_dict(self) -> dict:
        return asdict(self)


def randomisation_test(model: nn.Module, explain: Callable[[nn.Module], dict[str, np.ndarray]],
                       brain: np.ndarray, stages: tuple[str, ...] = CASCADE,
                       seed: int = 0) -> list[RandomisationStep]:
    """Cascading randomisation. ``explain(model) -> {method: map [H, W]}`` is recomputed after each
    stage (one call can serve several methods, as the CAM methods share a pass)."""
    original = explain(model)
    randomised = copy.deepcopy(model).float().eval()
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for stage in stages:
        _reinitialise(randomised.get_submodule(stage), generator)
        maps = explain(randomised)
        steps.append(RandomisationStep(stage, {m: rank_correlation(original[m], maps[m], brain) for m in original}))
    return steps
