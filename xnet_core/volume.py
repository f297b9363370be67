"""Load a scan from a path, NIfTI file or DICOM folder alike, and write results back on its grid.

The one place that knows both readers: ``nifti.py`` and ``dicom.py`` are leaves that import only
``image.py`` (``Volume`` and the checks), so neither reader imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from xnet_core.atomic import atomic_path
from xnet_core.dicom import load_dicom_series
from xnet_core.errors import VolumeError
from xnet_core.image import Volume
from xnet_core.nifti import load_nifti


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
        return load_dicom_series(path, series, volume_index)
    return load_nifti(path, volume_index, is_mask=is_mask)


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
