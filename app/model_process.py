"""The model's own process (no Qt): torch, the weights and the explanation engine live here, so the
viewer's process never imports torch and no GIL-holding import, model build or forward pass can
stall its event loop (measured on the worker-thread design: 100-320 ms stalls while torch and
grad-cam imported and the engine was built).

``serve`` runs in the child. It keeps its own ``Study`` of the scan (loaded from the file again, or
sent whole when it has no file) and takes the most urgent task each time it is free: Grad-CAM /
Grad-CAM++ of the slice on screen, segmentation nearest to it, the lesion table, slices an export
needs, LIME, "explain all lesion slices". Requests arrive as tuples on one queue, results leave as
tuples on another; a shared event cancels a running LIME at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import traceback
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """How the child builds its engine (all plain values: they cross the process boundary)."""

    weights: str
    device: str = "auto"
    cache_dir: str | None = None  # None: the user's explanation cache
    lime_samples: int | None = None  # None: the engine's default


@dataclass(frozen=True)
class ModelInfo:
    """What the viewer knows of the loaded model: enough for labels, provenance and reports."""

    path: Path
    sha256: str
    card: dict
    device: str
    precision: str  # as reports state it
    segmentation_precision: str  # bf16 / fp16 / fp32, for the status bar

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def normalisation(self) -> str:
        from xnet_core.cards import card_normalisation

        return card_normalisation(self.card)


@dataclass
class _Requests:
    visible: int = 0
    threshold: float = 0.5
    lime: list[int] = field(default_factory=list)
    cams: list[int] = field(default_factory=list)
    explain_all: bool = False
    lesions_at: float | None = None
    stop: bool = False

    def apply(self, message: tuple) -> None:
        kind, *args = message
        if kind == "visible":
            self.visible = args[0]
        elif kind == "threshold":
            self.threshold = args[0]
        elif kind == "lime":
            self.lime.extend(z for z in args[0] if z not in self.lime)
        elif kind == "cams":
            self.cams.extend(z for z in args[0] if z not in self.cams)
        elif kind == "cancel_lime":
            self.lime.clear()
        elif kind == "cancel_maps":
            self.cams.clear()
            self.lime.clear()
        elif kind == "lesions":
            self.lesions_at = args[0]
        elif kind == "explain_all":
            self.explain_all = True
        elif kind == "stop":
            self.stop = True


def precision_statement(segmentation_precision: str) -> str:
    """What reports say about precision: segmentation and LIME share the Segmenter's; CAMs run fp32."""
    return f"segmentation and LIME {segmentation_precision}, Grad-CAM/Grad-CAM++ fp32"


def limit_torch_threads() -> int:
    """Leave one core to the viewer's process; returns the number of torch threads."""
    import torch

    threads = max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)
    return threads


def serve(spec: EngineSpec, scan, threshold: float, visible: int, requests, results, cancel) -> None:
    """The child's main loop. ``scan``: ("path", file) or ("volume", Volume)."""
    # Before torch loads: its OpenMP pool would otherwise start with every core and spin-wait on
    # all of them, starving the viewer's process (measured: 100-220 ms UI stalls while torch imported).
    threads = str(max(1, (os.cpu_count() or 2) - 1))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = threads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        _Server(spec, scan, threshold, visible, requests, results, cancel).run()
    except Exception as error:  # noqa: BLE001 (the viewer must hear about any failure)
        from xnet_core.errors import XNetError

        log.error("model process failed: %s", traceback.format_exc())
        results.put(("failed", str(error) if isinstance(error, XNetError) else f"model process failed: {error!r}"))


class _Server:
    def __init__(self, spec, scan, threshold, visible, requests, results, cancel) -> None:
        self.spec, self.scan, self.requests_queue, self.results, self.cancel = spec, scan, requests, results, cancel
        self.requests = _Requests(visible=visible, threshold=threshold)
        self.cam_done: set[int] = set()
        self._context = None

    def run(self) -> None:
        limit_torch_threads()
        self._start()
        while True:
            self._drain(block=False)
            task = self._next_task()
            if task is None:
                if self.requests.stop:
                    return
                self._drain(block=True)
                continue
            task()

    def _start(self) -> None:
        from app.study import Study
        from explain.engine import ExplainParams, ExplanationEngine
        from xnet_core.checkpoint import load_checkpoint
        from xnet_core.preprocess import prepare
        from xnet_core.volume import load_volume

        checkpoint = load_checkpoint(self.spec.weights)
        self.engine = ExplanationEngine(checkpoint, device=self.spec.device, cache_dir=self.spec.cache_dir)
        self.params = ExplainParams(**({"lime_samples": self.spec.lime_samples} if self.spec.lime_samples else {}))
        kind, payload = self.scan
        volume = load_volume(payload) if kind == "path" else payload
        self.study = Study(volume, prepare(volume, checkpoint.normalisation), threshold=self.requests.threshold)
        segmenter = self.engine.segmenter
        precision = precision_statement(segmenter.precision)
        self.results.put(("ready", ModelInfo(checkpoint.path, checkpoint.sha256, checkpoint.card,
                                             str(self.engine.device), precision, segmenter.precision)))

    def _drain(self, block: bool) -> None:
        try:
            message = self.requests_queue.get(block=block, timeout=None if block else 0)
            while True:
                self.requests.apply(message)
                message = self.requests_queue.get_nowait()
        except queue.Empty:
            pass
        if self.requests.threshold != self.study.threshold:
            self.study.threshold = self.requests.threshold

    def _next_task(self):
        requests, study = self.requests, self.study
        if requests.stop:
            return None
        z = requests.visible
        if study.segmented[z] and z not in self.cam_done:
            return lambda: self._cam([z])
        nearest = study.next_slice_to_segment(z)
        if nearest is not None:
            return lambda: self._segment(nearest)
        if requests.lesions_at is not None:
            threshold, requests.lesions_at = requests.lesions_at, None
            return lambda: self.results.put(("lesions", threshold, study.lesion_rows(threshold)))
        while requests.cams:
            cam_z = requests.cams.pop(0)
            if cam_z not in self.cam_done:
                return lambda: self._cam([cam_z])
        if requests.lime:
            lime_z = requests.lime.pop(0)
            return lambda: self._lime(lime_z)
        if requests.explain_all:
            todo = [s for s in self._lesion_slices() if s not in self.cam_done]
            if todo:
                return lambda: self._cam(todo[:1], report=len(todo))
            requests.explain_all = False
        return None

    def _lesion_slices(self) -> list[int]:
        import numpy as np

        return [int(z) for z in np.flatnonzero(self.study.lesion_area_per_slice_mm2() > 0)]

    def _segment(self, z: int) -> None:
        study = self.study
        plane = study.model_input.geometry.from_model(self.engine.segmenter.predict(study.model_input.slices[z:z + 1])[0])
        study.set_probabilities(z, plane)
        self.results.put(("segmented", z, plane))
        self.results.put(("progress", "segmenting", int(study.segmented.sum()), len(study.segmented)))
        if study.segmentation_complete:
            self.results.put(("segmentation_finished",))
            self.results.put(("lesions", study.threshold, study.lesion_rows(study.threshold)))

    def _context_now(self):
        # The mask a predicted-lesion target freezes follows the current threshold.
        segmentation = _StudySegmentation(self.study)
        if self._context is None:
            self._context = self.engine.context(self.study.volume, segmentation, self.study.model_input)
        self._context.segmentation = segmentation
        return self._context

    def _cam(self, zs: list[int], report: int | None = None) -> None:
        from explain.methods import CAM_METHODS

        for result in self.engine.explain(self._context_now(), zs, CAM_METHODS, self.params):
            self.study.add_explanation(result)
            self.results.put(("explained", _portable(result)))
        self.cam_done.update(zs)
        if report is not None:  # ``report``: lesion slices still to explain before this batch
            total = len(self._lesion_slices())
            self.results.put(("progress", "explaining lesion slices", total - report + 1, total))

    def _lime(self, z: int) -> None:
        from xnet_core.errors import Cancelled

        self.cancel.clear()

        def should_cancel() -> bool:
            self._drain(block=False)  # a stop or a cancel may have arrived as a message
            return self.cancel.is_set() or self.requests.stop

        try:
            results = self.engine.explain(
                self._context_now(), [z], ("lime",), self.params,
                on_progress=lambda done, total: self.results.put(("progress", f"LIME z {z}", done, total)),
                should_cancel=should_cancel)
        except Cancelled:
            self.results.put(("lime_ended", z, "cancelled"))
            return
        for result in results:
            self.study.add_explanation(result)
            self.results.put(("explained", _portable(result)))
        self.results.put(("lime_ended", z, "done"))


def _portable(result):
    """The result without its target (whose class imports torch): unpickling it in the viewer's
    process must not import torch (measured: 3 s of imports and 100-340 ms GC pauses there)."""
    return dataclasses.replace(result, target=None)


class _StudySegmentation:
    """The slice of the Segmentation interface the engine reads: the mask at the current threshold."""

    def __init__(self, study) -> None:
        self.mask = study.mask()
        self.slice_area_mm2 = study.lesion_area_per_slice_mm2()
