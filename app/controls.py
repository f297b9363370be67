"""The window's small widgets around the panels: the slice slider and label, the toolbar's threshold,
mask opacity, colour map and background choices, the disclaimer banner, the warnings line and the
status bar's labels. They show what they are told; the window connects them to the view state."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QStatusBar,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.actions import PAGE_STEP
from app.drawing import COLOUR_MAPS
from app.settings import read_bool, read_choice, read_float
from app.view_state import Event, ViewState
from xnet_core import DISCLAIMER
from xnet_core.registration_qc import registration_badge

BANNER_STYLE = "background: #ffcc00; color: black; font-weight: bold; font-size: 13px; padding: 4px;"
WARNING_STYLE = "background: #ffe0b2; color: black; padding: 3px;"


def banner_text(card: dict) -> str:
    """The disclaimer, the model's intended use and its card's quality status (an interim demo model
    says so next to the images, not only in its card)."""
    text = DISCLAIMER
    if card.get("intended_use"):
        text += f"  Model: {card['intended_use']}"
    if card.get("status"):
        text += f"  Status: {card['status']}"
    return text


def saved_view_state(store: QSettings | None = None) -> ViewState:
    """The view state with the display choices the user made last time (a saved value that is not
    usable gives the default: ``app.settings``); later choices are saved as they are made. ``store``:
    the settings to read (default: the application's)."""
    state = ViewState(opacity=read_float("heatmap_opacity", ViewState.opacity, 0.0, 1.0, store),
                      mask_opacity=read_float("mask_opacity", ViewState.mask_opacity, 0.0, 1.0, store),
                      colour_map=read_choice("colour_map", ViewState.colour_map, COLOUR_MAPS, store),
                      radiological=read_bool("radiological", ViewState.radiological, store))
    for field in SAVED_SETTINGS:
        getattr(state.events, field).connect(_save_setting)
    return state


SAVED_SETTINGS = {"opacity": "heatmap_opacity", "mask_opacity": "mask_opacity", "colour_map": "colour_map",
                  "radiological": "radiological"}


def _save_setting(event: Event) -> None:
    value = ("true" if event.value else "false") if event.type == "radiological" else event.value
    QSettings().setValue(SAVED_SETTINGS[event.type], value)


def _spin_box(box: QDoubleSpinBox | QSpinBox, low: float, high: float, value: float, tooltip: str):
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tooltip)
    return box


class Controls:
    """The widgets, made once per window."""

    def __init__(self, card: dict, colour_map: str, mask_opacity: float) -> None:
        self.slider = QSlider(Qt.Orientation.Vertical)  # top = superior, like the Up key
        self.slider.setPageStep(PAGE_STEP)
        self.slider.setToolTip("Axial slice z (also: mouse wheel, Up/Down, PageUp/PageDown)")
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slice_label = QLabel()
        self.threshold_box = QDoubleSpinBox()
        self.threshold_box.setSingleStep(0.05)
        self.threshold_box.setDecimals(2)
        _spin_box(self.threshold_box, 0.05, 0.95, 0.5, "Probability threshold of the model mask")
        self.colour_box = QComboBox()
        self.colour_box.addItems(list(COLOUR_MAPS))
        self.colour_box.setCurrentText(colour_map)
        self.mask_opacity_box = QSpinBox()
        self.mask_opacity_box.setSuffix(" %")
        _spin_box(self.mask_opacity_box, 0, 100, int(round(mask_opacity * 100)), "Opacity of the filled model mask")
        self.background_box = QComboBox()
        self.background_box.setToolTip("Sequence shown under the overlays (the model always reads its input)")
        self.model_label, self.registration_label = QLabel(), QLabel()
        self.progress_label, self.readout_label = QLabel(), QLabel()
        self.banner = QLabel(banner_text(card))
        self.banner.setStyleSheet(BANNER_STYLE)
        self.banner.setWordWrap(True)
        self.warnings_label = QLabel()
        self.warnings_label.setStyleSheet(WARNING_STYLE)
        self.warnings_label.setWordWrap(True)

    # -- placing them ----------------------------------------------------------------------
    def add_to_toolbar(self, toolbar: QToolBar) -> None:
        toolbar.addSeparator()
        for label, widget in ((" threshold ", self.threshold_box), (" mask ", self.mask_opacity_box),
                              (" colours ", self.colour_box), (" background ", self.background_box)):
            toolbar.addWidget(QLabel(label))
            toolbar.addWidget(widget)

    def add_to_status_bar(self, status_bar: QStatusBar) -> None:
        status_bar.addWidget(self.readout_label, 1)
        for label in (self.progress_label, self.registration_label, self.model_label):
            status_bar.addPermanentWidget(label)

    def central_widget(self, panels: QWidget) -> QWidget:
        """The banner, the warnings, then the panels with the slider on their right."""
        slider_column = QVBoxLayout()
        slider_column.addWidget(QLabel("S"), 0, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(self.slider, 1, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(QLabel("I"), 0, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(self.slice_label, 0, Qt.AlignmentFlag.AlignHCenter)
        row = QHBoxLayout()
        row.addWidget(panels, 1)
        row.addLayout(slider_column)
        central = QWidget()
        column = QVBoxLayout(central)
        column.addWidget(self.banner)
        column.addWidget(self.warnings_label)
        column.addLayout(row, 1)
        return central

    # -- showing ---------------------------------------------------------------------------
    def show_slider(self, count: int, value: int) -> None:
        """Range and position without reporting a move (the state moved already)."""
        self.slider.blockSignals(True)
        self.slider.setRange(0, count - 1)
        self.slider.setValue(value)
        self.slider.blockSignals(False)

    def show_slice(self, axis: int, index: int, count: int, bookmarked: bool) -> None:
        mark = "\n★ bookmarked" if bookmarked else ""
        self.slice_label.setText(f"{'xyz'[axis]} {index}\nof 0–{count - 1}{mark}")

    def show_mask_opacity(self, opacity: float) -> None:
        self.mask_opacity_box.blockSignals(True)
        self.mask_opacity_box.setValue(int(round(opacity * 100)))
        self.mask_opacity_box.blockSignals(False)

    def show_backgrounds(self, model_name: str, others: list[str]) -> None:
        self.background_box.blockSignals(True)
        self.background_box.clear()
        self.background_box.addItem(f"{model_name} (model input)")
        self.background_box.addItems(others)
        self.background_box.blockSignals(False)
        self.background_box.setEnabled(bool(others))

    def show_warnings(self, warnings: list[str]) -> None:
        self.warnings_label.setText("\n".join(warnings))
        self.warnings_label.setVisible(bool(warnings))

    def add_warning(self, text: str) -> None:
        self.show_warnings(list(filter(None, [self.warnings_label.text(), text])))

    def show_progress(self, task: str, done: int, total: int) -> None:
        self.progress_label.setText(f"{task} {done}/{total}" if done < total else f"{task}: done")

    def show_registration(self, summary: dict, skipped: bool) -> None:
        """``skipped``: the scan is off the template grid but was not registered (it said why)."""
        if summary["applied"]:
            label, tooltip = registration_badge(summary)  # the QC's verdict; its figures in the tooltip
            self.registration_label.setText(label)
            self.registration_label.setToolTip(tooltip)
        else:
            self.registration_label.setText("not registered" if skipped else "template grid")

    def show_model(self, checkpoint, segmenter) -> None:
        """The weights, their hash, the device and precision the segmentation runs at."""
        self.model_label.setText(f"{checkpoint.path.name} ({checkpoint.short_hash}) · {segmenter.device.type} · "
                                 f"{segmenter.precision}{' · mirrored' if segmenter.mirror else ''}")
