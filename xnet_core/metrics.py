"""The only implementation of mask-vs-mask figures and lesion components (DESIGN.md, Metrics).

Dice, IoU, precision and recall follow the X-Net paper: per subject, in 3D, on binary masks,
0 when the denominator is 0. Lesions are 6-connected components, as the ATLAS R2.0 challenge
defines them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SIX_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)


def _binary(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask) > 0


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|P∩G| / (|P| + |G|); 0 when both are empty (the paper's convention)."""
    p, g = _binary(pred), _binary(truth)
    return _ratio(2 * np.count_nonzero(p & g), np.count_nonzero(p) + np.count_nonzero(g))


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    p, g = _binary(pred), _binary(truth)
    return _ratio(np.count_nonzero(p & g), np.count_nonzero(p | g))


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    p, g = _binary(pred), _binary(truth)
    return _ratio(np.count_nonzero(p & g), np.count_nonzero(p))


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    p, g = _binary(pred), _binary(truth)
    return _ratio(np.count_nonzero(p & g), np.count_nonzero(g))


@dataclass(frozen=True)
class Lesion:
    """One 6-connected component of a 3D mask, in RAS voxel indices of the volume."""

    label: int
    n_voxels: int
    volume_ml: float
    centroid: tuple[float, float, float]
    z_range: tuple[int, int]  # first and last axial slice (inclusive)

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "n_voxels": self.n_voxels,
            "volume_ml": round(self.volume_ml, 4),
            "centroid_voxel": [round(c, 2) for c in self.centroid],
            "slices": list(self.z_range),
        }


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected component labels of a 3D mask and their count."""
    labels, n = ndimage.label(_binary(mask), structure=SIX_CONNECTIVITY)
    return labels, int(n)


def lesions(mask: np.ndarray, voxel_volume_ml: float) -> list[Lesion]:
    """The lesions of a 3D mask, largest first."""
    labels, n = label_lesions(mask)
    if n == 0:
        return []
    found = []
    for label, bbox in enumerate(ndimage.find_objects(labels), start=1):
        voxels = np.argwhere(labels[bbox] == label) + [s.start for s in bbox]
        found.append(
            Lesion(
                label=label,
                n_voxels=len(voxels),
                volume_ml=len(voxels) * voxel_volume_ml,
                centroid=tuple(float(c) for c in voxels.mean(axis=0)),  # type: ignore[arg-type]
                z_range=(int(bbox[2].start), int(bbox[2].stop - 1)),
            )
        )
    found.sort(key=lambda lesion: lesion.n_voxels, reverse=True)
    return found
