"""The main window: the segmentation next to Grad-CAM, Grad-CAM++ and LIME on one shared slice.

Four linked panels (one slice index, crosshair, zoom and pan), the model working in the background
(``app.jobs``), overlay toggles with one key each, a live threshold, and a readout of every value at
the cursor. Numbers come from ``app.study`` / ``xnet_core`` / ``explain``; this module arranges them.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSlider,
    QSpinBox,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.jobs import ModelWorker
from app.navigator import LesionNavigator
from app.reader_tools import ReaderTools
from app.slice_panel import (COLOUR_MAPS, MODEL_COLOUR, PLANE_AXES, PLANES, TEMPLATE_COLOUR, SlicePanel,
                             displayed, lookup_table, outline_image, plane_slice)
from app.study import Study, grey_window
from explain.methods import METHOD_NAMES, METHODS
from xnet_core import DISCLAIMER, __version__
from xnet_core.errors import SeriesChoiceError, XNetError
from xnet_core.cards import card_normalisation, read_sidecar_card
from xnet_core.image import Volume, same_grid
from xnet_core.native import provisional_input
from xnet_core.preprocess import is_template_grid, prepare
from xnet_core.sequences import value_at_world
from xnet_core.volume import load_volume

if TYPE_CHECKING:  # torch-backed modules load on the worker thread, after the scan is on screen
    from explain.engine import ExplanationEngine, SliceExplanation
    from xnet_core.checkpoint import Checkpoint

log = logging.getLogger(__name__)

PAGE_STEP = 10
MAX_RECENT = 8
WINDOW_PRESETS = ((1, 99.5), (0.5, 99.9), (5, 95), (0, 100))
BANNER_STYLE = "background: #ffcc00; color: black; font-weight: bold; font-size: 13px; padding: 4px;"
WARNING_STYLE = "background: #ffe0b2; color: black; padding: 3px;"
SHORTCUTS = [
    ("Up / Down, mouse wheel", "next / previous slice (Shift: 5 slices)"),
    ("PageUp / PageDown", f"{PAGE_STEP} slices"),
    ("Ctrl + wheel, left drag", "zoom, pan (all panels together)"),
    ("Right drag", "window / level (horizontal: width, vertical: level)"),
    ("S", "segmentation overlay on/off"),
    ("O", "model mask filled / outline"),
    ("H", "heatmaps on/off"),
    ("+ / -", "overlay opacity up / down"),
    ("R", "radiological / neurological display"),
    ("L", "LIME on this slice"),
    ("Esc", "cancel LIME"),
    ("E", "explain all lesion slices (Grad-CAM, Grad-CAM++)"),
    ("F", "single panel / four panels"),
    ("Ctrl+1 / 2 / 3", "axial / coronal / sagittal"),
    ("P", "paint the reader's mask (left drag; off: left drag pans)"),
    ("X", "eraser on/off while painting"),
    ("[ / ]", "brush smaller / larger"),
    ("Ctrl+Z / Ctrl+Shift+Z", "undo / redo a stroke, fill or clear"),
    ("M", "reader's mask outline on/off"),
    ("Ctrl+S / Ctrl+Shift+S", "save the reader's mask (and notes) / save as"),
    ("B", "bookmark this slice for the report"),
    ("Ctrl+P", "export the PDF report"),
]


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


def pick_series_dialog(parent: QWidget, series: list) -> str | None:
    """Which series of a DICOM folder to open (description, images, date); its UID, or None."""
    labels = [info.label() for info in series]
    choice, ok = QInputDialog.getItem(parent, "Open DICOM folder", "This folder holds several series; open:",
                                      labels, 0, False)
    return series[labels.index(choice)].uid if ok and choice in labels else None


class PanelMouse:
    """A panel's mouse beyond pyqtgraph's pan and zoom (patched into its ViewBox): right drag sets
    window/level (pyqtgraph's right drag zooms), and in paint mode left drag and click paint."""

    def __init__(self, window: "ViewerWindow") -> None:
        self.window = window

    def install(self, panel: SlicePanel) -> None:
        view_box = panel.view_box
        original_drag, original_click = view_box.mouseDragEvent, view_box.mouseClickEvent

        def drag(ev, axis=None):
            left = ev.button() == Qt.MouseButton.LeftButton
            if left and self.window.reader.paint_mode:
                ev.accept()
                phase = "start" if ev.isStart() else "finish" if ev.isFinish() else "move"
                self.window.reader.stroke(self._section_xy(panel, ev), phase)
            elif ev.button() == Qt.MouseButton.RightButton:
                ev.accept()
                delta = ev.screenPos() - ev.lastScreenPos()
                self.window.adjust_window(delta.x(), -delta.y())
            else:
                original_drag(ev, axis)

        def click(ev):
            if ev.button() == Qt.MouseButton.LeftButton and self.window.reader.paint_mode:
                ev.accept()
                xy = self._section_xy(panel, ev)
                self.window.reader.stroke(xy, "start")
                self.window.reader.stroke(xy, "finish")
            else:
                original_click(ev)

        view_box.mouseDragEvent, view_box.mouseClickEvent = drag, click

    @staticmethod
    def _section_xy(panel: SlicePanel, ev) -> tuple[float, float]:
        return panel.image_to_section(panel.scan_item.mapFromScene(ev.scenePos()))


class ViewerWindow(QMainWindow):
    """One scan, the model's mask and three explanation maps in linked axial panels."""

    study_changed = Signal()  # a slice segmented or explained (exports wait on it)

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
        self.device = device
        self.mirror = mirror
        self._hover: tuple[int, int] | None = None
        self.show_segmentation, self.show_heatmaps, self.outline_mode = True, True, False
        settings = QSettings()
        self.opacity = float(settings.value("heatmap_opacity", 0.5))
        self.mask_opacity = float(settings.value("mask_opacity", 0.45))
        self.colour_map = str(settings.value("colour_map", "inferno"))
        self.radiological_view = str(settings.value("radiological", "true")).lower() != "false"
        self.bookmarks: set[int] = set()  # axial slices marked for the report
        self.backgrounds: dict[str, Volume] = {}  # other sequences of the subject, on the model input's grid
        self.sequence_sources: dict[str, Volume] = {}  # those resampled onto it, as loaded (for the readout)
        self.background = ""
        self.worker: ModelWorker | None = None
        self.scan = None  # xnet_core.native.PlacedScan, once the worker placed the scan for the model
        self.template_outline: np.ndarray | None = None  # the template's brain mask on the scan's grid
        self.show_template = False
        self.volume, self.plane = volume, "axial"
        self._cursor = [n // 2 for n in volume.shape]  # RAS (x, y, z) of the sections shown
        self.panels = {"segmentation": SlicePanel("Segmentation", volume.voxel_sizes)}
        for method in METHODS:
            self.panels[method] = SlicePanel(METHOD_NAMES[method], volume.voxel_sizes)
            self.panels[method].set_orientation(self.radiological_view, self.plane)
        self.panels["segmentation"].set_orientation(self.radiological_view, self.plane)  # saved setting
        self.side_panel = SlicePanel("Second sequence", volume.voxel_sizes)  # the side-by-side mode's right panel
        self.side_panel.set_orientation(self.radiological_view, self.plane)
        self.side_panel.setVisible(False)
        self.single_panel = self.side_by_side = False
        self._link_panels()
        self.slider = self._make_slider()
        self.slice_label = QLabel()
        self.threshold_box = self._make_threshold_box()
        self.colour_box = QComboBox()
        self.colour_box.addItems(list(COLOUR_MAPS))
        self.colour_box.setCurrentText(self.colour_map)
        self.colour_box.currentTextChanged.connect(self.set_colour_map)
        self.mask_opacity_box = QSpinBox()
        self.mask_opacity_box.setRange(0, 100)
        self.mask_opacity_box.setSuffix(" %")
        self.mask_opacity_box.setValue(int(round(self.mask_opacity * 100)))
        self.mask_opacity_box.setToolTip("Opacity of the filled model mask")
        self.mask_opacity_box.valueChanged.connect(self.set_mask_opacity)
        self.background_box = QComboBox()
        self.background_box.setToolTip("Sequence shown under the overlays (the model always reads its input)")
        self.background_box.currentTextChanged.connect(self.set_background)
        self.model_label = QLabel()
        self.registration_label = QLabel()
        self.progress_label = QLabel()
        self.readout_label = QLabel()
        self.navigator = LesionNavigator()
        self.navigator.jump.connect(self.set_slice)
        self._threshold_timer = QTimer(self)
        self._threshold_timer.setSingleShot(True)
        self._threshold_timer.setInterval(150)  # debounce threshold changes: labelling takes ~0.2 s
        self._threshold_timer.timeout.connect(self._threshold_settled)
        self.reader = ReaderTools(self)
        self._make_actions()
        self.setCentralWidget(self._layout())
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
        self._make_status_bar()
        self.setAcceptDrops(True)
        self.model_label.setText("loading the model…" if self.start_model else "no model")
        available = self.screen().availableGeometry()
        self.resize(min(1600, int(available.width() * 0.9)), min(1000, int(available.height() * 0.9)))
        self.set_volume(volume)

    def set_volume(self, volume: Volume) -> None:
        """Show ``volume``: a fresh study and model worker; the previous scan's work stops."""
        self._retire_worker()
        self.volume = volume
        self.scan, self.template_outline = None, None
        self.registration_label.setText("")
        self.backgrounds, self.background, self.sequence_sources = {}, "", {}
        self._levels_by_background: dict[str, tuple] = {}
        self._fill_background_box()
        self.levels = self.initial_levels = grey_window(volume.data)
        normalisation = card_normalisation(self.card)
        # A scan off the template grid is registered by the worker first: until then, only its head mask.
        provisional = self.start_model and not is_template_grid(volume)
        model_input = provisional_input(volume, normalisation) if provisional else prepare(volume, normalisation)
        self.study = Study(volume, model_input, threshold=self.threshold_box.value())
        self._cursor = [n // 2 for n in volume.shape]
        for panel in self.all_panels():
            panel.set_voxel_sizes(volume.voxel_sizes)
        self.slider.blockSignals(True)
        self.slider.setRange(0, volume.shape[PLANE_AXES[self.plane][2]] - 1)
        self.slider.setValue(self.plane_index)
        self.slider.blockSignals(False)
        self.setWindowTitle(f"{volume.name} — X-Net Viewer {__version__}")
        self._show_warnings()
        self.reader.scan_changed()
        if self.start_model:
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
        self._refresh()
        self._update_navigator()
        self._on_hover(None)  # no crosshair until the mouse is over a panel
        self.panels["segmentation"].view_box.autoRange(padding=0.02)

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

    # -- construction ----------------------------------------------------------------------
    def all_panels(self) -> list[SlicePanel]:
        """The four panels and the side-by-side mode's second-sequence panel."""
        return [*self.panels.values(), self.side_panel]

    def _link_panels(self) -> None:
        first = self.panels["segmentation"]
        mouse = PanelMouse(self)
        for panel in self.all_panels():
            if panel is not first:
                panel.view_box.setXLink(first.view_box)
                panel.view_box.setYLink(first.view_box)
            panel.wheelSteps.connect(self.step_slice)
            panel.hovered.connect(self._on_hover)
            mouse.install(panel)

    def _make_slider(self) -> QSlider:
        slider = QSlider(Qt.Orientation.Vertical)  # top = superior, like the Up key
        slider.setRange(0, self.volume.shape[2] - 1)
        slider.setPageStep(PAGE_STEP)
        slider.setToolTip("Axial slice z (also: mouse wheel, Up/Down, PageUp/PageDown)")
        slider.setValue(self.volume.shape[2] // 2)
        slider.valueChanged.connect(self.set_plane_index)
        slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        return slider

    def _make_threshold_box(self) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(0.05, 0.95)
        box.setSingleStep(0.05)
        box.setDecimals(2)
        box.setValue(0.5)
        box.setToolTip("Probability threshold of the model mask")
        box.valueChanged.connect(self.set_threshold)
        return box

    def _action(self, text: str, key: str, slot, checkable: bool = False, checked: bool = False) -> QAction:
        action = QAction(text, self)
        action.setShortcut(QKeySequence(key))
        action.setCheckable(checkable)
        if checkable:
            action.setChecked(checked)
            action.toggled.connect(slot)
        else:
            action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _make_actions(self) -> None:
        self.actions_by_name = {
            "segmentation": self._action("Segmentation", "S", self.set_show_segmentation, True, True),
            "outline": self._action("Outline", "O", self.set_outline_mode, True, False),
            "heatmaps": self._action("Heatmaps", "H", self.set_show_heatmaps, True, True),
            "radiological": self._action("Radiological", "R", self.set_radiological, True, self.radiological_view),
            "single": self._action("Single panel", "F", self.set_single_panel, True, False),
            "opacity_up": self._action("Opacity +", "+", lambda: self.set_opacity(self.opacity + 0.1)),
            "opacity_down": self._action("Opacity −", "-", lambda: self.set_opacity(self.opacity - 0.1)),
            "lime": self._action("LIME this slice", "L", self.request_lime),
            "cancel": self._action("Cancel LIME", "Esc", self.cancel_lime),
            "explain_all": self._action("Explain all lesion slices", "E", self.explain_all),
            "paint": self._action("Paint", "P", self.set_paint_mode, True, False),
            "eraser": self._action("Eraser", "X", self.set_eraser, True, False),
            "brush_down": self._action("Brush −", "[", lambda: self.reader.set_brush(self.reader.brush_radius - 1)),
            "brush_up": self._action("Brush +", "]", lambda: self.reader.set_brush(self.reader.brush_radius + 1)),
            "fill": self._action("Fill holes", "Shift+F", self.reader.fill_holes),
            "clear": self._action("Clear slice", "Shift+Del", self.reader.clear_section),
            "undo": self._action("Undo", "Ctrl+Z", self.reader.undo),
            "redo": self._action("Redo", "Ctrl+Shift+Z", self.reader.redo),
            "reader_outline": self._action("Reader outline", "M", self.set_show_reader, True, True),
            "save_reader": self._action("Save reader mask", "Ctrl+S", lambda: self.reader.save()),
            "save_reader_as": self._action("Save reader mask as…", "Ctrl+Shift+S", self.reader.save_as),
            "bookmark": self._action("Bookmark slice", "B", self.toggle_bookmark),
            "report": self._action("Export report (PDF)…", "Ctrl+P", self.export_report),
            "template": self._action("Template outline", "T", self.set_show_template, True, False),
            "side": self._action("Side by side", "D", self.set_side_by_side, True, False),
        }
        self.actions_by_name["template"].setToolTip(
            "The template's brain outline, moved onto the scan by the registration: judge the alignment (T)")
        self.actions_by_name["paint"].setToolTip("Paint the reader's lesion mask with the left button (P)")
        self.update_undo_actions()
        toolbar = QToolBar("Overlays")
        toolbar.setMovable(False)
        for name in ("segmentation", "outline", "heatmaps", "radiological", "single", "opacity_down", "opacity_up",
                     "lime", "cancel", "explain_all", "template", "side"):
            toolbar.addAction(self.actions_by_name[name])
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" threshold "))
        toolbar.addWidget(self.threshold_box)
        toolbar.addWidget(QLabel(" mask "))
        toolbar.addWidget(self.mask_opacity_box)
        toolbar.addWidget(QLabel(" colours "))
        toolbar.addWidget(self.colour_box)
        toolbar.addWidget(QLabel(" background "))
        toolbar.addWidget(self.background_box)
        self.addToolBar(toolbar)
        reader_bar = QToolBar("Reader")
        reader_bar.setMovable(False)
        for name in ("paint", "eraser", "brush_down", "brush_up", "fill", "clear", "undo", "redo", "reader_outline"):
            reader_bar.addAction(self.actions_by_name[name])
        self.addToolBarBreak()
        self.addToolBar(reader_bar)
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction("Open scan…", QKeySequence.StandardKey.Open, self._choose_scan)
        file_menu.addAction("Open DICOM folder…", QKeySequence("Ctrl+Shift+O"), self._choose_folder)
        file_menu.addAction("Add sequence of this patient…", self._choose_sequence)
        self.recent_menu = file_menu.addMenu("Open recent")
        self._fill_recent_menu()
        file_menu.addAction("Choose weights…", self._choose_weights)
        file_menu.addSeparator()
        file_menu.addAction("Load reader mask…", self._choose_reader_mask)
        file_menu.addAction(self.actions_by_name["save_reader"])
        file_menu.addAction(self.actions_by_name["save_reader_as"])
        file_menu.addSeparator()
        file_menu.addAction(self.actions_by_name["report"])
        png_menu = file_menu.addMenu("Export view as PNG")
        for scale in (1, 2, 4):
            png_menu.addAction(f"{scale}× ({scale} image pixels per screen pixel)",
                               lambda s=scale: self.export_png(scale=s))
        file_menu.addAction("Export mask, probabilities and maps as NIfTI…", self.export_nifti)
        file_menu.addAction(self.actions_by_name["bookmark"])
        file_menu.addSeparator()
        file_menu.addAction("Quit", QKeySequence.StandardKey.Quit, self.close)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("Keyboard shortcuts", self.show_shortcuts)
        reader_menu = self.menuBar().addMenu("&Reader")
        for name in ("paint", "eraser", "brush_down", "brush_up", "fill", "clear", "undo", "redo", "reader_outline"):
            reader_menu.addAction(self.actions_by_name[name])
        view_menu = self.menuBar().addMenu("&View")
        for name in ("segmentation", "outline", "heatmaps", "radiological", "single", "reader_outline", "template", "side"):
            view_menu.addAction(self.actions_by_name[name])
        planes = view_menu.addMenu("Plane")
        for key, plane in zip(("Ctrl+1", "Ctrl+2", "Ctrl+3"), PLANES):
            planes.addAction(plane.capitalize(), QKeySequence(key), lambda p=plane: self.set_plane(p))
        presets = view_menu.addMenu("Window/level presets")
        for low, high in WINDOW_PRESETS:
            presets.addAction(f"{low:g}–{high:g} % of brain intensities",
                              lambda lo=low, hi=high: self.set_window_percentiles(lo, hi))
        view_menu.addAction("Reset window/level", self.reset_window)
        self.model_input_menu = view_menu.addMenu("Sequence that feeds the model")

    def _layout(self) -> QWidget:
        grid = QGridLayout()
        grid.setSpacing(3)
        for index, name in enumerate(("segmentation", "gradcam", "gradcampp", "lime")):
            grid.addWidget(self.panels[name], index // 2, index % 2)
        grid.addWidget(self.side_panel, 0, 1)  # shown instead of the heatmap panels, side by side
        slider_column = QVBoxLayout()
        slider_column.addWidget(QLabel("S"), 0, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(self.slider, 1, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(QLabel("I"), 0, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(self.slice_label, 0, Qt.AlignmentFlag.AlignHCenter)
        row = QHBoxLayout()
        row.addLayout(grid, 1)
        row.addLayout(slider_column)
        central = QWidget()
        column = QVBoxLayout(central)
        self.banner = QLabel(banner_text(self.card))
        self.banner.setStyleSheet(BANNER_STYLE)
        self.banner.setWordWrap(True)
        column.addWidget(self.banner)
        self.warnings_label = QLabel()
        self.warnings_label.setStyleSheet(WARNING_STYLE)
        self.warnings_label.setWordWrap(True)
        column.addWidget(self.warnings_label)
        column.addLayout(row, 1)
        return central

    def _make_status_bar(self) -> None:
        self.statusBar().addWidget(self.readout_label, 1)
        self.statusBar().addPermanentWidget(self.progress_label)
        self.statusBar().addPermanentWidget(self.registration_label)
        self.statusBar().addPermanentWidget(self.model_label)

    def _model_text(self) -> str:
        segmenter = self.engine.segmenter
        return (f"{self.checkpoint.path.name} ({self.checkpoint.short_hash}) · {segmenter.device.type} · "
                f"{segmenter.precision}{' · mirrored' if segmenter.mirror else ''}")

    # -- slices ----------------------------------------------------------------------------
    @property
    def current_slice(self) -> int:
        """The axial slice z (DESIGN.md's slice number), whatever plane is shown."""
        return self._cursor[2]

    @property
    def plane_index(self) -> int:
        """The index of the shown section along the plane's fixed axis (z for axial)."""
        return self._cursor[PLANE_AXES[self.plane][2]]

    def set_slice(self, z: int) -> None:
        """Go to axial slice ``z`` (clamped); in coronal/sagittal view this moves the cursor's z."""
        self._move(2, z)

    def set_plane_index(self, index: int) -> None:
        self._move(PLANE_AXES[self.plane][2], index)

    def _move(self, axis: int, index: int) -> None:
        index = int(np.clip(index, 0, self.volume.shape[axis] - 1))
        if index == self._cursor[axis] and self.slider.value() == self.plane_index:
            return
        self.reader.before_slice_change()
        self._cursor[axis] = index
        self.slider.blockSignals(True)
        self.slider.setValue(self.plane_index)
        self.slider.blockSignals(False)
        if self.worker is not None and axis == 2:
            self.worker.set_visible(index)
        self._refresh()

    def step_slice(self, steps: int) -> None:
        self.set_plane_index(self.plane_index + steps)

    def set_plane(self, plane: str) -> None:
        """Axial (default), coronal or sagittal sections of the same data, in every panel."""
        self.plane = plane
        for panel in self.all_panels():
            panel.set_orientation(self.radiological_view, plane)
        fixed = PLANE_AXES[plane][2]
        self.slider.blockSignals(True)
        self.slider.setRange(0, self.volume.shape[fixed] - 1)
        self.slider.setValue(self.plane_index)
        self.slider.blockSignals(False)
        self._refresh()
        self.panels["segmentation"].view_box.autoRange(padding=0.02)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        shift = 5 if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else 1
        steps = {Qt.Key.Key_Up: shift, Qt.Key.Key_Down: -shift,
                 Qt.Key.Key_PageUp: PAGE_STEP, Qt.Key.Key_PageDown: -PAGE_STEP}.get(event.key())
        if steps is None:
            super().keyPressEvent(event)
            return
        self.step_slice(steps)
        event.accept()

    # -- overlays --------------------------------------------------------------------------
    def set_show_segmentation(self, on: bool) -> None:
        self.show_segmentation = on
        self._refresh()

    def set_outline_mode(self, on: bool) -> None:
        self.outline_mode = on
        self._refresh()

    def set_show_heatmaps(self, on: bool) -> None:
        self.show_heatmaps = on
        self._refresh()

    def set_radiological(self, on: bool) -> None:
        self.radiological_view = on
        QSettings().setValue("radiological", "true" if on else "false")
        for panel in self.all_panels():
            panel.set_orientation(on, self.plane)
        self._refresh()

    def set_single_panel(self, on: bool) -> None:
        self.single_panel = on
        self._apply_panel_mode()

    def set_side_by_side(self, on: bool) -> None:
        """Two sequences next to each other (the background and another one), the model outline on both."""
        self.side_by_side = on
        self._apply_panel_mode()
        self._refresh()

    def _apply_panel_mode(self) -> None:
        for name, panel in self.panels.items():
            panel.setVisible(name == "segmentation" or not (self.single_panel or self.side_by_side))
        self.side_panel.setVisible(self.side_by_side and not self.single_panel)

    def _side_volume(self) -> Volume | None:
        """The side-by-side mode's second sequence: the model input when another background is shown,
        else the first other sequence."""
        if self.background:
            return self.volume
        return next(iter(self.backgrounds.values()), None)

    def _draw_side(self, section, mask, pending_rows, template) -> None:
        panel, other = self.side_panel, self._side_volume()
        if other is None:
            panel.title.setText("Second sequence")
            panel.scan_item.clear()
            panel.show_status("add another sequence of this patient: File → Add sequence…")
            return
        levels, _ = self._remembered_levels("" if other is self.volume else other.name)
        panel.title.setText(f"{other.name} ({other.sequence})")
        panel.show_scan(section(other.data), levels)
        panel.show_outline(panel.model_outline_item, mask, MODEL_COLOUR, pending_rows)
        panel.show_outline(panel.template_item, template, TEMPLATE_COLOUR)
        panel.show_status("")

    def set_mask_opacity(self, percent: int) -> None:
        self.mask_opacity = float(np.clip(percent / 100, 0.0, 1.0))
        QSettings().setValue("mask_opacity", self.mask_opacity)
        self._refresh()

    def set_opacity(self, value: float) -> None:
        """Heatmap opacity (the model mask has its own, in the toolbar)."""
        self.opacity = float(np.clip(round(value, 2), 0.0, 1.0))
        QSettings().setValue("heatmap_opacity", self.opacity)
        self._refresh()

    def set_colour_map(self, name: str) -> None:
        self.colour_map = name
        QSettings().setValue("colour_map", name)
        self._refresh()

    def set_threshold(self, value: float) -> None:
        self.study.threshold = float(value)
        if self.threshold_box.value() != value:
            self.threshold_box.setValue(value)
        self._refresh()
        self._threshold_timer.start()
        self.reader.model_changed()

    # -- the reader's read -----------------------------------------------------------------
    def set_paint_mode(self, on: bool) -> None:
        """Left drag paints the reader's mask (creating an empty one if none is loaded)."""
        self.reader.paint_mode = on
        if on:
            self.reader.ensure_read()
            if not self.actions_by_name["reader_outline"].isChecked():
                self.actions_by_name["reader_outline"].setChecked(True)
        for panel in self.all_panels():
            panel.view_box.setMouseEnabled(x=not on, y=not on)  # no panning under the brush
        self.redraw_reader()

    def set_eraser(self, on: bool) -> None:
        self.reader.erasing = on

    def set_show_reader(self, on: bool) -> None:
        self.reader.show_reader = on
        self.redraw_reader()

    def redraw_reader(self) -> None:
        """Only the reader's layer: a brush stroke repaints this, not the scan or the heatmaps."""
        rgba = self.reader.section_rgba()
        image = None if rgba is None else displayed(rgba, self.panels["segmentation"].flip)  # one copy for all
        for panel in self.all_panels():
            panel.show_image(panel.reader_item, image)

    def update_undo_actions(self) -> None:
        read = self.reader.read
        self.actions_by_name["undo"].setEnabled(bool(read and read.can_undo))
        self.actions_by_name["redo"].setEnabled(bool(read and read.can_redo))

    def _choose_reader_mask(self) -> None:
        folder = str(Path(self.volume.path).parent) if self.volume.path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Load reader mask", folder, "NIfTI (*.nii *.nii.gz);;All files (*)")
        if path:
            self.reader.load(path)

    def adjust_window(self, dx: float, dy: float) -> None:
        low, high = self.levels
        width, level = high - low, (high + low) / 2
        span = self.initial_levels[1] - self.initial_levels[0]
        width = max(width + dx * span / 200, span / 1000)
        level = level + dy * span / 200
        self.levels = (level - width / 2, level + width / 2)
        self._refresh()

    def set_window_percentiles(self, low: float, high: float) -> None:
        """MRI presets are percentiles of the scan's foreground (CT's fixed HU windows mean nothing here)."""
        self.levels = grey_window(self._background_volume().data, (low, high))
        self._refresh()

    def reset_window(self) -> None:
        self.levels = self.initial_levels
        self._refresh()

    # -- model results ---------------------------------------------------------------------
    def _on_slice_segmented(self, z: int, _plane) -> None:
        if self._stale():
            return
        self.study_changed.emit()
        if z == self.current_slice or self.plane != "axial":
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
        self.study_changed.emit()
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

    def set_show_template(self, on: bool) -> None:
        self.show_template = on
        if on and self.template_outline is None:
            self.statusBar().showMessage("The template outline appears once the scan is placed on the template "
                                         "(registration in progress, or no model loaded).", 8000)
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
        self.worker = None  # its thread has ended: exports stop waiting for it
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

    # -- drawing ---------------------------------------------------------------------------
    def _refresh(self) -> None:
        z, index = self.current_slice, self.plane_index
        section = lambda volume: plane_slice(volume, self.plane, index)  # noqa: E731
        axial = self.plane == "axial"
        pending_rows = None if axial else ~self.study.segmented  # rows of the section are axial slices
        if axial:
            mask = self.study.mask_slice(z) if self.study.segmented[z] else None
        else:
            mask = (section(self.study.probabilities) >= self.study.threshold).astype(np.uint8)
        lut = lookup_table(self.colour_map)
        # The panels share one displayed copy of the scan and of each outline (all panels flip alike).
        flip, background = self.panels["segmentation"].flip, section(self._background_volume().data)
        scan_image = displayed(background, flip)
        template = section(self.template_outline) if self.show_template and self.template_outline is not None else None
        template_image = outline_image(template, TEMPLATE_COLOUR, flip, background.shape)
        outlines: dict = {}

        def model_outline(outline_mask, rows):
            key = (outline_mask is None, None if rows is None else rows.tobytes())
            if key not in outlines:
                outlines[key] = outline_image(outline_mask, MODEL_COLOUR, flip, background.shape, rows)
            return outlines[key]

        for name, panel in self.panels.items():
            panel.show_scan_image(scan_image, self.levels, background.shape)
            panel.show_image(panel.template_item, template_image)
            outline_mask = mask if self.show_segmentation and (self.outline_mode or name != "segmentation") else None
            if name == "segmentation":
                panel.show_image(panel.model_outline_item, model_outline(outline_mask, pending_rows))
                self._draw_segmentation(panel, mask)
            else:
                hatched = None if axial else self.study.unexplained_slices(name)
                panel.show_image(panel.model_outline_item, model_outline(outline_mask, hatched))
                self._draw_heatmap(panel, name, lut, section)
        if self.side_by_side:
            self._draw_side(section, mask if self.show_segmentation else None, pending_rows, template)
        fixed = PLANE_AXES[self.plane][2]
        mark = "\n★ bookmarked" if z in self.bookmarks else ""
        self.slice_label.setText(f"{'xyz'[fixed]} {index}\nof 0–{self.volume.shape[fixed] - 1}{mark}")
        self.navigator.set_current(z)
        self.redraw_reader()
        self.reader.refresh_figures()
        self._show_readout()

    def _draw_segmentation(self, panel: SlicePanel, mask: np.ndarray | None) -> None:
        panel.show_scale(None, 0, 0, False)
        z = self.current_slice
        if not self.has_model:
            panel.show_status("no model")
        elif self.plane == "axial" and not self.study.segmented[z]:
            panel.show_status("segmenting…")
        else:
            where = f"lesion {self.study.lesion_area_per_slice_mm2()[z]:.0f} mm² on slice z {z}"
            done = "" if self.study.segmentation_complete else " so far"
            panel.show_status(f"{where} · {self.study.lesion_volume_ml():.2f} ml{done} "
                              f"(threshold {self.study.threshold:.2f})")
        if mask is None or not self.show_segmentation or self.outline_mode:
            panel.overlay_item.clear()
            return
        lut = np.zeros((2, 4), np.uint8)
        lut[1] = (*MODEL_COLOUR, 255)
        panel.show_overlay(mask.astype(np.float32), lut, (0.0, 1.0), self.mask_opacity)

    def _draw_heatmap(self, panel: SlicePanel, method: str, lut: np.ndarray, section) -> None:
        scale = self.study.scale(method)
        panel.show_scale(lut, scale.low, scale.high, scale.provisional)
        z = self.current_slice
        status = self.study.status(method, z) if self.plane == "axial" else "ok"
        if status is None:
            waiting = "press L for LIME" if method == "lime" else "computing…"
            if not self.has_model:
                waiting = "no model"
            elif not self.study.segmented[z]:
                waiting = "waiting for segmentation"
            panel.show_status(waiting)
            panel.overlay_item.clear()
            return
        panel.show_status("" if status == "ok" else status)
        if status != "ok" or not self.show_heatmaps:
            panel.overlay_item.clear()
            return
        panel.show_overlay(section(self.study.maps[method]), lut, (scale.low, scale.high), self.opacity)

    # -- readout ---------------------------------------------------------------------------
    def _on_hover(self, xy: tuple[int, int] | None) -> None:
        """``xy``: section coordinates under the mouse (RAS (x, y) on axial panels), or None."""
        self._hover = xy
        for panel in self.all_panels():
            panel.set_crosshair(xy)
        self._show_readout()

    def _hovered_ras(self) -> tuple[int, int, int] | None:
        if self._hover is None:
            return None
        columns, rows, fixed = PLANE_AXES[self.plane]
        ras = list(self._cursor)
        ras[columns], ras[rows] = self._hover
        return ras[0], ras[1], ras[2]

    def readout(self, ras_index: tuple[int, int, int]) -> str:
        """Slice, file voxel (i, j, k), world mm, intensity, model probability and each map's value."""
        x, y, z = (int(v) for v in ras_index)
        i, j, k = self.volume.source_index((x, y, z))
        mm = self.volume.affine @ np.array([x, y, z, 1.0])
        parts = [f"slice z {z}", f"voxel (i, j, k) ({i}, {j}, {k})",
                 f"RAS ({mm[0]:.1f}, {mm[1]:.1f}, {mm[2]:.1f}) mm", f"value {float(self.volume.data[x, y, z]):.6g}"]
        parts.append(f"p {self.study.probabilities[x, y, z]:.3f}" if self.study.segmented[z] else "p …")
        for method in METHODS:
            if self.study.status(method, z) == "ok":
                parts.append(f"{METHOD_NAMES[method]} {self.study.maps[method][x, y, z]:.3g}")
        if self.reader.read is not None:
            parts.append(f"reader {'lesion' if self.reader.read.mask[x, y, z] else '–'}")
        for name, background in self.backgrounds.items():
            source = self.sequence_sources.get(name)
            value = background.data[x, y, z] if source is None else value_at_world(source, mm[:3])
            parts.append(f"{name} {float(value):.6g}")
        return "    ".join(parts)

    def _show_readout(self) -> None:
        if self._hover is None:
            window = f"W {self.levels[1] - self.levels[0]:.4g} L {(self.levels[0] + self.levels[1]) / 2:.4g}"
            self.readout_label.setText(f"slice z {self.current_slice}    {window}    (point at the image for values)")
        else:
            self.readout_label.setText(self.readout(self._hovered_ras()))

    # -- sequences -----------------------------------------------------------------------------
    def add_sequence(self, volume: Volume) -> bool:
        """Another sequence of the subject as a possible background. On another grid it is resampled
        onto the model input's grid through world coordinates (once, here), so that slice, cursor and
        zoom stay linked; the readout reads every sequence at the same world point from its own voxels."""
        from xnet_core.sequences import grids_overlap, resample_to_grid

        if not same_grid(self.volume, volume):
            if not grids_overlap(self.volume, volume):
                self.show_error(f"{volume.name} does not overlap {self.volume.name} in world coordinates; is it "
                                "from the same patient and session? It was not added.")
                return False
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            try:
                data = resample_to_grid(volume.data, volume.affine, self.volume.shape, self.volume.affine, order=1)
            finally:
                QApplication.restoreOverrideCursor()
            self.sequence_sources[volume.name] = volume
            volume = dataclasses.replace(volume, data=data, affine=self.volume.affine.copy())
        self.backgrounds[volume.name] = volume
        self._fill_background_box()
        return True

    def _choose_sequence(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a sequence of this patient", "",
                                              "NIfTI (*.nii *.nii.gz);;All files (*)")
        if path:
            self.add_sequence_from(path)

    def add_sequence_from(self, path: str, series: str | None = None) -> bool:
        """Load a file or DICOM folder (asking which series) and add it as a sequence."""
        try:
            volume = load_volume(path, series=series)
        except SeriesChoiceError as choice:
            picked = pick_series_dialog(self, choice.series) if series is None else None
            return picked is not None and self.add_sequence_from(path, picked)
        except XNetError as exc:
            self.show_error(f"Cannot add the sequence: {exc}")
            return False
        return self.add_sequence(volume)

    def _fill_background_box(self) -> None:
        self.background_box.blockSignals(True)
        self.background_box.clear()
        self.background_box.addItem(f"{self.volume.name} (model input)")
        self.background_box.addItems(list(self.backgrounds))
        self.background_box.blockSignals(False)
        self.background_box.setEnabled(bool(self.backgrounds))
        self.model_input_menu.clear()
        for name in (self.volume.name, *self.backgrounds):
            action = self.model_input_menu.addAction(name, lambda n=name: self.set_model_input(n))
            action.setCheckable(True)
            action.setChecked(name == self.volume.name)

    def set_model_input(self, name: str) -> bool:
        """Another loaded sequence feeds the model (the T1 does by default): the study starts again on its
        grid (registered if need be) and the other sequences stay as backgrounds."""
        sequences = {self.volume.name: self.volume,
                     **{n: self.sequence_sources.get(n, v) for n, v in self.backgrounds.items()}}
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
        self._levels_by_background[self.background] = (self.levels, self.initial_levels)
        self.background = name if name in self.backgrounds else ""
        self.levels, self.initial_levels = self._remembered_levels(self.background)
        self._refresh()

    def _remembered_levels(self, background: str) -> tuple[tuple[float, float], tuple[float, float]]:
        """(window/level last used, initial window) of a sequence ("" = the model input), by the
        background box and the side-by-side panel alike."""
        if background not in self._levels_by_background:
            initial = grey_window(self.backgrounds.get(background, self.volume).data)
            self._levels_by_background[background] = (initial, initial)
        return self._levels_by_background[background]

    def _background_volume(self) -> Volume:
        return self.backgrounds.get(self.background, self.volume)

    # -- files ---------------------------------------------------------------------------------
    def open_scan(self, path: str, series: str | None = None, confirmed: bool = False) -> bool:
        """Open another scan (NIfTI file or DICOM folder; a folder with several series asks which);
        one that cannot be read leaves the current scan on screen."""
        if not confirmed and not self.reader.confirm_discard("open another scan"):
            return False
        try:
            volume = load_volume(path, series=series)
        except SeriesChoiceError as choice:
            picked = pick_series_dialog(self, choice.series) if series is None else None
            return picked is not None and self.open_scan(path, picked, confirmed=True)
        except XNetError as exc:
            self.show_error(f"Cannot open the scan: {exc}")
            return False
        self.set_volume(volume)
        self._remember_recent(str(path))
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

    def _choose_scan(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open scan", "", "NIfTI (*.nii *.nii.gz);;All files (*)")
        if path:
            self.open_scan(path)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a DICOM folder")
        if folder:
            self.open_scan(folder)

    def _choose_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose X-Net weights", "", "PyTorch weights (*.pt *.pth)")
        if path:
            self.open_weights(path)

    def _remember_recent(self, path: str) -> None:
        settings = QSettings()
        recent = [p for p in (settings.value("recent_files") or []) if p != path]
        settings.setValue("recent_files", [path, *recent][:MAX_RECENT])
        self._fill_recent_menu()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in QSettings().value("recent_files") or []:
            self.recent_menu.addAction(path, lambda p=path: self.open_scan(p))

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        urls = event.mimeData().urls()
        if urls:
            self.open_scan(urls[0].toLocalFile())

    # -- exports -------------------------------------------------------------------------------
    def toggle_bookmark(self) -> None:
        """Mark or unmark the current axial slice for the report."""
        self.bookmarks ^= {self.current_slice}
        self._refresh()

    def export_report(self, path: str | None = None, choice: str | None = None, lime: bool | None = None,
                      first: int = 0, last: int = 0, identify: bool = False):
        """File → Export report: a dialog asks which slices and whether to include LIME, then where;
        tests pass the answers. Missing maps are computed first (progress, Cancel). Returns the export."""
        from app.export import ReportDialog, ReportExport, slices_for

        if self.checkpoint is None:
            self.show_error("No model is loaded yet: the report needs the model's segmentation.")
            return None
        if choice is None:
            dialog = ReportDialog(self)
            if dialog.exec() != ReportDialog.DialogCode.Accepted:
                return None
            choice, lime, identify = dialog.choice, dialog.lime.isChecked(), dialog.identify.isChecked()
            first, last = dialog.first.value(), dialog.last.value()
        slices = slices_for(self, choice, first, last)
        if not slices:
            self.show_error(f"No slice to export ({choice}): choose other slices.")
            return None
        if path is None:
            suggestion = str(Path(self.volume.path).with_name(f"{self.volume.name}_report.pdf")) if self.volume.path \
                else f"{self.volume.name}_report.pdf"
            path, _ = QFileDialog.getSaveFileName(self, "Export report", suggestion, "PDF (*.pdf)")
            if not path:
                return None
        methods = [m for m in METHODS if m != "lime" or lime]
        export = ReportExport(self, slices, methods, path, identify)
        export.start()
        return export

    def export_png(self, path: str | None = None, scale: int = 1) -> Path | None:
        from app.export import view_png

        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export view as PNG", f"{self.volume.name}_z{self.current_slice}"
                                                  f"_{scale}x.png", "PNG (*.png)")
            if not path:
                return None
        try:
            written = view_png(self, path, scale)
        except (OSError, XNetError) as exc:
            self.show_error(f"The image could not be written: {exc}")
            return None
        self.statusBar().showMessage(f"view written to {written}", 8000)
        return written

    def export_nifti(self, folder: str | None = None) -> list[Path]:
        from app.export import maps_nifti

        if self.checkpoint is None:
            self.show_error("No model is loaded: there is no mask or map to export.")
            return []
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Export NIfTI maps to folder")
            if not folder:
                return []
        try:
            written = maps_nifti(self, folder)
        except (OSError, XNetError) as exc:
            self.show_error(f"The maps could not be written: {exc}")
            return []
        self.statusBar().showMessage(f"{len(written)} NIfTI file(s) written to {folder}", 8000)
        return written

    # -- help and closing ------------------------------------------------------------------
    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td><b>{key}</b></td><td>{what}</td></tr>" for key, what in SHORTCUTS)
        QMessageBox.information(self, "Keyboard shortcuts", f"<table>{rows}</table>")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if not self.reader.confirm_discard("close the viewer"):
            event.ignore()
            return
        if self.worker is not None:
            self.worker.stop()
        self.reader.shutdown()
        super().closeEvent(event)
