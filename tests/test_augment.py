"""On-the-fly slice augmentation: image and mask move together, the background stays 0, draws are seeded."""

from __future__ import annotations

import numpy as np

from xnet_core.training.augment import SliceAugmentation
from xnet_core.training.sampling import SlicePool, VolumeSlices

EVERY_TRANSFORM = SliceAugmentation(p_spatial=1, p_gamma=1, p_contrast=1, p_noise=1, p_blur=1)


def brain_slice() -> tuple[np.ndarray, np.ndarray]:
    """An elliptic 'brain' at 0.6 with a dark 'lesion' at 0.1 off centre, 0 outside: a normalised slice."""
    yy, xx = np.mgrid[:96, :80]
    image = np.where(((yy - 48) / 40) ** 2 + ((xx - 40) / 32) ** 2 < 1, 0.6, 0.0).astype(np.float32)
    mask = np.zeros_like(image)
    mask[20:30, 45:58] = 1
    image[mask > 0] = 0.1
    return image, mask


def test_mask_follows_the_lesion_through_rotation_and_zoom() -> None:
    image, mask = brain_slice()
    spatial_only = SliceAugmentation(p_spatial=1, p_gamma=0, p_contrast=0, p_noise=0, p_blur=0)
    rng = np.random.default_rng(3)
    for _ in range(10):
        moved_image, moved_mask = spatial_only(image, mask, rng)
        assert set(np.unique(moved_mask)) <= {0.0, 1.0}, "the mask stays binary"
        assert moved_mask.sum() > 0.5 * mask.sum()
        # Inside the moved mask sits the dark lesion, not the brain around it (edges interpolate).
        assert np.median(moved_image[moved_mask > 0]) < 0.2
        assert (moved_image[moved_mask > 0] < 0.35).mean() > 0.9


def test_intensities_change_inside_the_brain_only_and_stay_in_range() -> None:
    image, mask = brain_slice()
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(10):
        out, out_mask = EVERY_TRANSFORM(image, mask, rng)
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert (out[out > 0] >= 1e-3).all(), "brain voxels stay above the 0 that means outside"
        changed += not np.allclose(out, image)
    assert changed == 10
    no_spatial = SliceAugmentation(p_spatial=0, p_gamma=1, p_contrast=1, p_noise=1, p_blur=1)
    out, out_mask = no_spatial(image, mask, np.random.default_rng(1))
    assert (out[image == 0] == 0).all(), "the background is never touched"
    assert (out[image > 0] > 0).all()
    assert np.array_equal(out_mask, mask)
    assert out[mask > 0].mean() < out[(image > 0) & (mask == 0)].mean(), "the lesion stays darker"


def test_augmentation_is_seeded_and_the_input_is_left_alone() -> None:
    image, mask = brain_slice()
    before = image.copy()
    first = EVERY_TRANSFORM(image, mask, np.random.default_rng(7))
    second = EVERY_TRANSFORM(image, mask, np.random.default_rng(7))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert np.array_equal(image, before)


def test_slice_pool_augments_only_when_asked() -> None:
    image, mask = brain_slice()
    case = VolumeSlices(np.stack([image] * 3).astype(np.float16), np.stack([mask] * 3).astype(np.uint8),
                        np.ones(3, bool))
    plain = SlicePool([case], flip=False).batch(np.random.default_rng(0), 4)[0]
    assert all(np.allclose(plain[i, 0], image, atol=1e-3) for i in range(4))
    augmented = SlicePool([case], flip=False, augment=EVERY_TRANSFORM).batch(np.random.default_rng(0), 4)
    assert not any(np.allclose(augmented[0][i, 0], image, atol=1e-3) for i in range(4))
    assert augmented[1].shape == (4, 1, 96, 80)
