"""One patient's sequences (T1w, FLAIR, DWI, ...), each on its own grid, compared through world mm.

A study often holds scans with different voxel sizes and orientations: FLAIR at 0.45x0.45x5 mm,
DWI at 2 mm isotropic, T1w at 1 mm. ``SequenceSet`` keeps them side by side, says which one feeds
the model, and resamples any of them onto another's grid through world coordinates (the affines),
so that the viewer can overlay them and a cursor reads the same world point in every sequence.
No registration happens here: the scanner's affines are trusted. ``resample_to_grid`` is the
arithmetic alone, for arrays that are not ``Volume``s (registration reuses it).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from xnet_core.image import Volume, same_grid
from xnet_core.volume import load_volume

# Resampled arrays kept per set; the viewer asks for the same few pairs again and again.
MAX_CACHED = 8
MODEL_SEQUENCE = "T1w"

CacheKey = tuple[str, str, int]


def resample_to_grid(
    data: np.ndarray,
    source_affine: np.ndarray,
    target_shape: tuple[int, int, int],
    target_affine: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """``data`` (on ``source_affine``'s grid) sampled at the voxel centres of the target grid.

    Target voxel ``v`` reads source voxel ``inv(source_affine) @ target_affine @ v``; voxels that
    fall outside the source grid get 0. ``order`` 0 (nearest, for masks and labels) keeps the
    dtype; any other order (1 for images) returns float32.
    """
    target_to_source = np.linalg.solve(np.asarray(source_affine, np.float64), np.asarray(target_affine, np.float64))
    is_bool = data.dtype == np.bool_
    source = data.view(np.uint8) if is_bool else data
    out_dtype = source.dtype if order == 0 else np.float32
    from scipy import ndimage  # ~0.3 s to import: not on the viewer's path to its first frame

    result = ndimage.affine_transform(
        source,
        target_to_source[:3, :3],
        offset=target_to_source[:3, 3],
        output_shape=tuple(int(s) for s in target_shape),
        output=out_dtype,
        order=order,
        mode="constant",
        cval=0,
    )
    return result.astype(np.bool_) if is_bool else result


def grids_overlap(a: Volume, b: Volume) -> bool:
    """Do the two grids' boxes overlap in world coordinates (could they be one patient's sequences)?"""
    def box(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
        corners = np.array([[i, j, k, 1.0] for i in (0, volume.shape[0] - 1) for j in (0, volume.shape[1] - 1)
                            for k in (0, volume.shape[2] - 1)]).T
        world = (volume.affine @ corners)[:3]
        return world.min(axis=1), world.max(axis=1)

    (a_low, a_high), (b_low, b_high) = box(a), box(b)
    return bool(np.all(a_low <= b_high) and np.all(b_low <= a_high))


def world_to_voxel(volume: Volume, xyz_mm: np.ndarray | Sequence[float]) -> np.ndarray:
    """Float voxel coordinates (RAS-canonical ``[x, y, z]`` indices) of world points, shape ``(..., 3)``."""
    points = np.asarray(xyz_mm, dtype=np.float64)
    inverse = np.linalg.inv(volume.affine)
    return points @ inverse[:3, :3].T + inverse[:3, 3]


def value_at_world(volume: Volume, xyz_mm: np.ndarray | Sequence[float], order: int = 1) -> float:
    """The volume's value at one world point (mm), for cursor readouts; nan outside the grid.

    A point is inside when it lies within the footprint of the volume's voxels (up to half a
    voxel beyond the outer voxel centres); in that outer half voxel the edge value is used.
    """
    voxel = world_to_voxel(volume, xyz_mm).reshape(3)
    upper = np.asarray(volume.shape, dtype=np.float64) - 0.5
    if not (np.all(voxel >= -0.5) and np.all(voxel <= upper)):
        return float("nan")
    from scipy import ndimage

    value = ndimage.map_coordinates(volume.data, voxel.reshape(3, 1), order=order, mode="nearest")
    return float(value[0])


@dataclass
class SequenceSet:
    """Several ``Volume``s of one study, by unique label, in the order they were added.

    ``model_label`` names the one that feeds the model: the one chosen explicitly, else the
    first T1w volume, else the first added. Resampled arrays are cached (read-only, at most
    ``MAX_CACHED``, least recently used dropped first).
    """

    volumes: dict[str, Volume] = field(default_factory=dict)
    _chosen_model: str | None = field(default=None, init=False, repr=False)
    _cache: OrderedDict[CacheKey, np.ndarray] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )

    @classmethod
    def load(
        cls, paths: Sequence[str | os.PathLike], volume_indices: Sequence[int | None] | None = None
    ) -> SequenceSet:
        """Load several NIfTI files (``volume_indices[i]`` picks the volume of a 4D file)."""
        indices = list(volume_indices) if volume_indices is not None else [None] * len(paths)
        if len(indices) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(indices)} volume indices")
        sequences = cls()
        for path, index in zip(paths, indices):
            sequences.add(load_volume(path, index))
        return sequences

    @property
    def labels(self) -> list[str]:
        return list(self.volumes)

    def __post_init__(self) -> None:
        self.volumes = dict(self.volumes)  # the caller's dict stays theirs

    def __getitem__(self, label: str) -> Volume:
        self._check_label(label)
        return self.volumes[label]

    def __contains__(self, label: object) -> bool:
        return label in self.volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def add(self, volume: Volume, label: str | None = None) -> str:
        """Add a volume; returns its label (``label`` or its sequence, made unique: "T1w 2", ...)."""
        label = self._unique_label(label or volume.sequence)
        self.volumes[label] = volume
        return label

    def remove(self, label: str) -> None:
        """Drop a volume and everything cached from or onto it."""
        self._check_label(label)
        del self.volumes[label]
        for key in [key for key in self._cache if label in key[:2]]:
            del self._cache[key]
        if self._chosen_model == label:
            self._chosen_model = None

    @property
    def model_label(self) -> str | None:
        """The label of the model's input volume; None when the set is empty."""
        if self._chosen_model is not None:
            return self._chosen_model
        first_t1 = (label for label, volume in self.volumes.items() if volume.sequence == MODEL_SEQUENCE)
        return next(first_t1, next(iter(self.volumes), None))

    @model_label.setter
    def model_label(self, label: str | None) -> None:
        if label is not None:
            self._check_label(label)
        self._chosen_model = label

    @property
    def model_volume(self) -> Volume:
        label = self.model_label
        if label is None:
            raise LookupError("the study holds no sequences; add a scan first")
        return self.volumes[label]

    def resample(self, source_label: str, like_label: str, order: int = 1) -> np.ndarray:
        """The source volume's data on the ``like`` volume's grid, through world coordinates.

        On the same grid the source data itself comes back (no copy); otherwise a cached,
        read-only array (``order`` 0 keeps the dtype, others give float32).
        """
        source, like = self[source_label], self[like_label]
        if same_grid(source, like):
            return source.data
        key = (source_label, like_label, order)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = resample_to_grid(source.data, source.affine, like.shape, like.affine, order)
        result.flags.writeable = False
        self._cache[key] = result
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return result

    def _check_label(self, label: str) -> None:
        if label not in self.volumes:
            raise KeyError(f"no sequence {label!r}; the study has {self.labels}")

    def _unique_label(self, base: str) -> str:
        if base not in self.volumes:
            return base
        n = 2
        while f"{base} {n}" in self.volumes:
            n += 1
        return f"{base} {n}"
