"""The lesion navigator: a table of findings and of slices with lesion, a plot of lesion area per
slice with the current slice marked; a click jumps to the slice, a double-click or Enter on a finding
asks for that finding explained alone (``app.findings_view``), "All findings" goes back.

The table lists the components of at least the minimum finding size (the view state's
``min_lesion_ml``), sorted by size or by the model's mean probability; the smaller ones are counted in
one line and listed on request. Only the listing changes: masks, volumes and metrics keep them all."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QHeaderView, QLabel,
                               QListWidget, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.study import Study
from xnet_core import DEFAULT_MIN_LESION_ML

COLUMNS = ("#", "volume (ml)", "mean p", "max p", "centroid RAS (mm)", "side", "slices")
SORTS = {"size": "volume_ml", "probability": "mean_probability"}


def listed_rows(rows: list[dict], min_ml: float, sort: str = "size", show_smaller: bool = False) -> tuple[list[dict], str]:
    """(the rows the table shows, the line that counts the smaller components): findings of at least
    ``min_ml`` sorted by ``sort`` (largest or surest first), then the smaller ones when asked."""
    key = SORTS[sort]
    order = lambda row: (-(row.get(key) or 0.0), row["number"])  # noqa: E731
    findings = sorted([r for r in rows if r["volume_ml"] >= min_ml], key=order)
    smaller = sorted([r for r in rows if r["volume_ml"] < min_ml], key=order)
    line = ""
    if smaller:
        n, ml = len(smaller), sum(r["volume_ml"] for r in smaller)
        line = f"+ {n} smaller component{'s' if n != 1 else ''}, {ml:.2f} ml in all"
    return findings + (smaller if show_smaller else []), line


class LesionNavigator(QWidget):
    """``jump``: a slice to show; ``minLesionChanged``: the minimum finding size the user set (ml);
    ``explainFinding``: finding K to explain alone (double-click or Enter on its row); ``allFindings``:
    back to the maps of the whole mask."""

    jump = Signal(int)
    minLesionChanged = Signal(float)
    explainFinding = Signal(int)
    allFindings = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.summary = QLabel("lesions appear when the segmentation is complete")
        self.summary.setWordWrap(True)
        self.min_size = QDoubleSpinBox()
        self.min_size.setRange(0.0, 1000.0)
        self.min_size.setDecimals(2)
        self.min_size.setSingleStep(0.05)
        self.min_size.setPrefix("findings ≥ ")
        self.min_size.setSuffix(" ml")
        self.min_size.setValue(DEFAULT_MIN_LESION_ML)
        self.min_size.setToolTip("Minimum finding size: smaller components are counted in one line, not listed "
                                 "(the mask, the volume and every figure keep them)")
        self.min_size.valueChanged.connect(self.minLesionChanged)
        self.min_size.valueChanged.connect(lambda _value: self._fill())
        self.sort = QComboBox()
        for name in SORTS:
            self.sort.addItem(f"sort by {name}", name)
        self.sort.setToolTip("Sort the findings by size (largest first) or by the model's mean probability")
        self.sort.currentIndexChanged.connect(lambda _index: self._fill())
        self.show_smaller = QCheckBox("show smaller")
        self.show_smaller.toggled.connect(lambda _on: self._fill())
        self.smaller_line = QLabel("")
        self.smaller_line.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.cellClicked.connect(self._on_click)
        self.table.cellDoubleClicked.connect(lambda row, _column: self._explain_row(row))
        self.table.installEventFilter(self)  # Enter on a row: that finding alone
        self.table.setToolTip("Click: go to the finding · double-click or Enter: explain that finding alone")
        self.focus_label = QLabel("")
        self.focus_label.setWordWrap(True)
        self.focus_label.setStyleSheet("background: #d7ecff; color: black; padding: 3px;")
        self.all_findings = QPushButton("All findings (maps of the whole mask)")
        self.all_findings.setToolTip("Back from one finding to the maps that explain the whole predicted mask (Esc)")
        self.all_findings.clicked.connect(self.allFindings)
        self.show_focus(None)
        self.slice_list = QListWidget()  # slices with lesion: "z 68 · 1185 mm²"
        self.slice_list.setMaximumHeight(120)
        self.slice_list.itemClicked.connect(lambda item: self.jump.emit(int(item.data(Qt.ItemDataRole.UserRole))))
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "slice z")
        self.plot.setLabel("left", "lesion area", units="mm²")
        self.plot.setMouseEnabled(False, False)
        self.plot.setMaximumHeight(160)
        self.area_curve = self.plot.plot(pen=pg.mkPen((255, 64, 32), width=2))
        self.current_line = pg.InfiniteLine(angle=90, pen=pg.mkPen((0, 255, 0), width=1))
        self.plot.addItem(self.current_line)
        self.plot.scene().sigMouseClicked.connect(self._on_plot_click)
        column = QVBoxLayout(self)
        column.addWidget(self.summary)
        column.addWidget(self.min_size)  # one control a row: the dock stays as narrow as before
        column.addWidget(self.sort)
        column.addWidget(self.table, 1)
        column.addWidget(self.focus_label)
        column.addWidget(self.all_findings)
        column.addWidget(self.smaller_line)
        column.addWidget(self.show_smaller)
        column.addWidget(QLabel("Slices with lesion"))
        column.addWidget(self.slice_list)
        column.addWidget(self.plot)
        self._rows: list[dict] = []  # every component, largest first (Study.lesion_rows)
        self._shown: list[dict] = []  # what the table shows, in its order

    def show_areas(self, study: Study) -> None:
        areas = study.lesion_area_per_slice_mm2()
        self.area_curve.setData(np.arange(len(areas)), areas)
        self.slice_list.clear()
        for z in study.lesion_slices:
            self.slice_list.addItem(f"z {z} · {areas[z]:.0f} mm²")
            self.slice_list.item(self.slice_list.count() - 1).setData(Qt.ItemDataRole.UserRole, int(z))

    def follow(self, state) -> None:
        """The minimum finding size lives in the view state (``min_lesion_ml``): set there, shown here."""
        self.minLesionChanged.connect(lambda value: setattr(state, "min_lesion_ml", value))
        state.events.min_lesion_ml.connect(lambda event: self.set_min_lesion_ml(event.value))
        self.set_min_lesion_ml(state.min_lesion_ml)

    def set_min_lesion_ml(self, value: float) -> None:
        """The view state's minimum finding size (e.g. restored settings), without echoing it back."""
        if abs(self.min_size.value() - value) > 1e-9:
            self.min_size.blockSignals(True)
            self.min_size.setValue(value)
            self.min_size.blockSignals(False)
            self._fill()

    def show_lesions(self, study: Study, rows: list[dict]) -> None:
        """``rows`` from ``Study.lesion_rows`` at the study's threshold (computed off the UI thread)."""
        self.show_areas(study)
        self._rows = rows
        self._fill()
        lesion_slices = study.lesion_slices
        findings = sum(r["volume_ml"] >= self.min_size.value() for r in rows)
        self.summary.setText(
            f"{findings} finding(s) of {len(rows)} component(s), {study.lesion_volume_ml():.2f} ml in all at "
            f"threshold {study.threshold:.2f}; {len(lesion_slices)} slice(s) with lesion"
            + (f" ({lesion_slices[0]}–{lesion_slices[-1]})" if lesion_slices else ""))

    def _fill(self) -> None:
        self._shown, line = listed_rows(self._rows, self.min_size.value(), self.sort.currentData(),
                                        self.show_smaller.isChecked())
        self.smaller_line.setText(line)
        self.show_smaller.setVisible(bool(line))
        self.table.setRowCount(len(self._shown))
        probability = lambda value: "–" if value is None else f"{value:.2f}"  # noqa: E731
        for r, row in enumerate(self._shown):
            x, y, z = row["centroid_mm"]
            cells = (str(row["number"]), f"{row['volume_ml']:.2f}", probability(row.get("mean_probability")),
                     probability(row.get("max_probability")), f"({x:.0f}, {y:.0f}, {z:.0f})", row["hemisphere"],
                     f"{row['slices'][0]}–{row['slices'][1]}")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(r, c, item)

    def set_current(self, z: int) -> None:
        self.current_line.setPos(z)

    def _on_click(self, row: int, _column: int) -> None:
        if 0 <= row < len(self._shown):
            self.jump.emit(self._shown[row]["z"])

    def _explain_row(self, row: int) -> None:
        if 0 <= row < len(self._shown):
            self.explainFinding.emit(self._shown[row]["number"])

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if (watched is self.table and event.type() == QEvent.Type.KeyPress
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.table.currentRow() >= 0):
            self._explain_row(self.table.currentRow())
            return True
        return super().eventFilter(watched, event)

    def selected_number(self) -> int | None:
        """The number of the finding on the table's current row, or None."""
        row = self.table.currentRow()
        return self._shown[row]["number"] if 0 <= row < len(self._shown) else None

    def row(self, number: int) -> dict | None:
        """Lesion ``number``'s row of the table (shown or not), or None."""
        return next((row for row in self._rows if row["number"] == number), None)

    def finding_choice(self) -> tuple[list[int], int]:
        """(the findings a report would explain alone by default: the selected rows, else every listed
        finding; how many components the table holds)."""
        selected = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        numbers = [self._shown[r]["number"] for r in selected if r < len(self._shown)]
        listed = [row["number"] for row in self._shown if row["volume_ml"] >= self.min_size.value()]
        return sorted(numbers or listed), len(self._rows)

    def show_focus(self, text: str | None) -> None:
        """Which finding the maps explain alone (None: the whole mask)."""
        self.focus_label.setText(text or "")
        self.focus_label.setVisible(bool(text))
        self.all_findings.setVisible(bool(text))

    def _on_plot_click(self, event) -> None:
        point = self.plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        self.jump.emit(int(round(point.x())))
