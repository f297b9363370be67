"""On-the-fly augmentation of training slices (nnU-Net's usual set, sized for 1 mm T1 slices in [0, 1]).

Each prepared synthetic case carries one draw of the generator's augmentation, baked in; a model
that sees the same few hundred cases for thousands of steps learns their small lesions by heart.
Drawing a new geometry and contrast for every slice it is shown is the standard remedy (what it did
for the demo model, and when to use it: docs/training.md, ``--augment``). Spatial transforms move
image and mask together; intensity transforms touch the brain only (the input is 0 outside it, as
``preprocess.normalise`` leaves it) and keep it in [0, 1], the range real inputs have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SliceAugmentation:
    """Probabilities and ranges of each transform; every draw comes from the caller's generator."""

    p_spatial: float = 0.3
    max_rotation_deg: float = 15.0  # residual head tilt after registration, not nnU-Net's 2D +-180
    scale: tuple[float, float] = (0.85, 1.15)  # head size
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)  # around the brain's mean
    p_noise: float = 0.15
    max_noise_sd: float = 0.03
    p_blur: float = 0.15
    blur_sd: tuple[float, float] = (0.5, 1.0)  # pixels

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One augmented copy of a 2D slice ``image`` (float, [0, 1]) and its binary ``mask``."""
        if rng.random() < self.p_spatial:
            image, mask = self._spatial(image, mask, rng)
        brain = image > 0
        if not brain.any():
            return image, mask
        image = image.copy()
        if rng.random() < self.p_gamma:
            image[brain] = image[brain] ** rng.uniform(*self.gamma)
        if rng.random() < self.p_contrast:
            mean = image[brain].mean()
            image[brain] = mean + (image[brain] - mean) * rng.uniform(*self.contrast)
        if rng.random() < self.p_blur:
            from scipy import ndimage
            image = ndimage.gaussian_filter(image, rng.uniform(*self.blur_sd)) * brain
        if rng.random() < self.p_noise:
            image[brain] += rng.normal(0.0, rng.uniform(0.0, self.max_noise_sd), int(brain.sum()))
        # Keep brain voxels above 0 so that the brain stays the brain (0 means outside).
        image[brain] = np.clip(image[brain], 1e-3, 1.0)
        return image, mask

    def _spatial(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage
        angle = math.radians(rng.uniform(-self.max_rotation_deg, self.max_rotation_deg))
        zoom = rng.uniform(*self.scale)
        # affine_transform maps output coordinates to input ones: the inverse of rotate-and-zoom.
        inverse = np.array([[math.cos(angle), -math.sin(angle)],
                            [math.sin(angle), math.cos(angle)]]) / zoom
        centre = (np.array(image.shape) - 1) / 2.0
        offset = centre - inverse @ centre
        image = ndimage.affine_transform(image, inverse, offset, order=1, mode="constant", cval=0.0)
        mask = ndimage.affine_transform(mask, inverse, offset, order=0, mode="constant", cval=0.0)
        return image.astype(np.float32), mask.astype(np.float32)
