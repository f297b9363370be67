"""Results as DICOM objects a PACS stores beside the study: SEG (highdicom), Encapsulated PDF, Secondary Capture.

Each object gets new UIDs under ``UID_ROOT``, copies the patient and study identifiers of its source
series (so the PACS files it in the same study), and carries the disclaimer in its SeriesDescription
and in its content. The SEG references the source series' own images, frame for frame: its frames
are the source slices, so a viewer shows it on the slices it was computed on.

The geometry link between a ``Volume`` (RAS, maybe reordered) and the source files is made here by
reading the series' headers again: each image's position along the slice normal gives its slice index
of ``Volume.source_affine``, the same rule ``dicom.py`` used to build the volume.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless, generate_uid

from xnet_core import DISCLAIMER, __version__
from xnet_core.atomic import atomic_path
from xnet_core.errors import SeriesChoiceError, VolumeError, XNetError
from xnet_core.image import Volume

log = logging.getLogger(__name__)

# pydicom's registered root, which it offers to its users; the rest of each UID is random (uuid4-based).
UID_ROOT = "1.2.826.0.1.3680043.8.498."
MANUFACTURER = "X-Net Viewer"
RESEARCH = "RESEARCH USE ONLY"
SEG_SERIES_NUMBER, PDF_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902, 9903
INFARCT = Code("55641003", "SCT", "Infarct")  # SNOMED CT morphologic abnormality
ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_PATIENT_STUDY = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                  "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                  "ReferringPhysicianName", "StudyDescription")


def new_uid() -> str:
    return generate_uid(prefix=UID_ROOT)


@dataclass(frozen=True)
class Algorithm:
    """The model that made a mask, as a SEG names it (Algorithm Identification)."""

    name: str
    version: str
    checkpoint_sha256: str
    checkpoint_file: str = ""
    threshold: float = 0.5

    @classmethod
    def from_checkpoint(cls, checkpoint, threshold: float = 0.5) -> Algorithm:
        return cls("X-Net", __version__, checkpoint.sha256, checkpoint.path.name, threshold)


@dataclass
class SourceSeries:
    """The source images of a ``Volume`` read from a DICOM folder: one header per slice present, in
    slice order, and each one's slice index ``k`` in the volume's source grid (``Volume.source_shape``)."""

    folder: Path
    datasets: list[Dataset]
    slices: list[int]

    @property
    def first(self) -> Dataset:
        return self.datasets[0]


def source_series(volume: Volume, series: str | None = None, volume_index: int | None = None) -> SourceSeries:
    """The headers of the DICOM images ``volume`` was read from (``series`` as given to the reader)."""
    from xnet_core.dicom import pick_series

    folder = Path(volume.path or "")
    if not folder.is_dir():
        raise XNetError(f"{volume.name}: DICOM results need a DICOM series as input, not a NIfTI file; "
                        "open the DICOM folder the scan came from.")
    try:
        candidates = [pick_series(folder, series)]
    except SeriesChoiceError as choice:  # several series and none named: the one the volume was read from
        candidates = list(choice.series)
    for info in candidates:
        by_slice = _on_grid(volume, info.files)
        if by_slice is not None:
            break
    else:
        raise VolumeError(f"{folder}: no series of this folder lies on the scan's grid; the results cannot "
                          "reference the source series. Load the series again.")
    chosen = volume_index or 0
    ordered = sorted(by_slice.items())
    datasets = [sorted(group, key=lambda d: int(d.get("InstanceNumber", 0) or 0))[min(chosen, len(group) - 1)]
                for _, group in ordered]
    return SourceSeries(folder, datasets, [k for k, _ in ordered])


def _on_grid(volume: Volume, files) -> dict[int, list[Dataset]] | None:
    """The headers of ``files`` by their slice of the volume's stored grid; None if one lies off it."""
    inverse = np.linalg.inv(_LPS_TO_RAS @ volume.source_affine)  # LPS mm -> the stored grid's voxel indices
    by_slice: dict[int, list[Dataset]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        index = inverse @ np.r_[[float(v) for v in ds.ImagePositionPatient], 1.0]
        k = int(round(index[2]))
        if not np.allclose(index[:3], [0, 0, k], atol=0.05) or not 0 <= k < volume.source_shape[2] or \
                (int(ds.Columns), int(ds.Rows)) != tuple(volume.source_shape[:2]):
            return None
        by_slice.setdefault(k, []).append(ds)
    return by_slice


def _source_frames(volume: Volume, source: SourceSeries, mask: np.ndarray) -> np.ndarray:
    """A RAS ``[x, y, z]`` mask as frames ``[n_images, rows, columns]`` of the source images."""
    if mask.shape != volume.shape:
        raise XNetError(f"the mask's shape {mask.shape} is not the scan's {volume.shape}.")
    stored = np.asarray(volume.to_source_order(np.asarray(mask) > 0))  # [column i, row j, slice k]
    dropped = int(stored.sum()) - int(sum(stored[:, :, k].sum() for k in source.slices))
    if dropped:
        log.warning("%d mask voxels lie on slices missing from the series; the SEG cannot hold them", dropped)
    return np.ascontiguousarray(np.stack([stored[:, :, k].T for k in source.slices]).astype(np.uint8))


def write_seg(volume: Volume, source: SourceSeries, mask: np.ndarray, path: str | os.PathLike,
              algorithm: Algorithm, reader_mask: np.ndarray | None = None) -> Path:
    """A DICOM SEG of the model's mask (segment 1) and the reader's (segment 2, when given), on the
    source images' frames. Masks are RAS ``[x, y, z]`` arrays on ``volume``'s grid."""
    import highdicom as hd

    frames = _source_frames(volume, source, mask)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=1, segment_label="X-Net lesion (research use only)",
        segmented_property_category=_abnormal(), segmented_property_type=INFARCT,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=_ai(), version=algorithm.version, source=MANUFACTURER,
            parameters={"checkpoint_sha256": algorithm.checkpoint_sha256, "checkpoint": algorithm.checkpoint_file,
                        "threshold": f"{algorithm.threshold:g}"}))]
    if reader_mask is not None:
        frames = np.stack([frames, _source_frames(volume, source, reader_mask)], axis=-1)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=2, segment_label="Reader's lesion outline", segmented_property_category=_abnormal(),
            segmented_property_type=INFARCT, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL))
    seg = hd.seg.Segmentation(
        source_images=source.datasets, pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=new_uid(), series_number=SEG_SERIES_NUMBER, sop_instance_uid=new_uid(),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=algorithm.name,
        software_versions=__version__, device_serial_number=algorithm.checkpoint_sha256[:16],
        content_label="XNET_LESION", content_description=_short(f"{RESEARCH}. {DISCLAIMER}"),
        series_description=f"X-Net lesion SEG - {RESEARCH}", omit_empty_frames=False)
    return _save(seg, path)


def _abnormal() -> Code:
    from pydicom.sr.codedict import codes

    return codes.SCT.MorphologicallyAbnormalStructure


def _ai() -> Code:
    from pydicom.sr.codedict import codes

    return codes.cid7162.ArtificialIntelligence


def _short(text: str, limit: int = 64) -> str:
    """A LO value (64 characters at most)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "."


def _save(ds: Dataset, path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise XNetError(f"{path}: the folder {path.parent} does not exist; choose another output.")
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def read_seg_masks(path: str | os.PathLike, volume: Volume) -> dict[int, tuple[str, np.ndarray]]:
    """``{segment number: (label, RAS mask on volume's grid)}`` of a SEG, placed by the SEG's own frame
    geometry (plane positions, orientation), not by its references: a check that it lands where it should."""
    seg = pydicom.dcmread(path)
    pixels = seg.pixel_array.reshape(int(seg.get("NumberOfFrames", 1)), int(seg.Rows), int(seg.Columns))
    lps = _LPS_TO_RAS @ volume.source_affine
    inverse = np.linalg.inv(lps)
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    if not np.allclose(orientation[:3], lps[:3, 0] / np.linalg.norm(lps[:3, 0]), atol=1e-4) or \
            not np.allclose(orientation[3:], lps[:3, 1] / np.linalg.norm(lps[:3, 1]), atol=1e-4):
        raise XNetError(f"{path}: the SEG's frames are not oriented like the scan's slices.")
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    stored = {number: np.zeros(volume.source_shape, dtype=np.uint8) for number in labels}
    for frame, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        identification = group if "SegmentIdentificationSequence" in group else shared  # shared: one segment
        number = int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        index = inverse @ np.r_[position, 1.0]
        k = int(round(index[2]))
        if not np.allclose(index[:3], [0, 0, k], atol=0.05) or not 0 <= k < volume.source_shape[2]:
            raise XNetError(f"{path}: frame {frame + 1} does not lie on one of the scan's slices.")
        stored[number][:, :, k] = pixels[frame].T
    return {number: (labels[number], volume.to_ras(stored[number])) for number in labels}


# -- Encapsulated PDF and Secondary Capture --------------------------------------------------------
def _copy_patient_study(target: Dataset, source: Dataset) -> None:
    for keyword in _PATIENT_STUDY:
        if keyword in source:
            setattr(target, keyword, source[keyword].value)
        elif keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                         "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
            setattr(target, keyword, "")  # type 2: present, maybe empty


def _new_instance(source: Dataset, sop_class: str, series_number: int, description: str) -> Dataset:
    now = datetime.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = new_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = source.get("SpecificCharacterSet", "ISO_IR 192")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    _copy_patient_study(ds, source)
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = _short(description)
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"  # workstation
    ds.BurnedInAnnotation = "YES"
    return ds


def write_encapsulated_pdf(pdf: str | os.PathLike, source: SourceSeries, path: str | os.PathLike,
                           title: str = "X-Net lesion report") -> Path:
    """The report PDF, byte for byte, as a DICOM Encapsulated PDF in the source study."""
    data = Path(pdf).read_bytes()
    if not data.startswith(b"%PDF"):
        raise XNetError(f"{pdf}: not a PDF file.")
    ds = _new_instance(source.first, ENCAPSULATED_PDF, PDF_SERIES_NUMBER, f"X-Net report - {RESEARCH}")
    ds.Modality = "DOC"
    ds.AcquisitionDateTime = ds.ContentDate + ds.ContentTime
    ds.DocumentTitle = _short(f"{title} ({RESEARCH})")
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(data)  # the PDF's own length; the element is padded to even
    ds.EncapsulatedDocument = data + (b"\x00" if len(data) % 2 else b"")
    ds.ImageComments = DISCLAIMER
    return _save(ds, path)


def read_encapsulated_pdf(path: str | os.PathLike) -> bytes:
    """The PDF an Encapsulated PDF holds (without the padding byte)."""
    ds = pydicom.dcmread(path)
    data = bytes(ds.EncapsulatedDocument)
    return data[: int(ds.get("EncapsulatedDocumentLength", len(data)) or len(data))]


def write_secondary_captures(images: list[np.ndarray], source: SourceSeries, folder: str | os.PathLike,
                             comments: list[str] | None = None) -> list[Path]:
    """One Secondary Capture image per RGB page ``[rows, columns, 3]`` (uint8), in one new series of the
    source study; for a PACS without SEG support. The pages carry their own burned-in disclaimer."""
    import highdicom as hd

    folder = Path(folder)
    if not folder.is_dir():
        raise XNetError(f"{folder}: no such folder; create it or choose another output folder.")
    first, series_uid, paths = source.first, new_uid(), []
    for number, rgb in enumerate(images, 1):
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise XNetError("a Secondary Capture page must be an RGB uint8 image.")
        sc = hd.sc.SCImage(
            pixel_array=np.ascontiguousarray(rgb), photometric_interpretation="RGB", bits_allocated=8,
            coordinate_system="PATIENT", patient_orientation=("L", "P"),  # axial panels, radiological
            study_instance_uid=first.StudyInstanceUID, series_instance_uid=series_uid,
            series_number=SC_SERIES_NUMBER, sop_instance_uid=new_uid(), instance_number=number,
            manufacturer=MANUFACTURER, patient_id=first.get("PatientID"), patient_name=first.get("PatientName"),
            patient_birth_date=first.get("PatientBirthDate"), patient_sex=first.get("PatientSex") or None,
            accession_number=first.get("AccessionNumber"), study_id=first.get("StudyID"),
            study_date=first.get("StudyDate") or None, study_time=first.get("StudyTime") or None,
            referring_physician_name=first.get("ReferringPhysicianName"),
            transfer_syntax_uid=RLELossless)  # lossless, and a mostly white page shrinks about 8x
        sc.SeriesDescription = f"X-Net key slices - {RESEARCH}"
        sc.BurnedInAnnotation = "YES"
        sc.ImageComments = (comments[number - 1] + " " if comments else "") + DISCLAIMER
        paths.append(_save(sc, folder / f"xnet-key-slice-{number:03d}.dcm"))
    return paths
