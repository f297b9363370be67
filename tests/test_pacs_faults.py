"""PACS faults (xnet_core.pacs, pacs_retrieve, xnet pacs): each a clear one-line message and exit status 2,
files already retrieved stay valid, a half-retrieved series never opens as complete. No Orthanc needed:
the misbehaving PACSes are pynetdicom SCPs in this process (tests/fake_pacs.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from app.cli import main
from tests.dicom_series import PATIENT, phantom, write_series
from tests.fake_pacs import FAKE_AET, FakePacs, running_fake, silent_server
from tests.orthanc_server import free_port
from xnet_core.errors import Cancelled
from xnet_core.pacs import PacsError, PacsSettings, StudyQuery, echo, find, send
from xnet_core.pacs_retrieve import PARTIAL, PartialRetrieveError, check_complete, retrieve


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data, _ = phantom((16, 12, 6))
    return write_series(tmp_path_factory.mktemp("series") / "mr", data)


def _settings(port: int, **fields) -> PacsSettings:
    return PacsSettings("127.0.0.1", port, FAKE_AET, "XNET", timeout_s=fields.pop("timeout_s", 5), **fields)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("fields, flag", [
    ({"port": 0}, "port"), ({"port": 70000}, "port"), ({"port": "12a"}, "port"),
    ({"called_aet": ""}, "called_aet"), ({"called_aet": "   "}, "called_aet"), ({"calling_aet": ""}, "calling_aet"),
    ({"calling_aet": "A" * 17}, "calling_aet"), ({"called_aet": "BACK\\SLASH"}, "called_aet"),
    ({"host": " "}, "host"), ({"timeout_s": 0}, "timeout"),
])
def test_settings_with_a_bad_port_or_ae_title_are_refused_at_entry(fields: dict, flag: str) -> None:
    values = {"host": "pacs", "port": 104, "called_aet": "PACS", "calling_aet": "XNET", "timeout_s": 30} | fields
    with pytest.raises(PacsError) as error:
        PacsSettings(**values)
    assert error.value.parameter == flag
    assert "\n" not in str(error.value)


def test_cli_refuses_a_bad_address_with_status_2(capsys) -> None:
    status, _, err = _cli(capsys, "pacs", "echo", "--pacs", "localhost:99999", "--called-aet", "PACS")
    assert status == 2 and err.startswith("xnet pacs: error: --pacs: port") and err.count("\n") == 1
    status, _, err = _cli(capsys, "pacs", "echo", "--pacs", "localhost", "--called-aet", "PACS")
    assert status == 2 and "HOST:PORT" in err
    status, _, err = _cli(capsys, "pacs", "echo", "--pacs", "localhost:104", "--called-aet", "")
    assert status == 2 and "--called-aet" in err and "empty" in err


def test_a_study_date_that_is_not_a_date_is_refused() -> None:
    assert StudyQuery(study_date="2024-05-01").identifier().StudyDate == "20240501"
    assert StudyQuery(study_date="20240101-").identifier().StudyDate == "20240101-"
    with pytest.raises(PacsError, match="YYYYMMDD"):
        StudyQuery(study_date="yesterday")


def test_unreachable_pacs(capsys) -> None:
    port = free_port()  # nobody listens there
    with pytest.raises(PacsError, match="cannot be reached") as error:
        echo(_settings(port))
    assert "check the host, the port" in str(error.value)
    status, _, err = _cli(capsys, "pacs", "echo", "--pacs", f"127.0.0.1:{port}", "--called-aet", FAKE_AET)
    assert status == 2 and "cannot be reached" in err and err.count("\n") == 1


def test_a_pacs_that_never_answers_times_out() -> None:
    with silent_server() as port, pytest.raises(PacsError, match="did not answer within 1 s"):
        echo(_settings(port, timeout_s=1))


def test_wrong_called_ae_title_and_a_rejected_calling_ae_title(series: dict) -> None:
    with running_fake(FakePacs(files=series["paths"]), require_called_aet=True) as pacs:
        with pytest.raises(PacsError, match="rejected the association .Called AE title not recognised.") as error:
            echo(PacsSettings("127.0.0.1", pacs.port, "NOTTHEPACS", timeout_s=5))
        assert "called AE title does not match" in str(error.value)
    with running_fake(FakePacs(files=series["paths"]), require_calling_aet=["SOMEONE"]) as pacs:
        with pytest.raises(PacsError, match="Calling AE title not recognised") as error:
            echo(_settings(pacs.port))
        assert "does not know our AE title" in str(error.value)


def test_find_lists_the_study_with_its_series_and_logs_nothing_identifying(series: dict, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="xnet_core")
    with running_fake(FakePacs(files=series["paths"])) as pacs:
        studies = find(_settings(pacs.port), StudyQuery())
    assert [s.uid for s in studies] == [series["study_uid"]]
    assert [s.uid for s in studies[0].series] == [series["series_uid"]]
    assert studies[0].patient_id == PATIENT["PatientID"]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        assert PATIENT[keyword] not in caplog.text


def test_a_partial_c_get_lists_the_missing_instance_and_never_opens_as_complete(series: dict, tmp_path: Path,
                                                                               capsys) -> None:
    lost = str(dcmread(series["paths"][2], stop_before_pixels=True).SOPInstanceUID)
    with running_fake(FakePacs(files=series["paths"], lose_in_get={lost})) as pacs:
        with pytest.raises(PartialRetrieveError) as error:
            retrieve(_settings(pacs.port), tmp_path / "cache", series_uid=series["series_uid"], method="get")
        status, _, err = _cli(capsys, "pacs", "get", "--pacs", f"127.0.0.1:{pacs.port}", "--called-aet", FAKE_AET,
                              "--series", series["series_uid"], "--out", str(tmp_path / "cli"))
    assert error.value.missing == [lost]
    assert "only 5 of 6 images" in str(error.value) and lost in str(error.value)
    final = tmp_path / "cache" / series["study_uid"] / series["series_uid"]
    assert not final.exists() and error.value.folder == final.with_name(final.name + PARTIAL)
    kept = sorted(error.value.folder.glob("*.dcm"))
    assert len(kept) == 5 and all(dcmread(path).pixel_array.shape == (12, 16) for path in kept)
    with pytest.raises(PartialRetrieveError, match="missing"):
        check_complete(error.value.folder)
    assert status == 2 and lost in err.strip().splitlines()[-1]


def test_retrieve_writes_whole_files_and_a_cancel_keeps_them(series: dict, tmp_path: Path) -> None:
    seen = []
    with running_fake(FakePacs(files=series["paths"])) as pacs:
        done = retrieve(_settings(pacs.port), tmp_path / "cache", study_uid=series["study_uid"], method="get",
                        on_progress=lambda d, t: seen.append((d, t)))
        with pytest.raises(Cancelled, match="kept in"):
            retrieve(_settings(pacs.port), tmp_path / "again", study_uid=series["study_uid"], method="get",
                     should_cancel=lambda: True)
    assert seen[-1] == (6, 6) and done[0].n_instances == 6
    check_complete(done[0].folder)
    assert json.loads((done[0].folder / ".xnet-retrieve.json").read_text())["complete"] is True
    for path in (tmp_path / "again").rglob("*.dcm"):
        assert dcmread(path).SOPInstanceUID  # whatever arrived before the cancel is whole


def test_a_refused_sop_class_and_failed_stores_are_reported_per_instance(series: dict, tmp_path: Path,
                                                                         capsys) -> None:
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    other = tmp_path / "sc.dcm"
    ds = dcmread(series["paths"][0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(other)
    failing = str(dcmread(series["paths"][1], stop_before_pixels=True).SOPInstanceUID)
    with running_fake(FakePacs(fail_store={failing})) as pacs:
        report = send(_settings(pacs.port), [*series["paths"], other])
        status, out, err = _cli(capsys, "pacs", "send", "--pacs", f"127.0.0.1:{pacs.port}", "--called-aet",
                                FAKE_AET, str(series["paths"][1]), str(other), str(series["paths"][3]))
    failed = {i.path.name: i.message for i in report.failed}
    assert failed == {series["paths"][1].name: "refused: 0xA700 (failure)",
                      "sc.dcm": "the PACS refuses Secondary Capture Image Storage objects"}
    assert len(report.instances) == 7 and len(pacs.stored) == 5 + 1
    last = err.strip().splitlines()[-1]
    assert status == 2 and last.startswith("xnet pacs: error:") and "1 of 3 instance(s) stored" in last
    assert "sc.dcm" in last and "IM0001.dcm" in last
    assert out.count("FAILED") == 2


def test_send_refuses_paths_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(PacsError, match="no DICOM files"):
        send(_settings(free_port()), [tmp_path])
    with pytest.raises(PacsError, match="not a DICOM file"):
        send(_settings(free_port()), [tmp_path / "notes.txt"])


def test_c_get_refused_without_a_receive_port_says_what_to_set(series: dict, tmp_path: Path) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import MRImageStorage, StudyRootQueryRetrieveInformationModelFind

    pacs = FakePacs(files=series["paths"])
    ae = AE(ae_title=FAKE_AET)  # answers C-FIND, offers no C-GET
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(MRImageStorage, scp_role=True, scu_role=True)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, pacs.on_find)])
    try:
        with pytest.raises(PacsError, match="does not offer C-GET; set our receive port"):
            retrieve(_settings(port), tmp_path, series_uid=series["series_uid"])
    finally:
        server.shutdown()
    assert not (tmp_path / series["study_uid"] / series["series_uid"]).exists()


def test_a_compressed_file_goes_uncompressed_where_the_pacs_takes_only_that(series: dict, tmp_path: Path) -> None:
    from pydicom.uid import SecondaryCaptureImageStorage

    from xnet_core.dicom_results import source_series, write_secondary_captures
    from xnet_core.volume import load_volume

    page = np.zeros((30, 20, 3), np.uint8)
    page[5:9, 2:7] = (200, 10, 40)
    [capture] = write_secondary_captures([page], source_series(load_volume(series["paths"][0].parent)), tmp_path)
    assert dcmread(capture).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"  # RLE lossless
    with running_fake(FakePacs(storage_classes=(SecondaryCaptureImageStorage,))) as pacs:
        report = send(_settings(pacs.port), [capture])
    assert not report.failed and len(pacs.stored) == 1
