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

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app import actions
from app.actions import PAGE_STEP
from app.backgrounds import Backgrounds
from app.drawing import COLOUR_MAPS, PLANE_AXES
from app.files import RecentFiles, ask_open_path, load_asking_series
from app.jobs import ModelWorker
from app.navigator import LesionNavigator
from app.panels import PanelGrid, Scene
from app.readout import voxel_readout, window_readout
from app.reader_tools import ReaderTools
from app.study import Study, grey_window
from app.view_state import Event, ViewState
from xnet_core import DISCLAIMER, __version__
from xnet_core.cards import card_normalisation, read_sidecar_card
from xnet_core.errors import XNetError
from xnet_core.image import Volume
from xnet_core.native import provisional_input
from xnet_core.preprocess import is_template_grid, prepare

if TYPE_CHECKING:  # torch-backed modules load on the worker thread, after the scan is on screen
    from app.export import Exports, ReportContext, ReportExport
    from explain.engine import ExplanationEngine, SliceExplanation
    from xnet_core.checkpoint import Checkpoint

log = logging.getLogger(__name__)

BANNER_STYLE = "background: #ffcc00; color: black; font-weight: bold; font-size: 13px; padding: 4px;"
WARNING_STYLE = "background: #ffe0b2; color: black; padding: 3px;"
# View-state fields after whose change every panel is drawn again.
REDRAWN_ON = ("show_segmentation", "outline_mode", "show_heatmaps", "colour_map", "opacity", "mask_opacity",
              "levels", "background", "bookmarks")
SAVED_SETTINGS = {"opacity": "heatmap_opacity", "mask_opacity": "mask_opacity", "colour_map": "colour_map"}


def banner_text(card: dict) -> str:
    """The disclaimer, the model's intended use and its card's quality status (an interim demo model
    says so next to the images, not only in its card)."""
    text = DISCLAIMER
    if card.get("intended_use"):
        text += f"  Model: {card['intended_use']}"
    if card.get("status"):
        text += f"  Status: {card['status']}"
    return text


def _engine_factory(checkpoint, weights: Path | None, device: str, mirror: bool = True):
    """Builds the engine on the worker thread: torch, the weights and the model copies load there."""
    def build():
        from explain.engine import ExplanationEngine
        from xnet_core.checkpoint import load_checkpoint

        return ExplanationEngine(checkpoint or load_checkpoint(weights), device=device, mirror=mirror)
    return build


def saved_view_state() -> ViewState:
    """The view state with the display choices the user made last time."""
    settings = QSettings()
    return ViewState(opacity=float(settings.value("heatmap_opacity", 0.5)),
                     mask_opacity=float(settings.value("mask_opacity", 0.45)),
                     colour_map=str(settings.value("colour_map", "inferno")),
                     radiological=str(settings.value("radiological", "true")).lower() != "false")


class ViewerWindow(QMainWindow):
    """One scan, the model's mask and three explanation maps in linked panels."""

    def __init__(self, volume: Volume, checkpoint: "Checkpoint | str | Path | None", device: str = "auto",
                 engine: "ExplanationEngine | None" = None, start_model: bool = True, mirror: bool = True) -> None:
        """``checkpoint``: a loaded Checkpoint, or the path of weights that the worker thread loads
        (with torch) after the scan is on screen; None shows the scan without a model. ``mirror``: the
        segmentation's test-time mirroring (``xnet_core.inference``)."""
        super().__init__()
        self.checkpoint = None if isinstance(checkpoint, (str, Path)) else checkpoint
        self.weights_path = Path(checkpoint) if isinstance(checkpoint, (str, Path)) else None
        self.card = self.checkpoint.card if self.checkpoint is not None else read_sidecar_card(self.weights_path)
        self.has_model = checkpoint is not None
        self.start_model = start_model and self.has_model
        self.engine = engine  # built by the first worker when not given (off the UI thread)
        self.device, self.mirror = device, mirror
        self.volume = volume
        self.state = saved_view_state()
        self.backgrounds = Backgrounds(volume)  # other sequences of the subject, on the model input's grid
        self.worker: ModelWorker | None = None
        self.scan = None  # xnet_core.native.PlacedScan, once the worker placed the scan for the model
        self.template_outline = None  # the template's brain mask on the scan's grid
        self._placed_warnings: list[str] = []  # registration and T1 checks, once placed
        self._hover: tuple[int, int] | None = None  # section coordinates under the mouse
        self.last_error = ""
        self.reader = ReaderTools(self.state, self)
        self.grid = PanelGrid(volume.voxel_sizes, self.state.radiological, lambda: self.reader.paint_mode)
        self.panels, self.side_panel = self.grid.panels, self.grid.side_panel
        self._make_widgets()
        built = actions.build(self, self.state)
        self.actions_by_name = built.actions
        self.recent = RecentFiles(built.submenus["recent"], self.open_scan)
        self.model_input_menu = built.submenus["model_input"]
        self._exports: Exports | None = None
        self._add_toolbars(built.toolbars)
        self.setCentralWidget(self._layout())
        self._make_docks()
        self._make_status_bar()
        self._connect()
        self.setAcceptDrops(True)
        self.model_label.setText("loading the model…" if self.start_model else "no model")
        available = self.screen().availableGeometry()
        self.resize(min(1600, int(available.width() * 0.9)), min(1000, int(available.height() * 0.9)))
        self.set_volume(volume)

    # -- construction ----------------------------------------------------------------------
    def _make_widgets(self) -> None:
        self.slider = QSlider(Qt.Orientation.Vertical)  # top = superior, like the Up key
        self.slider.setPageStep(PAGE_STEP)
        self.slider.setToolTip("Axial slice z (also: mouse wheel, Up/Down, PageUp/PageDown)")
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slice_label = QLabel()
        self.threshold_box = QDoubleSpinBox()
        self.threshold_box.setRange(0.05, 0.95)
        self.threshold_box.setSingleStep(0.05)
        self.threshold_box.setDecimals(2)
        self.threshold_box.setValue(0.5)
        self.threshold_box.setToolTip("Probability threshold of the model mask")
        self.colour_box = QComboBox()
        self.colour_box.addItems(list(COLOUR_MAPS))
        self.colour_box.setCurrentText(self.state.colour_map)
        self.mask_opacity_box = QSpinBox()
        self.mask_opacity_box.setRange(0, 100)
        self.mask_opacity_box.setSuffix(" %")
        self.mask_opacity_box.setValue(int(round(self.state.mask_opacity * 100)))
        self.mask_opacity_box.setToolTip("Opacity of the filled model mask")
        self.background_box = QComboBox()
        self.background_box.setToolTip("Sequence shown under the overlays (the model always reads its input)")
        self.model_label, self.registration_label = QLabel(), QLabel()
        self.progress_label, self.readout_label = QLabel(), QLabel()
        self.navigator = LesionNavigator()
        self._threshold_timer = QTimer(self)
        self._threshold_timer.setSingleShot(True)
        self._threshold_timer.setInterval(150)  # debounce threshold changes: labelling takes ~0.2 s
        self.banner = QLabel(banner_text(self.card))
        self.banner.setStyleSheet(BANNER_STYLE)
        self.banner.setWordWrap(True)
        self.warnings_label = QLabel()
        self.warnings_label.setStyleSheet(WARNING_STYLE)
        self.warnings_label.setWordWrap(True)

    def _add_toolbars(self, toolbars: dict) -> None:
        overlays = toolbars["Overlays"]
        overlays.addSeparator()
        for label, widget in ((" threshold ", self.threshold_box), (" mask ", self.mask_opacity_box),
                              (" colours ", self.colour_box), (" background ", self.background_box)):
            overlays.addWidget(QLabel(label))
            overlays.addWidget(widget)
        self.addToolBar(overlays)
        self.addToolBarBreak()
        self.addToolBar(toolbars["Reader"])

    def _layout(self) -> QWidget:
        slider_column = QVBoxLayout()
        slider_column.addWidget(QLabel("S"), 0, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(self.slider, 1, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(QLabel("I"), 0, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(self.slice_label, 0, Qt.AlignmentFlag.AlignHCenter)
        row = QHBoxLayout()
        row.addWidget(self.grid, 1)
        row.addLayout(slider_column)
        central = QWidget()
        column = QVBoxLayout(central)
        column.addWidget(self.banner)
        column.addWidget(self.warnings_label)
        column.addLayout(row, 1)
        return central

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

    def _make_status_bar(self) -> None:
        self.statusBar().addWidget(self.readout_label, 1)
        self.statusBar().addPermanentWidget(self.progress_label)
        self.statusBar().addPermanentWidget(self.registration_label)
        self.statusBar().addPermanentWidget(self.model_label)

    def _connect(self) -> None:
        """Widgets set the view state; the window draws what the state says."""
        self.slider.valueChanged.connect(self.set_plane_index)
        self.threshold_box.valueChanged.connect(self.set_threshold)
        self.colour_box.currentTextChanged.connect(self.set_colour_map)
        self.mask_opacity_box.valueChanged.connect(self.set_mask_opacity)
        self.background_box.currentTextChanged.connect(self.set_background)
        self.navigator.jump.connect(self.set_slice)
        self._threshold_timer.timeout.connect(self._threshold_settled)
        self.grid.wheelSteps.connect(self.step_slice)
        self.grid.hovered.connect(self._on_hover)
        self.grid.windowDrag.connect(self.state.adjust_window)
        self.grid.stroke.connect(self._on_stroke)
        self.grid.view_box.sigRangeChanged.connect(self._on_view_range)
        self.reader.layerChanged.connect(self._on_reader_layer)
        self.reader.undoChanged.connect(self._on_undo_changed)
        self.reader.error.connect(self.show_error)
        self.reader.message.connect(self.statusBar().showMessage)
        self._on_undo_changed(False, False)
        events = self.state.events
        for name in REDRAWN_ON:
            getattr(events, name).connect(self._refresh)
        for name in SAVED_SETTINGS:
            getattr(events, name).connect(self._save_setting)
        events.cursor.connect(self._on_cursor)
        events.slice.connect(self._on_slice)
        events.plane.connect(self._on_plane)
        events.radiological.connect(self._on_radiological)
        events.single_panel.connect(self._apply_panel_mode)
        events.side_by_side.connect(self._on_side_by_side)
        events.show_template.connect(self._on_show_template)
        events.show_reader.connect(lambda _event: self.redraw_reader())
        events.colour_map.connect(lambda event: self.colour_box.setCurrentText(event.value))
        events.mask_opacity.connect(self._show_mask_opacity)
        events.zoom.connect(self._on_zoom)

    # -- a scan and its model --------------------------------------------------------------
    def set_volume(self, volume: Volume) -> None:
        """Show ``volume``: a fresh study and model worker; the previous scan's work stops."""
        self._retire_worker()
        self.volume = volume
        self.scan, self.template_outline, self._placed_warnings = None, None, []
        self.registration_label.setText("")
        self.backgrounds = Backgrounds(volume)
        self.state.reset_grid(volume.shape, grey_window(volume.data))
        self._fill_background_box()
        normalisation = card_normalisation(self.card)
        # A scan off the template grid is registered by the worker first: until then, only its head mask.
        provisional = self.start_model and not is_template_grid(volume)
        model_input = provisional_input(volume, normalisation) if provisional else prepare(volume, normalisation)
        self.study = Study(volume, model_input, threshold=self.threshold_box.value())
        self.grid.set_voxel_sizes(volume.voxel_sizes)
        self._sync_slider()
        self.setWindowTitle(f"{volume.name} — X-Net Viewer {__version__}")
        self._show_warnings()
        self.reader.scan_changed(self.study, self.has_model)
        if self.start_model:
            self._start_worker()
        self._refresh()
        self._update_navigator()
        self._on_hover(None)  # no crosshair until the mouse is over a panel
        self.grid.fit()

    def _start_worker(self) -> None:
        source = self.engine or _engine_factory(self.checkpoint, self.weights_path, self.device, self.mirror)
        self.worker = ModelWorker(source, self.study)
        self.worker.ready.connect(self._on_engine_ready)
        self.worker.sliceSegmented.connect(self._on_slice_segmented)
        self.worker.explained.connect(self._on_explained)
        self.worker.progress.connect(self._on_progress)
        self.worker.failed.connect(self._on_failed)
        self.worker.limeEnded.connect(self._on_lime_ended)
        self.worker.segmentationFinished.connect(self._on_segmentation_finished)
        self.worker.lesionsReady.connect(self._on_lesions)
        self.worker.placed.connect(self._on_placed)
        self.worker.start(self.current_slice)

    def _retire_worker(self) -> None:
        """Stop the current scan's worker without waiting for its step to end (a registration step can
        take seconds; it checks for the stop between steps and its signals are ignored from now on)."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop(timeout=0.2)

    def _stale(self) -> bool:
        """A signal from a worker of an earlier scan (queued before it was retired)."""
        sender = self.sender()
        return sender is not None and isinstance(sender, ModelWorker) and sender is not self.worker

    def _show_warnings(self) -> None:
        warnings = list(self.volume.warnings)
        if self.has_model and self.scan is not None:  # placed: registration and T1 checks are known
            warnings += self._placed_warnings
        elif self.has_model and not is_template_grid(self.volume):
            warnings.append(f"{self.volume.name} is not on the template grid: it is being registered to the "
                            "template before the model runs (progress in the status bar).")
        else:
            warnings.append("No model loaded: the scan is shown without segmentation or explanations.")
        self.warnings_label.setText("\n".join(warnings))
        self.warnings_label.setVisible(bool(warnings))

    def _model_text(self) -> str:
        segmenter = self.engine.segmenter
        return (f"{self.checkpoint.path.name} ({self.checkpoint.short_hash}) · {segmenter.device.type} · "
                f"{segmenter.precision}{' · mirrored' if segmenter.mirror else ''}")

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
        self.slider.blockSignals(True)
        self.slider.setRange(0, self.volume.shape[self.state.fixed_axis] - 1)
        self.slider.setValue(self.plane_index)
        self.slider.blockSignals(False)

    def _on_cursor(self, _event: Event) -> None:
        self._sync_slider()
        self._refresh()

    def _on_slice(self, event: Event) -> None:
        if self.worker is not None:
            self.worker.set_visible(event.value)

    def _on_plane(self, event: Event) -> None:
        self.grid.set_orientation(self.state.radiological, event.value)
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
    def _save_setting(self, event: Event) -> None:
        QSettings().setValue(SAVED_SETTINGS[event.type], event.value)

    def _on_radiological(self, event: Event) -> None:
        QSettings().setValue("radiological", "true" if event.value else "false")
        self.grid.set_orientation(event.value, self.state.plane)
        self._refresh()

    def _apply_panel_mode(self, _event: Event | None = None) -> None:
        self.grid.apply_mode(self.state.single_panel, self.state.side_by_side)

    def _on_side_by_side(self, _event: Event) -> None:
        """Two sequences next to each other (the background and another one), the model outline on both."""
        self._apply_panel_mode()
        self._refresh()

    def _on_show_template(self, event: Event) -> None:
        if event.value and self.template_outline is None:
            self.statusBar().showMessage("The template outline appears once the scan is placed on the template "
                                         "(registration in progress, or no model loaded).", 8000)
        self._refresh()

    def _on_view_range(self, _view_box, view_range, *_changed) -> None:
        self.state.zoom = (tuple(view_range[0]), tuple(view_range[1]))

    def _on_zoom(self, event: Event) -> None:
        """The zoom set on the state (not by the mouse): show that rectangle."""
        current = self.grid.view_box.viewRange()
        if event.value is not None and event.value != (tuple(current[0]), tuple(current[1])):
            self.grid.view_box.setRange(xRange=event.value[0], yRange=event.value[1], padding=0)

    def _show_mask_opacity(self, event: Event) -> None:
        self.mask_opacity_box.blockSignals(True)
        self.mask_opacity_box.setValue(int(round(event.value * 100)))
        self.mask_opacity_box.blockSignals(False)

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
        if self.threshold_box.value() != value:
            self.threshold_box.setValue(value)
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

    def _on_stroke(self, xy: tuple[float, float], phase: str) -> None:
        self.reader.stroke(xy, phase)

    def _on_reader_layer(self) -> None:
        self.redraw_reader()

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
    def _on_slice_segmented(self, z: int, _plane) -> None:
        if self._stale():
            return
        if z == self.current_slice or self.state.plane != "axial":
            self._refresh()
        else:
            self._show_readout()

    def _on_explained(self, result: SliceExplanation) -> None:
        if self._stale():
            return
        if result.params.get("threshold", self.study.threshold) != self.study.threshold:
            return  # computed for the mask of a threshold no longer shown
        self.study.add_explanation(result)
        self.reader.model_changed()
        if result.z == self.current_slice or result.ok:
            self._refresh()

    def _on_engine_ready(self, engine: "ExplanationEngine") -> None:
        if self._stale():
            return
        self.engine, self.checkpoint = engine, engine.checkpoint
        self.model_label.setText(self._model_text())
        if engine.checkpoint.card != self.card:  # weights loaded by the worker: their own card rules
            self.card = engine.checkpoint.card
            self.banner.setText(banner_text(self.card))
            if engine.checkpoint.normalisation != self.study.model_input.normalisation:
                self.set_volume(self.volume)  # prepare again with the checkpoint's recipe

    def _on_placed(self, scan, template_outline, warnings: list[str]) -> None:
        """The worker registered the scan (or found it on the template grid)."""
        if self._stale():
            return
        self.scan, self.template_outline, self._placed_warnings = scan, template_outline, warnings
        summary = scan.registration_summary()
        if summary["applied"]:
            poor = " (poor)" if summary["warning"] else ""
            self.registration_label.setText(f"registered · similarity {summary['similarity']:.2f}{poor}")
            self.registration_label.setToolTip(f"{summary['method']}; {summary['seconds']:.0f} s")
        else:
            self.registration_label.setText("template grid" if scan.not_registered is None else "not registered")
        self._show_warnings()
        self._refresh()

    def _on_segmentation_finished(self) -> None:
        if self._stale():
            return
        self._on_progress("segmentation complete", 1, 1)
        self.reader.model_changed()  # the worker sends the lesion table next

    def _threshold_settled(self) -> None:
        """Maps explain the predicted mask of the threshold they were computed at: once the threshold
        stops moving, maps of another one are dropped and the slice on screen is explained again."""
        if self.worker is not None and self.study.explained_at_other_threshold():
            self.study.forget_explanations()
            self.worker.forget_explanations()
            self._refresh()
        self._update_navigator()

    def _update_navigator(self) -> None:
        """The lesion table at the current threshold: labelled by the worker (off the UI thread)
        when there is one, here otherwise."""
        if self.worker is not None:
            if self.study.segmentation_complete:
                self.worker.request_lesions(self.study.threshold)
        elif self.study.segmentation_complete:
            self._on_lesions(self.study.threshold, self.study.lesion_rows())
        self.navigator.show_areas(self.study)
        self.navigator.set_current(self.current_slice)

    def _on_lesions(self, threshold: float, rows: list) -> None:
        if self._stale():
            return
        if threshold == self.study.threshold:  # a newer threshold's table is on its way otherwise
            self.navigator.show_lesions(self.study, rows)

    def _on_progress(self, task: str, done: int, total: int) -> None:
        if self._stale():
            return
        self.progress_label.setText(f"{task} {done}/{total}" if done < total else f"{task}: done")

    def _on_failed(self, message: str) -> None:
        """The model could not run (e.g. unreadable weights): the scan stays, the problem is shown."""
        if self._stale():
            return
        self.worker = None  # its thread has ended
        self.statusBar().showMessage(message, 15000)
        self.progress_label.setText("model stopped")
        self.model_label.setText("no model")
        self.warnings_label.setText("\n".join(filter(None, [self.warnings_label.text(), f"Model: {message}"])))
        self.warnings_label.setVisible(True)

    def _on_lime_ended(self, z: int, how: str) -> None:
        if self._stale():
            return
        self.progress_label.setText(f"LIME z {z}: {how}")
        self._refresh()

    def request_lime(self) -> None:
        if self.worker is not None:
            self.worker.request_lime(self.current_slice)
            self.progress_label.setText(f"LIME z {self.current_slice}: queued")

    def cancel_lime(self) -> None:
        if self.worker is not None:
            self.worker.cancel_lime()

    def explain_all(self) -> None:
        if self.worker is not None:
            self.worker.explain_all_lesion_slices()

    # -- drawing and readout ---------------------------------------------------------------
    def _refresh(self, _event: Event | None = None) -> None:
        """Every layer of every panel, the slice label, the reader's figures and the readout."""
        self.grid.draw(self.state, self.study, self._scene())
        fixed, z = self.state.fixed_axis, self.current_slice
        mark = "\n★ bookmarked" if z in self.state.bookmarks else ""
        self.slice_label.setText(f"{'xyz'[fixed]} {self.plane_index}\nof 0–{self.volume.shape[fixed] - 1}{mark}")
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
        return Scene(self._background_volume(), side, side_levels, self.template_outline, self.has_model)

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
        return voxel_readout(self.study, ras_index, read.mask if read is not None else None, self.backgrounds)

    def _show_readout(self) -> None:
        ras = self._hovered_ras()
        self.readout_label.setText(window_readout(self.state) if ras is None else self.readout(ras))

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
        self.background_box.blockSignals(True)
        self.background_box.clear()
        self.background_box.addItem(f"{self.volume.name} (model input)")
        self.background_box.addItems(list(self.backgrounds))
        self.background_box.blockSignals(False)
        self.background_box.setEnabled(bool(self.backgrounds))
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
        self._retire_worker()
        self.checkpoint, self.card, self.engine = checkpoint, checkpoint.card, None
        self.has_model = self.start_model = True
        self.model_label.setText("loading the model…")
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
                      first: int = 0, last: int = 0, identify: bool = False) -> "ReportExport | None":
        """File → Export report: a dialog asks which slices and whether to include LIME, then where;
        tests pass the answers. Missing maps are computed first (progress, Cancel). Returns the export."""
        context = self._report_context if self.checkpoint is not None else None
        return self.exports.report(self.study, self.worker, context, path, choice, lime, first, last, identify)

    def _report_context(self) -> "ReportContext":
        """What the report shows that only the window knows, as it is when the PDF is written."""
        from app.export import ReportContext
        from app.report import model_summary, report_precision

        engine = self.engine
        return ReportContext(model=model_summary(self.checkpoint),
                             device=str(engine.device) if engine else "not loaded",
                             precision=report_precision(engine) if engine else "–", read=self.reader.read,
                             registration=self.scan.registration_summary() if self.scan is not None else None,
                             background=self.backgrounds.get(self.state.background))

    def export_png(self, path: str | None = None, scale: int = 1) -> Path | None:
        return self.exports.png(self.centralWidget(), self.study, path, scale)

    def export_nifti(self, folder: str | None = None) -> list[Path]:
        return self.exports.nifti(self.study, self.checkpoint.short_hash if self.checkpoint else None, folder)

    # -- help and closing ------------------------------------------------------------------
    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td><b>{key}</b></td><td>{what}</td></tr>" for key, what in actions.shortcut_rows())
        QMessageBox.information(self, "Keyboard shortcuts", f"<table>{rows}</table>")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if not self.reader.confirm_discard("close the viewer"):
            event.ignore()
            return
        if self.worker is not None:
            self.worker.stop()
        self.reader.shutdown()
        super().closeEvent(event)
