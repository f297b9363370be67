"""The model's side of one viewer window: which weights, the engine built from them, the worker of the
study on screen (``app.jobs``) and what it found about the scan (its placement on the template).

A worker of an earlier scan may still deliver queued signals after it was retired; they stop here, so
the window only hears about the study it shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from app.jobs import ModelWorker
from app.study import Study
from xnet_core.cards import card_normalisation, read_sidecar_card
from xnet_core.image import Volume
from xnet_core.native import provisional_input
from xnet_core.preprocess import ModelInput, is_template_grid, prepare

if TYPE_CHECKING:  # torch-backed modules load on the worker thread, after the scan is on screen
    from explain.engine import ExplanationEngine, SliceExplanation
    from xnet_core.checkpoint import Checkpoint


def _engine_factory(checkpoint, weights: Path | None, device: str, mirror: bool = True):
    """Builds the engine on the worker thread: torch, the weights and the model copies load there."""
    def build():
        from explain.engine import ExplanationEngine
        from xnet_core.checkpoint import load_checkpoint

        return ExplanationEngine(checkpoint or load_checkpoint(weights), device=device, mirror=mirror)
    return build


class ModelSession(QObject):
    """The worker's signals, for the current study only; ``ready(card_changed)`` once the engine is built."""

    ready = Signal(bool)
    sliceSegmented = Signal(int)  # z
    explained = Signal(object)  # SliceExplanation
    progress = Signal(str, int, int)  # task, done, total
    failed = Signal(str)
    limeEnded = Signal(int, str)  # z, "done" | "cancelled"
    segmentationFinished = Signal()
    lesionsReady = Signal(float, object)  # threshold, lesion rows
    placed = Signal()  # ``scan``, ``template_outline`` and ``placed_warnings`` are known
    started = Signal()  # another study (a new scan, or the same one again): earlier findings are gone
    findingLocated = Signal(int, float, object, int)  # K, threshold, its own voxels, its largest slice
    findingExplained = Signal(object)  # a SliceExplanation of finding K alone
    findingFailed = Signal(int, str)  # K, why

    def __init__(self, checkpoint: "Checkpoint | str | Path | None", device: str = "auto",
                 engine: "ExplanationEngine | None" = None, start_model: bool = True, mirror: bool = True) -> None:
        """``checkpoint``: a loaded Checkpoint, or the path of weights that the worker thread loads
        (with torch) after the scan is on screen; None: no model."""
        super().__init__()
        self.checkpoint = None if isinstance(checkpoint, (str, Path)) else checkpoint
        self.weights_path = Path(checkpoint) if isinstance(checkpoint, (str, Path)) else None
        self.card = self.checkpoint.card if self.checkpoint is not None else read_sidecar_card(self.weights_path)
        self.has_model = checkpoint is not None
        self.start_model = start_model and self.has_model
        self.engine = engine  # built by the first worker when not given (off the UI thread)
        self.device, self.mirror = device, mirror
        self.worker: ModelWorker | None = None
        self.scan = None  # xnet_core.native.PlacedScan, once the worker placed the scan for the model
        self.template_outline = None  # the template's brain mask on the scan's grid
        self.placed_warnings: list[str] = []  # registration and T1 checks, once placed

    # -- a study -----------------------------------------------------------------------------
    def model_input(self, volume: Volume) -> ModelInput:
        """The model's input for ``volume``; a scan off the template grid is registered by the worker
        first, so until then only its head mask."""
        normalisation = card_normalisation(self.card)
        if self.start_model and not is_template_grid(volume):
            return provisional_input(volume, normalisation)
        return prepare(volume, normalisation)

    def start(self, study: Study, visible: int) -> None:
        """Stop the previous study's work; segment and explain ``study`` (slice ``visible`` first)."""
        self.retire()
        self.scan, self.template_outline, self.placed_warnings = None, None, []
        self.started.emit()
        if not self.start_model:
            return
        source = self.engine or _engine_factory(self.checkpoint, self.weights_path, self.device, self.mirror)
        self.worker = worker = ModelWorker(source, study)
        for signal, slot in ((worker.ready, self._on_ready), (worker.sliceSegmented, self._on_slice_segmented),
                             (worker.explained, self._on_explained), (worker.progress, self._on_progress),
                             (worker.failed, self._on_failed), (worker.limeEnded, self._on_lime_ended),
                             (worker.segmentationFinished, self._on_segmentation_finished),
                             (worker.lesionsReady, self._on_lesions), (worker.placed, self._on_placed),
                             (worker.findingLocated, self._on_finding_located),
                             (worker.findingExplained, self._on_finding_explained),
                             (worker.findingFailed, self._on_finding_failed)):
            signal.connect(slot)
        worker.start(visible)

    def retire(self) -> None:
        """Stop the current worker without waiting for its step to end (a registration step can take
        seconds; it checks for the stop between steps and its signals are dropped from now on)."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop(timeout=0.2)

    def use_weights(self, checkpoint: "Checkpoint") -> None:
        """Other weights: the next ``start`` builds their engine."""
        self.retire()
        self.checkpoint, self.card, self.engine = checkpoint, checkpoint.card, None
        self.has_model = self.start_model = True

    def stop(self) -> None:
        """The window closes: wait for the worker's step to end."""
        if self.worker is not None:
            self.worker.stop()

    def warnings(self, volume: Volume) -> list[str]:
        """What the window says about the model and this scan."""
        if self.has_model and self.scan is not None:  # placed: registration and T1 checks are known
            return list(self.placed_warnings)
        if self.has_model and not is_template_grid(volume):
            return [f"{volume.name} is not on the template grid: it is being registered to the template before "
                    "the model runs (progress in the status bar)."]
        return ["No model loaded: the scan is shown without segmentation or explanations."]

    def report_model(self) -> tuple[dict, str, str]:
        """The model, the device and the precision, as a report names them."""
        from app.report import model_summary, report_precision

        engine = self.engine
        return (model_summary(self.checkpoint), str(engine.device) if engine else "not loaded",
                report_precision(engine) if engine else "–")

    # -- the worker's results -------------------------------------------------------------------
    def _stale(self) -> bool:
        """A signal from a worker of an earlier scan (queued before it was retired)."""
        sender = self.sender()
        return sender is not None and isinstance(sender, ModelWorker) and sender is not self.worker

    def _on_ready(self, engine: "ExplanationEngine") -> None:
        if self._stale():
            return
        self.engine, self.checkpoint = engine, engine.checkpoint
        changed = engine.checkpoint.card != self.card  # weights loaded by the worker: their own card rules
        self.card = engine.checkpoint.card
        self.ready.emit(changed)

    def _on_placed(self, scan, template_outline, warnings: list[str]) -> None:
        if not self._stale():
            self.scan, self.template_outline, self.placed_warnings = scan, template_outline, warnings
            self.placed.emit()

    def _on_failed(self, message: str) -> None:
        if not self._stale():
            self.worker = None  # its thread has ended
            self.failed.emit(message)

    def _on_slice_segmented(self, z: int, _plane) -> None:
        if not self._stale():
            self.sliceSegmented.emit(z)

    def _on_explained(self, result: "SliceExplanation") -> None:
        if not self._stale():
            self.explained.emit(result)

    def _on_progress(self, task: str, done: int, total: int) -> None:
        if not self._stale():
            self.progress.emit(task, done, total)

    def _on_lime_ended(self, z: int, how: str) -> None:
        if not self._stale():
            self.limeEnded.emit(z, how)

    def _on_segmentation_finished(self) -> None:
        if not self._stale():
            self.segmentationFinished.emit()

    def _on_lesions(self, threshold: float, rows: list) -> None:
        if not self._stale():
            self.lesionsReady.emit(threshold, rows)

    def _on_finding_located(self, number: int, threshold: float, own, z: int) -> None:
        if not self._stale():
            self.findingLocated.emit(number, threshold, own, z)

    def _on_finding_explained(self, result: "SliceExplanation") -> None:
        if not self._stale():
            self.findingExplained.emit(result)

    def _on_finding_failed(self, number: int, message: str) -> None:
        if not self._stale():
            self.findingFailed.emit(number, message)
