"""Reading DICOM series (xnet_core.dicom): geometry, series choice and refusals with clear messages."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, MRImageStorage

from xnet_core.dicom import SeriesInfo, list_series, load_dicom_series, pick_series
from xnet_core.errors import SeriesChoiceError, VolumeError
from xnet_core.image import guess_sequence
from xnet_core.volume import load_volume

ROOT_UID = "1.2.826.0.1.3680043.8.498.4242"
ROWS, COLS, N_SLICES = 10, 12, 8
ROW_STEP, COL_STEP, SLICE_STEP = 0.9, 0.7, 2.5  # PixelSpacing = [ROW_STEP, COL_STEP]
ORIGIN = np.array([-40.0, 25.0, 12.0])  # LPS mm


def _rotation(degrees_x: float, degrees_z: float) -> np.ndarray:
    ax, az = np.radians(degrees_x), np.radians(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


OBLIQUE = _rotation(20, 20)  # columns: row cosine, column cosine, slice normal (LPS)
AXIAL = np.eye(3)


def _voxel_value(i, j, k):
    """A unique 16-bit value per voxel, so that data and geometry are checked together."""
    return 1 + i + COLS * j + COLS * ROWS * k


def _write_image(path: Path, *, series: int, k: int, instance: int, rotation=AXIAL, rows=ROWS, cols=COLS,
                 pixels: np.ndarray | None = None, position=None, **extra) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = f"{ROOT_UID}.{series}.{k}.{instance}"
    meta.TransferSyntaxUID = extra.pop("transfer_syntax", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.StudyDate = "20240501"
    ds.SeriesInstanceUID = f"{ROOT_UID}.{series}"
    ds.SeriesNumber = series
    ds.SeriesDescription = extra.pop("description", "t1_mprage_sag")
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [ROW_STEP, COL_STEP]
    ds.ImageOrientationPatient = [round(float(v), 8) for v in (*rotation[:, 0], *rotation[:, 1])]
    if position is None:
        position = ORIGIN + k * SLICE_STEP * rotation[:, 2]
    ds.ImagePositionPatient = [round(float(v), 8) for v in position]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if pixels is None:
        i, j = np.meshgrid(np.arange(cols), np.arange(rows))  # [row j, column i], as DICOM stores them
        pixels = _voxel_value(i, j, k)
    ds.PixelData = extra.pop("pixel_bytes", None) or pixels.astype("<u2").tobytes()
    if meta.TransferSyntaxUID.is_compressed:
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _write_series(folder: Path, series: int = 3, slices=range(N_SLICES), **kwargs) -> Path:
    """Files in shuffled order, named and numbered so that neither sorts in slice order."""
    slices = list(slices)
    order = [slices[n] for n in np.random.default_rng(series).permutation(len(slices))]
    for n, k in enumerate(order):
        _write_image(folder / f"IM{(7 * n + 3) % 97:04d}", series=series, k=k, instance=n + 1, **kwargs)
    return folder


def _expected_ras(i, j, k, rotation):
    lps = ORIGIN + i * COL_STEP * rotation[:, 0] + j * ROW_STEP * rotation[:, 1] + k * SLICE_STEP * rotation[:, 2]
    return lps * np.array([-1.0, -1.0, 1.0])


def test_oblique_series_maps_every_voxel_to_its_world_position(tmp_path: Path) -> None:
    volume = load_dicom_series(_write_series(tmp_path / "study", rotation=OBLIQUE))
    assert volume.data.dtype == np.float32 and volume.shape == (COLS, ROWS, N_SLICES)
    assert volume.source_shape == (COLS, ROWS, N_SLICES)
    assert np.allclose(sorted(volume.voxel_sizes), sorted((COL_STEP, ROW_STEP, SLICE_STEP)))
    assert np.count_nonzero(np.abs(volume.affine[:3, :3]) > 1e-3) > 3  # obliquity kept, not a diagonal
    index = np.indices(volume.shape).reshape(3, -1)
    values = volume.data.reshape(-1).astype(int) - 1
    i, j, k = values % COLS, (values // COLS) % ROWS, values // (COLS * ROWS)
    world = (volume.affine @ np.vstack([index, np.ones(index.shape[1])]))[:3]
    expected = _expected_ras(i[:, None], j[:, None], k[:, None], OBLIQUE)
    assert np.allclose(world.T, expected, atol=1e-3)
    assert np.unique(values).size == COLS * ROWS * N_SLICES
    assert volume.warnings == []


def test_source_affine_indexes_the_stored_columns_rows_and_slices(tmp_path: Path) -> None:
    volume = load_dicom_series(_write_series(tmp_path / "study", rotation=OBLIQUE))
    for ijk in [(0, 0, 0), (11, 0, 0), (0, 9, 0), (5, 4, 7)]:
        point = volume.source_affine @ np.r_[ijk, 1.0]
        assert np.allclose(point[:3], _expected_ras(*ijk, OBLIQUE), atol=1e-3)
        ras_index = np.argwhere(volume.data == _voxel_value(*ijk))[0]
        assert volume.source_index(tuple(ras_index)) == ijk
    assert volume.source_header.get_data_shape() == (COLS, ROWS, N_SLICES)
    assert np.allclose(volume.source_header.get_zooms(), (COL_STEP, ROW_STEP, SLICE_STEP))


def test_load_volume_reads_a_folder(tmp_path: Path) -> None:
    folder = _write_series(tmp_path / "patient7", series=4, description="ep2d_diff_ADC")
    volume = load_volume(folder)
    assert volume.name == "patient7_s4"
    assert volume.sequence == "ADC" and volume.description == "ep2d_diff_ADC"
    assert volume.path == folder
    # axial, LPS on disk: RAS canonical flips the first two axes
    assert volume.data[COLS - 1, ROWS - 1, 0] == _voxel_value(0, 0, 0)


def test_list_series_skips_foreign_files(tmp_path: Path) -> None:
    folder = _write_series(tmp_path / "study" / "sub", series=2, slices=range(3))
    (tmp_path / "study" / "README.txt").write_text("not an image")
    (tmp_path / "study" / "DICOMDIR").write_bytes(b"\0" * 200)
    report = Dataset()
    report.SeriesInstanceUID = f"{ROOT_UID}.99"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # basic text SR: no pixels
    meta.MediaStorageSOPInstanceUID = f"{ROOT_UID}.99.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.file_meta = meta
    report.save_as(folder / "SR0001", enforce_file_format=True)
    [info] = list_series(tmp_path / "study")
    assert isinstance(info, SeriesInfo)
    assert (info.number, info.n_images, info.date, info.modality) == (2, 3, "2024-05-01", "MR")
    assert info.label() == f"s2  t1_mprage_sag  (3 images, 2024-05-01)  UID {ROOT_UID}.2"


def test_two_series_need_a_choice(tmp_path: Path) -> None:
    _write_series(tmp_path / "a", series=5, description="t2_tse_tra")
    _write_series(tmp_path / "b", series=3, description="t2_flair")
    with pytest.raises(SeriesChoiceError) as caught:
        load_volume(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "choose one by its number or UID" in message and str(tmp_path) in message
    assert "--series" not in message and caught.value.parameter == "series"  # the CLI adds its flag
    assert f"{ROOT_UID}.3" in message and f"{ROOT_UID}.5" in message and "t2_flair" in message
    assert [s.number for s in caught.value.series] == [3, 5]
    assert load_volume(tmp_path, series="5").sequence == "T2w"
    by_uid = load_dicom_series(tmp_path, series=f"{ROOT_UID}.3")
    assert by_uid.sequence == "FLAIR" and by_uid.name == f"{tmp_path.name}_s3"
    with pytest.raises(VolumeError, match="no series 9.*t2_tse_tra"):
        pick_series(tmp_path, "9")


def test_missing_slice_is_left_blank_with_a_warning(tmp_path: Path) -> None:
    volume = load_dicom_series(_write_series(tmp_path / "s", slices=[k for k in range(N_SLICES) if k != 4]))
    assert volume.shape == (COLS, ROWS, N_SLICES)
    [warning] = volume.warnings
    assert "1 slice missing between 19.5 mm and 24.5 mm" in warning
    assert not np.any(volume.data[..., 4] == _voxel_value(0, 0, 4))
    assert volume.data[COLS - 1, ROWS - 1, 5] == _voxel_value(0, 0, 5)  # later slices keep their place


def test_mixed_image_sizes(tmp_path: Path) -> None:
    folder = _write_series(tmp_path / "s", slices=range(3))
    _write_image(folder / "odd", series=3, k=3, instance=9, cols=14, pixels=np.ones((ROWS, 14)))
    with pytest.raises(VolumeError, match="12x10 and 14x10"):
        load_dicom_series(folder)


@pytest.mark.parametrize("content", [None, "text"])
def test_folder_without_images(tmp_path: Path, content) -> None:
    if content:
        (tmp_path / "notes.txt").write_text("patient notes")
    with pytest.raises(VolumeError, match="no DICOM images found"):
        load_volume(tmp_path)


def test_undecodable_transfer_syntax(tmp_path: Path) -> None:
    folder = tmp_path / "j2k"
    bogus = encapsulate([b"\xff\x4f\xff\x51 not a JPEG 2000 codestream"])
    for k in range(2):
        _write_image(folder / f"J2K{k}", series=3, k=k, instance=k + 1, transfer_syntax=JPEG2000, pixel_bytes=bogus)
    assert dcmread(folder / "J2K0").file_meta.TransferSyntaxUID == JPEG2000
    with pytest.raises(VolumeError) as caught:
        load_dicom_series(folder)
    message = str(caught.value)
    assert "JPEG 2000 Image Compression" in message and "dcm2niix" in message and "J2K" in message


def test_rescale_slope_and_intercept(tmp_path: Path) -> None:
    folder = _write_series(tmp_path / "s", RescaleSlope=0.5, RescaleIntercept=-10)
    volume = load_dicom_series(folder)
    assert volume.data.min() == pytest.approx(0.5 * 1 - 10)
    assert volume.data.max() == pytest.approx(0.5 * _voxel_value(COLS - 1, ROWS - 1, N_SLICES - 1) - 10)


def test_repeated_positions_pick_a_volume(tmp_path: Path) -> None:
    folder = tmp_path / "echoes"
    for echo in range(2):
        for k in range(4):
            pixels = np.full((ROWS, COLS), 100 * echo + k + 1)
            pixels[0, 0] = 0
            _write_image(folder / f"E{echo}S{k}", series=3, k=k, instance=1 + k + 4 * echo, pixels=pixels)
    first = load_dicom_series(folder)
    assert "2 images at each slice position" in first.warnings[0]
    assert first.data.max() == 4
    assert load_dicom_series(folder, volume_index=1).data.max() == 104
    with pytest.raises(VolumeError, match="volume 2 does not exist"):
        load_dicom_series(folder, volume_index=2)


def test_multi_frame_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "enhanced"
    _write_image(folder / "MF", series=3, k=0, instance=1, NumberOfFrames=2,
                 pixels=np.ones((2 * ROWS, COLS)))
    with pytest.raises(VolumeError, match="multi-frame.*dcm2niix"):
        load_dicom_series(folder)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("sub-01_T1w.nii.gz", "T1w"), ("sub-01_FLAIR.nii.gz", "FLAIR"), ("sub-01_T2w.nii", "T2w"),
        ("sub-01_dwi.nii.gz", "DWI"), ("scan.nii.gz", "T1w"), ("ep2d_diff_3scan_trace", "DWI"),
        ("DWI", "DWI"), ("ADC", "ADC"), ("DWI_ADC", "ADC"), ("t2_tse_tra", "T2w"), ("T2", "T2w"),
        ("t2_tirm_tra_dark-fluid", "FLAIR"), ("MPRAGE", "T1w"), ("T1", "T1w"), ("t1_tse", "T1w"),
    ],
)
def test_guess_sequence(name: str, label: str) -> None:
    assert guess_sequence(name) == label


def test_cli_lists_the_series_and_segments_the_one_picked(tmp_path: Path, random_checkpoint,
                                                         capsys: pytest.CaptureFixture) -> None:
    from app.cli import main

    _write_series(tmp_path / "study" / "a", series=5, description="t1_mprage")
    _write_series(tmp_path / "study" / "b", series=3, description="t2_flair")
    out = tmp_path / "mask.nii.gz"
    common = ["--weights", str(random_checkpoint.path), "--device", "cpu"]
    assert main(["segment", str(tmp_path / "study"), "-o", str(out), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--series" in err and "t1_mprage" in err and "t2_flair" in err
    summary = tmp_path / "s.json"
    assert main(["segment", str(tmp_path / "study"), "--series", "5", "-o", str(out), "--json", str(summary),
                 *common]) == 0
    written = nib.load(out)
    expected = load_volume(tmp_path / "study", series="5")
    assert written.shape == expected.source_shape and np.allclose(written.affine, expected.source_affine)
    report = json.loads(summary.read_text())
    assert report["registration"]["applied"] is False and "too small" in report["registration"]["warning"]


def test_report_prints_dicom_identifiers_only_on_request(qapp, tmp_path: Path, random_checkpoint,
                                                         capsys: pytest.CaptureFixture) -> None:
    """(``qapp``: the widgets application exists first; the CLI would otherwise make a QGuiApplication
    that later widget tests in this process cannot use.)"""
    from pypdf import PdfReader

    from app.cli import main

    _write_series(tmp_path / "study", series=5, PatientName="Doe^Jane", PatientID="P123")
    assert load_volume(tmp_path / "study").identifiers == {"name": "Doe^Jane", "ID": "P123",
                                                           "study date": "20240501"}
    for identify in (False, True):
        pdf = tmp_path / f"report_{identify}.pdf"
        command = ["report", str(tmp_path / "study"), "--pdf", str(pdf), "--slices", "0", "--methods", "gradcam",
                   "--weights", str(random_checkpoint.path), "--device", "cpu"]
        assert main(command + (["--identify"] if identify else [])) == 0, capsys.readouterr().err
        text = " ".join(page.extract_text() for page in PdfReader(str(pdf)).pages)
        assert ("Doe^Jane" in text) is identify and ("P123" in text) is identify
        assert "study_s5" in text
