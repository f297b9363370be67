"""What training reads: prepared cases and the slice pool that samples batches from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np

from xnet_core.training.augment import SliceAugmentation


class SliceSource(Protocol):
    """What training reads: batches of normalised model slices and masks."""

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class VolumeSlices:
    """One prepared case: normalised model slices, masks and which slices hold brain / lesion."""

    slices: np.ndarray  # float16 [z, 224, 192]
    masks: np.ndarray  # uint8 [z, 224, 192]
    brain: np.ndarray  # bool [z]

    @cached_property
    def lesion(self) -> np.ndarray:
        # Cached: recomputing it scanned the whole 8 MB mask volume on every sampled slice (16 times a
        # step), enough to starve a GPU.
        return self.masks.reshape(len(self.masks), -1).any(axis=1)

    @cached_property
    def lesion_voxels(self) -> int:
        return int(np.count_nonzero(self.masks))


@dataclass
class SlicePool:
    """Slices sampled from prepared cases, with lesion oversampling, crops and left-right flips."""

    cases: list[VolumeSlices]
    lesion_fraction: float = 0.5  # None of the paper's code oversamples; small runs need it
    crop: tuple[int, int] | None = None
    flip: bool = True
    # > 0: draw a case with probability proportional to (its lesion voxels)^-size_balance, so that small
    # lesions make up more of a batch; there, batch Dice weighs their misses and their false positives
    # alike (unlike xnet_loss's per-slice term). 0: every case alike, as the paper's code.
    size_balance: float = 0.0
    augment: SliceAugmentation | None = None  # a fresh geometry and contrast for every slice drawn
    _weights: np.ndarray | None = field(default=None, init=False, repr=False)

    def _case(self, rng: np.random.Generator) -> VolumeSlices:
        if self.size_balance <= 0:
            return self.cases[rng.integers(len(self.cases))]
        if self._weights is None or len(self._weights) != len(self.cases):  # a CaseStream list grows
            snapshot = self.cases[:]  # the list may grow while this runs
            voxels = np.array([case.lesion_voxels for case in snapshot], float)
            lesion = voxels > 0  # a case without lesion counts as a typical one, not as the smallest
            voxels[~lesion] = np.median(voxels[lesion]) if lesion.any() else 1.0
            weights = np.maximum(voxels, 20.0) ** -self.size_balance
            self._weights = weights / weights.sum()
        return self.cases[rng.choice(len(self._weights), p=self._weights)]

    def _pick(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        case = self._case(rng)
        lesion = np.flatnonzero(case.lesion)
        pool = lesion if len(lesion) and rng.random() < self.lesion_fraction else np.flatnonzero(case.brain)
        z = int(pool[rng.integers(len(pool))]) if len(pool) else int(rng.integers(len(case.slices)))
        image, mask = case.slices[z].astype(np.float32), case.masks[z].astype(np.float32)
        if self.augment is not None:
            image, mask = self.augment(image, mask, rng)
        if self.crop is not None:
            image, mask = self._crop(rng, image, mask)
        if self.flip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return image, mask

    def _crop(self, rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.crop  # type: ignore[misc]
        # Lesion in view half of the time; the other half shows sulci, ventricles and edges, the
        # look-alikes an early model confuses with lesions (measured: CSF-space false positives).
        if mask.any() and rng.random() < 0.5:
            cy, cx = np.argwhere(mask > 0)[rng.integers(int(mask.sum()))]
            top = int(np.clip(cy - rng.integers(height), 0, image.shape[0] - height))
            left = int(np.clip(cx - rng.integers(width), 0, image.shape[1] - width))
        else:
            top = int(rng.integers(image.shape[0] - height + 1))
            left = int(rng.integers(image.shape[1] - width + 1))
        window = (slice(top, top + height), slice(left, left + width))
        return image[window], mask[window]

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self._pick(rng) for _ in range(size)]
        return (np.stack([p[0] for p in pairs])[:, None].copy(), np.stack([p[1] for p in pairs])[:, None].copy())

