"""Model work off the UI thread: segmentation nearest the slice on screen first, Grad-CAM and
Grad-CAM++ of the visible slice, LIME on request (cancellable), "explain all lesion slices", and one
finding of the lesion table explained alone (its maps come on their own signal, never mixed with the
whole mask's).

One worker thread owns the model. It takes the most urgent task each time it is free, so changing
slice re-prioritises at the next slice boundary (about 0.1 s on a CPU). Results travel to the UI as
Qt signals (queued across threads). torch is limited to all cores but one while the viewer runs, so
the UI thread keeps a core for painting (measured in benchmarks/bench_viewer.py).
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import logging
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Callable

from PySide6.QtCore import QObject, Signal

from app.study import Study
from explain.methods import CAM_METHODS
from xnet_core.errors import Cancelled, XNetError

log = logging.getLogger(__name__)


def limit_torch_threads() -> int:
    """Leave one core to the UI thread; returns the number of torch threads."""
    import torch

    threads = max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)
    return threads


@dataclass
class _Requests:
    visible: int = 0
    lime: list[int] = field(default_factory=list)
    cams: list[int] = field(default_factory=list)  # slices an export needs (after the visible one)
    explain_all: bool = False
    lesions_at: float | None = None  # threshold whose lesion table is wanted
    findings: list[tuple[str, int, int]] = field(default_factory=list)  # ("locate" | "cam" | "lime", K, z)
    cancel_lime: bool = False
    stop: bool = False


class ModelWorker(QObject):
    """Runs in its own thread; call the ``request_*`` methods from the UI thread."""

    sliceSegmented = Signal(int, object)  # z, probabilities [x, y]
    segmentationFinished = Signal()
    explained = Signal(object)  # SliceExplanation
    progress = Signal(str, int, int)  # task, done, total
    failed = Signal(str)
    limeEnded = Signal(int, str)  # z, "done" | "cancelled"
    ready = Signal(object)  # the ExplanationEngine, once built on the worker thread
    lesionsReady = Signal(float, object)  # threshold, the study's lesion rows at that threshold
    placed = Signal(object, object, object)  # PlacedScan, the template's brain mask on its grid, its warnings
    findingLocated = Signal(int, float, object, int)  # K, threshold, its own voxels [x, y, z], largest slice
    findingExplained = Signal(object)  # SliceExplanation of finding K alone (params "lesion": K, "threshold")
    findingFailed = Signal(int, str)  # K, why it cannot be explained (e.g. no such lesion at this threshold)

    def __init__(self, engine, study: Study, params=None) -> None:
        """``engine`` or a function that builds one: building (model copies, BN folding) then runs
        on the worker thread (torch included), so the scan is on screen before the model is ready."""
        super().__init__()
        self.engine = None if callable(engine) else engine
        self._make_engine: Callable | None = engine if callable(engine) else None
        self.study = study
        # Slices whose CAMs were emitted (the UI applies them later), with the threshold they explain: the
        # window drops maps of a threshold it no longer shows, even when the change came after the emit.
        self._cam_done: dict[int, float] = {}
        self.params = params  # None: the engine's defaults, set on the worker thread
        self._requests = _Requests()
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="xnet-model", daemon=True)
        self.slices = None  # explain.native.SliceModel, once the scan is placed for the model
        self._threshold = study.threshold  # the one whose predicted mask the maps being computed explain
        self._lime_running = False  # Esc cancels a LIME before anything else

    # -- UI side ---------------------------------------------------------------------------
    def start(self, visible: int) -> None:
        self._requests.visible = visible
        self._thread.start()

    def set_visible(self, z: int) -> None:
        with self._wake:
            self._requests.visible = z
            self._wake.notify()

    def request_lime(self, z: int) -> None:
        with self._wake:
            if z not in self._requests.lime:
                self._requests.lime.append(z)
            self._requests.cancel_lime = False
            self._wake.notify()

    def cancel_lime(self) -> None:
        with self._wake:
            self._requests.lime.clear()
            self._requests.findings = [item for item in self._requests.findings if item[0] != "lime"]
            self._requests.cancel_lime = True

    def lime_pending(self) -> bool:
        """Whether a LIME is queued or running (Esc then cancels it)."""
        with self._wake:
            requests = self._requests
            return self._lime_running or bool(requests.lime) or any(i[0] == "lime" for i in requests.findings)

    def request_finding(self, number: int) -> None:
        """Lesion ``number`` of the lesion table at the current threshold: its own voxels and the slice of
        its largest cross-section come back on ``findingLocated`` (``findingFailed`` when there is none)."""
        self._queue_findings([("locate", number, -1)])

    def request_finding_maps(self, number: int, slices: list[int], lime: bool = False) -> None:
        """Grad-CAM, Grad-CAM++ and HiResCAM of lesion ``number`` alone on ``slices`` (LIME too when
        asked), on ``findingExplained``."""
        items = [("cam", number, z) for z in slices] + ([("lime", number, z) for z in slices] if lime else [])
        self._queue_findings(items)

    def _queue_findings(self, items: list[tuple[str, int, int]]) -> None:
        with self._wake:
            queued = self._requests.findings
            queued.extend(item for item in items if item not in queued)
            if any(item[0] == "lime" for item in items):
                self._requests.cancel_lime = False
            self._wake.notify()

    def request_maps(self, slices: list[int], lime: bool) -> None:
        """Grad-CAM and Grad-CAM++ of ``slices`` (those not computed yet), then LIME when asked."""
        with self._wake:
            self._requests.cams.extend(z for z in slices if z not in self._requests.cams)
            if lime:
                self._requests.lime.extend(z for z in slices if z not in self._requests.lime)
                self._requests.cancel_lime = False
            self._wake.notify()

    def cancel_maps(self) -> None:
        """Drop queued export work (and stop a running LIME)."""
        with self._wake:
            self._requests.cams.clear()
        self.cancel_lime()

    def request_lesions(self, threshold: float) -> None:
        """Label the lesions at ``threshold`` off the UI thread (about 0.3 s on a 1 mm brain)."""
        with self._wake:
            self._requests.lesions_at = threshold
            self._wake.notify()

    def explain_all_lesion_slices(self) -> None:
        with self._wake:
            self._requests.explain_all = True
            self._wake.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._requests.stop = True
            self._requests.cancel_lime = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- worker side -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._load_model()
            from explain.engine import ExplainParams  # loaded by now

            self.params = self.params or ExplainParams()
            self.ready.emit(self.engine)
            self._place()
            while True:
                task = self._next_task()
                if task is None:
                    return
                task()
        except Cancelled:
            return  # stopped while registering: another scan was opened or the window closed
        except Exception as error:  # the window must survive any model failure
            log.error("model worker failed: %s", traceback.format_exc())
            message = str(error) if isinstance(error, XNetError) else f"model worker failed: {error!r}"
            self.failed.emit(message)

    def _load_model(self) -> None:
        """Import torch, grad-cam and lime and build the engine with the cyclic garbage collector off.

        These imports add ~300,000 objects to this (the viewer's) process; each full collection
        while they arrive walked all of them on whichever thread triggered it, the UI thread
        included: 100-340 ms pauses (measured with gc callbacks). Frozen afterwards, those objects
        (here for good) are skipped by every later collection. Only the first scan's worker imports
        and freezes: a later freeze would also pin whatever garbage of the previous scan the
        collector had not reached yet, for the rest of the session.
        """
        first = "explain.engine" not in sys.modules
        if first:
            gc.disable()
        try:
            importlib.import_module("explain.engine")  # torch, grad-cam, lime

            limit_torch_threads()
            if self.engine is None:
                self.engine = self._make_engine()
        finally:
            if first:
                gc.freeze()
                gc.enable()

    def _place(self) -> None:
        """Register the scan to the template when it is off the template grid (progress in 4 steps);
        the study then takes the scan's own brain mask, and the model reads the registered copy."""
        from explain.native import SliceModel
        from xnet_core.native import place
        from xnet_core.preprocess import prepare

        scan = place(self.study.volume, device=str(self.engine.device),
                     on_progress=lambda done, total: self.progress.emit("registering to the template", done, total),
                     should_cancel=lambda: self._requests.stop)
        if scan.registration is None:
            model_input = self.study.model_input
            if not model_input.slices.size:  # the window's provisional input: the model reads the scan itself
                model_input = prepare(scan.volume, model_input.normalisation)
                self.study.use_model_input(model_input)
        else:
            model_input = prepare(scan.model_volume, self.study.model_input.normalisation)
            self.study.use_model_input(scan.display_input(model_input.normalisation))
        self.slices = SliceModel(self.engine, scan, model_input)
        # The T1 check reads medians over the whole brain (~80 ms): here, not on the UI thread.
        self.placed.emit(scan, scan.template_outline(), scan.warnings())

    def _next_task(self):
        with self._wake:
            while True:
                requests = self._requests
                if requests.stop:
                    return None
                z = requests.visible
                if self.study.segmented[z] and self._needs_cam(z):
                    return lambda: self._cam([z])
                nearest = self.study.next_slice_to_segment(z)
                if nearest is not None:
                    return lambda: self._segment(nearest)
                if self.study.segmentation_complete and (step := self._finding_step(("locate", "cam"))):
                    return step
                if requests.lesions_at is not None:
                    threshold, requests.lesions_at = requests.lesions_at, None
                    return lambda: self.lesionsReady.emit(threshold, self.study.lesion_rows(threshold))
                while requests.cams:
                    cam_z = requests.cams.pop(0)
                    if self._needs_cam(cam_z) and self.study.segmented[cam_z]:
                        return lambda: self._cam([cam_z])
                if self.study.segmentation_complete and (step := self._finding_step(("lime",))):
                    return step
                if requests.lime:
                    lime_z = requests.lime.pop(0)
                    return lambda: self._lime(lime_z)
                if requests.explain_all:
                    todo = [s for s in self.study.lesion_slices if self._needs_cam(s)]
                    if todo:
                        return lambda: self._cam(todo[:1], report=len(todo))
                    requests.explain_all = False
                self._wake.wait()

    def _finding_step(self, kinds: tuple[str, ...]):
        """The first queued finding task of ``kinds`` (called holding the lock), or None."""
        queued = self._requests.findings
        for index, (kind, number, z) in enumerate(queued):
            if kind in kinds:
                del queued[index]
                return lambda: self._finding(kind, number, z)
        return None

    def _finding(self, kind: str, number: int, z: int) -> None:
        """Finding ``number`` at the current threshold: locate it, or explain it alone on slice ``z``. A
        number the table no longer has (the threshold moved) is answered on ``findingFailed``."""
        from xnet_core.metrics import largest_cross_section, lesion_mask

        try:
            if kind == "locate":
                threshold = self.study.threshold
                own, _ = lesion_mask(self.study.mask(threshold), number)
                self.findingLocated.emit(number, threshold, own, largest_cross_section(own))
            elif kind == "cam":
                for result in self._explain([z], CAM_METHODS, lesion=number):
                    self.findingExplained.emit(self._tagged(result, number))
            else:
                self._lime(z, number)
        except XNetError as error:
            self.findingFailed.emit(number, str(error))

    def _needs_cam(self, z: int) -> bool:
        return self._cam_done.get(z) != self.study.threshold

    def _segment(self, z: int) -> None:
        plane = self.slices.probabilities(z)
        self.study.set_probabilities(z, plane)
        self.sliceSegmented.emit(z, plane)
        done = int(self.study.segmented.sum())
        self.progress.emit("segmenting", done, len(self.study.segmented))
        if self.study.segmentation_complete:
            self.segmentationFinished.emit()
            self.lesionsReady.emit(self.study.threshold, self.study.lesion_rows(self.study.threshold))

    def _explain(self, zs: list[int], methods: tuple[str, ...], lesion: int | None = None, **callbacks):
        # The mask the target freezes follows the current threshold; ``lesion``: that finding alone.
        self._threshold = self.study.threshold
        return self.slices.explain(zs, methods, self.params, self.study.mask(self._threshold), self._threshold,
                                   lesion=lesion, **callbacks)

    def _cam(self, zs: list[int], report: int | None = None) -> None:
        results = self._explain(zs, CAM_METHODS)
        with self._wake:  # before the maps go out: a forget_explanations after this clears it
            self._cam_done.update(dict.fromkeys(zs, self._threshold))
        for result in results:
            self.explained.emit(self._tagged(result))
        if report is not None:  # ``report``: lesion slices still to explain before this batch
            total = len(self.study.lesion_slices)
            self.progress.emit("explaining lesion slices", total - report + 1, total)

    def _lime(self, z: int, lesion: int | None = None) -> None:
        """LIME of slice ``z`` for the whole mask, or for finding ``lesion`` alone."""
        task = f"LIME z {z}" + (f" (finding {lesion})" if lesion is not None else "")
        with self._wake:
            self._requests.cancel_lime = False
            self._lime_running = True
        try:
            results = self._explain(
                [z], ("lime",), lesion=lesion,
                on_progress=lambda done, total: self.progress.emit(task, done, total),
                should_cancel=lambda: self._requests.cancel_lime or self._requests.stop)
        except Cancelled:
            self.limeEnded.emit(z, "cancelled")
            return
        finally:
            self._lime_running = False
        signal = self.explained if lesion is None else self.findingExplained
        for result in results:
            signal.emit(self._tagged(result, lesion))
        self.limeEnded.emit(z, "done")

    def _tagged(self, result, lesion: int | None = None):
        """The threshold whose predicted mask was the target goes with the map (the window drops maps
        of an older threshold; the report lists it among the parameters), and the finding's number
        with a finding's map."""
        extra = {"threshold": self._threshold} | ({} if lesion is None else {"lesion": lesion})
        return dataclasses.replace(result, params={**result.params, **extra})

    def forget_explanations(self) -> None:
        """The threshold changed: maps of the old predicted mask no longer explain what is shown."""
        with self._wake:
            self._cam_done.clear()
            self._requests.lime.clear()
            self._requests.cancel_lime = True
            self._wake.notify()
