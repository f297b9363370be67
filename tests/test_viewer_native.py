"""Native scans in the viewer (pytest-qt, offscreen): a DICOM folder with two series, sequences on
different grids linked through world coordinates, side by side, and a registered whole-head scan with
the template outline and a report that names the registration."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PySide6.QtCore import QSettings, QStandardPaths

from app.window import ViewerWindow
from tests.test_dicom import _write_series
from xnet_core.assets import DEMO_LESION, DEMO_SCAN, asset_path
from xnet_core.image import Volume
from xnet_core.registration_qc import registration_badge
from xnet_core.sequences import value_at_world
from xnet_core.training.native_cases import native_case, rotation
from xnet_core.volume import load_volume


@pytest.fixture(autouse=True)
def _qt_test_mode() -> None:
    QStandardPaths.setTestModeEnabled(True)
    QSettings().clear()


def _world_function(volume_shape, affine) -> np.ndarray:
    """A smooth function of the world position, so any grid's value at a point is known."""
    voxels = np.indices(volume_shape).reshape(3, -1)
    world = (affine @ np.vstack([voxels, np.ones(voxels.shape[1])]))[:3]
    values = 100 + 2.0 * world[0] - 1.5 * world[1] + 0.8 * world[2]
    return values.reshape(volume_shape).astype(np.float32)


def _volume(shape, affine, name, sequence) -> Volume:
    return Volume(_world_function(shape, affine), affine, nib.Nifti1Header(), affine, shape, name, sequence)


def test_dicom_folder_with_two_series_asks_and_opens_the_pick(qtbot, tmp_path: Path, monkeypatch) -> None:
    _write_series(tmp_path / "study" / "a", series=5, description="t1_mprage_tra")
    _write_series(tmp_path / "study" / "b", series=3, description="t2_flair_tra")
    window = ViewerWindow(load_volume(tmp_path / "study", series="3"), None)
    qtbot.addWidget(window)
    offered: list[list[str]] = []

    def pick(parent, series):
        offered.append([info.label() for info in series])
        return next(info.uid for info in series if info.number == 5)

    monkeypatch.setattr("app.files.pick_series_dialog", pick)
    assert window.open_scan(str(tmp_path / "study"))
    assert len(offered) == 1 and len(offered[0]) == 2 and "t2_flair_tra" in " ".join(offered[0])
    assert window.volume.name == "study_s5" and window.volume.description == "t1_mprage_tra"
    monkeypatch.setattr("app.files.pick_series_dialog", lambda parent, series: None)  # Cancel
    assert not window.open_scan(str(tmp_path / "study")) and window.volume.name == "study_s5"


def test_sequences_on_different_grids_share_world_points_and_sit_side_by_side(qtbot) -> None:
    t1_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    t1_affine[:3, 3] = (-20, -24, -18)
    t1 = _volume((40, 48, 36), t1_affine, "patient_T1w", "T1w")
    flair_affine = rotation((10.0, 0.0, 15.0)) @ np.diag([2.0, 2.0, 4.5, 1.0])
    flair_affine[:3, 3] = (-22, -26, -20)
    flair = _volume((24, 28, 10), flair_affine, "patient_FLAIR", "FLAIR")
    window = ViewerWindow(t1, None)
    qtbot.addWidget(window)
    assert window.add_sequence(flair)
    x, y, z = 20, 24, 18
    world = t1_affine @ np.array([x, y, z, 1.0])
    readout = window.readout((x, y, z))
    assert f"RAS ({world[0]:.1f}, {world[1]:.1f}, {world[2]:.1f}) mm" in readout
    flair_value = value_at_world(flair, world[:3])
    assert f"patient_FLAIR {flair_value:.6g}" in readout
    assert abs(flair_value - t1.data[x, y, z]) < 0.5  # the same world point, the same (linear) value
    window.controls.background_box.setCurrentIndex(1)  # FLAIR under the overlays, resampled onto the T1's grid
    assert abs(float(window._background_volume().data[x, y, z]) - t1.data[x, y, z]) < 0.5
    window.actions_by_name["side"].setChecked(True)
    assert not window.side_panel.isHidden() and window.panels["gradcam"].isHidden()
    assert "patient_T1w" in window.side_panel.title.text()  # the other sequence: the model input
    left, right = window.panels["segmentation"].scan_item.image, window.side_panel.scan_item.image
    covered = left != 0  # the FLAIR's slab covers part of the T1's slice
    assert covered.sum() > 100
    np.testing.assert_allclose(right[covered], left[covered], atol=0.5)
    window.actions_by_name["side"].setChecked(False)
    assert window.side_panel.isHidden() and not window.panels["gradcam"].isHidden()
    assert window.set_model_input("patient_FLAIR")  # the FLAIR feeds the model; the T1 becomes a background
    assert window.volume is flair and list(window.backgrounds) == ["patient_T1w"]
    assert window.backgrounds["patient_T1w"].shape == flair.shape
    world = flair.affine @ np.array([12, 14, 5, 1.0])
    assert f"patient_T1w {value_at_world(t1, world[:3]):.6g}" in window.readout((12, 14, 5))


@pytest.fixture(scope="module")
def native_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = nib.load(asset_path(DEMO_SCAN)).get_fdata(dtype=np.float32)
    mask = (np.asarray(nib.load(asset_path(DEMO_LESION)).dataobj) > 0).astype(np.uint8)
    case = native_case(image, mask)
    path = tmp_path_factory.mktemp("native-viewer") / "native_T1w.nii.gz"
    nib.save(nib.Nifti1Image(case.image, case.affine), path)
    return path


def test_registered_scan_outline_and_report(qtbot, demo_checkpoint, native_scan, tmp_path, monkeypatch) -> None:
    from pypdf import PdfReader

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    window = ViewerWindow(load_volume(native_scan), demo_checkpoint, device="cpu")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.model.scan is not None, timeout=300_000)
    summary = window.model.scan.registration_summary()
    label = window.controls.registration_label
    assert summary["applied"] and (label.text(), label.toolTip()) == registration_badge(summary)
    assert window.model.template_outline is not None and window.model.template_outline.shape == window.volume.shape
    window.actions_by_name["template"].setChecked(True)
    assert window.panels["segmentation"].template_item.image is not None
    window.actions_by_name["template"].setChecked(False)
    assert window.panels["segmentation"].template_item.image is None
    qtbot.waitUntil(lambda: window.study.segmentation_complete, timeout=600_000)  # a hang guard
    z = int(np.argmax(window.study.lesion_area_per_slice_mm2()))
    window.set_slice(z)
    export = window.export_report(str(tmp_path / "native.pdf"), choice="current", lime=False)
    qtbot.waitUntil(lambda: export.finished, timeout=600_000)
    pages = [" ".join(page.extract_text().split()) for page in PdfReader(str(tmp_path / "native.pdf")).pages]
    assert f"similarity {summary['similarity']:.3f}" in pages[0] and "registered to the MNI template" in pages[0]
    assert "registration QC passed" in pages[0] or "registration QC FAILED" in pages[0]
    assert f"Slice z {z}" in pages[1] and "model input: native_T1w (T1w)" in pages[1]
    window.close()
