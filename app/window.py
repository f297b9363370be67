"""The main window: the segmentation next to Grad-CAM, Grad-CAM++ and LIME on one shared slice.

A thin shell. What is shown lives in ``app.view_state`` (plain Python, with change events); the
window subscribes and draws through ``app.panels``. Its commands come from the one table of
``app.actions``; the model works in the background (``app.jobs``); numbers come from ``app.study`` /
``xnet_core`` / ``explain``; the reader's tools and the exports work on the view state and the study.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QApplication, QDockWidget, QFileDialog, QMainWindow, QMessageBox

from app import actions
from app.actions import PAGE_STEP
from app.backgrounds import Backgrounds
from app.controls import Controls, banner_text, saved_view_state
from app.drawing import PLANE_AXES
from app.files import RecentFiles, ask_open_path, load_asking_series
from app.findings_view import FindingsView
from app.navigator import LesionNavigator
from app.pacs_actions import PacsActions
from app.panels import PanelGrid, Scene
from app.readout import voxel_readout, window_readout
from app.reader_tools import ReaderTools
from app.session import ModelSession
from app.study import Study, grey_window
from app.view_state import Event
from xnet_core import __version__
from xnet_core.errors import XNetError
from xnet_core.image import Volume

if TYPE_CHECKING:  # torch-backed modules load on the worker thread, after the scan is on screen
    from app.export import Exports, ReportContext, ReportExport
    from explain.engine import ExplanationEngine, SliceExplanation
    from xnet_core.checkpoint import Checkpoint

log = logging.getLogger(__name__)

# View-state fields after whose change every panel is drawn again.
REDRAWN_ON = ("show_segmentation", "outline_mode", "show_heatmaps", "colour_map", "opacity", "mask_opacity",
              "levels", "background", "bookmarks")


class ViewerWindow(QMainWindow):
    """One scan, the model's mask and three explanation maps in linked panels."""

    def __init__(self, volume: Volume, checkpoint: "Checkpoint | str | Path | None", device: str = "auto",
                 engine: "ExplanationEngine | None" = None, start_model: bool = True, mirror: bool = True) -> None:
        """``checkpoint``: a loaded Checkpoint, or the path of weights that the worker thread loads
        (with torch) after the scan is on screen; None shows the scan without a model. ``mirror``: the
        segmentation's test-time mirroring (``xnet_core.inference``)."""
        super().__init__()
        self.model = ModelSession(checkpoint, device, engine, start_model, mirror)
        self.volume = volume
        self.state = saved_view_state()
        self.backgrounds = Backgrounds(volume)  # other sequences of the subject, on the model input's grid
        self._hover: tuple[int, int] | None = None  # section coordinates under the mouse
        self.last_error = ""
        self.reader = ReaderTools(self.state, self)
        self.pacs = PacsActions(self)  # File → Open from PACS…, Send results to PACS…, PACS settings…
        self.grid = PanelGrid(volume.voxel_sizes, self.state.radiological, lambda: self.reader.paint_mode)
        self.panels, self.side_panel = self.grid.panels, self.grid.side_panel
        self.controls = Controls(self.model.card, self.state.colour_map, self.state.mask_opacity)
        self.navigator = LesionNavigator()
        self._threshold_timer = QTimer(self)
        self._threshold_timer.setSingleShot(True)
        self._threshold_timer.setInterval(150)  # debounce threshold changes: labelling takes ~0.2 s
        built = actions.build(self, self.state)
        self.actions_by_name = built.actions
        self.recent = RecentFiles(built.submenus["recent"], self.open_scan)
        self.model_input_menu = built.submenus["model_input"]
        self.findings = FindingsView(self, self._refresh)  # one finding explained alone (K, Enter, Esc)
        self._exports: Exports | None = None
        self.controls.add_to_toolbar(built.toolbars["Overlays"])
        self.addToolBar(built.toolbars["Overlays"])
        self.addToolBarBreak()
        self.addToolBar(built.toolbars["Reader"])
        self.setCentralWidget(self.controls.central_widget(self.grid))
        self._make_docks()
        self.controls.add_to_status_bar(self.statusBar())
        self._connect()
        self.setAcceptDrops(True)
        self.controls.model_label.setText("loading the model…" if self.model.start_model else "no model")
        available = self.screen().availableGeometry()
        self.resize(min(1600, int(available.width() * 0.9)), min(1000, int(available.height() * 0.9)))
        self.set_volume(volume)

    # -- construction ----------------------------------------------------------------------
    def _make_docks(self) -> None:
        self.docks = {}
        for title, widget in (("Lesions", self.navigator), ("Reader", self.reader.panel)):
            dock = QDockWidget(title, self)
            dock.setWidget(widget)
            widget.setMaximumWidth(380)  # the panels keep most of the window
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
            self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
            self.docks[title] = dock
        self.tabifyDockWidget(self.docks["Lesions"], self.docks["Reader"])
        self.docks["Lesions"].raise_()

    def _connect(self) -> None:
        """Widgets set the view state; the window draws what the state says."""
        controls = self.controls
        controls.slider.valueChanged.connect(self.set_plane_index)
        controls.threshold_box.valueChanged.connect(self.set_threshold)
        controls.colour_box.currentTextChanged.connect(self.set_colour_map)
        controls.mask_opacity_box.valueChanged.connect(self.set_mask_opacity)
        controls.background_box.currentTextChanged.connect(self.set_background)
        self.navigator.jump.connect(self.set_slice)
        self.navigator.follow(self.state)
        self._threshold_timer.timeout.connect(self._threshold_settled)
        self.grid.wheelSteps.connect(self.step_slice)
        self.grid.hovered.connect(self._on_hover)
        self.grid.windowDrag.connect(self.state.adjust_window)
        self.grid.stroke.connect(self.reader.stroke)
        self.reader.layerChanged.connect(self.redraw_reader)
        self.reader.undoChanged.connect(self._on_undo_changed)
        self.reader.error.connect(self.show_error)
        self.reader.message.connect(self.statusBar().showMessage)
        model = self.model
        for signal, slot in ((model.ready, self._on_engine_ready), (model.sliceSegmented, self._on_slice_segmented),
                             (model.explained, self._on_explained), (model.progress, self.controls.show_progress),
                             (model.failed, self._on_failed), (model.limeEnded, self._on_lime_ended),
                             (model.segmentationFinished, self._on_segmentation_finished),
                             (model.lesionsReady, self._on_lesions), (model.placed, self._on_placed)):
            signal.connect(slot)
        self._on_undo_changed(False, False)
        events = self.state.events
        for name in REDRAWN_ON:
            getattr(events, name).connect(self._refresh)
        self.grid.follow(self.state)  # first: orientation and panel mode before any redraw
        events.cursor.connect(self._on_cursor)
        events.slice.connect(self._on_slice)
        events.plane.connect(self._on_plane)
        events.radiological.connect(self._refresh)
        events.side_by_side.connect(self._refresh)
        events.show_template.connect(self._on_show_template)
        events.show_reader.connect(lambda _event: self.redraw_reader())
        events.colour_map.connect(lambda event: controls.colour_box.setCurrentText(event.value))
        events.mask_opacity.connect(lambda event: controls.show_mask_opacity(event.value))

    # -- a scan and its model --------------------------------------------------------------
    def set_volume(self, volume: Volume) -> None:
        """Show ``volume``: a fresh study and model worker; the previous scan's work stops."""
        self.model.retire()
        self.volume = volume
        self.controls.registration_label.setText("")
        self.backgrounds = Backgrounds(volume)
        self.state.reset_grid(volume.shape, grey_window(volume.data))
        self._fill_background_box()
        self.study = Study(volume, self.model.model_input(volume), threshold=self.controls.threshold_box.value())
        self.grid.set_voxel_sizes(volume.voxel_sizes)
        self._sync_slider()
        self.setWindowTitle(f"{volume.name} — X-Net Viewer {__version__}")
        self.model.start(self.study, self.current_slice)
        self._show_warnings()
        self.reader.scan_changed(self.study, self.model.has_model)
        self._refresh()
        self._update_navigator()
        self._on_hover(None)  # no crosshair until the mouse is over a panel
        self.grid.fit()

    def _show_warnings(self) -> None:
        self.controls.show_warnings(list(self.volume.warnings) + self.model.warnings(self.volume))

    # -- slices ----------------------------------------------------------------------------
    @property
    def current_slice(self) -> int:
        """The axial slice z (docs/design.md's slice number), whatever plane is shown."""
        return self.state.slice

    @property
    def plane_index(self) -> int:
        """The index of the shown section along the plane's fixed axis (z for axial)."""
        return self.state.plane_index

    def set_slice(self, z: int) -> None:
        """Go to axial slice ``z`` (clamped); in coronal/sagittal view this moves the cursor's z."""
        self.state.slice = z

    def set_plane_index(self, index: int) -> None:
        self.state.move(self.state.fixed_axis, index)
        self._sync_slider()

    def step_slice(self, steps: int) -> None:
        self.set_plane_index(self.plane_index + steps)

    def set_plane(self, plane: str) -> None:
        """Axial (default), coronal or sagittal sections of the same data, in every panel."""
        if plane == self.state.plane:
            self.grid.fit()
        self.state.plane = plane

    def _sync_slider(self) -> None:
        self.controls.show_slider(self.volume.shape[self.state.fixed_axis], self.plane_index)

    def _on_cursor(self, _event: Event) -> None:
        self._sync_slider()
        self._refresh()

    def _on_slice(self, event: Event) -> None:
        if self.model.worker is not None:
            self.model.worker.set_visible(event.value)

    def _on_plane(self, _event: Event) -> None:
        self._sync_slider()
        self._refresh()
        self.grid.fit()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        shift = 5 if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else 1
        steps = {Qt.Key.Key_Up: shift, Qt.Key.Key_Down: -shift,
                 Qt.Key.Key_PageUp: PAGE_STEP, Qt.Key.Key_PageDown: -PAGE_STEP}.get(event.key())
        if steps is None:
            super().keyPressEvent(event)
            return
        self.step_slice(steps)
        event.accept()

    # -- display choices -------------------------------------------------------------------
    def _on_show_template(self, event: Event) -> None:
        if event.value and self.model.template_outline is None:
            self.statusBar().showMessage("The template outline appears once the scan is placed on the template "
                                         "(registration in progress, or no model loaded).", 8000)
        self._refresh()

    def set_mask_opacity(self, percent: int) -> None:
        self.state.mask_opacity = percent / 100

    def opacity_up(self) -> None:
        """Heatmap opacity (the model mask has its own, in the toolbar)."""
        self.state.opacity = round(self.state.opacity + 0.1, 2)

    def opacity_down(self) -> None:
        self.state.opacity = round(self.state.opacity - 0.1, 2)

    def set_colour_map(self, name: str) -> None:
        self.state.colour_map = name

    def set_threshold(self, value: float) -> None:
        self.study.threshold = float(value)
        if self.controls.threshold_box.value() != value:
            self.controls.threshold_box.setValue(value)
        self._refresh()
        self._threshold_timer.start()
        self.reader.model_changed()

    def set_window_percentiles(self, low: float, high: float) -> None:
        """MRI presets are percentiles of the scan's foreground (CT's fixed HU windows mean nothing here)."""
        self.state.levels = grey_window(self._background_volume().data, (low, high))

    def reset_window(self) -> None:
        self.state.levels = self.state.initial_levels

    # -- the reader's read -----------------------------------------------------------------
    def set_paint_mode(self, on: bool) -> None:
        """Left drag paints the reader's mask (creating an empty one if none is loaded)."""
        self.reader.paint_mode = on
        if on:
            self.reader.ensure_read()
            self.state.show_reader = True
        self.grid.set_mouse_panning(not on)  # no panning under the brush
        self.redraw_reader()

    def set_eraser(self, on: bool) -> None:
        self.reader.erasing = on

    def redraw_reader(self) -> None:
        """Only the reader's layer: a brush stroke repaints this, not the scan or the heatmaps."""
        self.grid.draw_reader(self.reader.section_rgba())

    def _on_undo_changed(self, can_undo: bool, can_redo: bool) -> None:
        self.actions_by_name["undo"].setEnabled(can_undo)
        self.actions_by_name["redo"].setEnabled(can_redo)

    def choose_reader_mask(self) -> None:
        folder = str(Path(self.volume.path).parent) if self.volume.path else ""
        path = ask_open_path(self, "Load reader mask", folder)
        if path:
            self.reader.load(path)

    # -- model results ---------------------------------------------------------------------
    def _on_slice_segmented(self, z: int) -> None:
        if z == self.current_slice or self.state.plane != "axial":
            self._refresh()
        else:
            self._show_readout()

    def _on_explained(self, result: SliceExplanation) -> None:
        if result.params.get("threshold", self.study.threshold) != self.study.threshold:
            return  # computed for the mask of a threshold no longer shown
        self.study.add_explanation(result)
        self.reader.model_changed()
        if result.z == self.current_slice or result.ok:
            self._refresh()

    def _on_engine_ready(self, card_changed: bool) -> None:
        self.controls.show_model(self.model.checkpoint, self.model.engine.segmenter)
        if card_changed:
            self.controls.banner.setText(banner_text(self.model.card))
            if self.model.checkpoint.normalisation != self.study.model_input.normalisation:
                self.set_volume(self.volume)  # prepare again with the checkpoint's recipe

    def _on_placed(self) -> None:
        """The worker registered the scan (or found it on the template grid)."""
        scan = self.model.scan
        self.controls.show_registration(scan.registration_summary(), skipped=scan.not_registered is not None)
        self._show_warnings()
        self._refresh()

    def _on_segmentation_finished(self) -> None:
        self.controls.show_progress("segmentation complete", 1, 1)
        self.reader.model_changed()  # the worker sends the lesion table next

    def _threshold_settled(self) -> None:
        """Maps explain the predicted mask of the threshold they were computed at: once the threshold
        stops moving, maps of another one are dropped and the slice on screen is explained again."""
        if self.model.worker is not None and self.study.explained_at_other_threshold():
            self.study.forget_explanations()
            self.model.worker.forget_explanations()
            self._refresh()
        self._update_navigator()

    def _update_navigator(self) -> None:
        """The lesion table at the current threshold: labelled by the worker (off the UI thread)
        when there is one, here otherwise."""
        if self.model.worker is not None:
            if self.study.segmentation_complete:
                self.model.worker.request_lesions(self.study.threshold)
        elif self.study.segmentation_complete:
            self._on_lesions(self.study.threshold, self.study.lesion_rows())
        self.navigator.show_areas(self.study)
        self.navigator.set_current(self.current_slice)

    def _on_lesions(self, threshold: float, rows: list) -> None:
        if threshold == self.study.threshold:  # a newer threshold's table is on its way otherwise
            self.navigator.show_lesions(self.study, rows)

    def _on_failed(self, message: str) -> None:
        """The model could not run (e.g. unreadable weights): the scan stays, the problem is shown."""
        self.statusBar().showMessage(message, 15000)
        self.controls.progress_label.setText("model stopped")
        self.controls.model_label.setText("no model")
        self.controls.add_warning(f"Model: {message}")

    def _on_lime_ended(self, z: int, how: str) -> None:
        self.controls.progress_label.setText(f"LIME z {z}: {how}")
        self._refresh()

    def request_lime(self) -> None:
        if self.model.worker is not None:
            self.model.worker.request_lime(self.current_slice)
            self.controls.progress_label.setText(f"LIME z {self.current_slice}: queued")

    def cancel_lime(self) -> None:
        if self.model.worker is not None:
            self.model.worker.cancel_lime()

    def explain_all(self) -> None:
        if self.model.worker is not None:
            self.model.worker.explain_all_lesion_slices()

    # -- drawing and readout ---------------------------------------------------------------
    def _refresh(self, _event: Event | None = None) -> None:
        """Every layer of every panel, the slice label, the reader's figures and the readout."""
        self.grid.draw(self.state, self.study, self._scene())
        fixed, z = self.state.fixed_axis, self.current_slice
        self.controls.show_slice(fixed, self.plane_index, self.volume.shape[fixed], z in self.state.bookmarks)
        self.navigator.set_current(z)
        self.redraw_reader()
        self.reader.refresh_figures()
        self._show_readout()

    def _scene(self) -> Scene:
        side, side_levels = None, (0.0, 1.0)
        if self.state.side_by_side:
            side = self._side_volume()
            if side is not None:
                side_levels = self._remembered_levels("" if side is self.volume else side.name)[0]
        return Scene(self._background_volume(), side, side_levels, self.model.template_outline, self.model.has_model)

    def _on_hover(self, xy: tuple[int, int] | None) -> None:
        """``xy``: section coordinates under the mouse (RAS (x, y) on axial panels), or None."""
        self._hover = xy
        self.grid.set_crosshair(xy)
        self._show_readout()

    def _hovered_ras(self) -> tuple[int, int, int] | None:
        if self._hover is None:
            return None
        columns, rows, _ = PLANE_AXES[self.state.plane]
        ras = list(self.state.cursor)
        ras[columns], ras[rows] = self._hover
        return ras[0], ras[1], ras[2]

    def readout(self, ras_index: tuple[int, int, int]) -> str:
        """Slice, file voxel (i, j, k), world mm, intensity, model probability and each map's value."""
        read = self.reader.read
        return voxel_readout(self.study, ras_index, read.mask if read is not None else None, self.backgrounds,
                             self.findings.focus)

    def _show_readout(self) -> None:
        ras = self._hovered_ras()
        self.controls.readout_label.setText(window_readout(self.state) if ras is None else self.readout(ras))

    # -- sequences -------------------------------------------------------------------------
    def add_sequence(self, volume: Volume) -> bool:
        """Another sequence of the subject as a possible background (``app.backgrounds``)."""
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)  # resampling another grid takes a moment
        try:
            added = self.backgrounds.add(volume)
        finally:
            QApplication.restoreOverrideCursor()
        if not added:
            self.show_error(f"{volume.name} does not overlap {self.volume.name} in world coordinates; is it "
                            "from the same patient and session? It was not added.")
            return False
        self._fill_background_box()
        return True

    def choose_sequence(self) -> None:
        path = ask_open_path(self, "Add a sequence of this patient")
        if path:
            self.add_sequence_from(path)

    def add_sequence_from(self, path: str, series: str | None = None) -> bool:
        """Load a file or DICOM folder (asking which series) and add it as a sequence."""
        try:
            volume = load_asking_series(self, path, series)
        except XNetError as exc:
            self.show_error(f"Cannot add the sequence: {exc}")
            return False
        return volume is not None and self.add_sequence(volume)

    def _fill_background_box(self) -> None:
        self.controls.show_backgrounds(self.volume.name, list(self.backgrounds))
        self.model_input_menu.clear()
        for name in self.backgrounds.all_sources():
            action = self.model_input_menu.addAction(name, lambda n=name: self.set_model_input(n))
            action.setCheckable(True)
            action.setChecked(name == self.volume.name)

    def set_model_input(self, name: str) -> bool:
        """Another loaded sequence feeds the model (the T1 does by default): the study starts again on its
        grid (registered if need be) and the other sequences stay as backgrounds."""
        sequences = self.backgrounds.all_sources()
        if name not in sequences or name == self.volume.name:
            return False
        if not self.reader.confirm_discard("change the sequence that feeds the model"):
            return False
        chosen = sequences.pop(name)
        self.set_volume(chosen)
        for other in sequences.values():
            self.add_sequence(other)
        return True

    def set_background(self, name: str) -> None:
        """Show another sequence under the overlays; each keeps the window/level it was last given."""
        background = name if name in self.backgrounds else ""
        self._remembered_levels(background)
        self.state.background = background

    def _remembered_levels(self, background: str) -> tuple[tuple[float, float], tuple[float, float]]:
        """(window/level last used, initial window) of a sequence ("" = the model input), by the
        background box and the side-by-side panel alike."""
        return self.state.remember_levels(background, lambda: grey_window(self.backgrounds.get(background,
                                                                                                self.volume).data))

    def _background_volume(self) -> Volume:
        return self.backgrounds.get(self.state.background, self.volume)

    def _side_volume(self) -> Volume | None:
        """The side-by-side mode's second sequence: the model input when another background is shown,
        else the first other sequence."""
        if self.state.background:
            return self.volume
        first = next(iter(self.backgrounds), None)
        return None if first is None else self.backgrounds[first]

    # -- files ---------------------------------------------------------------------------------
    def open_scan(self, path: str, series: str | None = None) -> bool:
        """Open another scan (NIfTI file or DICOM folder; a folder with several series asks which);
        one that cannot be read leaves the current scan on screen."""
        if not self.reader.confirm_discard("open another scan"):
            return False
        try:
            volume = load_asking_series(self, path, series)
        except XNetError as exc:
            self.show_error(f"Cannot open the scan: {exc}")
            return False
        if volume is None:
            return False
        self.set_volume(volume)
        self.recent.remember(str(path))
        return True

    def open_weights(self, path: str) -> bool:
        """Use other X-Net weights; the current scan is segmented again with them."""
        from xnet_core.checkpoint import load_checkpoint

        try:
            checkpoint = load_checkpoint(path)
        except XNetError as exc:
            self.show_error(f"Cannot use these weights: {exc}")
            return False
        self.model.use_weights(checkpoint)
        self.controls.model_label.setText("loading the model…")
        self.set_volume(self.volume)
        return True

    def show_error(self, message: str) -> None:
        """A message that says what is wrong, without blocking the window."""
        self.last_error = message
        log.warning(message)
        self.statusBar().showMessage(message, 30000)
        box = QMessageBox(QMessageBox.Icon.Warning, "X-Net Viewer", message, QMessageBox.StandardButton.Ok, self)
        box.setModal(False)
        box.show()

    def choose_scan(self) -> None:
        path = ask_open_path(self, "Open scan")
        if path:
            self.open_scan(path)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a DICOM folder")
        if folder:
            self.open_scan(folder)

    def choose_weights(self) -> None:
        path = ask_open_path(self, "Choose X-Net weights", filters="PyTorch weights (*.pt *.pth)")
        if path:
            self.open_weights(path)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        urls = event.mimeData().urls()
        if urls:
            self.open_scan(urls[0].toLocalFile())

    # -- exports (app.export) ---------------------------------------------------------------
    @property
    def exports(self) -> "Exports":
        """Made on first use: the report's modules stay off the path to the first frame."""
        if self._exports is None:
            from app.export import Exports

            self._exports = Exports(self.state, self)
            self._exports.message.connect(self.statusBar().showMessage)
            self._exports.error.connect(self.show_error)
        return self._exports

    def export_report(self, path: str | None = None, choice: str | None = None, lime: bool | None = None,
                      first: int = 0, last: int = 0, identify: bool = False,
                      findings: list[int] | None = None) -> "ReportExport | None":
        """File → Export report: a dialog asks which slices, which findings get a page of their own and
        whether to include LIME, then where; tests pass the answers. Missing maps are computed first."""
        context = self._report_context if self.model.checkpoint is not None else None
        return self.exports.report(self.study, self.model.worker, context, path, choice, lime, first, last, identify,
                                   findings, self.navigator.finding_choice())

    def _report_context(self) -> "ReportContext":
        """What the report shows that only the window knows, as it is when the PDF is written."""
        from app.export import ReportContext

        scan = self.model.scan
        return ReportContext(*self.model.report_model(), read=self.reader.read,
                             registration=scan.registration_summary() if scan is not None else None,
                             background=self.backgrounds.get(self.state.background))

    def export_png(self, path: str | None = None, scale: int = 1) -> Path | None:
        return self.exports.png(self.centralWidget(), self.study, path, scale)

    def export_nifti(self, folder: str | None = None) -> list[Path]:
        checkpoint = self.model.checkpoint
        return self.exports.nifti(self.study, checkpoint.short_hash if checkpoint else None, folder)

    # -- help and closing ------------------------------------------------------------------
    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td><b>{key}</b></td><td>{what}</td></tr>" for key, what in actions.shortcut_rows())
        QMessageBox.information(self, "Keyboard shortcuts", f"<table>{rows}</table>")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if not self.reader.confirm_discard("close the viewer"):
            event.ignore()
            return
        self.model.stop()
        self.reader.shutdown()
        super().closeEvent(event)
