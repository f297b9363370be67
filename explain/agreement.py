"""Attention versus the reader: how much of a saliency map falls on the reader's lesion mask.

Map-versus-mask figures only; mask-versus-mask figures (Dice, IoU, ...) come from
``xnet_core.metrics``. Every function takes arrays of any shape (one slice ``[x, y]`` or a volume
``[x, y, z]``), so the same code gives per-slice and per-volume figures. Maps are raw and may be
signed (LIME); as docs/design.md says, agreement uses ``max(map, 0)``. Undefined figures (an empty
mask, a map with no positive value) are ``None``, never a made-up number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from xnet_core import metrics


def energy_inside(saliency: np.ndarray, mask: np.ndarray) -> float | None:
    """Σ max(map, 0)·mask / Σ max(map, 0): the share of positive attention inside the mask."""
    positive = np.maximum(saliency, 0).astype(np.float64)
    total = positive.sum()
    if total <= 0 or not mask.any():
        return None
    return float(positive[mask > 0].sum() / total)


def pointing_hit(saliency: np.ndarray, mask: np.ndarray) -> bool | None:
    """Pointing game: is the map's maximum inside the mask? Ties count as a hit if any tied
    maximum is inside (Zhang et al. use the single arg-max; ties are common on plateaus)."""
    if not mask.any() or not (saliency > 0).any():
        return None
    peak = saliency.max()
    return bool((mask[saliency == peak] > 0).any())


def otsu_region(saliency: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """The map above Otsu's threshold of its positive values (inside ``where`` when given)."""
    from skimage.filters import threshold_otsu  # ~0.2 s to import: not on the viewer's path to its first frame

    values = saliency[(saliency > 0) & (where > 0 if where is not None else True)]
    if values.size == 0:
        return np.zeros(saliency.shape, bool)
    threshold = threshold_otsu(values) if np.ptp(values) > 0 else values.min() - 1e-12
    return saliency > threshold


def otsu_iou(saliency: np.ndarray, mask: np.ndarray, where: np.ndarray | None = None) -> float | None:
    """IoU of the Otsu-thresholded map with the mask (mask-vs-mask: ``xnet_core.metrics.iou``)."""
    region = otsu_region(saliency, where)
    if not region.any() or not mask.any():
        return None
    return metrics.iou(region, mask)


@dataclass
class Agreement:
    energy_inside: float | None
    pointing_hit: bool | None
    otsu_iou: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def agreement(saliency: np.ndarray, mask: np.ndarray, where: np.ndarray | None = None) -> Agreement:
    """All three figures for one slice or one volume (``where``: e.g. the computed slices)."""
    if where is not None:
        saliency = np.where(where > 0, saliency, 0)
    return Agreement(energy_inside(saliency, mask), pointing_hit(saliency, mask), otsu_iou(saliency, mask, where))


def per_slice(saliency: np.ndarray, mask: np.ndarray, slices: list[int]) -> dict[int, Agreement]:
    """Figures for each axial slice ``z`` of volumes ``[x, y, z]``."""
    return {z: agreement(saliency[:, :, z], mask[:, :, z]) for z in slices}


def per_volume(saliency: np.ndarray, mask: np.ndarray, slices: list[int]) -> Agreement:
    """Figures over the explained slices only: the map and the mask both restricted to them (slices
    not computed hold no attention, so their lesion must not count against the map's Otsu IoU)."""
    chosen = sorted(set(int(z) for z in slices))
    if not chosen:
        return Agreement(None, None, None)
    return agreement(saliency[:, :, chosen], mask[:, :, chosen])
