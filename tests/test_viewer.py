"""The viewer window without a model (app/window.py) on a tiny LPS-stored scan, so the flip and the readout are checked
against the file's own voxel order, not against the RAS copy the viewer is built on."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, QSettings, QStandardPaths, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from app.main import main
from app.reader import ReaderRead, notes_path_for
from app.reader_tools import recovery_folder
from app.window import ViewerWindow
from xnet_core import DISCLAIMER, __version__
from xnet_core.image import Volume
from xnet_core.volume import load_volume

SHAPE = (6, 5, 7)  # i, j, k as stored; the RAS volume has the same shape (LPS only flips axes)
LPS_AFFINE = np.array([  # i → patient's left, j → posterior, k → superior; non-isotropic voxels
    [-2.0, 0.0, 0.0, 10.0],
    [0.0, -3.0, 0.0, 20.0],
    [0.0, 0.0, 4.0, -30.0],
    [0.0, 0.0, 0.0, 1.0],
])


@pytest.fixture(autouse=True)
def _qt_test_mode(monkeypatch) -> list[str]:
    """Qt's test folders, default settings, no recovery copies left from other tests, and the
    unsaved-changes question answered Discard (returned list: the questions asked)."""
    QStandardPaths.setTestModeEnabled(True)
    QSettings().clear()  # settings live in Qt's test folder; each test starts from the defaults
    shutil.rmtree(recovery_folder(), ignore_errors=True)
    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return QMessageBox.StandardButton.Discard

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


@pytest.fixture
def stored(tmp_path) -> tuple[np.ndarray, str]:
    """A scan whose every voxel value is unique: ``100 * i + 10 * j + k`` in the file's own order."""
    i, j, k = np.indices(SHAPE)
    array = (100 * i + 10 * j + k).astype(np.float32)
    path = tmp_path / "tiny_lps.nii.gz"
    nib.save(nib.Nifti1Image(array, LPS_AFFINE), path)
    return array, str(path)


@pytest.fixture
def volume(stored) -> Volume:
    return load_volume(stored[1])


@pytest.fixture
def window(qtbot, volume) -> ViewerWindow:
    win = ViewerWindow(volume, None)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def test_window_opens_on_the_middle_slice(window):
    assert window.isVisible()
    assert window.current_slice == SHAPE[2] // 2
    assert window.controls.slider.value() == SHAPE[2] // 2
    assert "tiny_lps" in window.windowTitle() and __version__ in window.windowTitle()


def test_displayed_image_is_the_radiologically_flipped_slice(window, stored):
    array, _ = stored
    z = window.current_slice
    shown = window.panels['segmentation'].scan_item.image  # [column, row], rows drawn upwards
    # Radiological: column c must hold the voxel nearest the patient's right. In this LPS file that is
    # stored i = c, and row r (anterior at the top) is stored j = n_j - 1 - r.
    np.testing.assert_array_equal(shown, array[:, ::-1, z])
    np.testing.assert_array_equal(shown, window.volume.data[::-1, :, z])


def test_voxel_aspect_follows_voxel_sizes(window):
    transform = window.panels['segmentation'].scan_item.transform()
    assert (transform.m11(), transform.m22()) == pytest.approx((2.0, 3.0))
    assert window.panels['segmentation'].view_box.state["aspectLocked"] == 1.0


def test_grey_window_is_fixed_across_slices(window, volume):
    foreground = volume.data[volume.data > volume.data.min()]  # background left out
    expected = tuple(np.percentile(foreground, [1, 99.5]))
    for z in (0, SHAPE[2] - 1):
        window.set_slice(z)
        assert tuple(window.panels['segmentation'].scan_item.levels) == pytest.approx(expected)


def test_set_slice_and_keys_move_and_clamp(window, qtbot):
    last = SHAPE[2] - 1
    window.set_slice(2)
    assert window.current_slice == 2
    qtbot.keyClick(window, Qt.Key.Key_Up)
    assert window.current_slice == 3
    qtbot.keyClick(window.panels['segmentation'].graphics_view, Qt.Key.Key_Down)  # focus on the image: still reaches the window
    assert window.current_slice == 2
    qtbot.keyClick(window, Qt.Key.Key_PageUp)
    assert window.current_slice == last
    qtbot.keyClick(window, Qt.Key.Key_Up)
    assert window.current_slice == last
    qtbot.keyClick(window, Qt.Key.Key_PageDown)
    assert window.current_slice == 0
    window.set_slice(-5)
    assert window.current_slice == 0
    window.set_slice(99)
    assert window.current_slice == last
    window.controls.slider.setValue(1)
    assert window.current_slice == 1
    np.testing.assert_array_equal(window.panels['segmentation'].scan_item.image, window.volume.data[::-1, :, 1])


def _wheel(window: ViewerWindow, angle: int) -> None:
    viewport = window.panels['segmentation'].graphics_view.viewport()
    centre = QPointF(viewport.rect().center())
    event = QWheelEvent(centre, viewport.mapToGlobal(centre), QPoint(), QPoint(0, angle),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(viewport, event)


def test_mouse_wheel_steps_slices(window):
    window.set_slice(3)
    _wheel(window, 2 * 120)  # two notches up: two slices superior
    assert window.current_slice == 5
    _wheel(window, -60)  # half a notch (a trackpad) does nothing yet ...
    assert window.current_slice == 5
    _wheel(window, -60)  # ... the other half steps one slice
    assert window.current_slice == 4


def test_readout_gives_z_source_indices_mm_and_value(window, stored):
    array, _ = stored
    n_i, n_j, _ = SHAPE
    x, y, z = 1, 3, 4  # RAS voxel; in the LPS file: i = n_i - 1 - x, j = n_j - 1 - y, k = z
    i, j, k = n_i - 1 - x, n_j - 1 - y, z
    mm = LPS_AFFINE @ [i, j, k, 1]
    text = window.readout((x, y, z))
    assert f"slice z {z}" in text
    assert f"({i}, {j}, {k})" in text
    assert f"({mm[0]:.1f}, {mm[1]:.1f}, {mm[2]:.1f}) mm" in text
    assert f"value {array[i, j, k]:.6g}" in text


def test_readout_under_the_mouse_undoes_the_flip(window, stored):
    array, _ = stored
    window.set_slice(2)
    column, row = 0, SHAPE[1] - 1  # top-left of the screen: patient's right, anterior
    window._on_hover(window.panels['segmentation'].ras_xy_at(QPointF(column + 0.5, row + 0.5)))
    i, j, k = column, SHAPE[1] - 1 - row, 2  # LPS file: rightmost is i = 0 ... and anterior is j = 0
    assert window.panels['segmentation'].ras_xy_at(QPointF(column + 0.5, row + 0.5)) == (SHAPE[0] - 1, SHAPE[1] - 1)
    assert f"({i}, {j}, {k})" in window.controls.readout_label.text()
    assert f"value {array[i, j, k]:.6g}" in window.controls.readout_label.text()
    window.step_slice(1)  # the readout follows the slice while the mouse rests
    assert f"({i}, {j}, 3)" in window.controls.readout_label.text()
    window._on_hover(None)
    assert "(i, j, k)" not in window.controls.readout_label.text()


def test_orientation_letters_sit_on_the_radiological_edges(window):
    view = window.panels['segmentation'].graphics_view.geometry()
    where = {letter: label.geometry().center() for letter, label in window.panels['segmentation'].letters.items()}
    assert all(window.panels['segmentation'].letters[letter].isVisible() for letter in "RLAP")
    assert where["R"].x() < view.left() and where["L"].x() > view.right()
    assert where["A"].y() < view.top() and where["P"].y() > view.bottom()


def test_disclaimer_banner_is_visible(window):
    assert window.controls.banner.isVisible()
    assert DISCLAIMER in window.controls.banner.text()
    assert window.controls.banner.height() > 0


def test_banner_names_intended_use_and_an_interim_status():
    from app.controls import banner_text

    text = banner_text({"intended_use": "T1 scans.", "status": "INTERIM: held-out mean Dice 0.6"})
    assert text.startswith(DISCLAIMER) and "Model: T1 scans." in text and "Status: INTERIM" in text
    assert banner_text({}) == DISCLAIMER


def test_main_opens_the_window_and_runs_the_loop(qapp, stored, monkeypatch):
    shown = []

    def fake_exec(_app=None) -> int:
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, ViewerWindow) and w.isVisible()]
        shown.extend((w.volume.name, w.model.mirror) for w in windows)
        for w in windows:
            w.close()
        return 0

    monkeypatch.setattr(QApplication, "exec", fake_exec)
    assert main([stored[1], "--weights", "x.pt", "--device", "cpu"]) == 0
    assert main([stored[1], "--weights", "x.pt", "--device", "cpu", "--no-mirror"]) == 0
    assert shown == [("tiny_lps", True), ("tiny_lps", False)]


def test_main_bad_scan_exits_2_with_one_line(qapp, capsys):
    before = [w for w in QApplication.topLevelWidgets() if isinstance(w, ViewerWindow)]
    assert main(["/nonexistent.nii.gz"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("xnet-viewer: error: /nonexistent.nii.gz")
    assert "Traceback" not in captured.err and captured.out == ""
    assert [w for w in QApplication.topLevelWidgets() if isinstance(w, ViewerWindow)] == before


def test_real_mouse_move_updates_the_readout(window, qtbot):
    window.set_slice(2)
    scene_pos = window.panels['segmentation'].scan_item.mapToScene(QPointF(0.5, SHAPE[1] - 0.5))  # top-left voxel on screen
    qtbot.mouseMove(window.panels['segmentation'].graphics_view.viewport(), window.panels['segmentation'].graphics_view.mapFromScene(scene_pos))
    qtbot.waitUntil(lambda: "(0, 0, 2)" in window.controls.readout_label.text(), timeout=1000)


def test_load_warnings_are_shown(qtbot, tmp_path):
    array = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    array[0, 0, 0] = np.nan
    path = tmp_path / "with_nan.nii"
    nib.save(nib.Nifti1Image(array, LPS_AFFINE), path)
    win = ViewerWindow(load_volume(path), None)
    qtbot.addWidget(win)
    win.show()
    assert win.controls.warnings_label.isVisible() and "NaN" in win.controls.warnings_label.text()


def test_only_the_missing_model_is_reported_for_a_clean_scan(window):
    assert window.controls.warnings_label.text() == "No model loaded: the scan is shown without segmentation or explanations."


def test_coronal_and_sagittal_sections_with_letters_and_readout(window, stored):
    array, _ = stored
    panel = window.panels["segmentation"]
    window.set_plane("coronal")
    y = window.plane_index
    assert y == SHAPE[1] // 2
    np.testing.assert_array_equal(panel.scan_item.image, window.volume.data[::-1, y, :])  # [x reversed, z]
    assert [panel.letters[k].text() for k in "RLAP"] == ["R", "L", "S", "I"]
    assert panel.voxel_sizes == pytest.approx((2.0, 4.0))
    window.step_slice(1)
    assert window.plane_index == y + 1 and window.current_slice == SHAPE[2] // 2  # axial z unchanged
    window._on_hover((1, 4))  # section coordinates: x = 1, z = 4
    x, z = 1, 4
    i, j, k = SHAPE[0] - 1 - x, SHAPE[1] - 1 - (y + 1), z
    assert f"({i}, {j}, {k})" in window.controls.readout_label.text()
    assert f"value {array[i, j, k]:.6g}" in window.controls.readout_label.text()
    window._on_hover(None)
    window.set_plane("sagittal")
    np.testing.assert_array_equal(panel.scan_item.image, window.volume.data[window.plane_index, ::-1, :])
    assert [panel.letters[k].text() for k in "RLAP"] == ["A", "P", "S", "I"]
    window.set_plane("axial")
    assert [panel.letters[k].text() for k in "RLAP"] == ["R", "L", "A", "P"]


def test_sequences_on_the_same_grid_become_backgrounds(window, stored, tmp_path):
    array, _ = stored
    other = tmp_path / "tiny_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image(1000 - array, LPS_AFFINE), other)
    assert window.add_sequence(load_volume(other))
    window.controls.background_box.setCurrentIndex(1)
    z = window.current_slice
    np.testing.assert_array_equal(window.panels["gradcam"].scan_item.image, (1000 - window.volume.data)[::-1, :, z])
    elsewhere = tmp_path / "shifted.nii.gz"
    shifted = LPS_AFFINE.copy()
    shifted[0, 3] += 500  # another grid that does not even overlap: refused
    nib.save(nib.Nifti1Image(array, shifted), elsewhere)
    assert not window.add_sequence(load_volume(elsewhere))
    assert "does not overlap" in window.last_error


def test_open_a_corrupt_file_shows_the_error_and_keeps_the_scan(window, tmp_path):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    name = window.volume.name
    assert not window.open_scan(str(corrupt))
    assert "corrupt.nii.gz" in window.last_error and window.volume.name == name
    assert window.isVisible()


def test_unreadable_weights_leave_the_scan_with_a_message(qtbot, volume, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    win = ViewerWindow(volume, bad, device="cpu")  # the worker thread loads (and refuses) the weights
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: "Model:" in win.controls.warnings_label.text(), timeout=30_000)
    assert "broken.pt" in win.controls.warnings_label.text() and win.controls.model_label.text() == "no model"
    assert win.panels["segmentation"].scan_item.image is not None  # the scan is still shown
    win.close()


# -- the reader's read -------------------------------------------------------------------------
def test_real_click_in_paint_mode_paints_the_voxel_under_the_mouse(window, qtbot):
    panel = window.panels["segmentation"]
    window.reader.set_brush(1)
    qtbot.keyClick(window, Qt.Key.Key_P)
    assert window.reader.paint_mode and window.reader.read is not None
    z = window.current_slice
    scene_pos = panel.scan_item.mapToScene(QPointF(1.5, 3.5))  # image column 1, row 3
    qtbot.mouseClick(panel.graphics_view.viewport(), Qt.MouseButton.LeftButton,
                     pos=panel.graphics_view.mapFromScene(scene_pos))
    x, y = panel.ras_xy_at(QPointF(1.5, 3.5))
    assert x == SHAPE[0] - 1 - 1 and y == 3  # radiological: image column 1 is RAS x = n - 2
    expected = np.zeros(SHAPE, np.uint8)
    expected[x, y, z] = 1
    np.testing.assert_array_equal(window.reader.read.mask, expected)
    assert panel.reader_item.image is not None and window.panels["lime"].reader_item.image is not None
    window._on_hover((x, y))
    assert "reader lesion" in window.controls.readout_label.text()


def test_paint_undo_redo_save_and_reload_bit_exact(window, qtbot, tmp_path, stored):
    window.set_paint_mode(True)
    reader = window.reader
    reader.set_brush(2)
    z = window.current_slice
    reader.stroke((1.0, 1.0), "start")
    reader.stroke((4.0, 1.0), "move")
    reader.stroke((4.0, 3.0), "finish")
    painted = reader.read.mask.copy()
    assert painted[1:5, 1, z].all() and painted[4, 1:4, z].all() and painted[:, :, z].sum() > 6
    window.set_eraser(True)
    reader.stroke((4.0, 3.0), "start")
    reader.stroke((4.0, 3.0), "finish")
    window.set_eraser(False)
    assert reader.read.mask[4, 3, z] == 0
    window.actions_by_name["undo"].trigger()
    np.testing.assert_array_equal(reader.read.mask, painted)
    window.actions_by_name["undo"].trigger()
    assert reader.read.mask.sum() == 0 and not window.actions_by_name["undo"].isEnabled()
    window.actions_by_name["redo"].trigger()
    np.testing.assert_array_equal(reader.read.mask, painted)
    assert reader.save(str(tmp_path / "my_read.nii.gz")) and not reader.read.dirty
    stored_order = np.asanyarray(nib.load(tmp_path / "my_read.nii.gz").dataobj)
    np.testing.assert_array_equal(stored_order, window.volume.to_source_order(painted))
    np.testing.assert_array_equal(ReaderRead.load(tmp_path / "my_read.nii.gz", window.volume).mask, painted)
    assert not reader.save(stored[1])  # the scan itself is never overwritten
    assert "never overwritten" in window.last_error


def test_notes_round_trip_through_the_panel(window, qtbot, tmp_path):
    panel = window.reader.panel
    panel.study_note.setPlainText("Chronic left MCA infarct.")
    panel.slice_note.setPlainText("Model misses the cortical rim here.")
    z = window.current_slice
    window.step_slice(1)  # a pending note belongs to the slice it was typed on
    assert window.reader.read.notes.slices == {z: "Model misses the cortical rim here."}
    assert panel.slice_note.toPlainText() == "" and "z " + str(z + 1) in panel.slice_note_box.title()
    assert window.reader.save(str(tmp_path / "noted.nii.gz"))
    window.reader.read = None
    assert window.reader.load(str(tmp_path / "noted.nii.gz"))
    window.set_slice(z)
    assert panel.study_note.toPlainText() == "Chronic left MCA infarct."
    assert panel.slice_note.toPlainText() == "Model misses the cortical rim here."
    assert notes_path_for(tmp_path / "noted.nii.gz").exists()


def test_reader_mask_on_another_grid_is_resampled_and_another_space_refused(window, tmp_path, stored):
    array, _ = stored
    fine = LPS_AFFINE.copy()
    fine[:3, :3] /= 2  # half-size voxels, same corner region: the same space on another grid
    fine[:3, 3] -= np.diag(LPS_AFFINE)[:3] / 4
    mask = np.zeros((12, 10, 14), np.uint8)
    mask[4:6, 4:6, 6:8] = 1  # file voxels (2, 2, 3) of the scan
    path = tmp_path / "fine_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, fine), path)
    assert window.reader.load(str(path))
    read = window.reader.read
    assert any("resampled" in m for m in read.messages) and "resampled" in window.reader.panel.source_label.text()
    assert read.path is None  # saving must not replace the user's finer file
    source = window.volume.to_source_order(read.mask)
    assert source[2, 2, 3] == 1 and source.sum() == 1
    elsewhere = LPS_AFFINE.copy()
    elsewhere[0, 3] += 500
    far = tmp_path / "far_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), elsewhere), far)
    assert not window.reader.load(str(far))
    assert "overlaps" in window.last_error and window.reader.read is read


def test_autosave_and_recovery_after_a_crash(qtbot, volume):
    first = ViewerWindow(volume, None)
    qtbot.addWidget(first)
    first.set_paint_mode(True)
    first.reader.stroke((2.0, 2.0), "start")
    first.reader.stroke((2.0, 2.0), "finish")
    first.reader.panel.study_note.setPlainText("before the crash")
    first.reader.panel.flush_notes()
    qtbot.waitUntil(lambda: first.reader.recovery.find(volume) is not None, timeout=5000)  # 1 s after the edit
    first.reader.wait_idle()
    painted = first.reader.read.mask.copy()
    # "Crash": the first window is never closed; the next start finds the copy and offers it.
    second = ViewerWindow(volume, None)
    qtbot.addWidget(second)
    assert second.reader.pending_recovery is not None and second.reader.recovery_box.isVisible()
    assert second.reader.restore_recovery()
    np.testing.assert_array_equal(second.reader.read.mask, painted)
    assert second.reader.read.notes.study == "before the crash" and second.reader.read.dirty
    second.reader.recovery_box.close()
    first.reader.read.saved_revision = first.reader.read.revision  # nothing to ask at teardown


def test_closing_with_unsaved_changes_asks(window, qtbot, _qt_test_mode, monkeypatch):
    window.set_paint_mode(True)
    window.reader.stroke((1.0, 1.0), "start")
    window.reader.stroke((1.0, 1.0), "finish")
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Cancel)
    window.close()
    assert window.isVisible()  # cancelled: nothing lost
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Discard)
    window.close()
    assert not window.isVisible()
