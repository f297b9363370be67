"""The lesion navigator: a table of lesions and of slices with lesion, a plot of lesion area per
slice with the current slice marked; a click jumps to the slice."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QListWidget, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from app.study import Study

COLUMNS = ("volume (ml)", "centroid RAS (mm)", "side", "slices")


class LesionNavigator(QWidget):
    jump = Signal(int)

    def __init__(self) -> None:
        super().__init__()
        self.summary = QLabel("lesions appear when the segmentation is complete")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.cellClicked.connect(self._on_click)
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
        column.addWidget(self.table, 1)
        column.addWidget(QLabel("Slices with lesion"))
        column.addWidget(self.slice_list)
        column.addWidget(self.plot)
        self._rows: list[dict] = []

    def show_areas(self, study: Study) -> None:
        areas = study.lesion_area_per_slice_mm2()
        self.area_curve.setData(np.arange(len(areas)), areas)
        self.slice_list.clear()
        for z in study.lesion_slices:
            self.slice_list.addItem(f"z {z} · {areas[z]:.0f} mm²")
            self.slice_list.item(self.slice_list.count() - 1).setData(Qt.ItemDataRole.UserRole, int(z))

    def show_lesions(self, study: Study, rows: list[dict]) -> None:
        """``rows`` from ``Study.lesion_rows`` at the study's threshold (computed off the UI thread)."""
        self.show_areas(study)
        self._rows = rows
        self.table.setRowCount(len(self._rows))
        for r, row in enumerate(self._rows):
            x, y, z = row["centroid_mm"]
            cells = (f"{row['volume_ml']:.2f}", f"({x:.0f}, {y:.0f}, {z:.0f})", row["hemisphere"],
                     f"{row['slices'][0]}–{row['slices'][1]}")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(r, c, item)
        lesion_slices = study.lesion_slices
        self.summary.setText(
            f"{len(self._rows)} lesion(s), {study.lesion_volume_ml():.2f} ml at threshold {study.threshold:.2f}; "
            f"{len(lesion_slices)} slice(s) with lesion"
            + (f" ({lesion_slices[0]}–{lesion_slices[-1]})" if lesion_slices else ""))

    def set_current(self, z: int) -> None:
        self.current_line.setPos(z)

    def _on_click(self, row: int, _column: int) -> None:
        if 0 <= row < len(self._rows):
            self.jump.emit(self._rows[row]["z"])

    def _on_plot_click(self, event) -> None:
        point = self.plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        self.jump.emit(int(round(point.x())))
