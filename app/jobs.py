"""Model work off the viewer's process: segmentation nearest the slice on screen first, Grad-CAM and
Grad-CAM++ of the visible slice, LIME on request (cancellable), slices an export needs, "explain
all lesion slices".

``ModelWorker`` starts ``app.model_process.serve`` in a child process (spawned: no fork of a Qt
process) and turns its results into Qt signals; a small thread here only waits on the result queue.
The child takes the most urgent task each time it is free, so changing slice re-prioritises at the
next slice boundary (about 0.1 s on a CPU). torch in the child uses all cores but one, so the UI
keeps a core for painting (benchmarks/bench_viewer.py measures both).
"""

from __future__ import annotations

import logging
import queue
import threading

from PySide6.QtCore import QObject, Signal

from app.model_process import EngineSpec, serve
from app.study import Study

log = logging.getLogger(__name__)
STOP_WAIT_S = 5.0


class ModelWorker(QObject):
    """The UI side of the model process; call the ``request_*`` methods from the UI thread."""

    sliceSegmented = Signal(int, object)  # z, probabilities [x, y] (the window stores them)
    segmentationFinished = Signal()
    explained = Signal(object)  # SliceExplanation
    progress = Signal(str, int, int)  # task, done, total
    failed = Signal(str)
    limeEnded = Signal(int, str)  # z, "done" | "cancelled"
    ready = Signal(object)  # ModelInfo, once the child has built its engine
    lesionsReady = Signal(float, object)  # threshold, the lesion rows at that threshold

    def __init__(self, spec: EngineSpec, study: Study) -> None:
        super().__init__()
        self.spec, self.study = spec, study
        import multiprocessing  # only when a model runs

        context = multiprocessing.get_context("spawn")
        self._requests, self._results = context.Queue(), context.Queue()
        self._cancel = context.Event()
        self._context = context
        self._process = None
        self._stopping = False
        self._listener = threading.Thread(target=self._listen, name="xnet-model-results", daemon=True)

    # -- UI side ---------------------------------------------------------------------------
    def start(self, visible: int) -> None:
        volume = self.study.volume
        # The child reads the scan from its file (no 35 MB pickle on the UI thread) when there is one.
        scan = ("path", str(volume.path)) if volume.path is not None else ("volume", volume)
        self._process = self._context.Process(
            target=serve, name="xnet-model", daemon=True,
            args=(self.spec, scan, self.study.threshold, visible, self._requests, self._results, self._cancel))
        self._process.start()
        self._listener.start()

    def _send(self, *message) -> None:
        self._requests.put(message)

    def set_visible(self, z: int) -> None:
        self._send("visible", z)

    def set_threshold(self, threshold: float) -> None:
        """CAM targets (the predicted mask) follow the threshold."""
        self._send("threshold", threshold)

    def request_lime(self, z: int) -> None:
        self._cancel.clear()
        self._send("lime", [z])

    def cancel_lime(self) -> None:
        self._cancel.set()
        self._send("cancel_lime")

    def request_lesions(self, threshold: float) -> None:
        """Label the lesions at ``threshold`` in the child (about 0.3 s on a 1 mm brain)."""
        self._send("lesions", threshold)

    def explain_all_lesion_slices(self) -> None:
        self._send("explain_all")

    def request_maps(self, slices: list[int], lime: bool) -> None:
        """Grad-CAM and Grad-CAM++ of ``slices`` (those not computed yet), then LIME when asked."""
        self._send("cams", list(slices))
        if lime:
            self._cancel.clear()
            self._send("lime", list(slices))

    def cancel_maps(self) -> None:
        """Drop queued export work (and stop a running LIME)."""
        self._cancel.set()
        self._send("cancel_maps")

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        self._stopping = True
        self._cancel.set()
        self._send("stop")
        if self._process is not None:
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(1)
        self._results.put(("closed",))  # ends the listener

    # -- results ---------------------------------------------------------------------------
    def _listen(self) -> None:
        """Blocks on the result queue; signals reach the UI thread queued, in order."""
        while True:
            try:
                message = self._results.get(timeout=1.0)
            except queue.Empty:
                if self._process is not None and not self._process.is_alive() and not self._stopping:
                    self.failed.emit(f"the model process stopped unexpectedly (exit code {self._process.exitcode}); "
                                     "reopen the scan to start it again.")
                    return
                continue
            except (EOFError, OSError):
                return
            kind, *args = message
            if kind == "closed":
                return
            emit = {"ready": self.ready, "segmented": self.sliceSegmented, "explained": self.explained,
                    "progress": self.progress, "failed": self.failed, "lime_ended": self.limeEnded,
                    "lesions": self.lesionsReady, "segmentation_finished": self.segmentationFinished}.get(kind)
            if emit is None:
                log.warning("unknown message from the model process: %r", kind)
                continue
            emit.emit(*args)
            if kind == "failed":
                return  # the child has ended; nothing more will come
