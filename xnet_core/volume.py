"""Load and validate NIfTI scans (and DICOM series, via dicom.py); write results back on the input's grid.

A ``Volume`` holds float32 voxels in RAS canonical order ``[x, y, z]`` for computation, plus what
is needed to write any result back exactly as the input was stored (orientation, affine, header).
All file validation lives here. Nothing here resamples.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from xnet_core.atomic import atomic_path
from xnet_core.errors import VolumeError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
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


def file_stem(path: str | os.PathLike) -> str:
    """The file name without ``.nii`` / ``.nii.gz`` (DESIGN.md's ``<stem>``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


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


def load_volume(
    path: str | os.PathLike,
    volume_index: int | None = None,
    *,
    is_mask: bool = False,
    series: str | None = None,
) -> Volume:
    """Load a 3D or 4D NIfTI file, or a folder of DICOM images, validate it and reorient it to RAS.

    For 4D files ``volume_index`` picks the volume (default 0, with a warning that says so).
    ``is_mask``: a label file (a reader's mask), which must be 3D and may be empty.
    ``series`` (a SeriesNumber or SeriesInstanceUID) picks one series of a DICOM folder; a NIfTI
    file ignores it. Raises ``VolumeError`` with a message naming the file and the problem.
    """
    path = Path(path)
    if path.is_dir():
        if is_mask:
            raise VolumeError(f"{path}: is a folder; a lesion mask must be a NIfTI file (.nii or .nii.gz).")
        from xnet_core.dicom import load_dicom_series  # here, because dicom.py imports this module

        return load_dicom_series(path, series, volume_index)
    _check_path(path)
    image = _open_nifti(path)
    shape = tuple(int(s) for s in image.header.get_data_shape())
    _check_shape(path, shape)
    if is_mask and any(s > 1 for s in shape[3:]):
        raise VolumeError(f"{path}: a lesion mask must be 3D; this file has shape {shape}.")
    _check_memory(path, shape)
    warnings: list[str] = []
    data = _read_data(path, image, shape, volume_index, warnings)
    data = _replace_non_finite(path, data, warnings)
    if not is_mask:
        _check_content(path, data)

    source_affine = _usable_affine(path, image, warnings)
    ras_data, ras_affine = _to_ras_canonical(data, source_affine)
    for message in warnings:
        log.warning(message)
    return Volume(
        data=ras_data,
        affine=ras_affine,
        source_header=image.header.copy(),
        source_affine=source_affine,
        source_shape=tuple(data.shape),  # type: ignore[arg-type]
        name=file_stem(path),
        sequence=guess_sequence(path.name),
        path=path,
        warnings=warnings,
    )


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


def _to_ras_canonical(data: np.ndarray, source_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The voxels reordered (flips and axis swaps only, never resampled) to RAS, and their affine."""
    to_ras = io_orientation(source_affine)
    ras_data = np.ascontiguousarray(apply_orientation(data, to_ras), dtype=np.float32)
    ras_affine = source_affine @ nib.orientations.inv_ornt_aff(to_ras, data.shape)
    return ras_data, ras_affine


def _check_path(path: Path) -> None:
    if not path.exists():
        raise VolumeError(f"{path}: no such file; check the path.")
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise VolumeError(f"{path}: not a NIfTI file name; expected .nii or .nii.gz.")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise VolumeError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions.") from exc


def _open_nifti(path: Path) -> nib.Nifti1Image:
    try:
        image = nib.load(path)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise VolumeError(f"{path}: the compressed file is truncated or corrupt; copy it again.") from exc
    except Exception as exc:  # nibabel raises many types for foreign content
        raise VolumeError(f"{path}: not a readable NIfTI image ({exc}).") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeError(f"{path}: is a {type(image).__name__}, not a NIfTI image; convert it to NIfTI.")
    return image


def _check_shape(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) not in (3, 4):
        raise VolumeError(
            f"{path}: has {len(shape)} dimensions {shape}; a scan must be a 3D volume (or 4D series)."
        )
    if any(s <= 0 for s in shape):
        raise VolumeError(f"{path}: has an empty axis, shape {shape}; the file holds no image.")
    if len(shape) == 3 and min(shape) < 2:
        raise VolumeError(f"{path}: shape {shape} is a single slice, not a 3D volume.")


def _available_memory() -> int:
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


def _check_memory(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse, before allocating, a header that claims more voxels than memory can hold."""
    n_voxels = int(np.prod([int(s) for s in shape[:3]], dtype=np.float64))
    needed = n_voxels * 4 * 3  # the float32 copy, its RAS copy and headroom for results
    available = _available_memory()
    if needed + MEMORY_HEADROOM_BYTES > available:
        raise VolumeError(
            f"{path}: the header claims {shape} voxels ({needed / 1024**3:.1f} GiB as float32), "
            f"more than the {available / 1024**3:.1f} GiB of free memory; the header is likely corrupt."
        )


def _read_data(
    path: Path,
    image: nib.Nifti1Image,
    shape: tuple[int, ...],
    volume_index: int | None,
    warnings: list[str],
) -> np.ndarray:
    try:
        dataobj = _verified_dataobj(path, image)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise VolumeError(f"{path}: the compressed file is truncated or corrupt; copy it again.") from exc
    if len(shape) == 4:
        volume_index = choose_volume(path, shape[3], volume_index, warnings, f"4D file with {shape[3]} volumes")
        region = (slice(None), slice(None), slice(None), volume_index)
    elif volume_index not in (None, 0):
        raise VolumeError(f"{path}: is a 3D volume; there is no volume {volume_index} "
                          f"(leave out --volume, which picks a volume of a 4D file).")
    else:
        region = (slice(None),) * 3
    try:
        return np.asarray(dataobj[region], dtype=np.float32)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise VolumeError(f"{path}: the compressed file is truncated or corrupt; copy it again.") from exc
    except (ValueError, OSError) as exc:
        raise VolumeError(f"{path}: the image data are truncated or unreadable ({exc}); copy it again.") from exc
    except MemoryError as exc:
        raise VolumeError(f"{path}: too large to load into memory.") from exc


def _verified_dataobj(path: Path, image: nib.Nifti1Image):
    """The image data, with a gzip file read to its end so that its CRC is checked.

    nibabel reads only the bytes it needs, so a corrupt block in a stored (incompressible)
    region or a bad checksum would pass silently; a scan with wrong voxels must not.
    """
    if not path.name.lower().endswith(".gz"):
        return image.dataobj
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    return type(image).from_bytes(raw).dataobj


def _replace_non_finite(path: Path, data: np.ndarray, warnings: list[str]) -> np.ndarray:
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


def _check_content(path: Path, data: np.ndarray) -> None:
    if float(data.max()) == float(data.min()):
        raise VolumeError(f"{path}: every voxel has the value {float(data.min()):g}; the file holds no image.")


def _usable_affine(path: Path, image: nib.Nifti1Image, warnings: list[str]) -> np.ndarray:
    affine = np.asarray(image.affine, dtype=np.float64)
    linear = affine[:3, :3]
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(linear)) < 1e-12:
        warnings.append(f"{path.name}: the header's affine is unusable; assuming 1 mm voxels in RAS order.")
        zooms = [z if z > 0 else 1.0 for z in image.header.get_zooms()[:3]]
        affine = np.diag([*zooms, 1.0])
    return affine


def save_like(
    array: np.ndarray,
    like: Volume,
    path: str | os.PathLike,
    descrip: str,
    dtype: type | np.dtype = np.uint8,
) -> Path:
    """Write a RAS ``[x, y, z]`` array on ``like``'s own grid, orientation, affine and header.

    The file is written to a temporary name and renamed, so a crash never leaves half a file.
    """
    path = Path(path)
    if array.shape != like.shape:
        raise ValueError(f"array shape {array.shape} does not match the volume {like.shape}")
    header = nib.Nifti1Header()
    header.set_data_shape(like.source_shape)
    header.set_zooms(like.source_header.get_zooms()[:3])
    header.set_xyzt_units(*like.source_header.get_xyzt_units())
    image = nib.Nifti1Image(
        np.ascontiguousarray(like.to_source_order(array)).astype(dtype), like.source_affine, header
    )
    sform_code = int(like.source_header["sform_code"]) or 2
    qform_code = int(like.source_header["qform_code"]) or 0
    image.set_sform(like.source_affine, code=sform_code)
    image.set_qform(like.source_affine, code=qform_code or sform_code)
    image.header["descrip"] = descrip.encode("ascii", "replace")[:79]
    image.header.set_data_dtype(dtype)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_path(path, suffix) as tmp:  # nibabel picks compression by the suffix
        nib.save(image, tmp)
    return path
