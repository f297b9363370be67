"""The viewer with the demo model (pytest-qt, offscreen): background segmentation of the slice on
screen first, Grad-CAM/Grad-CAM++ following, overlays, threshold, window/level, orientation, LIME."""

from __future__ import annotations

import numpy as np
import pytest
import nibabel as nib
from PySide6.QtCore import QPointF, QSettings, QStandardPaths, Qt
from PySide6.QtGui import QImage

from app.cli import main
from app.window import ViewerWindow
from explain import agreement
from xnet_core import DISCLAIMER, metrics
from explain.engine import ExplainParams, ExplanationEngine
from xnet_core.assets import DEMO_LESION, asset_path, demo_scan_path
from xnet_core.volume import load_volume


# Waiting for the whole demo scan (~50 s on a quiet 2-core CPU) guards against a hang, not speed: a busy CI
# host has taken three times as long.
WHOLE_SCAN_MS = 600_000


@pytest.fixture(scope="module")
def lesion_z() -> int:
    truth = load_volume(asset_path(DEMO_LESION)).data
    return int(np.argmax(truth.sum(axis=(0, 1))))


@pytest.fixture(scope="module")
def window(qapp, demo_checkpoint, tmp_path_factory, lesion_z):
    QStandardPaths.setTestModeEnabled(True)
    QSettings().clear()
    # The disk cache sits where ``xnet`` looks for it under XDG_CACHE_HOME=<viewer-cache> (report test).
    cache_home = tmp_path_factory.mktemp("viewer-cache")
    engine = ExplanationEngine(demo_checkpoint, device="cpu", cache_dir=cache_home / "xnet-viewer" / "explain")
    win = ViewerWindow(load_volume(demo_scan_path()), demo_checkpoint, engine=engine)
    win.model.worker.params = ExplainParams(lime_samples=200)
    win.show()
    win.set_slice(lesion_z)
    yield win
    win.close()


def test_slice_on_screen_is_segmented_and_explained_first(window, qtbot, lesion_z) -> None:
    qtbot.waitUntil(lambda: window.study.segmented[lesion_z], timeout=60_000)
    assert window.study.segmented.sum() < len(window.study.segmented)  # the rest is still to come
    qtbot.waitUntil(lambda: window.study.status("gradcampp", lesion_z) is not None, timeout=60_000)
    assert window.study.status("gradcam", lesion_z) in ("ok", "no lesion predicted on this slice")
    assert "lesion" in window.panels["segmentation"].status_text.toPlainText()


def test_changing_slice_reprioritises(window, qtbot, lesion_z) -> None:
    far = lesion_z + 40
    window.set_slice(far)
    qtbot.waitUntil(lambda: window.study.segmented[far], timeout=30_000)
    window.set_slice(lesion_z)


def test_overlay_toggles(window, qtbot, lesion_z) -> None:
    panel = window.panels["segmentation"]
    assert window.study.mask_slice(lesion_z).any(), "the demo model should find lesion on this slice"
    assert panel.overlay_item.image is not None
    qtbot.keyClick(window, Qt.Key.Key_S)
    assert not window.state.show_segmentation and panel.overlay_item.image is None
    qtbot.keyClick(window, Qt.Key.Key_S)
    assert panel.overlay_item.image is not None
    qtbot.keyClick(window, Qt.Key.Key_O)  # outline instead of fill
    assert panel.overlay_item.image is None and panel.model_outline_item.image is not None
    qtbot.keyClick(window, Qt.Key.Key_O)
    heat = window.panels["gradcam"].overlay_item
    assert heat.image is not None
    qtbot.keyClick(window, Qt.Key.Key_H)
    assert heat.image is None
    qtbot.keyClick(window, Qt.Key.Key_H)
    assert heat.image is not None
    before = window.state.opacity
    qtbot.keyClick(window, Qt.Key.Key_Minus)
    assert window.state.opacity == pytest.approx(before - 0.1) and heat.opacity() == pytest.approx(before - 0.1)


def test_threshold_updates_mask_and_volume_at_once(window, lesion_z) -> None:
    window.set_threshold(0.3)
    low = window.study.mask_slice(lesion_z).sum()
    window.set_threshold(0.9)
    high = window.study.mask_slice(lesion_z).sum()
    assert high <= low
    assert "threshold 0.90" in window.panels["segmentation"].status_text.toPlainText()
    window.set_threshold(0.5)
    assert window.controls.threshold_box.value() == pytest.approx(0.5)


def test_maps_follow_the_threshold(window, qtbot, lesion_z) -> None:
    """Grad-CAM explains the predicted mask: a new threshold drops the old maps and the slice on
    screen is explained again for the new mask."""
    window.set_slice(lesion_z)
    qtbot.waitUntil(lambda: window.study.status("gradcam", lesion_z) == "ok", timeout=60_000)
    window.set_threshold(0.7)
    qtbot.waitUntil(lambda: window.study.details["gradcam"].get(lesion_z, {}).get("threshold") == 0.7,
                    timeout=60_000)
    assert all(d["threshold"] == 0.7 for d in window.study.details["gradcam"].values())
    window.set_threshold(0.5)
    qtbot.waitUntil(lambda: window.study.details["gradcam"].get(lesion_z, {}).get("threshold") == 0.5,
                    timeout=60_000)


def test_window_level_drag_changes_every_panel(window, qtbot) -> None:
    panel = window.panels["gradcam"]
    before = tuple(window.state.levels)
    viewport = panel.graphics_view.viewport()
    centre = viewport.rect().center()
    qtbot.mousePress(viewport, Qt.MouseButton.RightButton, pos=centre)
    for step in range(1, 6):
        qtbot.mouseMove(viewport, centre + type(centre)(10 * step, 0))
    qtbot.mouseRelease(viewport, Qt.MouseButton.RightButton, pos=centre + type(centre)(50, 0))
    after = tuple(window.state.levels)
    assert after[1] - after[0] > before[1] - before[0]  # dragging right widens the window
    assert tuple(window.panels["lime"].scan_item.levels) == pytest.approx(after)
    window._on_hover(None)
    assert f"W {after[1] - after[0]:.4g}" in window.controls.readout_label.text()  # the values are shown
    window.reset_window()
    assert tuple(window.state.levels) == pytest.approx(before)


def test_radiological_toggle_and_readout(window, qtbot, lesion_z) -> None:
    panel = window.panels["segmentation"]
    data = window.volume.data[:, :, lesion_z]
    np.testing.assert_array_equal(panel.scan_item.image, data[::-1, :])
    qtbot.keyClick(window, Qt.Key.Key_R)
    np.testing.assert_array_equal(panel.scan_item.image, data)
    assert panel.letters["R"].text() == "L"  # neurological: the patient's left on the screen's left
    qtbot.keyClick(window, Qt.Key.Key_R)
    xs, ys = np.nonzero(window.study.mask_slice(lesion_z))
    x, y = int(xs[0]), int(ys[0])
    text = window.readout((x, y, lesion_z))
    assert f"p {window.study.probabilities[x, y, lesion_z]:.3f}" in text and "Grad-CAM" in text
    column = window.volume.shape[0] - 1 - x  # radiological column of RAS x
    assert panel.ras_xy_at(QPointF(column + 0.5, y + 0.5)) == (x, y)


def test_lime_starts_and_cancels(window, qtbot, lesion_z) -> None:
    qtbot.waitUntil(lambda: window.study.segmented.all(), timeout=WHOLE_SCAN_MS)  # LIME waits for segmentation
    qtbot.keyClick(window, Qt.Key.Key_L)
    qtbot.waitUntil(lambda: window.controls.progress_label.text().startswith(f"LIME z {lesion_z} "), timeout=30_000)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: "cancelled" in window.controls.progress_label.text(), timeout=30_000)
    assert window.study.status("lime", lesion_z) is None
    assert window.panels["lime"].overlay_item.image is None


def test_lesion_navigator_lists_lesions_and_slices_and_jumps(window, qtbot) -> None:
    qtbot.waitUntil(lambda: window.study.segmentation_complete, timeout=WHOLE_SCAN_MS)
    qtbot.waitUntil(lambda: window.navigator.table.rowCount() > 0, timeout=30_000)
    navigator = window.navigator
    found = window.study.lesions()
    findings = [lesion for lesion in found if lesion.volume_ml >= window.state.min_lesion_ml]
    assert navigator.table.rowCount() == len(findings)  # the smaller components: one line, on request
    if len(findings) < len(found):
        assert navigator.smaller_line.text().startswith(f"+ {len(found) - len(findings)} smaller component")
        navigator.show_smaller.setChecked(True)
        assert navigator.table.rowCount() == len(found)
        navigator.show_smaller.setChecked(False)
    window.state.min_lesion_ml = 0.0  # set in the view state, shown by the control and the table
    assert navigator.min_size.value() == 0.0 and navigator.table.rowCount() == len(found)
    navigator.min_size.setValue(0.1)
    assert window.state.min_lesion_ml == pytest.approx(0.1)
    areas = window.study.lesion_area_per_slice_mm2()
    assert navigator.slice_list.count() == int((areas > 0).sum())
    navigator.table.cellClicked.emit(0, 0)  # the largest lesion
    assert window.current_slice == navigator._rows[0]["z"]
    item = navigator.slice_list.item(0)
    navigator.slice_list.itemClicked.emit(item)
    assert window.current_slice == int(np.flatnonzero(areas > 0)[0])


def test_comparison_panel_matches_metrics(window, qtbot, lesion_z) -> None:
    qtbot.waitUntil(lambda: window.study.segmentation_complete, timeout=WHOLE_SCAN_MS)
    assert window.reader.load(str(asset_path(DEMO_LESION)))
    qtbot.waitUntil(lambda: window.reader.volume_figures is not None, timeout=30_000)
    truth = window.reader.read.mask
    model = window.study.mask()
    panel = window.reader.panel
    assert panel.masks.item(0, 0).text() == f"{metrics.dice(model, truth):.3f}"  # volume Dice
    assert panel.masks.item(4, 0).text() == f"{metrics.lesion_f1(model, truth):.3f}"
    window.set_slice(lesion_z)
    assert panel.masks.item(0, 1).text() == f"{metrics.dice(model[:, :, lesion_z], truth[:, :, lesion_z]):.3f}"
    model_only = metrics.unmatched_lesions(model, truth, window.volume.voxel_volume_ml)
    assert panel.model_only.count() == max(len(model_only), 1)
    panel.model_only.itemClicked.emit(panel.model_only.item(0))
    assert window.current_slice == int(round(model_only[0].centroid[2]))
    window.set_slice(lesion_z)
    for name, item in ((n, p.reader_item) for n, p in window.panels.items()):
        assert item.image is not None, f"no reader outline on the {name} panel"
    if window.study.status("gradcam", lesion_z) == "ok":
        expected = agreement.energy_inside(window.study.maps["gradcam"][:, :, lesion_z], truth[:, :, lesion_z])
        assert panel.attention.item(0, 0).text() == f"{expected:.3f}"
    qtbot.keyClick(window, Qt.Key.Key_M)  # reader outline off
    assert window.panels["segmentation"].reader_item.image is None
    qtbot.keyClick(window, Qt.Key.Key_M)


def test_report_from_the_viewer_matches_xnet_report(window, qtbot, lesion_z, tmp_path, monkeypatch, capsys) -> None:
    """The viewer's export and the CLI's: same pages, same text apart from the date line."""
    qtbot.waitUntil(lambda: window.study.segmentation_complete, timeout=WHOLE_SCAN_MS)
    if window.reader.read is None:  # the comparison test loads it when the whole module runs
        assert window.reader.load(str(asset_path(DEMO_LESION)))
    window.set_threshold(0.5)
    first, last = lesion_z - 1, lesion_z + 1
    export = window.export_report(str(tmp_path / "viewer.pdf"), choice="range", lime=False, first=first, last=last)
    qtbot.waitUntil(lambda: export.finished, timeout=300_000)
    assert export.result == tmp_path / "viewer.pdf"
    cache_home = window.model.engine.disk.folder.parent.parent
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))  # the CLI's Grad-CAMs come from the viewer's cache
    code = main(["report", str(demo_scan_path()), "--pdf", str(tmp_path / "cli.pdf"), "--slices", f"{first}:{last}",
                 "--methods", "gradcam,gradcampp,hirescam", "--reader", str(asset_path(DEMO_LESION)), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    viewer_pages, cli_pages = _pdf_text(tmp_path / "viewer.pdf"), _pdf_text(tmp_path / "cli.pdf")
    assert len(viewer_pages) == len(cli_pages) == 1 + 3
    undated = [[line for page in pages for line in page if not line.startswith("Report created")]
               for pages in (viewer_pages, cli_pages)]
    assert undated[0] == undated[1]
    summary, slice_page = " ".join(cli_pages[0]), " ".join(cli_pages[2])
    assert DISCLAIMER in summary and window.model.checkpoint.sha256 in summary
    assert f"{window.study.lesion_volume_ml():.2f} ml" in summary
    assert f"Dice {metrics.dice(window.study.mask(), window.reader.read.mask):.3f}" in summary
    assert f"Slice z {lesion_z}" in slice_page and "(provisional)" not in slice_page  # final CAM scales
    assert "HiResCAM" in slice_page and "LIME: left out of this report" in slice_page


def _pdf_text(path) -> list[list[str]]:
    from pypdf import PdfReader

    return [[" ".join(line.split()) for line in page.extract_text().splitlines()] for page in PdfReader(str(path)).pages]


def test_png_and_nifti_exports(window, qtbot, tmp_path) -> None:
    qtbot.waitUntil(lambda: window.study.segmentation_complete, timeout=WHOLE_SCAN_MS)
    png = window.export_png(str(tmp_path / "view.png"), scale=2)
    image = QImage(str(png))
    assert (image.width(), image.height()) == (2 * window.centralWidget().width(), 2 * window.centralWidget().height())
    written = window.export_nifti(str(tmp_path))
    names = {p.name for p in written}
    assert {"demo_T1w_mask.nii.gz", "demo_T1w_prob.nii.gz", "demo_T1w_gradcam.nii.gz"} <= names
    mask = load_volume(tmp_path / "demo_T1w_mask.nii.gz", is_mask=True)
    np.testing.assert_array_equal(mask.data, window.study.mask())
    assert b"research use only" in nib.load(tmp_path / "demo_T1w_gradcam.nii.gz").header["descrip"].tobytes()


def test_bookmarks_choose_report_slices(window, qtbot, lesion_z) -> None:
    from app.export import slices_for

    bookmark = window.actions_by_name["bookmark"]
    assert bookmark.shortcut().toString() == "B"
    window.set_slice(lesion_z)
    bookmark.trigger()
    window.set_slice(lesion_z + 3)
    bookmark.trigger()
    assert slices_for(window.state, window.study, "bookmarked") == [lesion_z, lesion_z + 3] and "bookmarked" in window.controls.slice_label.text()
    bookmark.trigger()
    assert slices_for(window.state, window.study, "bookmarked") == [lesion_z] and "bookmarked" not in window.controls.slice_label.text()
