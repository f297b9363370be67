"""The reader's tools in the viewer: load or paint a lesion mask (brush, eraser, fill, clear, undo),
save it, autosave a recovery copy off the UI thread, notes, and the comparison dock.

``ReaderTools`` works on a ``ViewState`` (the section shown) and a ``Study`` and tells the window what
changed through signals; the mask itself and every figure live in plain-Python modules
(``app.reader``, ``app.comparison``).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
from PySide6.QtCore import QObject, QSettings, QStandardPaths, QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from app.comparison import slice_comparison, volume_comparison
from app.reader import ReaderRead, RecoveryStore
from app.reader_panel import ReaderPanel
from app.settings import read_int
from app.drawing import plane_slice, reader_rgba
from app.study import Study
from app.view_state import Event, ViewState
from explain.methods import METHODS
from xnet_core.errors import XNetError
from xnet_core.image import Volume

log = logging.getLogger(__name__)

AUTOSAVE_AFTER_EDIT_MS = 1_000  # 1 s after the last stroke ...
AUTOSAVE_AT_LEAST_MS = 30_000  # ... and at least every 30 s while edits keep coming
COMPARE_DELAY_MS = 300  # whole-volume figures (lesion labelling ~0.3 s) after edits settle
MAX_BRUSH = 40
DEFAULT_BRUSH = 3


def saved_brush_radius(store: QSettings | None = None) -> int:
    """The brush radius last chosen (voxels), or the default when the saved one is not usable."""
    return read_int("brush_radius", DEFAULT_BRUSH, 1, MAX_BRUSH, store)


def recovery_folder() -> Path:
    """Autosaved reads: the application's data folder (Qt's test folder under pytest-qt's test mode)."""
    return Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / "recovery"


class ReaderTools(QObject):
    """Everything the viewer does with the reader's read. ``dialog_parent`` parents its questions
    and file dialogs; ``scan_changed`` hands it each new study."""

    volumeFigures = Signal(int, object)  # job number, figures (emitted from a worker thread)
    autosaved = Signal(str)  # the error, '' when written
    layerChanged = Signal()  # the mask on the shown section changed: redraw the reader's layer
    undoChanged = Signal(bool, bool)  # can undo, can redo
    error = Signal(str)  # a problem the user must read
    message = Signal(str, int)  # a status line, milliseconds to show it

    def __init__(self, state: ViewState, dialog_parent: QWidget) -> None:
        super().__init__(dialog_parent)
        self.state, self.dialog_parent = state, dialog_parent
        self.study: Study | None = None
        self.has_model = False
        self.read: ReaderRead | None = None
        self.paint_mode, self.erasing = False, False
        self.brush_radius = saved_brush_radius()
        self.recovery = RecoveryStore(recovery_folder())
        self.pending_recovery = None
        self.recovery_box: QMessageBox | None = None
        self.panel = ReaderPanel()
        self.panel.jump.connect(self._jump)
        self.panel.notesEdited.connect(self._on_notes_edited)
        self._notes_z: int | None = None  # the slice whose note the panel shows
        # First among the cursor's subscribers: a note typed on this slice belongs to it, so it is
        # taken before anyone redraws the panel with the next slice's note.
        state.events.cursor.connect(self._before_redraw, position="first")
        self._stroke_previous: tuple[float, float] | None = None
        self._threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reader")
        self._job = 0
        self.volume_figures: dict | None = None
        self.autosave_error = ""
        self._autosave_timer = self._timer(AUTOSAVE_AFTER_EDIT_MS, self.autosave_now)
        self._autosave_deadline = self._timer(AUTOSAVE_AT_LEAST_MS, self.autosave_now)
        self._compare_timer = self._timer(COMPARE_DELAY_MS, self.update_volume_figures)
        self.volumeFigures.connect(self._on_volume_figures)
        self.autosaved.connect(self._on_autosaved)

    @property
    def volume(self) -> Volume:
        """The scan the read belongs to."""
        return self.study.volume

    def _jump(self, z: int) -> None:
        self.state.slice = z

    def _timer(self, interval_ms: int, slot) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(interval_ms)
        timer.timeout.connect(slot)
        return timer

    # -- scan changes --------------------------------------------------------------------------
    def scan_changed(self, study: Study, has_model: bool) -> None:
        """A new scan: no read yet; an autosaved read of this scan is offered back. The same scan
        again (other weights, another normalisation) keeps the read."""
        self.study, self.has_model = study, has_model
        if self.read is not None and self.read.volume is study.volume:
            self.volume_figures = None
            self.model_changed()
            return
        self.read, self.volume_figures = None, None
        self.pending_recovery = self.recovery.find(self.volume)
        self.show_source()
        self.refresh_figures()
        if self.pending_recovery is not None:
            self._offer_recovery()

    def _offer_recovery(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Question, "X-Net Viewer",
                          f"An unsaved reader mask of {self.volume.name} was kept when the viewer last "
                          f"stopped (autosaved {self.pending_recovery.saved_at}). Restore it?",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Discard, self.dialog_parent)
        box.setModal(False)
        box.buttonClicked.connect(lambda button: self.restore_recovery() if box.buttonRole(button)
                                  == QMessageBox.ButtonRole.YesRole else self.discard_recovery())
        box.show()
        self.recovery_box = box

    def restore_recovery(self) -> bool:
        if self.pending_recovery is None:
            return False
        try:
            read = self.recovery.restore(self.pending_recovery, self.volume)
        except XNetError as exc:
            self.error.emit(f"The recovery copy cannot be read ({exc}); it is left in {self.recovery.directory}.")
            return False
        self.pending_recovery = None
        self._set_read(read)
        return True

    def discard_recovery(self) -> None:
        self.pending_recovery = None
        self.recovery.discard(self.volume)

    # -- loading and saving --------------------------------------------------------------------
    def load(self, path: str) -> bool:
        """A mask file (resampled with a note when on another grid of the same space)."""
        if not self.confirm_discard("load another reader mask"):
            return False
        try:
            read = ReaderRead.load(path, self.volume)
        except XNetError as exc:
            self.error.emit(f"Cannot use this reader mask: {exc}")
            return False
        self._set_read(read)
        for message in read.messages:
            self.message.emit(message, 15000)
        return True

    def _set_read(self, read: ReaderRead) -> None:
        self.read = read
        self.show_source()
        self.layerChanged.emit()
        self.refresh_figures()
        self._compare_timer.start()

    def ensure_read(self) -> ReaderRead:
        """The read to paint into: an empty mask on the scan's grid when none is loaded."""
        if self.read is None:
            self._set_read(ReaderRead(self.volume))
        return self.read

    def save(self, path: str | None = None) -> bool:
        """Save (to the mask's file, else ask for one) as uint8 NIfTI on the scan's grid, with notes."""
        if self.read is None:
            self.error.emit("There is no reader mask to save: load one or paint (P).")
            return False
        self.panel.flush_notes()
        target = path or (str(self.read.path) if self.read.path else None) or self._ask_save_path()
        if not target:
            return False
        if self.volume.path and Path(target).resolve() == Path(self.volume.path).resolve():
            self.error.emit("That is the scan itself; input files are never overwritten. Choose another name.")
            return False
        try:
            saved = self.read.save(target, f"reader mask on {self.volume.name}")
        except (OSError, XNetError) as exc:
            self.error.emit(f"Cannot save the reader mask to {target}: {exc}. Your edits are kept "
                                   "(and autosaved); choose another folder with File → Save reader mask as….")
            return False
        self.recovery.discard(self.volume)
        self.show_source()
        self.message.emit(f"reader mask saved to {saved} (notes: {saved.name} sidecar)", 8000)
        return True

    def save_as(self) -> bool:
        path = self._ask_save_path()
        return self.save(path) if path else False

    def _ask_save_path(self) -> str:
        suggestion = f"{self.volume.name}_reader_mask.nii.gz"
        if self.volume.path:
            suggestion = str(Path(self.volume.path).with_name(suggestion))
        path, _ = QFileDialog.getSaveFileName(self.dialog_parent, "Save reader mask", suggestion, "NIfTI (*.nii.gz *.nii)")
        return path

    def confirm_discard(self, doing: str) -> bool:
        """Unsaved edits: Save, Discard or Cancel before ``doing``. True when it may go on."""
        if self.read is None or not self.read.dirty:
            return True
        self.panel.flush_notes()
        answer = QMessageBox.question(
            self.dialog_parent, "X-Net Viewer", f"The reader mask has unsaved changes. Save them before you {doing}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        if answer == QMessageBox.StandardButton.Discard:
            self.recovery.discard(self.volume)
            return True
        return False

    def show_source(self) -> None:
        read = self.read
        if read is None:
            text = "No reader mask: File → Load reader mask…, or paint one (P)."
        else:
            where = str(read.path) if read.path else "not saved yet"
            text = f"Reader mask: {where}{' — unsaved changes' if read.dirty else ''}"
            text += "".join(f"\n{m}" for m in read.messages)
            if self.autosave_error:
                text += f"\nAutosave failed: {self.autosave_error}"
        self.panel.show_source(text)

    # -- painting ------------------------------------------------------------------------------
    def stroke(self, xy: tuple[float, float], phase: str) -> None:
        """One mouse event of a brush stroke on the shown section: 'start', 'move' or 'finish'."""
        read = self.ensure_read()
        if phase == "start":
            read.begin_stroke(self.state.plane, self.state.plane_index)
            self._stroke_previous = None
        if not read.in_stroke:
            return
        read.paint(xy, self.brush_radius, 0 if self.erasing else 1, self._stroke_previous)
        self._stroke_previous = xy
        self.layerChanged.emit()
        if phase == "finish":
            read.end_stroke()
            self._stroke_previous = None
            self.edited()

    def edited(self) -> None:
        """After any change of the read: figures, source line, autosave."""
        self.show_source()
        self.refresh_figures()
        self._compare_timer.start()
        self._autosave_timer.start()
        if not self._autosave_deadline.isActive():
            self._autosave_deadline.start()
        self.undoChanged.emit(bool(self.read and self.read.can_undo), bool(self.read and self.read.can_redo))

    def fill_holes(self) -> None:
        if self.ensure_read().fill_holes(self.state.plane, self.state.plane_index):
            self.layerChanged.emit()
            self.edited()

    def clear_section(self) -> None:
        if self.read is not None and self.read.clear_section(self.state.plane, self.state.plane_index):
            self.layerChanged.emit()
            self.edited()

    def undo(self) -> None:
        self._apply(self.read.undo() if self.read else None)

    def redo(self) -> None:
        self._apply(self.read.redo() if self.read else None)

    def _apply(self, where: tuple[str, int] | None) -> None:
        if where is None:
            return
        plane, index = where
        if plane == self.state.plane and index != self.state.plane_index:
            self.state.move(self.state.fixed_axis, index)  # show what changed
        self.layerChanged.emit()
        self.edited()

    def set_brush(self, radius: int) -> None:
        self.brush_radius = int(np.clip(radius, 1, MAX_BRUSH))
        QSettings().setValue("brush_radius", self.brush_radius)
        self.message.emit(f"brush radius {self.brush_radius} voxel(s)", 3000)

    def brush_smaller(self) -> None:
        self.set_brush(self.brush_radius - 1)

    def brush_larger(self) -> None:
        self.set_brush(self.brush_radius + 1)

    def section_rgba(self) -> np.ndarray | None:
        """The reader's mask on the shown section (None: nothing to draw)."""
        if self.read is None or not self.state.show_reader:
            return None
        return reader_rgba(plane_slice(self.read.mask, self.state.plane, self.state.plane_index), self.paint_mode)

    # -- notes ---------------------------------------------------------------------------------
    def _on_notes_edited(self, study: str, slice_note: str) -> None:
        z = self.state.slice if self._notes_z is None else self._notes_z  # before a new read redraws the panel
        read = self.ensure_read()
        if study == read.notes.study and slice_note == read.notes.slices.get(z, ""):
            return
        read.notes.study = study
        read.notes.set_slice(z, slice_note)
        read.notes_changed()
        self.edited()

    def _before_redraw(self, _event: Event) -> None:
        self.panel.flush_notes()

    # -- figures -------------------------------------------------------------------------------
    def refresh_figures(self) -> None:
        """The slice figures now (2D: cheap); the volume figures as last computed."""
        z, read, study = self.state.slice, self.read, self.study
        self.panel.show_notes(read.notes.study if read else "", read.notes.slices.get(z, "") if read else "", z)
        self._notes_z = z
        if read is None or not self.has_model or not study.segmented[z]:
            missing = "no model" if not self.has_model else "…"
            self.panel.show_masks(self.volume_figures if read else None, None, z, missing)
            self.panel.show_attention(None, None, list(METHODS))
            return
        status = {m: study.status(m, z) for m in METHODS}
        figures = slice_comparison(study.volume, z, study.mask_slice(z), read.mask[:, :, z],
                                   {m: study.maps[m][:, :, z] for m in METHODS}, status)
        self.panel.show_masks(self.volume_figures, figures, z)
        volume_attention = (self.volume_figures or {}).get("attention")
        self.panel.show_attention(volume_attention, figures["attention"], list(METHODS))

    def update_volume_figures(self) -> None:
        """Whole-volume figures on a worker thread (labelling lesions takes ~0.3 s)."""
        study, read = self.study, self.read
        if read is None:
            return
        if not study.segmentation_complete:
            self._compare_timer.start(1000)  # the model mask is not whole yet
            return
        self._job += 1
        job, reader_mask = self._job, read.mask.copy()  # painting goes on while the thread reads
        probabilities, threshold, volume = study.probabilities, study.threshold, study.volume
        explained = {m: [z for z, s in study.explained[m].items() if s == "ok"] for m in METHODS}
        maps = dict(study.maps)

        def compute() -> None:
            try:
                model = (probabilities >= threshold).astype(np.uint8)
                figures = volume_comparison(volume, model, reader_mask, maps, explained)
            except Exception as exc:  # noqa: BLE001 (shown, never a dead thread)
                log.exception("comparison failed")
                figures = {"error": str(exc)}
            self.volumeFigures.emit(job, figures)

        self._threads.submit(compute)

    def model_changed(self) -> None:
        """Threshold, segmentation or maps changed: new figures soon."""
        if self.read is not None:
            self._compare_timer.start()

    def _on_volume_figures(self, job: int, figures: dict) -> None:
        if job != self._job:
            return  # a newer job is on its way
        if "error" in figures:
            self.error.emit(f"The comparison could not be computed: {figures['error']}")
            return
        self.volume_figures = figures
        self.panel.show_lesions(figures["model_only_lesions"], figures["reader_only_lesions"])
        self.refresh_figures()

    # -- autosave ------------------------------------------------------------------------------
    def autosave_now(self) -> None:
        """Snapshot on the UI thread (a copy, ~2 ms), write on the worker thread (temp file + rename)."""
        self._autosave_timer.stop()
        self._autosave_deadline.stop()
        read = self.read
        if read is None or not read.dirty:
            return
        volume = self.volume
        mask, notes, saved_path = read.mask.copy(), read.notes.as_dict(), read.path

        def write() -> None:
            try:
                self.recovery.write(volume, mask, notes, saved_path)
                error = ""
            except (OSError, XNetError) as exc:
                error = str(exc)
            self.autosaved.emit(error)

        self._threads.submit(write)

    def _on_autosaved(self, error: str) -> None:
        self.autosave_error = error
        if error:
            log.warning("autosave failed: %s", error)
        self.show_source()

    def wait_idle(self) -> None:
        """Let queued autosaves and figures finish (closing, tests)."""
        self._threads.submit(lambda: None).result()

    def shutdown(self) -> None:
        """The window closes: pending timers must not hand work to a stopped thread pool."""
        for timer in (self._autosave_timer, self._autosave_deadline, self._compare_timer):
            timer.stop()
        self._threads.shutdown(wait=True)

