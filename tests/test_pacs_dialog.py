"""The PACS dialogs (app/pacs_settings.py, app/pacs_dialog.py), offscreen, against the fake PACS of
tests/fake_pacs.py: settings refused at entry, Test connection, search -> series -> retrieve -> the
folder to open, a partial retrieval named and not opened, Cancel, and a send that reports failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, QStandardPaths, Qt
from pydicom import dcmread

from app.pacs_dialog import OpenFromPacsDialog, SendResultsDialog
from app.pacs_settings import PacsSettingsDialog, load_settings, save_settings
from tests.dicom_series import phantom, write_series
from tests.fake_pacs import FAKE_AET, FakePacs, running_fake
from tests.orthanc_server import free_port
from xnet_core.pacs import PacsSettings


@pytest.fixture(autouse=True)
def _test_profile():
    QStandardPaths.setTestModeEnabled(True)
    QSettings().clear()
    yield
    QSettings().clear()


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data, _ = phantom((16, 12, 5))
    return write_series(tmp_path_factory.mktemp("series") / "mr", data)


def _settings(port: int) -> PacsSettings:
    return PacsSettings("127.0.0.1", port, FAKE_AET, "XNET", timeout_s=5)


def _fill(dialog: PacsSettingsDialog, **values: str) -> None:
    for name, value in values.items():
        getattr(dialog, name).setText(value)


def test_settings_dialog_refuses_a_bad_port_or_an_empty_ae_title_and_stays_open(qtbot) -> None:
    dialog = PacsSettingsDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    _fill(dialog, host="pacs.example.org", port="99999", called_aet="PACS")
    dialog.accept()
    assert dialog.isVisible() and dialog.settings is None and dialog.error_label.text().startswith("Port:")
    _fill(dialog, port="11112", called_aet="   ")
    dialog.accept()
    assert dialog.isVisible() and "PACS AE title" in dialog.error_label.text() and "empty" in dialog.error_label.text()
    _fill(dialog, called_aet="ORTHANC", receive_port="11113")
    dialog.accept()
    assert not dialog.isVisible() and dialog.settings == PacsSettings("pacs.example.org", 11112, "ORTHANC",
                                                                      receive_port=11113)
    save_settings(dialog.settings)
    assert load_settings() == dialog.settings


def test_test_connection_says_whether_the_pacs_answers(qtbot, series: dict) -> None:
    dialog = PacsSettingsDialog(settings=_settings(free_port()))
    qtbot.addWidget(dialog)
    dialog.test_button.click()
    qtbot.waitUntil(lambda: dialog.test_button.isEnabled(), timeout=15000)
    assert "cannot be reached" in dialog.test_result.text()
    with running_fake(FakePacs(files=series["paths"])) as pacs:
        _fill(dialog, port=str(pacs.port))
        dialog.test_button.click()
        qtbot.waitUntil(lambda: "answers" in dialog.test_result.text(), timeout=15000)


def test_search_list_series_retrieve_and_hand_back_the_folder(qtbot, series: dict, tmp_path: Path) -> None:
    with running_fake(FakePacs(files=series["paths"])) as pacs:
        dialog = OpenFromPacsDialog(_settings(pacs.port), cache=tmp_path / "cache")
        qtbot.addWidget(dialog)
        dialog.show()
        dialog.patient_id.setText("XNET-TEST-001")
        dialog.search_button.click()
        qtbot.waitUntil(lambda: dialog.study_table.rowCount() == 1, timeout=15000)
        dialog.study_table.selectRow(0)
        qtbot.waitUntil(lambda: dialog.series_table.rowCount() == 1, timeout=15000)
        assert dialog.series_table.item(0, 3).text() == "5"  # images
        dialog.series_table.selectRow(0)
        assert dialog.retrieve_button.isEnabled()
        with qtbot.waitSignal(dialog.accepted, timeout=15000):
            dialog.retrieve_button.click()
    assert dialog.retrieved_folder == tmp_path / "cache" / series["study_uid"] / series["series_uid"]
    assert len(list(dialog.retrieved_folder.glob("*.dcm"))) == 5 and dialog.progress.value() == 5


def test_a_partial_retrieval_lists_what_is_missing_and_opens_nothing(qtbot, series: dict, tmp_path: Path) -> None:
    lost = str(dcmread(series["paths"][0], stop_before_pixels=True).SOPInstanceUID)
    with running_fake(FakePacs(files=series["paths"], lose_in_get={lost})) as pacs:
        dialog = OpenFromPacsDialog(_settings(pacs.port), cache=tmp_path / "cache")
        qtbot.addWidget(dialog)
        dialog.show()
        dialog.search_button.click()
        qtbot.waitUntil(lambda: dialog.study_table.rowCount() == 1, timeout=15000)
        dialog.study_table.selectRow(0)
        qtbot.waitUntil(lambda: dialog.series_table.rowCount() == 1, timeout=15000)
        dialog.series_table.selectRow(0)
        dialog.retrieve_button.click()
        qtbot.waitUntil(lambda: "missing" in dialog.status.text(), timeout=15000)
    assert lost in dialog.status.text() and dialog.retrieved_folder is None and dialog.isVisible()
    assert dialog.search_button.isEnabled() and dialog.cancel_button.text() == "Close"


def test_bad_search_dates_are_refused_before_any_network(qtbot) -> None:
    dialog = OpenFromPacsDialog(_settings(free_port()))
    qtbot.addWidget(dialog)
    dialog.date_from.setText("last week")
    dialog.search_button.click()
    assert "YYYYMMDD" in dialog.status.text() and not dialog.task.running


def test_send_dialog_reports_the_instances_that_failed(qtbot, series: dict) -> None:
    failing = str(dcmread(series["paths"][1], stop_before_pixels=True).SOPInstanceUID)
    with running_fake(FakePacs(fail_store={failing})) as pacs:
        dialog = SendResultsDialog(_settings(pacs.port), series["paths"][:3])
        qtbot.addWidget(dialog)
        dialog.files.item(2).setCheckState(Qt.CheckState.Unchecked)
        dialog.send_button.click()
        qtbot.waitUntil(lambda: dialog.report is not None, timeout=15000)
    assert "1 of 2 instance(s) stored" in dialog.status.text() and series["paths"][1].name in dialog.status.text()
    assert dialog.files.item(1).foreground().color() == Qt.GlobalColor.red
    assert len(pacs.stored) == 1


def test_the_window_has_the_pacs_commands_and_refuses_to_send_a_nifti_scan(qtbot, tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    from app.window import ViewerWindow
    from xnet_core.volume import load_volume

    path = tmp_path / "tiny.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(6 * 5 * 7, dtype=np.float32).reshape(6, 5, 7), np.eye(4)), path)
    window = ViewerWindow(load_volume(path), None)
    qtbot.addWidget(window)
    titles = {action.text() for action in window.menuBar().actions()[0].menu().actions()}
    assert {"Open from PACS…", "Send results to PACS…", "PACS settings…"} <= titles
    window.actions_by_name["send_pacs"].trigger()
    assert "not opened from DICOM" in window.last_error


def test_send_results_writes_the_seg_of_the_open_series_and_wraps_a_report_pdf(tmp_path: Path, series: dict,
                                                                             random_checkpoint) -> None:
    from types import SimpleNamespace

    import numpy as np

    from app.pacs_actions import PacsActions
    from xnet_core.dicom_results import read_encapsulated_pdf, read_seg_masks
    from xnet_core.volume import load_volume

    volume = load_volume(series["paths"][0].parent)
    model_mask = np.zeros(volume.shape, np.uint8)
    model_mask[4:9, 3:7, 1:3] = 1
    reader = SimpleNamespace(mask=np.roll(model_mask, 1, axis=0))
    window = SimpleNamespace(volume=volume, study=SimpleNamespace(mask=lambda: model_mask, threshold=0.4),
                             reader=SimpleNamespace(read=reader),
                             model=SimpleNamespace(checkpoint=random_checkpoint, engine=None, weights_path=None))
    actions = PacsActions(window)
    [seg] = actions.write_results()
    segments = read_seg_masks(seg, volume)
    assert np.array_equal(segments[1][1], model_mask) and np.array_equal(segments[2][1], reader.mask)
    assert dcmread(seg).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters \
        .count(random_checkpoint.sha256) == 1
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    assert read_encapsulated_pdf(actions.pdf_to_dicom(pdf)) == pdf.read_bytes()
