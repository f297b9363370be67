"""The subject's other sequences (FLAIR, DWI, ...) as backgrounds of the panels, without Qt.

They sit in a ``xnet_core.sequences.SequenceSet`` next to the model's input; one on another grid is
resampled onto the input's grid through world coordinates (the set caches it), so that slice, cursor
and zoom stay linked, while the readout reads every sequence at the same world point from its own voxels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np

from xnet_core.image import Volume, same_grid
from xnet_core.sequences import SequenceSet, grids_overlap, value_at_world


class Backgrounds(Mapping[str, Volume]):
    """Backgrounds by name (the volume's name), each as a ``Volume`` on the model input's grid."""

    def __init__(self, model_volume: Volume) -> None:
        self.model_volume = model_volume
        self.sequences = SequenceSet()
        self.model_label = self.sequences.add(model_volume, label=model_volume.name)
        self.sequences.model_label = self.model_label

    def add(self, volume: Volume) -> str:
        """Add ``volume`` (replacing one of the same name) and resample it now, so that no slice
        waits for it later; '' when its grid does not overlap the model input's in world space."""
        if not same_grid(self.model_volume, volume) and not grids_overlap(self.model_volume, volume):
            return ""
        if volume.name in self.sequences and volume.name != self.model_label:
            self.sequences.remove(volume.name)
        label = self.sequences.add(volume, label=volume.name)
        self.sequences.resample(label, self.model_label)
        return label

    def __getitem__(self, name: str) -> Volume:
        if name == self.model_label or name not in self.sequences:
            raise KeyError(name)
        source = self.sequences[name]
        if same_grid(source, self.model_volume):
            return source
        data = self.sequences.resample(name, self.model_label)
        return dataclasses.replace(source, data=data, affine=self.model_volume.affine.copy())

    def __iter__(self) -> Iterator[str]:
        return (label for label in self.sequences.labels if label != self.model_label)

    def __len__(self) -> int:
        return len(self.sequences) - 1

    def source(self, name: str) -> Volume:
        """A background as it was loaded (its own grid)."""
        return self.sequences[name]

    def value_at(self, name: str, ras_index: tuple[int, int, int], world_mm: np.ndarray) -> float:
        """A background's value at the model grid's voxel ``ras_index`` (world point ``world_mm``),
        read from its own voxels when it lies on another grid."""
        source = self.sequences[name]
        if same_grid(source, self.model_volume):
            return float(source.data[tuple(ras_index)])
        return value_at_world(source, world_mm)

    def all_sources(self) -> dict[str, Volume]:
        """Every sequence as loaded, the model input first (to choose another model input)."""
        return {label: self.sequences[label] for label in self.sequences.labels}
