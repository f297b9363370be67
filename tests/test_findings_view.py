"""One finding explained alone in the viewer, and the report's per-finding pages from the viewer (issue 26).

Cheap on purpose: a 40x40x6 scan made here, segmented by a transparent stand-in (bright = lesion) and
explained by a random X-Net through the real worker, engine and cache; the demo model's viewer tests are
in test_viewer_model.py."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QSettings, QStandardPaths, Qt
from PySide6.QtTest import QTest

from app.actions import shortcut_rows
from app.study import FindingMaps, Study
from tests.conftest import BrightIsLesion, write_nifti
from xnet_core.preprocess import prepare
from xnet_core.volume import load_volume

SHAPE = (40, 40, 6)


def _scan(folder) -> str:
    """Two lesions on slices 2-4 (lesion 1: 400 voxels on slices 1-4, lesion 2: 108 voxels)."""
    data = np.zeros(SHAPE, np.float32)
    data[2:38, 2:38, 1:5] = np.random.default_rng(0).uniform(40, 60, (36, 36, 4))
    data[5:15, 5:15, 1:5] = 100.0
    data[25:31, 25:31, 2:5] = 100.0
    return str(write_nifti(folder / "scan.nii.gz", data, np.eye(4)))


@pytest.fixture(scope="module")
def segmenter():
    from xnet_core.inference import Segmenter

    return Segmenter(BrightIsLesion(), device="cpu", fp32=True, mirror=False)


@pytest.fixture(scope="module")
def engine(random_checkpoint, segmenter, tmp_path_factory):
    from explain.engine import ExplanationEngine

    return ExplanationEngine(random_checkpoint, device="cpu", segmenter=segmenter,
                             cache_dir=tmp_path_factory.mktemp("cache") / "xnet-viewer" / "explain")


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory) -> str:
    return _scan(tmp_path_factory.mktemp("scan"))


@pytest.fixture(scope="module")
def window(qapp, random_checkpoint, engine, scan_path):
    from app.window import ViewerWindow

    QStandardPaths.setTestModeEnabled(True)
    QSettings().clear()
    win = ViewerWindow(load_volume(scan_path), random_checkpoint, device="cpu", engine=engine)
    win.show()
    yield win
    win.close()


def _table_ready(window, qtbot) -> None:
    qtbot.waitUntil(lambda: window.study.segmentation_complete, timeout=60_000)
    qtbot.waitUntil(lambda: window.navigator.table.rowCount() == 2, timeout=30_000)


def test_finding_maps_answer_as_the_study_does(tmp_path) -> None:
    volume = load_volume(write_nifti(tmp_path / "s.nii.gz", np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)))
    study = Study(volume, prepare(volume))
    own = np.zeros(SHAPE, np.uint8)
    own[1:3, 1:3, 2] = 1
    own[1:4, 1:4, 3] = 1
    focus = FindingMaps(study, 2, {"volume_ml": 0.013}, own, 0.5)
    assert focus.slices == [2, 3] and focus.largest_slice == 3 and focus.area_mm2(3) == 9.0
    assert focus.status("gradcam", 3) is None and focus.scale("gradcam").provisional

    class Result:
        method, z, status, ok = "gradcam", 3, "ok", True
        map = np.full(SHAPE[:2], 2.0, np.float32)

        def summary(self) -> dict:
            return {"target": "lesion"}

    focus.add_explanation(Result())
    assert focus.status("gradcam", 3) == "ok" and focus.scale("gradcam").provisional  # slice 2 still to come
    assert focus.scale("gradcam").high == pytest.approx(2.0)
    assert list(np.flatnonzero(~focus.unexplained_slices("gradcam"))) == [3]


def test_enter_on_a_finding_jumps_to_its_largest_slice_and_explains_it_alone(window, qtbot, engine, scan_path,
                                                                              random_checkpoint, segmenter) -> None:
    _table_ready(window, qtbot)
    navigator = window.navigator
    row = next(r for r in range(navigator.table.rowCount()) if navigator.table.item(r, 0).text() == "2")
    navigator.table.setCurrentCell(row, 0)
    QTest.keyClick(navigator.table, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.findings.focus is not None, timeout=30_000)
    focus = window.findings.focus
    z = focus.largest_slice
    assert focus.number == 2 and window.current_slice == z == 2 and focus.slices == [2, 3, 4]
    qtbot.waitUntil(lambda: focus.status("hirescam", z) is not None, timeout=120_000)
    qtbot.waitUntil(lambda: window.study.status("gradcam", z) is not None, timeout=120_000)
    assert focus.status("gradcam", z) == "ok" and focus.details["gradcam"][z]["target"] == "lesion"
    panel = window.panels["gradcam"]
    assert panel.title.text() == "Grad-CAM · finding 2"
    assert panel.status_text.toPlainText().startswith("finding 2")
    assert "finding 2" in window.panels["segmentation"].status_text.toPlainText()
    # Lesion 1 lies on this slice too: the finding's map is not the whole mask's.
    assert not np.allclose(focus.maps["gradcam"][:, :, z], window.study.maps["gradcam"][:, :, z])
    _same_maps_as_the_command_line(window, focus, z, engine, random_checkpoint, segmenter, scan_path)
    window.actions_by_name["cancel"].trigger()  # Esc, no LIME running: back to the whole mask
    assert window.findings.focus is None and window.grid.focus is None
    assert window.panels["gradcam"].title.text() == "Grad-CAM"
    assert not window.panels["gradcam"].status_text.toPlainText().startswith("finding")


def _same_maps_as_the_command_line(window, focus, z, engine, checkpoint, segmenter, scan_path) -> None:
    """``xnet explain --lesion 2``'s path, with another engine on the same disk cache: it is served the
    viewer's maps, never computes them again."""
    from explain.engine import ExplanationEngine
    from explain.methods import CAM_METHODS
    from explain.native import explain_slices, lesion_target
    from xnet_core.native import place, segment

    fresh = ExplanationEngine(checkpoint, device="cpu", segmenter=segmenter, cache_dir=engine.disk.folder)
    scan = place(load_volume(scan_path))
    segmentation, on_template = segment(fresh.segmenter, scan)
    target, own, _ = lesion_target(scan, segmentation.mask, 2)
    np.testing.assert_array_equal(own, focus.mask)
    results = explain_slices(fresh, scan, fresh.context(scan.model_volume, on_template), [z], CAM_METHODS,
                             native_mask=own, target=target)
    assert {r.source for r in results} == {"disk"}
    for result in results:
        np.testing.assert_allclose(result.map, focus.maps[result.method][:, :, z], rtol=1e-6)


def test_k_without_a_selected_finding_says_what_to_do(window, qtbot) -> None:
    _table_ready(window, qtbot)
    window.navigator.table.setCurrentCell(-1, -1)
    window.actions_by_name["explain_finding"].trigger()
    assert window.findings.focus is None
    assert "Select a finding" in window.statusBar().currentMessage()
    help_keys = dict(shortcut_rows())
    assert "K" in help_keys and any("Enter" in key for key in help_keys)


def test_report_pages_per_finding_match_xnet_report(window, qtbot, engine, random_checkpoint, scan_path, tmp_path,
                                                     monkeypatch, capsys) -> None:
    from pypdf import PdfReader

    from app.cli import main

    _table_ready(window, qtbot)
    export = window.export_report(str(tmp_path / "viewer.pdf"), choice="range", lime=False, first=2, last=3,
                                  findings=[1, 2])
    qtbot.waitUntil(lambda: export.finished, timeout=300_000)
    assert export.result == tmp_path / "viewer.pdf"
    monkeypatch.setattr("app.cli.report.load_model", lambda args, explain=False: (random_checkpoint, engine))
    code = main(["report", scan_path, "--pdf", str(tmp_path / "cli.pdf"), "--slices", "2:3", "--lesion", "1,2",
                 "--methods", "gradcam,gradcampp,hirescam", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    pages = {}
    for name in ("viewer", "cli"):
        text = [[" ".join(line.split()) for line in page.extract_text().splitlines()]
                for page in PdfReader(str(tmp_path / f"{name}.pdf")).pages]
        pages[name] = [[line for line in page if not line.startswith("Report created")] for page in text]
    assert len(pages["viewer"]) == 1 + 2 + 2
    assert pages["viewer"] == pages["cli"]
    assert "Findings explained alone: 1, 2" in " ".join(pages["viewer"][0])
    last = " ".join(pages["viewer"][4])
    assert "Finding 2: 0.11 ml" in last and "target: finding 2 alone" in last


def test_a_finding_the_table_does_not_hold_is_refused(window, qtbot, tmp_path) -> None:
    _table_ready(window, qtbot)
    assert window.export_report(str(tmp_path / "r.pdf"), choice="current", lime=False, findings=[7]) is None
    assert "there is no finding 7" in window.last_error and "# column" in window.last_error
    assert not (tmp_path / "r.pdf").exists()


def test_the_report_dialog_offers_the_listed_or_selected_findings(window, qtbot) -> None:
    from app.export import ReportDialog
    from xnet_core.errors import XNetError

    _table_ready(window, qtbot)
    navigator = window.navigator
    navigator.table.clearSelection()
    assert navigator.finding_choice() == ([1, 2], 2)
    navigator.table.selectRow(next(r for r in range(2) if navigator.table.item(r, 0).text() == "2"))
    assert navigator.finding_choice() == ([2], 2)
    dialog = ReportDialog(window.state, window.study, window, navigator.finding_choice())
    assert dialog.finding_numbers.text() == "2" and dialog.chosen_findings() == []  # unticked: no pages
    dialog.findings.setChecked(True)
    dialog.finding_numbers.setText("2, 1, 2")
    assert dialog.chosen_findings() == [2, 1]
    dialog.finding_numbers.setText("two")
    with pytest.raises(XNetError, match="whole numbers"):
        dialog.chosen_findings()
    assert not ReportDialog(window.state, window.study, window, ([], 0)).findings.isEnabled()


def test_xnet_report_names_its_flag_for_a_bad_finding_list(scan_path, tmp_path, capsys) -> None:
    from app.cli import main

    assert main(["report", scan_path, "--pdf", str(tmp_path / "r.pdf"), "--lesion", "1,x"]) == 2
    assert "--lesion: finding numbers are whole numbers such as 1 or 1,3" in capsys.readouterr().err
    assert main(["report", scan_path, "--pdf", str(tmp_path / "r.pdf"), "--lesion", "0"]) == 2
    assert "--lesion: finding numbers count from 1" in capsys.readouterr().err


def test_lime_of_a_finding_and_esc_cancels_lime_before_leaving(window, qtbot, monkeypatch) -> None:
    _table_ready(window, qtbot)
    navigator = window.navigator
    navigator.table.cellDoubleClicked.emit(next(r for r in range(2) if navigator.table.item(r, 0).text() == "1"), 0)
    qtbot.waitUntil(lambda: window.findings.focus is not None, timeout=30_000)
    focus = window.findings.focus
    assert focus.number == 1 and window.current_slice == focus.largest_slice
    window.actions_by_name["lime"].trigger()  # L: LIME of this finding alone (the stand-in model makes it quick)
    qtbot.waitUntil(lambda: focus.status("lime", window.current_slice) is not None, timeout=120_000)
    z = window.current_slice
    assert focus.status("lime", z) == "ok" and window.study.status("lime", z) is None  # the whole mask's: none
    assert window.panels["lime"].title.text() == "LIME · finding 1"
    cancelled = []
    monkeypatch.setattr(window.model.worker, "lime_pending", lambda: True)
    monkeypatch.setattr(window, "cancel_lime", lambda: cancelled.append(True))
    window.actions_by_name["cancel"].trigger()  # Esc with a LIME running: cancel it, stay on the finding
    assert cancelled and window.findings.focus is focus
    monkeypatch.setattr(window.model.worker, "lime_pending", lambda: False)
    window.actions_by_name["cancel"].trigger()  # Esc again: the whole mask
    assert window.findings.focus is None and "finding" not in navigator.focus_label.text()
