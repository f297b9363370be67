"""The reader's lesion mask: one loader for the viewer and every ``--reader`` option.

A reader's mask may come from another tool on another grid (ITK-SNAP exports on the scan's grid,
but a mask drawn on a resampled copy does not). Accepted: a 3D mask whose world bounding box
overlaps the scan's by at least half (of the smaller box); it is binarised (> 0) and, when its grid
differs from the scan's, resampled with nearest neighbour onto the scan's RAS grid, with a note that
says so. Refused, with a message: a 4D file, or a mask that does not overlap the scan.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

import numpy as np

from xnet_core.errors import VolumeError
from xnet_core.image import Volume, same_grid
from xnet_core.volume import load_volume

MIN_OVERLAP = 0.5


@dataclass
class ReaderMask:
    mask: np.ndarray  # uint8 [x, y, z] on the scan's RAS grid
    resampled: bool
    notes: list[str] = field(default_factory=list)


def _world_box(shape: tuple[int, ...], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box in world mm of the voxel grid (voxel edges, not centres)."""
    corners = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in shape[:3]])))
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def overlap_fraction(a: tuple[tuple[int, ...], np.ndarray], b: tuple[tuple[int, ...], np.ndarray]) -> float:
    """Intersection of two grids' world boxes over the smaller box's volume."""
    (lo_a, hi_a), (lo_b, hi_b) = _world_box(*a), _world_box(*b)
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None).prod()
    smaller = min((hi_a - lo_a).prod(), (hi_b - lo_b).prod())
    return float(inter / smaller) if smaller > 0 else 0.0


def resample_nearest(source: np.ndarray, source_affine: np.ndarray, shape: tuple[int, int, int],
                     affine: np.ndarray) -> np.ndarray:
    """``source`` (voxel -> world ``source_affine``) sampled at the centres of the target grid; 0 outside."""
    from scipy import ndimage  # scipy.ndimage costs ~0.3 s to import: not on the viewer's path to its first frame

    to_source = np.linalg.inv(source_affine) @ affine
    return ndimage.affine_transform(source, to_source[:3, :3], offset=to_source[:3, 3], output_shape=shape,
                                    order=0, mode="constant", cval=0)


def load_reader_mask(path: str | os.PathLike, volume: Volume) -> ReaderMask:
    """The reader's mask on ``volume``'s RAS grid; see the module docstring for what is accepted."""
    reader = load_volume(path, is_mask=True)
    binary = (reader.data > 0).astype(np.uint8)
    if same_grid(volume, reader):
        return ReaderMask(binary, resampled=False)
    overlap = overlap_fraction((reader.shape, reader.affine), (volume.shape, volume.affine))
    if overlap < MIN_OVERLAP:
        raise VolumeError(
            f"{path}: the mask's field of view overlaps the scan {volume.name} by {overlap:.0%} "
            f"(at least {MIN_OVERLAP:.0%} needed); is it the mask of another scan, or in another space?")
    mask = resample_nearest(binary, reader.affine, volume.shape, volume.affine)
    note = (f"{reader.name}: mask grid {reader.shape} with voxels "
            f"{tuple(round(v, 2) for v in reader.voxel_sizes)} mm differs from the scan's {volume.shape}; "
            "resampled to the scan with nearest neighbour.")
    return ReaderMask(mask, resampled=True, notes=[note])
