"""The scan every module works on, ``Volume``, and the checks every reader applies to its voxels.

A ``Volume`` holds float32 voxels in RAS canonical order ``[x, y, z]`` for computation, plus what
is needed to write any result back exactly as the input was stored (orientation, affine, header).
The readers (``nifti.py`` for files, ``dicom.py`` for DICOM folders) build one with the validation
helpers here and import nothing else of each other; ``volume.py`` dispatches between them. Nothing
here resamples.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from xnet_core.errors import VolumeError

RAS = axcodes2ornt(("R", "A", "S"))
# Refuse a header whose float32 copy would not leave this much memory for everything else.
MEMORY_HEADROOM_BYTES = 512 * 1024**2


@dataclass
class Volume:
    """One 3D scan in RAS canonical voxel order.

    ``data`` is float32 ``[x, y, z]``; ``affine`` maps those voxel indices to world mm (RAS).
    ``source_header``/``source_affine``/``source_shape`` describe the file as stored, so that
    ``save_like`` writes results back on the input's own grid and orientation.
    """

    data: np.ndarray
    affine: np.ndarray
    source_header: nib.Nifti1Header
    source_affine: np.ndarray
    source_shape: tuple[int, int, int]
    name: str
    sequence: str = "T1w"
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    description: str = ""  # DICOM SeriesDescription; empty for NIfTI
    identifiers: dict[str, str] = field(default_factory=dict)  # DICOM patient identifiers; printed only on request

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def voxel_sizes(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.voxel_sizes)) / 1000.0

    @property
    def source_axcodes(self) -> tuple[str, ...]:
        return nib.aff2axcodes(self.source_affine)

    def to_ras(self, array: np.ndarray) -> np.ndarray:
        """Reorder an array stored in the file's own voxel order into RAS ``[x, y, z]``."""
        return np.ascontiguousarray(apply_orientation(array, io_orientation(self.source_affine)))

    def to_source_order(self, array: np.ndarray) -> np.ndarray:
        """Reorder a RAS ``[x, y, z]`` array into the file's own voxel order."""
        back = ornt_transform(RAS, io_orientation(self.source_affine))
        return apply_orientation(array, back)

    def source_index(self, ras_index: tuple[int, int, int]) -> tuple[int, int, int]:
        """The file's own voxel indices (i, j, k) of a RAS-canonical voxel index."""
        src = np.linalg.solve(self.source_affine, self.affine @ np.r_[ras_index, 1.0])
        return tuple(int(round(v)) for v in src[:3])  # type: ignore[return-value]


def content_sha256(volume: Volume) -> str:
    """A scan's identity for caches: its voxels (float32, RAS) and affine."""
    digest = hashlib.sha256(memoryview(np.ascontiguousarray(volume.data, dtype=np.float32)))  # no 35 MB copy
    digest.update(np.asarray(volume.affine, np.float64).tobytes())
    return digest.hexdigest()


def same_grid(volume: Volume, other: Volume) -> bool:
    """Same voxel grid in world space (shape and RAS affine), so arrays line up voxel for voxel."""
    return volume.shape == other.shape and np.allclose(volume.affine, other.affine, atol=1e-3)


# Checked in order, first match wins. The BIDS suffixes keep their old order, except ADC before DWI
# (Siemens names the ADC map "<protocol>_ADC", e.g. "DWI_ADC"); scanner words come after them.
_SEQUENCE_PATTERNS = (
    ("FLAIR", re.compile(r"flair|dark[-_ ]?fluid")),
    ("T2w", re.compile(r"t2w")),
    ("ADC", re.compile(r"adc|apparent")),
    ("DWI", re.compile(r"dwi|(?<![a-z0-9])(diff|trace|b1000)")),
    ("T1w", re.compile(r"t1w")),
    ("T2w", re.compile(r"(?<![a-z0-9])t2(?![0-9*]|star)")),
)


def guess_sequence(name: str) -> str:
    """A sequence label from a BIDS-like file name or a DICOM series description.

    Only a label for the viewer and the report, so a guess is enough; T1w when nothing says otherwise.
    """
    lowered = name.lower()
    for label, pattern in _SEQUENCE_PATTERNS:
        if pattern.search(lowered):
            return label
    return "T1w"


def choose_volume(source: Path, n_volumes: int, volume_index: int | None, warnings: list[str], what: str) -> int:
    """The volume of a 4D file or series to load: ``volume_index``, or 0 with a warning naming ``what``
    when there are several."""
    if volume_index is None:
        if n_volumes > 1:
            warnings.append(f"{source.name}: {what}; using volume 0 (xnet commands choose another with --volume K).")
        return 0
    if not 0 <= volume_index < n_volumes:
        raise VolumeError(f"{source}: has {n_volumes} volumes; volume {volume_index} does not exist.")
    return volume_index


def to_ras_canonical(data: np.ndarray, source_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The voxels reordered (flips and axis swaps only, never resampled) to RAS, and their affine."""
    to_ras = io_orientation(source_affine)
    ras_data = np.ascontiguousarray(apply_orientation(data, to_ras), dtype=np.float32)
    ras_affine = source_affine @ nib.orientations.inv_ornt_aff(to_ras, data.shape)
    return ras_data, ras_affine


def _available_memory() -> int:
    """Bytes of memory free now (MemAvailable on Linux; 8 GiB when the system will not say)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def check_memory(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse, before allocating, a header that claims more voxels than memory can hold.

    ``shape``'s first three axes count; ``path`` names the file or folder in the message.
    """
    n_voxels = int(np.prod([int(s) for s in shape[:3]], dtype=np.float64))
    needed = n_voxels * 4 * 3  # the float32 copy, its RAS copy and headroom for results
    available = _available_memory()
    if needed + MEMORY_HEADROOM_BYTES > available:
        raise VolumeError(
            f"{path}: the header claims {shape} voxels ({needed / 1024**3:.1f} GiB as float32), "
            f"more than the {available / 1024**3:.1f} GiB of free memory; the header is likely corrupt."
        )


def replace_non_finite(path: Path, data: np.ndarray, warnings: list[str]) -> np.ndarray:
    """``data`` with NaN/Inf voxels set to the image minimum, and a warning saying how many; refuses
    an image with no finite voxel. ``path`` names the file or folder in the messages."""
    finite = np.isfinite(data)
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad == 0:
        return data
    if n_bad == finite.size:
        raise VolumeError(f"{path}: every voxel is NaN or infinite; the file holds no image.")
    fill = float(data[finite].min())
    warnings.append(
        f"{path.name}: {n_bad} NaN/Inf voxels replaced with the image minimum ({fill:g}); "
        "check how the file was made."
    )
    data = data.copy()
    data[~finite] = fill
    return data


def check_content(path: Path, data: np.ndarray) -> None:
    """Refuse a scan whose voxels all hold one value (a reader's mask may; masks skip this check)."""
    if float(data.max()) == float(data.min()):
        raise VolumeError(f"{path}: every voxel has the value {float(data.min()):g}; the file holds no image.")
