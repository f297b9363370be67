"""Exports from the viewer: the PDF report (missing maps computed first, with progress and Cancel),
the current view as PNG (1x/2x/4x, disclaimer banner included), the model's mask, probabilities and
maps as NIfTI on the scan's grid (as the command line writes them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, QPoint, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QProgressDialog,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
)

from app.reader import Notes
from app.report import ReportInputs, maps_needed, model_summary, report_precision, write_report
from explain.methods import CAM_METHODS, METHODS
from xnet_core.atomic import atomic_path
from xnet_core.errors import Cancelled, XNetError
from xnet_core.volume import save_like

if TYPE_CHECKING:
    from app.window import ViewerWindow

log = logging.getLogger(__name__)

CHOICES = ("current", "range", "lesion", "bookmarked")
LIME_SECONDS_PER_SLICE_CPU = 80  # measured on a 2-core CPU (benchmarks/results/bench_explain_cpu.txt)


def slices_for(window: "ViewerWindow", choice: str, first: int = 0, last: int = 0) -> list[int]:
    """The slices a report covers: the current one, a range (inclusive), all with predicted lesion, or
    the bookmarked ones."""
    if choice == "current":
        return [window.current_slice]
    if choice == "range":
        low, high = sorted((first, last))
        return list(range(max(low, 0), min(high, window.volume.shape[2] - 1) + 1))
    if choice == "lesion":
        return [int(z) for z in np.flatnonzero(window.study.lesion_area_per_slice_mm2() > 0)]
    return sorted(window.bookmarks)


class ReportDialog(QDialog):
    """Which slices, and whether to include LIME (slow on a CPU)."""

    def __init__(self, window: "ViewerWindow") -> None:
        super().__init__(window)
        self.setWindowTitle("Export report (PDF)")
        n = window.volume.shape[2]
        self.buttons = QButtonGroup(self)
        labels = {"current": f"Current slice (z {window.current_slice})", "range": "Slices from",
                  "lesion": f"All slices with predicted lesion ({len(slices_for(window, 'lesion'))})",
                  "bookmarked": f"Bookmarked slices ({len(window.bookmarks)}; B bookmarks a slice)"}
        column = QVBoxLayout(self)
        self.first, self.last = QSpinBox(), QSpinBox()
        for box in (self.first, self.last):
            box.setRange(0, n - 1)
            box.setValue(window.current_slice)
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
        self.buttons.button(CHOICES.index("lesion") if window.study.segmentation_complete else 0).setChecked(True)
        self.lime = QCheckBox(f"Include LIME (about {LIME_SECONDS_PER_SLICE_CPU} s per slice on a 2-core CPU "
                              "unless already computed; left out, its panel says so)")
        self.lime.setChecked(False)
        column.addWidget(self.lime)
        self.identify = QCheckBox("Include patient identifiers (name, ID, birth date, from the DICOM headers)")
        self.identify.setChecked(False)
        self.identify.setEnabled(bool(window.volume.identifiers))
        column.addWidget(self.identify)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        column.addWidget(box)

    @property
    def choice(self) -> str:
        return CHOICES[self.buttons.checkedId()]


class ReportExport(QObject):
    """One export: wait for the missing maps (the model worker computes them), then write the PDF."""

    def __init__(self, window: "ViewerWindow", slices: list[int], methods: list[str], path: str,
                 identify: bool = False) -> None:
        super().__init__(window)
        self.window, self.slices, self.methods, self.path = window, slices, methods, path
        self.identify = identify
        self.finished = False
        self.result: Path | None = None
        self.requested = False
        self.needed = maps_needed(window.study, slices, methods)
        self.progress = QProgressDialog("Computing the missing maps…", "Cancel", 0, max(self._total(), 1), window)
        self.progress.setWindowTitle("Export report")
        self.progress.setMinimumDuration(0)
        self.progress.canceled.connect(self.cancel)
        window.study_changed.connect(self._check)
        if window.worker is not None:
            window.worker.limeEnded.connect(self._on_lime_ended)

    def _missing(self) -> list[tuple[int, str]]:
        study = self.window.study
        return [(z, m) for m, zs in self.needed.items() for z in zs if study.status(m, z) is None]

    def _total(self) -> int:
        return sum(len(zs) for zs in self.needed.values())

    def start(self) -> None:
        self._check()

    def _request(self) -> None:
        """Ask the worker for what is missing, once the whole-volume segmentation says which slices
        have lesion (the CAM scales need all of them)."""
        self.requested = True
        self.needed = maps_needed(self.window.study, self.slices, self.methods)
        self.progress.setMaximum(max(self._total(), 1))
        missing, worker = self._missing(), self.window.worker
        if missing and worker is not None:
            worker.request_maps(sorted({z for z, m in missing if m in CAM_METHODS}), lime=False)
            lime = sorted({z for z, m in missing if m == "lime"})
            if lime:
                worker.request_maps(lime, lime=True)

    def _check(self) -> None:
        if self.finished:
            return
        if self.window.worker is not None and not self.window.study.segmentation_complete:
            self.progress.setLabelText("Waiting for the segmentation of the whole scan…")
            return
        if not self.requested:
            self.progress.setLabelText("Computing the missing maps…")
            self._request()
        missing = self._missing()
        self.progress.setValue(self._total() - len(missing))
        if missing and self.window.worker is not None:
            return
        self._write()

    def _on_lime_ended(self, _z: int, how: str) -> None:
        if how == "cancelled" and not self.finished:
            self.cancel()  # the user stopped LIME (Esc): the report would wait for it forever

    def cancel(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.window.worker is not None:
            self.window.worker.cancel_maps()
        self.window.statusBar().showMessage("report export cancelled; nothing was written", 8000)
        self._disconnect()

    def _write(self) -> None:
        self.finished = True
        self._disconnect()
        self.progress.setLabelText("Writing the report…")
        self.progress.setRange(0, len(self.slices) + 1)
        try:
            self.result = write_report(report_inputs(self.window, self.slices, self.methods, self.identify), self.path,
                                       on_progress=lambda done, total: self.progress.setValue(done),
                                       should_cancel=self.progress.wasCanceled)
        except Cancelled:
            self.window.statusBar().showMessage("report export cancelled; nothing was written", 8000)
        except (OSError, XNetError) as exc:
            self.window.show_error(f"The report could not be written: {exc}")
        else:
            self.window.statusBar().showMessage(f"report written to {self.result}", 10000)
        finally:
            self.progress.close()

    def _disconnect(self) -> None:
        connections = [(self.window.study_changed, self._check)]
        if self.window.worker is not None:
            connections.append((self.window.worker.limeEnded, self._on_lime_ended))
        for signal, slot in connections:
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass


def report_inputs(window: "ViewerWindow", slices: list[int], methods: list[str],
                  identify: bool = False) -> ReportInputs:
    """What the viewer shows, as the report's inputs (the same builder as ``xnet report``)."""
    read = window.reader.read
    engine = window.engine
    return ReportInputs(
        study=window.study, slices=slices, methods=methods, levels=window.levels,
        model=model_summary(window.checkpoint),
        device=str(engine.device) if engine else "not loaded",
        precision=report_precision(engine) if engine else "–",
        colour_map=window.colour_map, opacity=window.opacity, mask_opacity=window.mask_opacity,
        radiological=window.radiological_view,
        reader_mask=read.mask if read is not None and read.mask.any() else None,
        reader_name=read.path.name if read is not None and read.path else "",
        notes=read.notes if read is not None else Notes(),
        registration=window.scan.registration_summary() if window.scan is not None else None,
        background=window.backgrounds.get(window.background),
        identifiers=window.volume.identifiers if identify else None)


def view_png(window: "ViewerWindow", path: str, scale: int) -> Path:
    """The panels with the disclaimer banner (the central widget), rendered at ``scale`` times its
    size: text and lines are drawn again at that size, not enlarged pixels."""
    widget = window.centralWidget()
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


def maps_nifti(window: "ViewerWindow", folder: str) -> list[Path]:
    """``<stem>_mask``, ``<stem>_prob`` and ``<stem>_<method>`` on the scan's grid, with provenance."""
    study, volume = window.study, window.volume
    if not study.segmentation_complete:
        raise XNetError("the segmentation is still running; export the maps when it is complete.")
    descrip = f"xnet {window.checkpoint.short_hash} research use only"
    out = Path(folder)
    written = [save_like(study.mask(), volume, out / f"{volume.name}_mask.nii.gz", descrip, np.uint8),
               save_like(study.probabilities, volume, out / f"{volume.name}_prob.nii.gz", descrip, np.float32)]
    for method in METHODS:
        if any(s == "ok" for s in study.explained[method].values()):
            written.append(save_like(study.maps[method], volume, out / f"{volume.name}_{method}.nii.gz",
                                     descrip, np.float32))
    return written
