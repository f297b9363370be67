"""Exports from the viewer: the PDF report (missing maps computed first, with progress and Cancel; a
page for each finding asked for, its maps explaining that lesion alone, as ``xnet report --lesion K``),
the current view as PNG (1x/2x/4x, disclaimer banner included), the model's mask, probabilities and
maps as NIfTI on the scan's grid (as the command line writes them).

They read a ``ViewState`` and a ``Study``, and what only the window knows (model, reader's read,
registration) through a ``ReportContext`` it builds; they tell the window what happened with signals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressDialog,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.jobs import ModelWorker
from app.reader import Notes, ReaderRead
from app.report import FindingPage, ReportInputs, finding_numbers, maps_needed, write_report
from app.study import Study
from app.view_state import ViewState
from explain.methods import CAM_METHODS, METHODS
from xnet_core.atomic import atomic_path
from xnet_core.errors import Cancelled, XNetError
from xnet_core.image import Volume
from xnet_core.volume import save_like

log = logging.getLogger(__name__)

CHOICES = ("current", "range", "lesion", "bookmarked")
LIME_SECONDS_PER_SLICE_CPU = 80  # measured on a 2-core CPU (benchmarks/results/bench_explain_cpu.txt)


@dataclass
class ReportContext:
    """What a report shows that neither the view state nor the study holds (the window knows it)."""

    model: dict  # app.report.model_summary of the checkpoint
    device: str
    precision: str
    read: ReaderRead | None = None  # the reader's read, if any
    registration: dict | None = None  # PlacedScan.registration_summary(); None: not placed yet
    background: Volume | None = None  # the sequence shown under the overlays, when not the model input


def slices_for(state: ViewState, study: Study, choice: str, first: int = 0, last: int = 0) -> list[int]:
    """The slices a report covers: the current one, a range (inclusive), all with predicted lesion, or
    the bookmarked ones."""
    if choice == "current":
        return [state.slice]
    if choice == "range":
        low, high = sorted((first, last))
        return list(range(max(low, 0), min(high, study.volume.shape[2] - 1) + 1))
    if choice == "lesion":
        return study.lesion_slices
    return sorted(state.bookmarks)


class ReportDialog(QDialog):
    """Which slices, which findings get a page of their own, and whether to include LIME (slow on a CPU)."""

    def __init__(self, state: ViewState, study: Study, parent: QWidget | None = None,
                 finding_choice: tuple[list[int], int] = ([], 0)) -> None:
        """``finding_choice``: (the findings offered: the lesion table's selected rows, else its listed
        findings; how many components the table holds)."""
        super().__init__(parent)
        self.setWindowTitle("Export report (PDF)")
        n = study.volume.shape[2]
        self.buttons = QButtonGroup(self)
        labels = {"current": f"Current slice (z {state.slice})", "range": "Slices from",
                  "lesion": f"All slices with predicted lesion ({len(study.lesion_slices)})",
                  "bookmarked": f"Bookmarked slices ({len(state.bookmarks)}; B bookmarks a slice)"}
        column = QVBoxLayout(self)
        self.first, self.last = QSpinBox(), QSpinBox()
        for box in (self.first, self.last):
            box.setRange(0, n - 1)
            box.setValue(state.slice)
        for index, choice in enumerate(CHOICES):
            button = QRadioButton(labels[choice])
            self.buttons.addButton(button, index)
            if choice == "range":
                row = QHBoxLayout()
                row.addWidget(button)
                row.addWidget(self.first)
                row.addWidget(QLabel("to"))
                row.addWidget(self.last)
                column.addLayout(row)
            else:
                column.addWidget(button)
        self.buttons.button(CHOICES.index("lesion") if study.segmentation_complete else 0).setChecked(True)
        self.lime = QCheckBox(f"Include LIME (about {LIME_SECONDS_PER_SLICE_CPU} s per slice on a 2-core CPU "
                              "unless already computed; left out, its panel says so)")
        self.lime.setChecked(False)
        self._add_findings(column, *finding_choice)
        column.addWidget(self.lime)
        self.identify = QCheckBox("Include patient identifiers (name, ID, birth date, from the DICOM headers)")
        self.identify.setChecked(False)
        self.identify.setEnabled(bool(study.volume.identifiers))
        column.addWidget(self.identify)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        column.addWidget(box)

    def _add_findings(self, column: QVBoxLayout, offered: list[int], count: int) -> None:
        self.findings = QCheckBox("Add a page for each of these findings, its maps explaining that lesion alone:")
        self.finding_numbers = QLineEdit(", ".join(str(k) for k in offered))
        self.finding_numbers.setPlaceholderText("numbers of the lesion table, e.g. 1, 3")
        self.finding_numbers.setToolTip("The # column of the Lesions panel (1 = the largest); each finding is "
                                        "shown on its largest cross-section, as xnet report --lesion K")
        self.findings.setChecked(False)
        if not count:
            self.findings.setText("Pages for findings explained alone: the lesion table appears when the "
                                  "segmentation is complete")
        for widget in (self.findings, self.finding_numbers):
            widget.setEnabled(bool(count))
            column.addWidget(widget)

    @property
    def choice(self) -> str:
        return CHOICES[self.buttons.checkedId()]

    def chosen_findings(self) -> list[int]:
        """The findings to explain alone on pages of their own (raises XNetError on a bad list)."""
        return finding_numbers(self.finding_numbers.text()) if self.findings.isChecked() else []


class ReportExport(QObject):
    """One export: wait for the missing maps (the model worker computes them), then write the PDF.

    ``context`` is asked when the PDF is written (the model may finish loading meanwhile). Without a
    worker (no model, or it failed) it writes what is there. ``findings``: lesion-table numbers, each
    explained alone on a page of its own (its largest cross-section, as ``xnet report --lesion K``)."""

    message = Signal(str, int)  # a status line, milliseconds to show it
    error = Signal(str)  # a problem the user must read

    def __init__(self, state: ViewState, study: Study, worker: ModelWorker | None,
                 context: Callable[[], ReportContext], slices: list[int], methods: list[str], path: str,
                 identify: bool = False, parent: QWidget | None = None, findings: list[int] | None = None) -> None:
        super().__init__(parent)
        self.state, self.study, self.worker, self.context = state, study, worker, context
        self.slices, self.methods, self.path, self.identify = slices, methods, path, identify
        self.findings = list(findings or [])
        self.located: dict[int, tuple[int, np.ndarray]] = {}  # K -> (its largest slice z, its voxels there)
        self.finding_maps: dict[int, dict[str, object]] = {k: {} for k in self.findings}  # K -> method -> result
        self.finding_errors: dict[int, str] = {}  # K -> why it has no page
        self.finished = False
        self.result: Path | None = None
        self.requested = False
        self.needed = maps_needed(study, slices, methods)
        self.progress = QProgressDialog("Computing the missing maps…", "Cancel", 0, max(self._total(), 1), parent)
        self.progress.setWindowTitle("Export report")
        self.progress.setMinimumDuration(0)
        self.progress.canceled.connect(self.cancel)
        if worker is not None:  # the window applies each result first (it connected first)
            for signal, slot in self._connections():
                signal.connect(slot)

    def _connections(self) -> list:
        worker = self.worker
        return [(worker.sliceSegmented, self._check), (worker.explained, self._check),
                (worker.limeEnded, self._on_lime_ended), (worker.failed, self._on_worker_failed),
                (worker.findingLocated, self._on_finding_located),
                (worker.findingExplained, self._on_finding_explained),
                (worker.findingFailed, self._on_finding_failed)]

    def _missing(self) -> list[tuple[int, str]]:
        return [(z, m) for m, zs in self.needed.items() for z in zs if self.study.status(m, z) is None]

    def _findings_left(self) -> int:
        """Finding maps still to come (each finding counts its methods until it is located)."""
        return sum(len(self.methods) - len(self.finding_maps[k]) for k in self.findings if k not in self.finding_errors)

    def _total(self) -> int:
        return sum(len(zs) for zs in self.needed.values()) + len(self.findings) * len(self.methods)

    def start(self) -> None:
        self._check()
        # Maps the worker sent before this export listened reach the window only; once the events
        # already queued are handled, a second check counts them (the report waited forever).
        QTimer.singleShot(0, self._check)

    def _request(self) -> None:
        """Ask the worker for what is missing, once the whole-volume segmentation says which slices
        have lesion (the CAM scales need all of them) and which lesions the findings are."""
        self.requested = True
        self.needed = maps_needed(self.study, self.slices, self.methods)
        self.progress.setMaximum(max(self._total(), 1))
        missing, worker = self._missing(), self.worker
        if worker is None:
            return
        if missing:
            worker.request_maps(sorted({z for z, m in missing if m in CAM_METHODS}), lime=False)
            lime = sorted({z for z, m in missing if m == "lime"})
            if lime:
                worker.request_maps(lime, lime=True)
        for number in self.findings:
            worker.request_finding(number)

    def _on_finding_located(self, number: int, threshold: float, own: np.ndarray, z: int) -> None:
        if number in self.findings and number not in self.located and threshold == self.study.threshold:
            self.located[number] = (z, own[:, :, z].copy())
            self.worker.request_finding_maps(number, [z], lime="lime" in self.methods)

    def _on_finding_explained(self, result) -> None:
        number = result.params.get("lesion")
        if number in self.located and result.z == self.located[number][0] and result.method in self.methods \
                and result.params.get("threshold") == self.study.threshold:
            self.finding_maps[number][result.method] = result
            self._check()

    def _on_finding_failed(self, number: int, message: str) -> None:
        if number in self.findings:
            self.finding_errors[number] = message
            self._check()

    def _check(self, *_result) -> None:
        if self.finished:
            return
        if self.worker is not None and not self.study.segmentation_complete:
            self.progress.setLabelText("Waiting for the segmentation of the whole scan…")
            return
        if not self.requested:
            self.progress.setLabelText("Computing the missing maps…")
            self._request()
        left = len(self._missing()) + self._findings_left()
        self.progress.setValue(self._total() - left)
        if left and self.worker is not None:
            return
        self._write()

    def _on_lime_ended(self, _z: int, how: str) -> None:
        if how == "cancelled" and not self.finished:
            self.cancel()  # the user stopped LIME (Esc): the report would wait for it forever

    def _on_worker_failed(self, _message: str) -> None:
        """The model stopped: write what is there instead of waiting for it."""
        self._disconnect()
        self.worker = None
        self._check()

    def cancel(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.worker is not None:
            self.worker.cancel_maps()
        self.message.emit("report export cancelled; nothing was written", 8000)
        self._disconnect()
        self._delete_later()

    def finding_pages(self) -> list[FindingPage]:
        """A page for each located finding, as ``xnet report --lesion K`` makes it."""
        rows = self.study.lesion_rows() if self.located else []
        return [FindingPage.from_results(k, rows[k - 1], *self.located[k], list(self.finding_maps[k].values()))
                for k in self.findings if k in self.located and k not in self.finding_errors and k <= len(rows)]

    def _write(self) -> None:
        self.finished = True
        self._disconnect()
        self.progress.setLabelText("Writing the report…")
        findings = self.finding_pages()
        self.progress.setRange(0, len(self.slices) + len(findings) + 1)
        inputs = report_inputs(self.state, self.study, self.context(), self.slices, self.methods, self.identify,
                               findings)
        left_out = [f"finding {k} ({self.finding_errors.get(k, 'not computed: the model stopped')})"
                    for k in self.findings if k not in {page.number for page in findings}]
        try:
            self.result = write_report(inputs, self.path, on_progress=lambda done, total: self.progress.setValue(done),
                                       should_cancel=self.progress.wasCanceled)
        except Cancelled:
            self.message.emit("report export cancelled; nothing was written", 8000)
        except (OSError, XNetError) as exc:
            self.error.emit(f"The report could not be written: {exc}")
        else:
            self.message.emit(f"report written to {self.result}", 10000)
            if left_out:
                self.error.emit(f"The report was written without a page for {'; '.join(left_out)}.")
        finally:
            self.progress.close()
            self._delete_later()

    def _delete_later(self) -> None:
        """Done: Qt deletes this export and its progress dialog, children of the window that hold the
        study (kept, every exported scan stayed in memory for the whole session: bench_soak.py)."""
        self.progress.deleteLater()
        self.deleteLater()

    def _disconnect(self) -> None:
        if self.worker is None:
            return
        for signal, slot in self._connections():
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass


class Exports(QObject):
    """The window's File → Export commands: ask what and where (tests pass the answers), then write;
    what happened goes out as signals."""

    message = Signal(str, int)  # a status line, milliseconds to show it
    error = Signal(str)  # a problem the user must read

    def __init__(self, state: ViewState, parent: QWidget) -> None:
        super().__init__(parent)
        self.state, self.parent_widget = state, parent

    def report(self, study: Study, worker: ModelWorker | None, context: Callable[[], ReportContext] | None,
               path: str | None = None, choice: str | None = None, lime: bool | None = None, first: int = 0,
               last: int = 0, identify: bool = False, findings: list[int] | None = None,
               finding_choice: tuple[list[int], int] = ([], 0)) -> ReportExport | None:
        """The PDF report (``context`` None: no model yet). Missing maps are computed first. ``findings``:
        lesion-table numbers that get a page each; ``finding_choice``: what the dialog offers (the
        navigator's ``finding_choice``)."""
        if context is None:
            self.error.emit("No model is loaded yet: the report needs the model's segmentation.")
            return None
        if choice is None:
            dialog = ReportDialog(self.state, study, self.parent_widget, finding_choice)
            if dialog.exec() != ReportDialog.DialogCode.Accepted:
                return None
            choice, lime, identify = dialog.choice, dialog.lime.isChecked(), dialog.identify.isChecked()
            first, last = dialog.first.value(), dialog.last.value()
            try:
                findings = dialog.chosen_findings()
            except XNetError as exc:
                self.error.emit(f"The report was not written: {exc} Type the numbers of the lesion table's # column.")
                return None
        findings = findings or []
        count = finding_choice[1]
        if any(k > count for k in findings):
            self.error.emit(f"The report was not written: there is no finding {max(findings)}; the lesion table "
                            f"holds {count} component(s) at threshold {study.threshold:.2f}. Use the numbers of its "
                            "# column.")
            return None
        slices = slices_for(self.state, study, choice, first, last)
        if not slices:
            self.error.emit(f"No slice to export ({choice}): choose other slices.")
            return None
        if path is None:
            volume, name = study.volume, f"{study.volume.name}_report.pdf"
            suggestion = str(Path(volume.path).with_name(name)) if volume.path else name
            path, _ = QFileDialog.getSaveFileName(self.parent_widget, "Export report", suggestion, "PDF (*.pdf)")
            if not path:
                return None
        methods = [m for m in METHODS if m != "lime" or lime]
        export = ReportExport(self.state, study, worker, context, slices, methods, path, identify, self.parent_widget,
                              findings)
        export.message.connect(self.message)
        export.error.connect(self.error)
        export.start()
        return export

    def png(self, widget: QWidget, study: Study, path: str | None = None, scale: int = 1) -> Path | None:
        """``widget`` (the panels and the banner) as PNG at ``scale`` times its size."""
        if path is None:
            suggestion = f"{study.volume.name}_z{self.state.slice}_{scale}x.png"
            path, _ = QFileDialog.getSaveFileName(self.parent_widget, "Export view as PNG", suggestion, "PNG (*.png)")
            if not path:
                return None
        try:
            written = view_png(widget, path, scale)
        except (OSError, XNetError) as exc:
            self.error.emit(f"The image could not be written: {exc}")
            return None
        self.message.emit(f"view written to {written}", 8000)
        return written

    def nifti(self, study: Study, model_hash: str | None, folder: str | None = None) -> list[Path]:
        """The mask, the probabilities and the computed maps as NIfTI (``model_hash`` None: no model)."""
        if model_hash is None:
            self.error.emit("No model is loaded: there is no mask or map to export.")
            return []
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.parent_widget, "Export NIfTI maps to folder")
            if not folder:
                return []
        try:
            written = maps_nifti(study, model_hash, folder)
        except (OSError, XNetError) as exc:
            self.error.emit(f"The maps could not be written: {exc}")
            return []
        self.message.emit(f"{len(written)} NIfTI file(s) written to {folder}", 8000)
        return written


def report_inputs(state: ViewState, study: Study, context: ReportContext, slices: list[int], methods: list[str],
                  identify: bool = False, findings: list[FindingPage] | None = None) -> ReportInputs:
    """What the viewer shows, as the report's inputs (the same builder as ``xnet report``)."""
    read = context.read
    return ReportInputs(
        study=study, slices=slices, methods=methods, levels=state.levels, model=context.model,
        device=context.device, precision=context.precision,
        colour_map=state.colour_map, opacity=state.opacity, mask_opacity=state.mask_opacity,
        radiological=state.radiological,
        reader_mask=read.mask if read is not None and read.mask.any() else None,
        reader_name=read.path.name if read is not None and read.path else "",
        notes=read.notes if read is not None else Notes(),
        registration=context.registration, background=context.background,
        identifiers=study.volume.identifiers if identify else None, min_lesion_ml=state.min_lesion_ml,
        findings=list(findings or []))


def view_png(widget: QWidget, path: str, scale: int) -> Path:
    """The panels with the disclaimer banner (the window's central widget), rendered at ``scale``
    times its size: text and lines are drawn again at that size, not enlarged pixels."""
    image = QImage(widget.width() * scale, widget.height() * scale, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.white)
    painter = QPainter(image)
    painter.scale(scale, scale)
    widget.render(painter, QPoint(0, 0))
    painter.end()
    target = Path(path)
    with atomic_path(target, suffix=".png") as tmp:
        if not image.save(str(tmp), "PNG"):
            raise XNetError(f"{target}: the image could not be written; check the folder and the free space.")
    return target


def maps_nifti(study: Study, model_hash: str, folder: str) -> list[Path]:
    """``<stem>_mask``, ``<stem>_prob`` and ``<stem>_<method>`` on the scan's grid, with provenance."""
    volume = study.volume
    if not study.segmentation_complete:
        raise XNetError("the segmentation is still running; export the maps when it is complete.")
    descrip = f"xnet {model_hash} research use only"
    out = Path(folder)
    written = [save_like(study.mask(), volume, out / f"{volume.name}_mask.nii.gz", descrip, np.uint8),
               save_like(study.probabilities, volume, out / f"{volume.name}_prob.nii.gz", descrip, np.float32)]
    for method in METHODS:
        if any(s == "ok" for s in study.explained[method].values()):
            written.append(save_like(study.maps[method], volume, out / f"{volume.name}_{method}.nii.gz",
                                     descrip, np.float32))
    return written
