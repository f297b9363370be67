"""The only implementation of mask-vs-mask figures and lesion components (docs/design.md, Contracts: Metrics).

Dice, IoU, precision and recall follow the X-Net paper: per subject, in 3D, on binary masks,
0 when the denominator is 0. Lesion-wise F1, lesion count and volume difference follow the ATLAS
R2.0 challenge (npnl/atlas2_grand_challenge): 6-connected components, F1 = 1 when both masks are
empty, volume difference in voxels. Callers convert to ml on the native grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xnet_core import DEFAULT_MIN_LESION_ML  # the smallest component listed as a finding
from xnet_core.errors import XNetError

# 6-connectivity (faces only), as scipy.ndimage.generate_binary_structure(3, 1) builds it
SIX_CONNECTIVITY = np.array([[[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                             [[0, 0, 0], [0, 1, 0], [0, 0, 0]]], dtype=bool)


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


def volume_difference(pred: np.ndarray, truth: np.ndarray) -> int:
    """ATLAS R2.0 challenge: |total predicted - total true| lesion volume, in voxels (no overlap)."""
    return abs(int(np.count_nonzero(_binary(pred))) - int(np.count_nonzero(_binary(truth))))


def lesion_count_difference(pred: np.ndarray, truth: np.ndarray) -> int:
    """ATLAS R2.0 challenge 'simple lesion count': |n_pred - n_true| with 6-connectivity."""
    return abs(label_lesions(pred)[1] - label_lesions(truth)[1])


def lesion_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """ATLAS R2.0 challenge lesion-wise F1: a true lesion is detected by one overlapping voxel.

    TP = true components touched by the prediction, FN = untouched ones, FP = predicted components
    touching no true lesion; F1 = TP / (TP + (FP + FN) / 2), and 1 when both masks are empty.
    """
    p, g = _binary(pred), _binary(truth)
    true_labels, n_true = label_lesions(g)
    pred_labels, n_pred = label_lesions(p)
    if n_true == 0 and n_pred == 0:
        return 1.0
    tp = len(np.unique(true_labels[p & (true_labels > 0)]))
    fp = n_pred - len(np.unique(pred_labels[g & (pred_labels > 0)]))
    fn = n_true - tp
    return tp / (tp + (fp + fn) / 2)


SORT_KEYS = ("size", "probability")


@dataclass(frozen=True)
class Lesion:
    """One 6-connected component of a 3D mask, in RAS voxel indices of the volume; with the model's
    probabilities, how sure it is of that component (mean and maximum over its voxels)."""

    label: int
    n_voxels: int
    volume_ml: float
    centroid: tuple[float, float, float]
    z_range: tuple[int, int]  # first and last axial slice (inclusive)
    mean_probability: float | None = None
    max_probability: float | None = None

    @property
    def slices(self) -> list[int]:
        """Every axial slice the lesion spans: a 6-connected component leaves no slice out between."""
        return list(range(self.z_range[0], self.z_range[1] + 1))

    def as_dict(self) -> dict:
        out = {
            "label": self.label,
            "n_voxels": self.n_voxels,
            "volume_ml": round(self.volume_ml, 4),
            "centroid_voxel": [round(c, 2) for c in self.centroid],
            "slices": self.slices,
        }
        if self.mean_probability is not None:
            out.update(mean_probability=round(self.mean_probability, 4),
                       max_probability=round(self.max_probability, 4))
        return out


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected component labels of a 3D mask and their count."""
    from scipy import ndimage  # scipy.ndimage costs ~0.3 s to import: not on the viewer's path to its first frame

    labels, n = ndimage.label(_binary(mask), structure=SIX_CONNECTIVITY)
    return labels, int(n)


def lesions(mask: np.ndarray, voxel_volume_ml: float, probabilities: np.ndarray | None = None) -> list[Lesion]:
    """The lesions of a 3D mask, largest first (the lesion table's order: ``--lesion K`` counts in it);
    with ``probabilities`` (the model's, same grid), each lesion's mean and maximum probability."""
    return _lesions_of(label_lesions(mask)[0], voxel_volume_ml, probabilities)


def _lesions_of(labels: np.ndarray, voxel_volume_ml: float, probabilities: np.ndarray | None = None) -> list[Lesion]:
    from scipy import ndimage

    found = []
    for label, bbox in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[bbox] == label
        voxels = np.argwhere(inside) + [s.start for s in bbox]
        sure = {}
        if probabilities is not None:
            values = probabilities[bbox][inside]
            sure = {"mean_probability": float(values.mean()), "max_probability": float(values.max())}
        found.append(
            Lesion(
                label=label,
                n_voxels=len(voxels),
                volume_ml=len(voxels) * voxel_volume_ml,
                centroid=tuple(float(c) for c in voxels.mean(axis=0)),  # type: ignore[arg-type]
                z_range=(int(bbox[2].start), int(bbox[2].stop - 1)),
                **sure,
            )
        )
    found.sort(key=lambda lesion: lesion.n_voxels, reverse=True)  # stable: ties keep their label order
    return found


def lesion_mask(mask: np.ndarray, number: int) -> tuple[np.ndarray, Lesion]:
    """Lesion ``number`` of the lesion table (1 = largest) of a 3D mask: its own voxels (uint8) and
    its record (volumes in voxels: callers that need ml call ``lesions``)."""
    labels, count = label_lesions(mask)
    if not 1 <= number <= count:
        found = f"the model found {count} lesion(s)" if count else "the model found no lesion"
        raise XNetError(f"there is no lesion {number}: {found} at this threshold (1 = the largest).",
                        parameter="lesion")
    lesion = _lesions_of(labels, 1.0)[number - 1]
    return (labels == lesion.label).astype(np.uint8), lesion


def largest_cross_section(mask: np.ndarray) -> int:
    """The axial slice z where a 3D mask (one lesion's own voxels) has the most voxels: where the
    viewer and the report show a finding explained alone."""
    return int(np.argmax(np.asarray(mask).sum(axis=(0, 1))))


def sort_lesions(found: list[Lesion], by: str = "size") -> list[Lesion]:
    """The lesion table by size (largest first) or by the model's mean probability (surest first)."""
    if by not in SORT_KEYS:
        raise ValueError(f"sort lesions by one of {SORT_KEYS}, not {by!r}")
    if by == "size":
        return sorted(found, key=lambda lesion: -lesion.n_voxels)
    return sorted(found, key=lambda lesion: (-(lesion.mean_probability or 0.0), -lesion.n_voxels))


@dataclass(frozen=True)
class Findings:
    """The lesions a reader is shown as findings (at least ``min_ml``) and the smaller components,
    which are counted in one line and listed on request; masks and metrics keep them all."""

    findings: list
    smaller: list
    min_ml: float

    @property
    def smaller_ml(self) -> float:
        return float(sum(_volume_ml(lesion) for lesion in self.smaller))

    def smaller_line(self) -> str:
        """The line "+ N smaller components, X ml in all" (empty when there are none)."""
        if not self.smaller:
            return ""
        n = len(self.smaller)
        return f"+ {n} smaller component{'s' if n != 1 else ''}, {self.smaller_ml:.2f} ml in all"

    def summary(self) -> dict:
        """The JSON entry: the size limit, the findings' count and the smaller components in one figure."""
        return {"min_lesion_ml": self.min_ml, "n_findings": len(self.findings),
                "smaller_components": {"count": len(self.smaller), "volume_ml": round(self.smaller_ml, 4)}}


def _volume_ml(lesion) -> float:
    return float(lesion.volume_ml if isinstance(lesion, Lesion) else lesion["volume_ml"])


def split_findings(found: list, min_ml: float = DEFAULT_MIN_LESION_ML) -> Findings:
    """Lesions (``Lesion`` records or table rows with ``volume_ml``) split at ``min_ml``, order kept."""
    if not min_ml >= 0:
        raise XNetError(f"the minimum finding size {min_ml} ml must be 0 or more.", parameter="min_lesion_ml")
    return Findings([x for x in found if _volume_ml(x) >= min_ml], [x for x in found if _volume_ml(x) < min_ml],
                    float(min_ml))


def unmatched_lesions(mask: np.ndarray, other: np.ndarray, voxel_volume_ml: float) -> list[Lesion]:
    """Lesions of ``mask`` that touch no voxel of ``other`` (the challenge's FP / FN components)."""
    labels, _ = label_lesions(mask)
    touched = set(np.unique(labels[_binary(other) & (labels > 0)]).tolist())
    return [lesion for lesion in _lesions_of(labels, voxel_volume_ml) if lesion.label not in touched]


@dataclass(frozen=True)
class MaskComparison:
    """Model against reader for one volume or one slice; ``both_empty`` is what the UI and PDF show
    instead of a bare number when neither mask has a voxel."""

    dice: float
    iou: float
    precision: float
    recall: float
    lesion_f1: float | None  # None for a 2D slice (components are 3D)
    model_volume_ml: float
    reader_volume_ml: float
    both_empty: bool

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def compare_masks(model: np.ndarray, reader: np.ndarray, voxel_volume_ml: float) -> MaskComparison:
    """Every mask-vs-mask figure of the model (prediction) against the reader (reference)."""
    p, g = _binary(model), _binary(reader)
    return MaskComparison(
        dice=dice(p, g), iou=iou(p, g), precision=precision(p, g), recall=recall(p, g),
        lesion_f1=lesion_f1(p, g) if p.ndim == 3 else None,
        model_volume_ml=float(np.count_nonzero(p)) * voxel_volume_ml,
        reader_volume_ml=float(np.count_nonzero(g)) * voxel_volume_ml,
        both_empty=not p.any() and not g.any())
