"""Read one DICOM series (a folder of single-frame images) into a ``Volume``.

Slices are ordered and placed by their geometry (ImagePositionPatient projected on the slice normal),
never by file name or InstanceNumber, because exports shuffle both. DICOM patient coordinates are LPS;
the ``Volume`` is RAS like every NIfTI scan, oblique orientations keep their obliquity, and results are
written back as NIfTI on the series' own grid. Nothing here resamples.

A leaf reader, like ``nifti.py``: it imports ``image.py`` for ``Volume`` and the checks, never ``volume.py``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from xnet_core.errors import SeriesChoiceError, VolumeError
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

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Images closer than this along the slice normal are at the same position (echoes, time points).
SAME_POSITION_MM = 0.01
_HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality",
    "SeriesDate", "StudyDate", "Rows", "Columns",
]
_CONVERT_HINT = (
    "convert the series to uncompressed DICOM (dcmdjpeg, or gdcmconv --raw) "
    "or export it as NIfTI with dcm2niix"
)


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a DICOM folder, as listed to the user before anything is loaded."""

    uid: str
    number: int | None
    description: str
    modality: str
    date: str
    n_images: int
    files: tuple[Path, ...]

    def label(self) -> str:
        """One human line: number, description, image count, date and UID."""
        number = f"s{self.number}" if self.number is not None else "s?"
        details = f"{self.n_images} image{'s' if self.n_images != 1 else ''}"
        if self.date:
            details += f", {self.date}"
        return f"{number}  {self.description or '(no description)'}  ({details})  UID {self.uid or '?'}"


@dataclass
class _Image:
    path: Path
    ds: pydicom.Dataset
    position: np.ndarray  # ImagePositionPatient, LPS mm
    along: float = 0.0  # position projected on the slice normal, mm


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every image series below ``folder`` (searched recursively), by SeriesNumber then UID.

    Reads headers only. Files that are not DICOM, the DICOMDIR index and objects without pixels
    (structured reports, presentation states) are skipped, since exports mix them with the images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeError(f"{folder}: no such folder; check the path.")
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name.upper() != "DICOMDIR"):
        ds = _read_header(path)
        if ds is not None and "Rows" in ds and "Columns" in ds:
            groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    infos = [_series_info(uid, members) for uid, members in groups.items()]
    return sorted(infos, key=lambda s: (s.number is None, s.number or 0, s.uid))


def _read_header(path: Path) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except InvalidDicomError:
        return None
    except Exception as exc:  # a truncated or damaged file: say so in the log, list the rest
        log.warning("%s: skipped, the DICOM header cannot be read (%s)", path, exc)
        return None


def _series_info(uid: str, members: list[tuple[Path, pydicom.Dataset]]) -> SeriesInfo:
    first = members[0][1]
    number = first.get("SeriesNumber")
    return SeriesInfo(
        uid=uid,
        number=int(number) if number not in (None, "") else None,
        description=str(first.get("SeriesDescription", "") or "").strip(),
        modality=str(first.get("Modality", "") or ""),
        date=_iso_date(str(first.get("SeriesDate", "") or first.get("StudyDate", "") or "")),
        n_images=len(members),
        files=tuple(path for path, _ in members),
    )


def _iso_date(value: str) -> str:
    try:
        return datetime.strptime(value.strip()[:8], "%Y%m%d").strftime("%Y-%m-%d")
    except ValueError:
        return value.strip()


def pick_series(folder: str | os.PathLike, series: str | None) -> SeriesInfo:
    """The series the user asked for: ``series`` is a SeriesInstanceUID or a SeriesNumber.

    Without ``series`` the folder must hold exactly one series; otherwise ``SeriesChoiceError``
    lists them all, so the user (or the app's picker) can choose.
    """
    folder = Path(folder)
    infos = list_series(folder)
    if not infos:
        raise VolumeError(
            f"{folder}: is a folder, but no DICOM images found in it; choose the folder that holds "
            "the .dcm files of one study, or a NIfTI file (.nii or .nii.gz)."
        )
    if series is None:
        if len(infos) == 1:
            return infos[0]
        raise SeriesChoiceError(
            f"{folder}: holds {len(infos)} series; choose one by its number or UID: {_listing(infos)}",
            infos,
        )
    wanted = str(series).strip()
    matches = [s for s in infos if s.uid == wanted] or [s for s in infos if str(s.number) == wanted]
    if len(matches) > 1:
        raise SeriesChoiceError(
            f"{folder}: {len(matches)} series have the number {wanted}; choose one by its UID instead: "
            f"{_listing(matches)}",
            matches,
        )
    if not matches:
        raise VolumeError(f"{folder}: no series {wanted}; the folder holds: {_listing(infos)}", parameter="series")
    return matches[0]


def _listing(infos: list[SeriesInfo]) -> str:
    return " | ".join(" ".join(s.label().split("  ")) for s in infos)


def load_dicom_series(
    folder: str | os.PathLike, series: str | None = None, volume_index: int | None = None
) -> Volume:
    """Load one series of a DICOM folder as a RAS ``Volume`` with the series' true geometry.

    ``series`` picks the series (see ``pick_series``); ``volume_index`` picks one image per position
    where a series repeats positions (echoes, time points, diffusion directions), default 0.
    Raises ``VolumeError`` naming the folder or file and what to do.
    """
    folder = Path(folder)
    info = pick_series(folder, series)
    warnings: list[str] = []
    images = [_read_image(path) for path in info.files]
    row_cos, col_cos, row_step, col_step = _common_geometry(folder, images, warnings)
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    for image in images:
        image.along = float(image.position @ normal)
    images = _one_volume(folder, images, volume_index, warnings)
    slots, slice_step = _slice_slots(folder, images, normal, warnings)

    rows, cols = int(images[0].ds.Rows), int(images[0].ds.Columns)
    shape = (cols, rows, int(slots[-1]) + 1)
    check_memory(folder, shape)
    data = _stack_pixels(images, slots, shape)
    data = replace_non_finite(folder, data, warnings)
    check_content(folder, data)

    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_step  # along a row: increasing column index i
    lps[:3, 1] = col_cos * row_step  # down a column: increasing row index j
    lps[:3, 2] = normal * slice_step
    lps[:3, 3] = images[0].position
    source_affine = LPS_TO_RAS @ lps
    ras_data, ras_affine = to_ras_canonical(data, source_affine)
    for message in warnings:
        log.warning(message)
    description = info.description or str(images[0].ds.get("ProtocolName", "") or "")
    return Volume(
        data=ras_data,
        affine=ras_affine,
        source_header=_nifti_header(shape, (col_step, row_step, slice_step), source_affine),
        source_affine=source_affine,
        source_shape=shape,
        name=series_stem(folder, info),
        sequence=guess_sequence(f"{info.description} {images[0].ds.get('ProtocolName', '') or ''}"),
        path=folder,
        warnings=warnings,
        description=description,
        identifiers=patient_identifiers(images[0].ds),
    )


IDENTIFIER_TAGS = (("PatientName", "name"), ("PatientID", "ID"), ("PatientBirthDate", "born"),
                   ("StudyDate", "study date"), ("AccessionNumber", "accession"))


def patient_identifiers(ds) -> dict[str, str]:
    """The patient identifiers a report prints when the user asks (never by default)."""
    out = {}
    for keyword, label in IDENTIFIER_TAGS:
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            out[label] = value
    return out


def series_stem(folder: Path, info: SeriesInfo) -> str:
    suffix = str(info.number) if info.number is not None else info.uid[:8]
    return f"{folder.resolve().name}_s{suffix}"


def _read_image(path: Path) -> _Image:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise VolumeError(f"{path}: the DICOM file cannot be read ({_one_line(exc)}); copy the series again.") from exc
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise VolumeError(
            f"{path}: enhanced (multi-frame) DICOM is not supported yet; "
            "export the series as NIfTI with dcm2niix and load the .nii.gz file."
        )
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise VolumeError(f"{path}: a colour image, not a grey-scale scan; choose another series.")
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        raise VolumeError(
            f"{path}: has no position or orientation (ImagePositionPatient/ImageOrientationPatient), "
            "so its slices cannot be placed in space; choose another series or export it with dcm2niix."
        )
    return _Image(path, ds, np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64))


def _common_geometry(
    folder: Path, images: list[_Image], warnings: list[str]
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Row and column direction cosines and pixel steps, which every image must share."""
    first = images[0].ds
    for image in images[1:]:
        ds = image.ds
        if (ds.Columns, ds.Rows) != (first.Columns, first.Rows):
            raise VolumeError(
                f"{folder}: the series mixes image sizes ({first.Columns}x{first.Rows} and "
                f"{ds.Columns}x{ds.Rows} pixels, e.g. {image.path.name}); choose another series "
                "or export it with dcm2niix."
            )
        if not np.allclose(_floats(ds.ImageOrientationPatient), _floats(first.ImageOrientationPatient), atol=1e-4):
            raise VolumeError(
                f"{folder}: the series mixes slice orientations ({_floats(first.ImageOrientationPatient)} and "
                f"{_floats(ds.ImageOrientationPatient)}, e.g. {image.path.name}), like a localizer; "
                "choose another series."
            )
        if _floats(ds.get("PixelSpacing", [])) != _floats(first.get("PixelSpacing", [])):
            raise VolumeError(
                f"{folder}: the series mixes pixel spacings, e.g. {image.path.name}; choose another series "
                "or export it with dcm2niix."
            )
    iop = np.asarray(_floats(first.ImageOrientationPatient), dtype=np.float64)
    row_cos, col_cos = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    if "PixelSpacing" in first:
        row_step, col_step = (float(v) for v in first.PixelSpacing)
    else:
        row_step = col_step = 1.0
        warnings.append(f"{folder.name}: the images give no pixel spacing; assuming 1 mm pixels.")
    return row_cos, col_cos, row_step, col_step


def _floats(values) -> list[float]:
    return [round(float(v), 6) for v in values]


def _one_volume(folder: Path, images: list[_Image], volume_index: int | None, warnings: list[str]) -> list[_Image]:
    """One image per position: the ``volume_index``-th (by InstanceNumber) where positions repeat."""
    groups: list[list[_Image]] = []
    for image in sorted(images, key=lambda im: im.along):
        if groups and abs(image.along - groups[-1][0].along) < SAME_POSITION_MM:
            groups[-1].append(image)
        else:
            groups.append([image])
    counts = sorted({len(group) for group in groups})
    if len(counts) > 1:
        raise VolumeError(
            f"{folder}: some slice positions hold {counts[0]} images and others {counts[-1]} "
            "(repeated or missing echoes/time points); export the series with dcm2niix."
        )
    n_volumes = counts[0]
    if n_volumes == 1 and volume_index not in (None, 0):
        raise VolumeError(f"{folder}: is a 3D series; there is no volume {volume_index} "
                          "(only a 4D series holds several volumes).", parameter="volume")
    volume_index = choose_volume(folder, n_volumes, volume_index, warnings,
                                 f"the series holds {n_volumes} images at each slice position "
                                 "(echoes, time points or diffusion directions)")
    return [sorted(group, key=_instance_order)[volume_index] for group in groups]


def _instance_order(image: _Image) -> tuple[int, str]:
    return int(image.ds.get("InstanceNumber", 0) or 0), str(image.path)


def _slice_slots(
    folder: Path, images: list[_Image], normal: np.ndarray, warnings: list[str]
) -> tuple[np.ndarray, float]:
    """The slice index of each (sorted) image and the slice step; a gap leaves empty slots.

    Missing slices keep their place, so every slice that is present keeps its true position.
    """
    if len(images) == 1:
        return np.zeros(1, dtype=int), _single_slice_step(folder, images[0].ds, warnings)
    along = np.array([image.along for image in images])
    steps = np.diff(along)
    step = float(np.median(steps))
    slots = np.floor((along - along[0]) / step + 0.5).astype(int)
    if len(set(slots.tolist())) != len(slots):
        raise VolumeError(
            f"{folder}: the slice spacing is irregular (steps from {steps.min():.2f} to {steps.max():.2f} mm); "
            "export the series with dcm2niix."
        )
    off = float(np.abs(along - along[0] - slots * step).max())
    if off > 0.1 * step:
        warnings.append(
            f"{folder.name}: the slice spacing is uneven ({steps.min():.2f} to {steps.max():.2f} mm); "
            f"slices are placed {step:.2f} mm apart, up to {off:.2f} mm from their true position."
        )
    for before in np.flatnonzero(np.diff(slots) > 1):
        missing = int(slots[before + 1] - slots[before] - 1)
        warnings.append(
            f"{folder.name}: {missing} slice{'s' if missing != 1 else ''} missing between "
            f"{along[before]:.1f} mm and {along[before + 1]:.1f} mm along the slice axis; the gap is "
            "left blank. Check that the whole series was exported."
        )
    shift = images[-1].position - images[0].position - (along[-1] - along[0]) * normal
    if np.linalg.norm(shift) > 0.1 * step:
        warnings.append(
            f"{folder.name}: the slices are shifted sideways by {np.linalg.norm(shift):.1f} mm from first to "
            "last (gantry tilt?); positions away from the first slice are approximate. dcm2niix corrects this."
        )
    return slots, step


def _single_slice_step(folder: Path, ds: pydicom.Dataset, warnings: list[str]) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    warnings.append(f"{folder.name}: a single image with no slice thickness; assuming 1 mm.")
    return 1.0


def _stack_pixels(images: list[_Image], slots: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """float32 ``[i, j, k]`` (column, row, slice) with rescaling applied; blank slots get the minimum."""
    data = np.empty(shape, dtype=np.float32)
    for image, slot in zip(images, slots):
        data[:, :, slot] = _pixels(image).T
    empty = np.setdiff1d(np.arange(shape[2]), slots)
    if empty.size:
        data[:, :, empty] = data[:, :, slots].min()
    return data


def _pixels(image: _Image) -> np.ndarray:
    ds = image.ds
    try:
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing decoders and damaged data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = syntax.name if syntax is not None else "an unknown transfer syntax"
        if syntax is not None and syntax.is_compressed:
            raise VolumeError(
                f"{image.path}: the pixels are compressed as {name}, which cannot be decoded here "
                f"({_one_line(exc)}); {_CONVERT_HINT}."
            ) from exc
        raise VolumeError(
            f"{image.path}: the pixel data ({name}) are damaged or incomplete ({_one_line(exc)}); "
            "copy the series again."
        ) from exc
    if raw.shape != (int(ds.Rows), int(ds.Columns)):
        raise VolumeError(f"{image.path}: pixel data of shape {raw.shape} do not match the header's image size.")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _nifti_header(
    shape: tuple[int, int, int], zooms: tuple[float, float, float], affine: np.ndarray
) -> nib.Nifti1Header:
    """A NIfTI header for the series' own grid, so that ``save_like`` writes results on it."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_zooms(zooms)
    header.set_xyzt_units("mm")
    header.set_sform(affine, code=1)  # scanner coordinates, as dcm2niix writes them
    header.set_qform(affine, code=1)
    return header
