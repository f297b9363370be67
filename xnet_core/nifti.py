"""Read one NIfTI file (.nii or .nii.gz) into a ``Volume``, refusing what is not a usable scan.

A leaf reader: it imports ``image.py`` and nothing of the DICOM reader. Nothing here resamples.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import io_orientation

from xnet_core.errors import VolumeError
from xnet_core.image import (
    Volume,
    check_content,
    check_memory,
    choose_volume,
    guess_sequence,
    replace_non_finite,
    to_ras_canonical,
)

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# pixdim outside this range (mm) is damage, not a scan: the fallback grid uses 1 mm instead.
MIN_VOXEL_MM, MAX_VOXEL_MM = 1e-3, 1e3


def file_stem(path: str | os.PathLike) -> str:
    """The file name without ``.nii`` / ``.nii.gz`` (docs/design.md's ``<stem>``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def load_nifti(
    path: str | os.PathLike,
    volume_index: int | None = None,
    *,
    is_mask: bool = False,
) -> Volume:
    """Load a 3D or 4D NIfTI file, validate it and reorient it to RAS.

    For 4D files ``volume_index`` picks the volume (default 0, with a warning that says so).
    ``is_mask``: a label file (a reader's mask), which must be 3D and may be empty.
    Raises ``VolumeError`` with a message naming the file and the problem.
    """
    path = Path(path)
    _check_path(path)
    image = _open_nifti(path)
    shape = tuple(int(s) for s in image.header.get_data_shape())
    _check_shape(path, shape)
    _check_dtype(path, image)
    if is_mask and any(s > 1 for s in shape[3:]):
        raise VolumeError(f"{path}: a lesion mask must be 3D; this file has shape {shape}.")
    check_memory(path, shape)
    warnings: list[str] = []
    data = _read_data(path, image, shape, volume_index, warnings)
    data = replace_non_finite(path, data, warnings)
    if not is_mask:
        check_content(path, data)

    source_affine = _usable_affine(path, image, warnings)
    ras_data, ras_affine = to_ras_canonical(data, source_affine)
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


def _check_dtype(path: Path, image: nib.Nifti1Image) -> None:
    """Grey values only: RGB(A) voxels do not convert to intensities, and complex ones would lose their
    imaginary part without a word."""
    dtype = image.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        what = ("colour (RGB) values" if dtype.fields is not None
                else "complex numbers" if dtype.kind == "c" else str(dtype))
        raise VolumeError(f"{path}: the voxels hold {what}, not grey-scale intensities; convert the scan to a "
                          "grey-scale NIfTI.")


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
                          "(only a 4D file holds several volumes).", parameter="volume")
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
    proxy = image.dataobj  # the offset as read from the file (the image's own header copy resets it)
    needed = int(proxy.offset) + int(np.prod(proxy.shape, dtype=np.float64) * proxy.dtype.itemsize)
    if not path.name.lower().endswith(".gz"):
        _check_length(path, needed, path.stat().st_size)
        return proxy
    with gzip.open(path, "rb") as handle:
        # What the header describes, at most what deflate can expand to (~1032-fold): anything after it
        # is only read to check the CRC, so a small image followed by gigabytes of zeros never fills memory.
        raw = handle.read(min(needed, 1100 * path.stat().st_size + 2**20))
        while handle.read(1 << 20):
            pass
    _check_length(path, needed, len(raw))
    return type(image).from_bytes(raw).dataobj


def _check_length(path: Path, needed: int, available: int) -> None:
    """Refuse data shorter than the header says before nibabel allocates what the header claims (a
    damaged dimension in a 2 kB file asked for 400 MB)."""
    if available < needed:
        raise VolumeError(f"{path}: the image data are truncated or unreadable (the header describes {needed} bytes, "
                          f"the file holds {available}); copy it again.")


def _usable_affine(path: Path, image: nib.Nifti1Image, warnings: list[str]) -> np.ndarray:
    affine = np.asarray(image.affine, dtype=np.float64)
    if not _is_usable(affine):
        warnings.append(f"{path.name}: the header's affine is unusable; assuming 1 mm voxels in RAS order.")
        zooms = [float(z) if np.isfinite(z) and MIN_VOXEL_MM <= z <= MAX_VOXEL_MM else 1.0
                 for z in image.header.get_zooms()[:3]]
        affine = np.diag([*zooms, 1.0])
    return affine


def _is_usable(affine: np.ndarray) -> bool:
    """Finite, invertible, and with a nearest world axis for every voxel axis (reorienting to RAS needs
    one; nibabel leaves an axis undetermined when the matrix is degenerate within its tolerance)."""
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        return False
    return not np.isnan(io_orientation(affine)).any()
