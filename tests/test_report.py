"""The PDF report (app/report.py) from a Study filled in the test: pages, text, images, atomic writing.
The demo model's report (CLI against the viewer's export) is checked in test_viewer_model.py."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest
from pypdf import PdfReader

from app.reader import Notes
from app.drawing import axial_image
from app.report import FindingPage, ReportInputs, maps_needed, panel_image, write_report
from app.study import Study, grey_window
from tests.conftest import write_nifti
from xnet_core import DISCLAIMER
from xnet_core.errors import Cancelled, XNetError
from xnet_core.preprocess import prepare
from xnet_core.volume import load_volume

SHAPE = (60, 70, 12)


@dataclass
class FakeResult:
    """What Study.add_explanation reads from a SliceExplanation."""

    method: str
    z: int
    status: str
    map: np.ndarray | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> dict:
        return {"z": self.z, "method": self.method, "status": self.status, "target": "predicted",
                **({"num_samples": 50, "kernel_size": 6, "seed": 0, "n_segments": 9} if self.method == "lime"
                   else {"layer": "decoders.1"})}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    rng = np.random.default_rng(0)
    data = np.zeros(SHAPE, np.float32)
    data[8:52, 8:62, :] = rng.uniform(60, 100, (44, 54, SHAPE[2]))
    path = write_nifti(tmp_path_factory.mktemp("scan") / "case_T1w.nii.gz", data)
    volume = load_volume(path)
    result = Study(volume, prepare(volume))
    probabilities = np.zeros(SHAPE, np.float32)
    probabilities[10:20, 30:40, 4:8] = 0.9  # one lesion on slices 4-7, on the patient's left (low x in RAS)
    for z in range(SHAPE[2]):
        result.set_probabilities(z, probabilities[:, :, z])
    for z in range(4, 8):
        heat = np.zeros(SHAPE[:2], np.float32)
        heat[12:18, 32:38] = 1.0 + z
        result.add_explanation(FakeResult("gradcam", z, "ok", heat))
        result.add_explanation(FakeResult("gradcampp", z, "ok", heat * 2))
    result.add_explanation(FakeResult("lime", 5, "ok", np.where(heat > 0, 0.5, -0.1).astype(np.float32)))
    result.add_explanation(FakeResult("gradcam", 9, "no lesion predicted on this slice", None))
    return result


@pytest.fixture(autouse=True)
def _application(qapp) -> None:
    """Text on a QPainter needs a (offscreen) QGuiApplication, as in ``xnet report``."""


def _inputs(study: Study, slices: list[int], **extra) -> ReportInputs:
    model = {"file": "xnet-test.pt", "sha256": "ab" * 32, "training_data": "none (test)", "intended_use": "tests",
             "status": "INTERIM: held-out mean Dice 0.5 is below the bar"}
    return ReportInputs(study=study, slices=slices, methods=extra.pop("methods", ["gradcam", "gradcampp", "lime"]),
                        levels=grey_window(study.volume.data), model=model, device="cpu", precision="fp32", **extra)


def _text(path) -> list[str]:
    """Each page's text with white space normalised (Qt's PDF separates words with tabs)."""
    return [" ".join(page.extract_text().split()) for page in PdfReader(str(path)).pages]


def test_report_pages_text_and_figures(study, tmp_path) -> None:
    reader = np.zeros(SHAPE, np.uint8)
    reader[12:22, 30:40, 5:8] = 1
    notes = Notes("Chronic infarct, left.", {5: "Rim seen by both."})
    path = write_report(_inputs(study, [5, 9], reader_mask=reader, reader_name="mine.nii.gz", notes=notes),
                        tmp_path / "report.pdf")
    pages = _text(path)
    assert len(pages) == 3  # the summary and one page per slice
    first = pages[0]
    assert DISCLAIMER in first and "ab" * 32 in first and "xnet-test.pt" in first
    assert "Model status: INTERIM: held-out mean Dice 0.5 is below the bar" in first
    assert "1 finding(s) of at least 0.1 ml" in first and "0.40 ml" in first  # 10 x 10 x 4 voxels of 1 mm
    assert "Dice" in first and "mine.nii.gz" in first and "Chronic infarct, left." in first
    assert "Exported slices (z): 5, 9" in first
    slice_page = pages[1]
    assert "Slice z 5" in slice_page and "Rim seen by both." in slice_page
    assert "9 segments" in slice_page and "layer decoders.1" in slice_page
    assert "0 – 8" in slice_page  # Grad-CAM's one scale over its slices (maxima 5..8)
    assert "Slice z 9" in pages[2] and "no lesion predicted on this slice" in pages[2]
    for text in pages:
        assert "Page" in text and DISCLAIMER in text


def test_panel_image_is_the_viewers_radiological_section(study) -> None:
    inputs = _inputs(study, [5])
    image = panel_image(inputs, "segmentation", 5)
    assert image.shape == (SHAPE[1], SHAPE[0], 3)  # rows: y (anterior at the top), columns: x
    red, green = image[..., 0].astype(int), image[..., 1].astype(int)
    lesion_rows, lesion_columns = np.nonzero(red > green + 40)
    # Radiological display reverses x: RAS x 10..19 lands in columns 40..49; y 30..39 in rows 30..39.
    assert lesion_columns.min() >= SHAPE[0] - 20 and lesion_columns.max() <= SHAPE[0] - 11
    assert lesion_rows.min() >= SHAPE[1] - 40 and lesion_rows.max() <= SHAPE[1] - 31
    neurological = panel_image(_inputs(study, [5], radiological=False), "segmentation", 5)
    np.testing.assert_array_equal(neurological, image[:, ::-1])


def test_maps_are_drawn_inside_the_brain_only_and_the_caption_says_what_lies_outside(tmp_path) -> None:
    """As in the viewer: a map is drawn inside the brain of the model's input, and a map with 10 % or more
    of its energy outside says so under its panel."""
    rng = np.random.default_rng(1)
    data = np.zeros(SHAPE, np.float32)
    data[8:52, 8:62, :] = rng.uniform(60, 100, (44, 54, SHAPE[2]))
    volume = load_volume(write_nifti(tmp_path / "wide_T1w.nii.gz", data))
    wide = Study(volume, prepare(volume))
    probabilities = np.zeros(SHAPE, np.float32)
    probabilities[20:30, 30:40, 5] = 0.9
    for z in range(SHAPE[2]):
        wide.set_probabilities(z, probabilities[:, :, z])
    wide.add_explanation(FakeResult("gradcam", 5, "ok", np.ones(SHAPE[:2], np.float32)))  # the whole window
    brain = axial_image(wide.model_input.brain_mask[:, :, 5] > 0, True)
    drawn = panel_image(_inputs(wide, [5], methods=["gradcam"]), "gradcam", 5).astype(int)
    plain = panel_image(_inputs(wide, [5], methods=[]), "gradcam", 5).astype(int)
    assert brain.any() and not brain.all()
    np.testing.assert_array_equal(drawn[~brain], plain[~brain])
    assert (np.abs(drawn - plain).sum(axis=-1)[brain] > 0).mean() > 0.9
    outside = 1 - (wide.model_input.brain_mask[:, :, 5] > 0).mean()
    page = _text(write_report(_inputs(wide, [5], methods=["gradcam"]), tmp_path / "wide.pdf"))[1]
    assert f"{outside:.0%} of this map lies outside the brain (not drawn)" in page


def test_lime_left_out_and_cam_scales_need_every_lesion_slice(study, tmp_path) -> None:
    needed = maps_needed(study, [9], ["gradcam", "lime"])
    assert needed == {"gradcam": [4, 5, 6, 7, 9], "lime": [9]}
    path = write_report(_inputs(study, [5], methods=["gradcam", "gradcampp"]), tmp_path / "nolime.pdf")
    pages = _text(path)
    assert "Left out to save time: LIME" in pages[0] and "left out of this report" in pages[1]


def test_failed_or_cancelled_export_leaves_the_old_file(study, tmp_path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"the previous report")
    with pytest.raises(Cancelled):
        write_report(_inputs(study, [4, 5, 6]), path, should_cancel=lambda: True)
    assert path.read_bytes() == b"the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.pdf"]  # no temporary file left behind
    with pytest.raises(XNetError, match="does not exist"):
        write_report(_inputs(study, [4]), tmp_path / "missing" / "r.pdf")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(XNetError, match="permission"):
            write_report(_inputs(study, [4]), locked / "r.pdf")
    finally:
        locked.chmod(0o700)


def test_pages_are_small(study, tmp_path) -> None:
    path = write_report(_inputs(study, list(range(4, 8))), tmp_path / "size.pdf")
    assert path.stat().st_size / 5 < 1_000_000


def test_minimum_finding_size_changes_the_report_not_the_mask(study, tmp_path) -> None:
    speckled = Study(study.volume, study.model_input)
    probabilities = study.probabilities.copy()
    probabilities[40, 60, 2] = 0.7  # a one-voxel speck, 0.001 ml
    for z in range(SHAPE[2]):
        speckled.set_probabilities(z, probabilities[:, :, z])
    mask_before = speckled.mask().copy()
    rows = speckled.lesion_rows()
    assert [r["number"] for r in rows] == [1, 2] and rows[0]["mean_probability"] == pytest.approx(0.9)
    heat = np.zeros(SHAPE[:2], np.float32)
    heat[12:18, 32:38] = 3.0
    finding = FindingPage(1, rows[0], 5, (speckled.mask_slice(5) > 0).astype(np.uint8), {"gradcam": heat},
                          {"gradcam": "ok", "gradcampp": "the chosen lesion does not reach this slice"},
                          {"gradcam": {"layer": "decoders.1", "target": "lesion"}})
    texts = {}
    for limit in (0.1, 0.0):
        path = write_report(_inputs(speckled, [5], min_lesion_ml=limit, findings=[finding]),
                            tmp_path / f"findings{limit}.pdf")
        texts[limit] = _text(path)
    default, everything = texts[0.1], texts[0.0]
    assert "1 finding(s) of at least 0.1 ml" in default[0] and "+ 1 smaller component, 0.00 ml in all" in default[0]
    assert "2 finding(s) of at least 0 ml" in everything[0] and "smaller component" not in everything[0]
    assert "0.40 ml of lesion" in default[0] and "0.40 ml of lesion" in everything[0]  # the total counts all
    np.testing.assert_array_equal(speckled.mask(), mask_before)
    assert len(default) == 3 and "Finding 1: 0.40 ml, mean probability 0.90" in default[2]
    assert "target: finding 1 alone" in default[2] and "does not reach this slice" in default[2]


def test_the_registration_qc_verdict_in_the_status_bar_and_the_report(qapp) -> None:
    """The viewer's status label and the report's line give the QC's verdict, not only the similarity."""
    from app.controls import Controls
    from app.report import registration_line

    qc = {"brain_volume_ml": 1500.0, "brain_dice": 0.9, "template_brain_covered": 0.97, "brain_outside_template": 0.03,
          "edge_alignment": 0.62, "outline_alignment": 0.7, "score": 1.2, "passed": True, "problems": []}
    summary = {"applied": True, "method": "affine", "similarity": 0.38, "seconds": 9.0, "warning": None,
               "from_cache": False, "qc": qc, "template_to_native_ras": np.eye(4).tolist()}
    failed = {**summary, "warning": "the registration to the template looks wrong: it is shifted.",
              "qc": {**qc, "passed": False, "problems": ["it is shifted"]}}
    controls = Controls({}, "inferno", 0.45)
    controls.show_registration(summary, skipped=False)
    assert controls.registration_label.text() == "registered · QC passed"
    assert "similarity 0.38 (reported only)" in controls.registration_label.toolTip()
    controls.show_registration(failed, skipped=False)
    label = controls.registration_label
    assert "QC FAILED" in label.text() and "it is shifted" in label.toolTip()
    line, failed_line = registration_line(summary, "scan"), registration_line(failed, "scan")
    assert "registration QC passed: the scan's brain covers 97% of the template's brain" in line
    assert "registration QC FAILED" in failed_line and "WARNING" in failed_line

