"""Read one DICOM series (a folder of single-frame images) into a ``Volume``.

Slices are ordered and placed by their geometry (ImagePositionPatient projected on the slice normal),
never by file name or InstanceNumber, because exports shuffle both. DICOM patient coordinates are LPS;
the ``Volume`` is RAS like every NIfTI scan, oblique orientations keep their obliquity, and results are
written back as NIfTI on the series' own grid. Nothing here resamples.

A leaf reader, like ``nifti.py``: it imports ``image.py`` for ``Volume`` and the checks, never ``volume.py``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue

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
# What pydicom raises when it converts one element it read lazily: a value its VR cannot hold, a VR
# it does not know, a length that is not a multiple of the value size.
_TAG_ERRORS = (ValueError, TypeError, OverflowError, NotImplementedError, BytesLengthException)
MAX_POSITION_MM = 1e5  # 100 m from the scanner's origin: a damaged position, not a patient
MAX_PIXEL_MM = 1e3
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
    """One image's file and the header values the reader uses, parsed and checked once."""

    path: Path
    ds: pydicom.Dataset
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: tuple[float, ...]  # ImageOrientationPatient, rounded to 6 decimals
    rows: int
    columns: int
    spacing: tuple[float, ...] | None  # PixelSpacing (row step, column step) mm, None when absent
    instance: int = 0
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
            groups.setdefault(_text(ds, "SeriesInstanceUID"), []).append((path, ds))
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
    number = _text(first, "SeriesNumber")
    return SeriesInfo(
        uid=uid,
        number=int(float(number)) if _is_number(number) else None,
        description=_text(first, "SeriesDescription"),
        modality=_text(first, "Modality"),
        date=_iso_date(_text(first, "SeriesDate") or _text(first, "StudyDate")),
        n_images=len(members),
        files=tuple(path for path, _ in members),
    )


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    """A labelling tag as text; '' when absent or unreadable (a damaged label must not hide the series)."""
    try:
        return str(ds.get(keyword, "") or "").strip()
    except _TAG_ERRORS:
        return ""


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and abs(float(text)) < 2**31
    except ValueError:
        return False


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

    rows, cols = images[0].rows, images[0].columns
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
    protocol = _text(images[0].ds, "ProtocolName")
    description = info.description or protocol
    return Volume(
        data=ras_data,
        affine=ras_affine,
        source_header=_nifti_header(shape, (col_step, row_step, slice_step), source_affine),
        source_affine=source_affine,
        source_shape=shape,
        name=series_stem(folder, info),
        sequence=guess_sequence(f"{info.description} {protocol}"),
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
        value = _text(ds, keyword)
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
    if _integer(path, ds, "NumberOfFrames", 1) > 1:
        raise VolumeError(
            f"{path}: enhanced (multi-frame) DICOM is not supported yet; "
            "export the series as NIfTI with dcm2niix and load the .nii.gz file."
        )
    if _integer(path, ds, "SamplesPerPixel", 1) != 1:
        raise VolumeError(f"{path}: a colour image, not a grey-scale scan; choose another series.")
    position = _numbers(path, ds, "ImagePositionPatient", 3)
    orientation = _numbers(path, ds, "ImageOrientationPatient", 6)
    if position is None or orientation is None:
        raise VolumeError(
            f"{path}: has no position or orientation (ImagePositionPatient/ImageOrientationPatient), "
            "so its slices cannot be placed in space; choose another series or export it with dcm2niix."
        )
    if max(abs(v) for v in position) > MAX_POSITION_MM:
        raise VolumeError(f"{path}: ImagePositionPatient {position} lies kilometres from the scanner; "
                          "the header is damaged. Copy the series again or export it with dcm2niix.")
    _check_orientation(path, orientation)
    rows, columns = _integer(path, ds, "Rows", 0), _integer(path, ds, "Columns", 0)
    if rows < 1 or columns < 1:
        raise VolumeError(f"{path}: the header gives an image of {columns}x{rows} pixels; the header is damaged.")
    spacing = _numbers(path, ds, "PixelSpacing", 2)
    if spacing is not None and not all(0 < v <= MAX_PIXEL_MM for v in spacing):
        raise VolumeError(f"{path}: PixelSpacing {spacing} mm is not a pixel size; the header is damaged.")
    return _Image(path, ds, np.asarray(position, dtype=np.float64), tuple(round(v, 6) for v in orientation),
                  rows, columns, tuple(round(v, 6) for v in spacing) if spacing else None,
                  _integer(path, ds, "InstanceNumber", 0))


def _tag_values(path: Path, ds: pydicom.Dataset, keyword: str) -> list:
    """The values of one tag as a list (empty when absent or empty); ``VolumeError`` when pydicom cannot
    convert what the file holds (a wrong VR or length)."""
    if keyword not in ds:
        return []
    try:
        value = ds[keyword].value
    except _TAG_ERRORS as exc:
        raise VolumeError(f"{path}: the {keyword} tag is damaged ({_one_line(exc)}); copy the series again "
                          "or export it with dcm2niix.") from exc
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _numbers(path: Path, ds: pydicom.Dataset, keyword: str, count: int) -> list[float] | None:
    """``count`` finite numbers from a tag, None when it is absent; ``VolumeError`` when it holds others."""
    values = _tag_values(path, ds, keyword)
    if not values:
        return None
    try:
        numbers = [float(v) for v in values]
    except (ValueError, TypeError, OverflowError):
        numbers = []
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        shown = ", ".join(str(v) for v in values[:8])[:120]
        raise VolumeError(f"{path}: {keyword} should hold {count} number{'s' if count > 1 else ''}, not "
                          f"[{shown}]; the header is damaged. Copy the series again or export it with dcm2niix.")
    return numbers


def _integer(path: Path, ds: pydicom.Dataset, keyword: str, default: int) -> int:
    numbers = _numbers(path, ds, keyword, 1)
    if numbers is None:
        return default
    if not numbers[0].is_integer() or abs(numbers[0]) >= 2**31:
        raise VolumeError(f"{path}: {keyword} is {numbers[0]:g}, not a whole number; the header is damaged.")
    return int(numbers[0])


def _check_orientation(path: Path, orientation: list[float]) -> None:
    """Two unit-able, perpendicular directions (a row and a column), as slices need to be placed."""
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    norms = float(np.linalg.norm(row)) * float(np.linalg.norm(column))
    if min(np.linalg.norm(row), np.linalg.norm(column)) < 1e-3 or abs(float(row @ column)) > 0.01 * norms:
        raise VolumeError(f"{path}: ImageOrientationPatient {orientation} does not give two perpendicular "
                          "directions; the header is damaged. Export the series with dcm2niix.")


def _common_geometry(
    folder: Path, images: list[_Image], warnings: list[str]
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Row and column direction cosines and pixel steps, which every image must share."""
    first = images[0]
    for image in images[1:]:
        if (image.columns, image.rows) != (first.columns, first.rows):
            raise VolumeError(
                f"{folder}: the series mixes image sizes ({first.columns}x{first.rows} and "
                f"{image.columns}x{image.rows} pixels, e.g. {image.path.name}); choose another series "
                "or export it with dcm2niix."
            )
        if not np.allclose(image.orientation, first.orientation, atol=1e-4):
            raise VolumeError(
                f"{folder}: the series mixes slice orientations ({list(first.orientation)} and "
                f"{list(image.orientation)}, e.g. {image.path.name}), like a localizer; "
                "choose another series."
            )
        if image.spacing != first.spacing:
            raise VolumeError(
                f"{folder}: the series mixes pixel spacings, e.g. {image.path.name}; choose another series "
                "or export it with dcm2niix."
            )
    iop = np.asarray(first.orientation, dtype=np.float64)
    row_cos, col_cos = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    if first.spacing is not None:
        row_step, col_step = first.spacing
    else:
        row_step = col_step = 1.0
        warnings.append(f"{folder.name}: the images give no pixel spacing; assuming 1 mm pixels.")
    return row_cos, col_cos, row_step, col_step


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
    return image.instance, str(image.path)


def _slice_slots(
    folder: Path, images: list[_Image], normal: np.ndarray, warnings: list[str]
) -> tuple[np.ndarray, float]:
    """The slice index of each (sorted) image and the slice step; a gap leaves empty slots.

    Missing slices keep their place, so every slice that is present keeps its true position.
    """
    if len(images) == 1:
        return np.zeros(1, dtype=int), _single_slice_step(folder, images[0], warnings)
    along = np.array([image.along for image in images])
    steps = np.diff(along)
    step = float(np.median(steps))
    slots = np.floor((along - along[0]) / step + 0.5).astype(int)
    if len(set(slots.tolist())) != len(slots):
        raise VolumeError(
            f"{folder}: the slice spacing is irregular (steps from {steps.min():.2f} to {steps.max():.2f} mm); "
            "export the series with dcm2niix."
        )
    if slots[-1] + 1 > 2 * len(slots):  # also stops one damaged position from allocating a huge, empty volume
        raise VolumeError(
            f"{folder}: {len(slots)} slices spread over {slots[-1] + 1} positions {step:.2f} mm apart, more than "
            "half of them blank; a slice's position is wrong or most of the series is missing. Copy the "
            "series again or export it with dcm2niix."
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


def _single_slice_step(folder: Path, image: _Image, warnings: list[str]) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _numbers(image.path, image.ds, keyword, 1)
        if value is not None and 0 < value[0] <= MAX_PIXEL_MM:
            return value[0]
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
        name, compressed = _transfer_syntax(ds)
        if compressed:
            raise VolumeError(
                f"{image.path}: the pixels are compressed as {name}, which cannot be decoded here "
                f"({_one_line(exc)}); {_CONVERT_HINT}."
            ) from exc
        raise VolumeError(
            f"{image.path}: the pixel data ({name}) are damaged or incomplete ({_one_line(exc)}); "
            "copy the series again."
        ) from exc
    if raw.shape != (image.rows, image.columns):
        raise VolumeError(f"{image.path}: pixel data of shape {raw.shape} do not match the header's image size.")
    slope = (_numbers(image.path, ds, "RescaleSlope", 1) or [1.0])[0] or 1.0  # 0 means unset, as before
    intercept = (_numbers(image.path, ds, "RescaleIntercept", 1) or [0.0])[0]
    return raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _transfer_syntax(ds: pydicom.Dataset) -> tuple[str, bool]:
    """The transfer syntax's name and whether it is compressed; a damaged UID is named as it is."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        return "an unknown transfer syntax", False
    try:
        return syntax.name, bool(syntax.is_compressed)
    except ValueError:  # pydicom: "UID is not a transfer syntax"
        return f"an unknown transfer syntax ({str(syntax)[:64]!r})", False


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
