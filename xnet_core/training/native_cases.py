"""Native whole-head scans made from template-grid cases, with a known motion: the ground truth of
the registration tests and benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from xnet_core.training.shapes import TEMPLATE_AFFINE
from xnet_core.training.synthetic import CSF_LEVEL, SHAPE


@dataclass
class NativeCase:
    """A template-grid case moved into "scanner space": another grid, orientation and voxel size,
    a head around the brain and a bias field. ``template_to_native`` is the known world motion."""

    image: np.ndarray  # float32 [x, y, z] on the native grid
    mask: np.ndarray  # uint8, the lesion on the native grid
    affine: np.ndarray  # the native grid's RAS affine
    template_to_native: np.ndarray  # 4x4 RAS world mm


def rotation(degrees_xyz: tuple[float, float, float]) -> np.ndarray:
    """4x4 rotation about the x, then y, then z axis (degrees)."""
    out = np.eye(4)
    for axis, degrees in enumerate(degrees_xyz):
        angle = np.deg2rad(degrees)
        i, j = [k for k in range(3) if k != axis]
        turn = np.eye(4)
        turn[i, i] = turn[j, j] = np.cos(angle)
        turn[i, j], turn[j, i] = -np.sin(angle), np.sin(angle)
        out = turn @ out
    return out


def whole_head(image: np.ndarray, seed: int = 0, pad: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """A skull-stripped template-grid T1 with a head around it (CSF, dark bone, bright scalp, noisy
    air), padded by ``pad`` voxels; returns the image and its affine."""
    rng = np.random.default_rng(seed)
    brain = ndimage.binary_fill_holes(np.pad(image, pad) > 0.05 * float(image.max()))
    head = np.pad(image, pad).astype(np.float32)
    distance = ndimage.distance_transform_edt(~brain)
    head[(distance > 0) & (distance <= 2.5)] = 0.1 * CSF_LEVEL  # CSF around the brain
    head[(distance > 2.5) & (distance <= 8)] = 25.0  # skull: dark on T1
    head[(distance > 8) & (distance <= 14)] = 180.0  # scalp and fat: bright
    texture = 6 * ndimage.gaussian_filter(rng.normal(0, 1, head.shape), 1)
    head = np.where(distance <= 14, head + texture * (distance > 0), np.abs(rng.normal(0, 3, head.shape)))
    affine = TEMPLATE_AFFINE.copy()
    affine[:3, 3] -= pad
    return ndimage.gaussian_filter(head, 0.6).astype(np.float32), affine


def native_case(image: np.ndarray, mask: np.ndarray, seed: int = 0,
                motion_degrees: tuple[float, float, float] = (8.0, -6.0, 5.0),
                motion_shift_mm: tuple[float, float, float] = (6.0, -8.0, 5.0),
                voxel_mm: tuple[float, float, float] = (1.1, 1.0, 1.2),
                grid_degrees: tuple[float, float, float] = (12.0, 5.0, -9.0),
                shape: tuple[int, int, int] = (170, 230, 200)) -> NativeCase:
    """Move a template-grid case (image, lesion mask) by a known rigid motion onto an oblique,
    anisotropic grid, with a head around the brain and a smooth bias field."""
    head, head_affine = whole_head(image, seed)
    motion = rotation(motion_degrees)
    motion[:3, 3] = motion_shift_mm
    native_affine = rotation(grid_degrees) @ np.diag([*voxel_mm, 1.0])
    centre = motion @ TEMPLATE_AFFINE @ np.r_[(np.array(SHAPE) - 1) / 2, 1.0]
    native_affine[:3, 3] = centre[:3] - native_affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    # native voxel -> native world -> template world (undo the motion) -> head voxel
    native_to_head = np.linalg.inv(head_affine) @ np.linalg.inv(motion) @ native_affine
    matrix, offset = native_to_head[:3, :3], native_to_head[:3, 3]
    moved = ndimage.affine_transform(head, matrix, offset, output_shape=shape, order=1)
    lesion = ndimage.affine_transform(np.pad(mask, 25).astype(np.float32), matrix, offset, output_shape=shape,
                                      order=1) >= 0.5
    grid = np.indices(shape, dtype=np.float32)
    bias = np.exp(0.25 * np.sin(grid[0] / 60.0) + 0.2 * (grid[2] / shape[2] - 0.5))
    return NativeCase((moved * bias).astype(np.float32), lesion.astype(np.uint8), native_affine, motion)
