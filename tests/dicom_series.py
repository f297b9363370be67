"""A test helper: write a 3D array as a complete single-frame MR series (what a PACS holds), with
patient, study, frame-of-reference and geometry attributes, in any orientation (oblique included).

Used by the PACS and DICOM-results tests and by ``benchmarks/bench_pacs.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

ROOT = "1.2.826.0.1.3680043.8.498.77."
PATIENT = {"PatientName": "Test^Pacs", "PatientID": "XNET-TEST-001", "PatientBirthDate": "19500101",
           "PatientSex": "O", "AccessionNumber": "ACC0001"}


def rotation(degrees_x: float, degrees_z: float) -> np.ndarray:
    """Columns: row cosine, column cosine, slice normal (LPS)."""
    ax, az = np.radians(degrees_x), np.radians(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def write_series(folder: Path, data: np.ndarray, *, spacing=(1.0, 1.0, 1.0), origin=(-90.0, -110.0, -60.0),
                 axes: np.ndarray | None = None, series_number: int = 3, description: str = "t1_mprage_axial",
                 study_uid: str | None = None, patient: dict | None = None, seed: int = 0) -> dict:
    """``data[i, j, k]`` (column i, row j, slice k) as one file per slice under ``folder``.

    ``spacing``: (column step, row step, slice step) mm; ``axes``: 3x3 LPS columns (row cosine, column
    cosine, normal). Files are named in shuffled order. Returns the UIDs and the written paths.
    """
    axes = np.eye(3) if axes is None else np.asarray(axes, dtype=float)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid(prefix=ROOT)
    series_uid, frame_uid = generate_uid(prefix=ROOT), generate_uid(prefix=ROOT)
    pixels = np.clip(np.rint(data), 0, 65535).astype("<u2")
    cols, rows, n = pixels.shape
    order = np.random.default_rng(seed).permutation(n)
    paths = []
    for name_index, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(prefix=ROOT)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        for keyword, value in (patient or PATIENT).items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.ReferringPhysicianName = "20240501", "101500", "1", ""
        ds.StudyDescription = "MR brain"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "MR", series_number, description
        ds.InstanceNumber = int(k) + 1
        ds.PositionReferenceIndicator = ""
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row step, column step
        ds.SliceThickness = float(spacing[2])
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*axes[:, 0], *axes[:, 1])]
        position = np.asarray(origin) + k * spacing[2] * axes[:, 2]
        ds.ImagePositionPatient = [round(float(v), 6) for v in position]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        path = folder / f"IM{name_index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return {"study_uid": study_uid, "series_uid": series_uid, "paths": paths}


def phantom(shape=(48, 40, 24), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid 'head' with a dark blob, and a mask of the blob (both ``[i, j, k]``)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.indices(shape, dtype=float)
    centre = (np.asarray(shape) - 1) / 2
    head = ((i - centre[0]) / (shape[0] * 0.42)) ** 2 + ((j - centre[1]) / (shape[1] * 0.42)) ** 2 + \
        ((k - centre[2]) / (shape[2] * 0.45)) ** 2 < 1
    blob = (i - centre[0] * 0.7) ** 2 + (j - centre[1] * 1.2) ** 2 + (k - centre[2]) ** 2 < (min(shape) * 0.15) ** 2
    data = np.where(head, 800.0, 20.0) + rng.normal(0, 10, shape)
    data[blob & head] = 300.0
    return np.clip(data, 0, None), (blob & head).astype(np.uint8)
