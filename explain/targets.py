"""What an explanation explains: one scalar per slice, built from the model's lesion logits.

Every method needs one number per sample (docs/design.md, References: Explanations). The default is the
lesion logit summed over the model's *own* predicted mask on that slice (pytorch-grad-cam's
``SemanticSegmentationTarget``, Captum's segmentation wrapper); a reader's region of interest (a mask
or a rectangle) or a single pixel answer "why here?". The mask is frozen when the explanation
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

KINDS = ("predicted", "roi", "pixel")
NO_LESION = "no lesion predicted on this slice"
EMPTY_ROI = "the region of interest lies outside the model window"


@dataclass(frozen=True)
class TargetSpec:
    """The caller's choice. ``roi``: ``mask`` [x, y] or ``rect`` (x0, y0, x1, y1, inclusive);
    ``pixel``: ``point`` (x, y). Coordinates are RAS voxel indices of the scan's axial plane."""

    kind: str = "predicted"
    mask: np.ndarray | None = field(default=None, compare=False)
    rect: tuple[int, int, int, int] | None = None
    point: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise XNetError(f"unknown explanation target {self.kind!r}; choose one of {', '.join(KINDS)}.")
        if self.kind == "roi" and (self.mask is None) == (self.rect is None):
            raise XNetError("an ROI target needs either a mask or a rectangle (x0, y0, x1, y1).")
        if self.kind == "pixel" and self.point is None:
            raise XNetError("a pixel target needs a point (x, y).")

    def plane_mask(self, plane_shape: tuple[int, int]) -> np.ndarray | None:
        """The ROI or pixel as a uint8 mask on the scan's [x, y] plane (None for ``predicted``)."""
        if self.kind == "predicted":
            return None
        out = np.zeros(plane_shape, np.uint8)
        if self.mask is not None:
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


def resolve(spec: TargetSpec, geometry: SliceGeometry, predicted_plane: np.ndarray) -> Target | str:
    """The frozen target for one slice, or a reason (``NO_LESION``, ``EMPTY_ROI``) why there is none.

    ``predicted_plane`` is the model's mask on that slice ([x, y], as the viewer shows it).
    """
    if spec.kind == "predicted":
        plane = (predicted_plane > 0).astype(np.uint8)
        weights = geometry.to_model(plane).astype(np.float32)
        if not weights.any():
            return NO_LESION
    else:
        weights = geometry.to_model(spec.plane_mask(geometry.plane_shape)).astype(np.float32)
        if not weights.any():
            return EMPTY_ROI
    return Target(spec.kind, weights, f"{spec.kind}-{_digest(weights)}")
