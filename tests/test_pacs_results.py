"""Results as DICOM (xnet_core.dicom_results): the SEG lands on the source grid voxel for voxel (axial and
oblique, checked through highdicom's own geometry), names the algorithm and the checkpoint, copies the
patient and study, carries the disclaimer; the Encapsulated PDF holds the very PDF; Secondary Captures."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread

from tests.conftest import write_nifti
from tests.dicom_series import PATIENT, phantom, rotation, write_series
from xnet_core import DISCLAIMER
from xnet_core.dicom_results import (UID_ROOT, Algorithm, read_encapsulated_pdf, read_seg_masks, source_series,
                                     write_encapsulated_pdf, write_secondary_captures, write_seg)
from xnet_core.errors import XNetError
from xnet_core.volume import load_volume

ALGORITHM = Algorithm("X-Net", "0.1.0", "ab" * 32, "xnet-demo.pt", 0.5)
SPACING = (0.9, 1.1, 2.0)


def _seg_on_ras_grid(path: Path, volume) -> dict[int, np.ndarray]:
    """The SEG's segments resampled by nearest voxel onto ``volume``'s RAS grid through highdicom's Volume
    geometry (LPS affine of [slice, row, column]): independent of our own frame placement."""
    seg = hd.seg.segread(path)
    seg_volume = seg.get_volume(combine_segments=False)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    index_to_index = np.linalg.inv(seg_volume.affine) @ lps_to_ras @ volume.affine  # our RAS index -> SEG index
    grid = np.indices(volume.shape).reshape(3, -1)
    seg_index = np.rint(index_to_index @ np.vstack([grid, np.ones(grid.shape[1])]))[:3].astype(int)
    inside = np.all((seg_index >= 0) & (seg_index < np.array(seg_volume.array.shape[:3])[:, None]), axis=0)
    out = {}
    for n, number in enumerate(seg.get_segment_numbers()):
        values = np.zeros(grid.shape[1], np.uint8)
        values[inside] = seg_volume.array[seg_index[0, inside], seg_index[1, inside], seg_index[2, inside], n]
        out[number] = values.reshape(volume.shape)
    return out


@pytest.mark.parametrize("axes", [None, rotation(20, 25)], ids=["axial", "oblique"])
def test_seg_equals_the_mask_on_the_source_grid(tmp_path: Path, axes) -> None:
    data, blob = phantom()
    write_series(tmp_path / "mr", data, spacing=SPACING, axes=axes)
    volume = load_volume(tmp_path / "mr")
    model = volume.to_ras(blob)
    reader = np.roll(model, 2, axis=0)
    source = source_series(volume)
    path = write_seg(volume, source, model, tmp_path / "seg.dcm", ALGORITHM, reader_mask=reader)
    ours = read_seg_masks(path, volume)
    assert np.array_equal(ours[1][1], model) and np.array_equal(ours[2][1], reader)
    theirs = _seg_on_ras_grid(path, volume)
    assert np.array_equal(theirs[1], model) and np.array_equal(theirs[2], reader)
    assert model.sum() > 50


def test_seg_names_the_algorithm_references_the_source_and_carries_the_disclaimer(tmp_path: Path) -> None:
    data, blob = phantom()
    info = write_series(tmp_path / "mr", data, spacing=SPACING)
    volume = load_volume(tmp_path / "mr")
    path = write_seg(volume, source_series(volume), volume.to_ras(blob), tmp_path / "seg.dcm", ALGORITHM)
    seg = dcmread(path)
    assert seg.Modality == "SEG" and "RESEARCH USE ONLY" in seg.SeriesDescription
    assert "Research" in seg.ContentDescription or "RESEARCH" in seg.ContentDescription
    assert seg.SeriesInstanceUID.startswith(UID_ROOT) and seg.SOPInstanceUID.startswith(UID_ROOT)
    assert seg.StudyInstanceUID == info["study_uid"]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        assert str(seg.get(keyword)) == PATIENT[keyword]
    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Morphologically Abnormal Structure"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "55641003"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "X-Net" and algorithm.AlgorithmVersion == "0.1.0"
    assert "ab" * 32 in algorithm.AlgorithmParameters
    assert len(seg.SegmentSequence) == 1  # no reader, no second segment
    assert np.array_equal(read_seg_masks(path, volume)[1][1], volume.to_ras(blob))
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in info["paths"]}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == info["series_uid"]


def test_encapsulated_pdf_holds_the_same_pdf_and_secondary_captures_the_pages(tmp_path: Path) -> None:
    data, _ = phantom((16, 12, 4))
    info = write_series(tmp_path / "mr", data)
    volume = load_volume(tmp_path / "mr")
    source = source_series(volume)
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4\n% a tiny test file of odd length\n%%EOF\n!")
    path = write_encapsulated_pdf(pdf, source, tmp_path / "pdf.dcm")
    assert read_encapsulated_pdf(path) == pdf.read_bytes()
    ds = dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and ds.StudyInstanceUID == info["study_uid"]
    assert "RESEARCH USE ONLY" in ds.SeriesDescription and "RESEARCH USE ONLY" in ds.DocumentTitle
    assert ds.PatientID == PATIENT["PatientID"] and ds.SeriesInstanceUID.startswith(UID_ROOT)
    pages = [np.full((40, 30, 3), value, np.uint8) for value in (10, 200)]
    (tmp_path / "sc").mkdir()
    written = write_secondary_captures(pages, source, tmp_path / "sc", ["slice z 1.", "slice z 2."])
    captures = [dcmread(p) for p in written]
    assert [c.InstanceNumber for c in captures] == [1, 2] and len({c.SeriesInstanceUID for c in captures}) == 1
    assert np.array_equal(captures[1].pixel_array, pages[1])
    assert all(DISCLAIMER in c.ImageComments and c.StudyInstanceUID == info["study_uid"] for c in captures)
    assert "RESEARCH USE ONLY" in captures[0].SeriesDescription


def test_dicom_results_need_a_dicom_source(tmp_path: Path) -> None:
    volume = load_volume(write_nifti(tmp_path / "scan.nii.gz", np.random.default_rng(0).random((8, 8, 4))))
    with pytest.raises(XNetError, match="need a DICOM series as input"):
        source_series(volume)


def test_the_source_series_is_found_in_a_folder_of_several(tmp_path: Path) -> None:
    data, blob = phantom((20, 16, 6))
    write_series(tmp_path / "study" / "a", data, series_number=3)
    other = write_series(tmp_path / "study" / "b", data[:, :, :4], series_number=4, axes=rotation(0, 90))
    volume = load_volume(tmp_path / "study", series="4")
    source = source_series(volume)  # no series named: the one whose images lie on the volume's grid
    assert {ds.SeriesInstanceUID for ds in source.datasets} == {other["series_uid"]} and source.slices == [0, 1, 2, 3]
