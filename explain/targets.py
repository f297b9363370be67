"""What an explanation explains: one scalar per slice, built from the model's lesion logits.

Every method needs one number per sample (docs/design.md, References: Explanations). The default is the
lesion logit summed over the model's *own* predicted mask on that slice (pytorch-grad-cam's
``SemanticSegmentationTarget``, Captum's segmentation wrapper); a reader's region of interest (a mask
or a rectangle) or a single pixel answer "why here?"; a lesion target (one 6-connected component of
the predicted mask, a finding of the lesion table) answers "why this finding?": on each of its slices
the lesion logit summed over that lesion's voxels alone. The mask is frozen when the explanation
starts, so perturbation methods never chase a moving target.

Specs are given on the scan's axial plane (RAS ``[x, y]``, the plane the viewer shows); ``resolve``
maps them into the 224x192 model window through the segmentation's own ``SliceGeometry``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from xnet_core.errors import XNetError
from xnet_core.preprocess import SliceGeometry

KINDS = ("predicted", "roi", "pixel", "lesion")
NO_LESION = "no lesion predicted on this slice"
EMPTY_ROI = "the region of interest lies outside the model window"
LESION_ABSENT = "the chosen lesion does not reach this slice"


@dataclass(frozen=True)
class TargetSpec:
    """The caller's choice. ``roi``: ``mask`` [x, y] or ``rect`` (x0, y0, x1, y1, inclusive);
    ``pixel``: ``point`` (x, y); ``lesion``: ``mask`` [x, y, z], that lesion's voxels on the grid the
    model reads, and ``lesion`` its number in the lesion table (1 = largest). Coordinates are RAS voxel
    indices of the scan's axial plane."""

    kind: str = "predicted"
    mask: np.ndarray | None = field(default=None, compare=False)
    rect: tuple[int, int, int, int] | None = None
    point: tuple[int, int] | None = None
    lesion: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise XNetError(f"unknown explanation target {self.kind!r}; choose one of {', '.join(KINDS)}.")
        if self.kind == "roi" and (self.mask is None) == (self.rect is None):
            raise XNetError("an ROI target needs either a mask or a rectangle (x0, y0, x1, y1).")
        if self.kind == "pixel" and self.point is None:
            raise XNetError("a pixel target needs a point (x, y).")
        if self.kind == "lesion" and (self.mask is None or self.mask.ndim != 3 or self.lesion is None):
            raise XNetError("a lesion target needs the lesion's 3D mask and its number in the lesion table.")

    def plane_mask(self, plane_shape: tuple[int, int], z: int | None = None) -> np.ndarray | None:
        """The ROI, pixel or lesion (on axial slice ``z``) as a uint8 mask on the scan's [x, y] plane
        (None for ``predicted``)."""
        if self.kind == "predicted":
            return None
        out = np.zeros(plane_shape, np.uint8)
        if self.kind == "lesion":
            if self.mask.shape[:2] != plane_shape:
                raise XNetError(f"lesion mask shape {self.mask.shape} does not match the slice {plane_shape}.")
            if z is not None and 0 <= z < self.mask.shape[2]:
                out[self.mask[:, :, z] > 0] = 1
        elif self.mask is not None:
            if self.mask.shape != plane_shape:
                raise XNetError(f"ROI mask shape {self.mask.shape} does not match the slice {plane_shape}.")
            out[self.mask > 0] = 1
        elif self.rect is not None:
            x0, y0, x1, y1 = self.rect
            out[max(min(x0, x1), 0):max(x0, x1) + 1, max(min(y0, y1), 0):max(y0, y1) + 1] = 1
        else:
            x, y = self.point
            if 0 <= x < plane_shape[0] and 0 <= y < plane_shape[1]:
                out[x, y] = 1
        return out


@dataclass(frozen=True)
class Target:
    """A frozen target on the model window: ``weights`` [224, 192] (0/1) and a cache key."""

    kind: str
    weights: np.ndarray = field(compare=False)
    key: str

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.weights))

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-sample score of logits ``[B, 1, H, W]``: the lesion logit summed over the target."""
        weights = torch.as_tensor(self.weights, device=logits.device, dtype=logits.dtype)
        return (logits[:, 0] * weights).sum(dim=(1, 2))

    def mean_probability(self, probabilities: np.ndarray) -> np.ndarray:
        """Mean lesion probability inside the target for probabilities ``[B, H, W]`` (LIME, deletion)."""
        return (probabilities * self.weights).sum(axis=(1, 2)) / max(self.area, 1)


def _digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask.astype(bool)).tobytes()).hexdigest()[:16]


def resolve(spec: TargetSpec, geometry: SliceGeometry, predicted_plane: np.ndarray,
            z: int | None = None) -> Target | str:
    """The frozen target for axial slice ``z``, or a reason (``NO_LESION``, ``EMPTY_ROI``,
    ``LESION_ABSENT``) why there is none.

    ``predicted_plane`` is the model's mask on that slice ([x, y], as the viewer shows it); a lesion
    target reads its own mask on slice ``z`` instead.
    """
    if spec.kind == "predicted":
        plane = (predicted_plane > 0).astype(np.uint8)
        weights = geometry.to_model(plane).astype(np.float32)
        if not weights.any():
            return NO_LESION
    else:
        weights = geometry.to_model(spec.plane_mask(geometry.plane_shape, z)).astype(np.float32)
        if not weights.any():
            return LESION_ABSENT if spec.kind == "lesion" else EMPTY_ROI
    # The key holds the frozen weights' digest, so a lesion's maps are cached like any other target's.
    return Target(spec.kind, weights, f"{spec.kind}-{_digest(weights)}")
