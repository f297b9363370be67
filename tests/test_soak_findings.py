"""What the long-session benchmark found (benchmarks/bench_soak.py, issue 29).

* The Qt binding keeps Python's reference counts. PySide6 6.12.0 on Python 3.11 dropped a reference to
  ``True`` on every ``Signal.emit`` and one to ``None`` on every ``processEvents``: after some 200,000
  of them (a viewer open for ten scans) Python stopped with "Fatal Python error: none_dealloc:
  deallocating None". From Python 3.12 these objects are immortal and such a bug does no harm, so
  those checks run on older Pythons; pyproject.toml leaves that release out.
* A map the window drops because the threshold changed after the worker sent it is computed again
  when asked for: the worker took it as done, and the slice stayed without maps for good.
* A report started while the last maps it needs are on their way to the window (sent before the export
  listened to the worker) is written once they arrive; it waited forever.
* Only the first scan's model load freezes the garbage collector: each later freeze pinned the previous
  scan's uncollected garbage for the rest of the session.
* Registration lets go of its ``should_cancel``: SimpleITK's iteration commands and their filters held
  each other, and with them the viewer's model worker, its study and the registered scan's arrays
  (about 180 MB for each registered scan of a session).
"""

from __future__ import annotations

import gc
import sys
import weakref

import numpy as np
import pytest
from PySide6.QtCore import QCoreApplication, QObject, Signal

from app.export import ReportContext, ReportExport
from app.jobs import ModelWorker
from app.study import Study, grey_window
from app.view_state import ViewState
from tests.conftest import write_nifti
from xnet_core import registration
from xnet_core.preprocess import prepare
from xnet_core.volume import load_volume

refcounts = pytest.mark.skipif(sys.version_info >= (3, 12), reason="None and True are immortal from Python 3.12")


class _Emitter(QObject):
    happened = Signal(int, object)


@refcounts
def test_emitting_a_signal_keeps_the_reference_counts(qapp) -> None:
    emitter, received = _Emitter(), []
    emitter.happened.connect(lambda z, value: received.append(z))
    before = sys.getrefcount(True), sys.getrefcount(None)
    for z in range(1000):
        emitter.happened.emit(z, None)
    assert len(received) == 1000
    after = sys.getrefcount(True), sys.getrefcount(None)
    assert all(abs(a - b) < 50 for a, b in zip(after, before)), (before, after)  # 6.12.0: True 1000 short


@refcounts
def test_processing_events_keeps_the_reference_count_of_none(qapp) -> None:
    before = sys.getrefcount(None)
    for _ in range(1000):
        QCoreApplication.processEvents()
    assert abs(sys.getrefcount(None) - before) < 50  # other threads may hold a few at any moment


def test_a_map_dropped_for_a_newer_threshold_is_computed_again(tmp_path) -> None:
    grid = np.linspace(0, 1, 8 * 9 * 6, dtype=np.float32).reshape(8, 9, 6)
    volume = load_volume(write_nifti(tmp_path / "tiny.nii.gz", grid))
    study = Study(volume, prepare(volume), threshold=0.5)
    worker = ModelWorker(lambda: None, study)  # not started: its steps are called here
    worker.slices = type("NoMaps", (), {"explain": lambda *args, **kwargs: []})()
    worker._cam([2])
    assert not worker._needs_cam(2)
    study.threshold = 0.7  # after the maps of 0.5 were sent: the window drops them
    assert worker._needs_cam(2)


def test_only_the_first_scan_freezes_the_garbage_collector(tmp_path) -> None:
    """A freeze at each scan's model load pinned whatever garbage of the previous scan the collector
    had not reached yet (the cyclic collector never visits frozen objects again)."""
    import explain.engine  # noqa: F401 - the viewer's first scan imported it

    volume = load_volume(write_nifti(tmp_path / "tiny.nii.gz", np.arange(432, dtype=np.float32).reshape(8, 9, 6)))
    worker = ModelWorker(lambda: "engine", Study(volume, prepare(volume)))
    before = gc.get_freeze_count()
    worker._load_model()
    assert worker.engine == "engine" and gc.get_freeze_count() == before and gc.isenabled()


class _Worker:
    """Stands for the viewer's model worker, whose ``should_cancel`` the registration is given."""

    def cancelled(self) -> bool:
        return True  # stops N4 and the optimiser at their first iteration: the test takes a second


def test_registration_lets_go_of_its_cancel_callback(tmp_path) -> None:
    grids = np.meshgrid(*[np.linspace(-1, 1, 40)] * 3, indexing="ij")
    data = (1000 * np.exp(-sum(g**2 for g in grids)) + 10).astype(np.float32)
    affine = np.diag([4.0, 4.0, 4.0, 1.0]) @ np.array([[1, 0, 0, -20], [0, 1, 0, -20], [0, 0, 1, -20], [0, 0, 0, 1.0]])
    volume = load_volume(write_nifti(tmp_path / "head.nii.gz", data, affine))
    brain = (volume.data > 300).astype(np.uint8)
    worker = _Worker()
    alive = weakref.ref(worker)
    corrected = registration.bias_corrected(volume, brain, should_cancel=worker.cancelled)
    registration.affine_to_template(volume, corrected, brain, should_cancel=worker.cancelled)
    del worker
    gc.collect()
    assert alive() is None


class _SentAlready(QObject):
    """Stands for the model worker: its signals, and requests it ignores (it sent those maps already)."""

    sliceSegmented, explained, failed = Signal(int, object), Signal(object), Signal(str)
    limeEnded, findingFailed = Signal(int, str), Signal(int, str)
    findingLocated, findingExplained = Signal(int, float, object, int), Signal(object)

    def request_maps(self, slices: list[int], lime: bool) -> None:
        pass

    def request_finding(self, number: int) -> None:
        pass

    def cancel_maps(self) -> None:
        pass


class _Map:
    """What Study.add_explanation reads from a SliceExplanation."""

    def __init__(self, method: str, z: int, heat: np.ndarray) -> None:
        self.method, self.z, self.status, self.map, self.ok = method, z, "ok", heat, True
        self.params = {"threshold": 0.5}

    def summary(self) -> dict:
        return {"z": self.z, "method": self.method, "status": self.status, "target": "predicted"}


def test_a_report_started_while_its_maps_are_on_their_way_is_written(qapp, tmp_path) -> None:
    data = np.random.default_rng(0).uniform(60, 100, (40, 44, 8)).astype(np.float32)
    volume = load_volume(write_nifti(tmp_path / "case_T1w.nii.gz", data))
    study = Study(volume, prepare(volume), threshold=0.5)
    lesion = np.zeros((40, 44), np.float32)
    lesion[10:16, 12:18] = 0.9
    for z in range(8):
        study.set_probabilities(z, lesion if z == 3 else np.zeros_like(lesion))
    study.add_explanation(_Map("gradcam", 3, lesion))
    context = ReportContext(model={"file": "x.pt", "sha256": "ab" * 32}, device="cpu", precision="fp32")
    state = ViewState()
    state.reset_grid(volume.shape, grey_window(volume.data))
    export = ReportExport(state, study, _SentAlready(), lambda: context, [3], ["gradcam", "gradcampp"],
                          str(tmp_path / "report.pdf"))
    export.start()
    assert not export.finished  # Grad-CAM++ of slice 3 is missing ...
    study.add_explanation(_Map("gradcampp", 3, lesion))  # ... and the window applies it, sent before
    for _ in range(100):
        QCoreApplication.processEvents()
        if export.finished:
            break
    assert export.finished and export.result == tmp_path / "report.pdf"


HEAP_PROBE = """
import sys
import numpy as np
if sys.argv[1] == "steady":
    from app.memory import steady_heap
    assert steady_heap()
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
big = np.ones(8 << 20, np.uint8)
del big  # glibc raises its mmap threshold to 8 MB here, unless it is fixed
before = rss_mb()
arrays = [np.ones(2 << 20, np.uint8) for _ in range(20)]
pins = [np.ones(64, np.uint8) for _ in range(100)]  # small blocks above them keep the heap from trimming
del arrays
print(rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_freed_arrays_of_a_few_megabytes_go_back_to_the_system() -> None:
    """glibc's dynamic mmap threshold kept freed slice-sized buffers in a fragmenting heap: the
    viewer's RSS sat ~400 MB higher and grew 140 MB over 20 scans (bench_soak.py); app.memory fixes it."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    kept = {mode: float(subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], cwd=root, check=True,
                                       capture_output=True, text=True).stdout) for mode in ("default", "steady")}
    assert kept["steady"] < 2.0 and kept["steady"] < kept["default"], kept
