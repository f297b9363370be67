"""The reader's dock: where the read comes from, model vs reader (volume and slice), the lesions only
one side found (click to jump), attention vs reader per method, and the notes.

It shows figures handed to it (``app.comparison`` computes them); it edits nothing but the notes.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from explain.methods import METHOD_NAMES

MASK_ROWS = (("dice", "Dice"), ("iou", "IoU"), ("precision", "Precision"), ("recall", "Recall"),
             ("lesion_f1", "Lesion F1"), ("model_volume_ml", "Model ml"), ("reader_volume_ml", "Reader ml"))
ATTENTION_COLUMNS = (("energy_in_mask", "Energy in"), ("pointing_hit", "Pointing"), ("otsu_iou", "Otsu IoU"))
NOTE_DELAY_MS = 400  # typing: the read is marked changed (and autosaved) after a short pause


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "hit" if value else "miss"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(rows: int, headers: list[str]) -> QTableWidget:
    table = QTableWidget(rows, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.verticalHeader().setDefaultSectionSize(20)
    table.setMaximumHeight(24 + 21 * rows)
    return table


class ReaderPanel(QWidget):
    """Comparison figures and notes. ``jump(z)`` asks the window for a slice; ``notesEdited`` says
    the study or slice note changed (the window writes it into the read)."""

    jump = Signal(int)
    notesEdited = Signal(str, str)  # study note, current slice's note

    def __init__(self) -> None:
        super().__init__()
        self.source_label = QLabel("No reader mask: File → Load reader mask…, or paint one (P).")
        self.source_label.setWordWrap(True)
        self.masks = _table(len(MASK_ROWS), ["Volume", "Slice"])
        self.masks.setVerticalHeaderLabels([label for _, label in MASK_ROWS])
        self.model_only = QListWidget()
        self.reader_only = QListWidget()
        for widget in (self.model_only, self.reader_only):
            widget.setMaximumHeight(90)
            widget.itemClicked.connect(self._on_lesion_clicked)
        self.attention = _table(0, [label for _, label in ATTENTION_COLUMNS])
        self.study_note = QPlainTextEdit()
        self.study_note.setPlaceholderText("Note on the study")
        self.slice_note = QPlainTextEdit()
        self.slice_note.setPlaceholderText("Note on this slice")
        for note in (self.study_note, self.slice_note):
            note.setMaximumHeight(70)
            note.textChanged.connect(self._on_note_typed)
        self._note_timer = QTimer(self)
        self._note_timer.setSingleShot(True)
        self._note_timer.setInterval(NOTE_DELAY_MS)
        self._note_timer.timeout.connect(self._emit_notes)
        self.slice_note_box = QGroupBox("Slice note")
        self._layout()

    def _layout(self) -> None:
        column = QVBoxLayout(self)
        column.addWidget(self.source_label)
        column.addWidget(QLabel("<b>Model vs reader</b>"))
        column.addWidget(self.masks)
        column.addWidget(QLabel("Only the model found (click to go):"))
        column.addWidget(self.model_only)
        column.addWidget(QLabel("Only the reader found:"))
        column.addWidget(self.reader_only)
        column.addWidget(QLabel("<b>Attention vs reader</b> (max(map, 0))"))
        column.addWidget(self.attention)
        study_box = QGroupBox("Study note")
        QVBoxLayout(study_box).addWidget(self.study_note)
        QVBoxLayout(self.slice_note_box).addWidget(self.slice_note)
        column.addWidget(study_box)
        column.addWidget(self.slice_note_box)
        column.addStretch(1)

    # -- figures -----------------------------------------------------------------------------
    def show_source(self, text: str) -> None:
        self.source_label.setText(text)

    def show_masks(self, volume: dict | None, slice_: dict | None, z: int, missing: str = "…") -> None:
        """Volume and slice figures (``app.comparison``); None: not available (``missing`` says why)."""
        self.masks.setHorizontalHeaderLabels(["Volume", f"Slice z {z}"])
        for column, figures in enumerate((volume, slice_)):
            for row, (key, _) in enumerate(MASK_ROWS):
                if figures is None:
                    text = missing
                elif figures.get("both_empty") and not key.endswith("_ml"):
                    text = "both empty"
                else:
                    text = _cell(figures.get(key))
                self.masks.setItem(row, column, QTableWidgetItem(text))

    def show_lesions(self, model_only: list[dict], reader_only: list[dict]) -> None:
        for widget, records in ((self.model_only, model_only), (self.reader_only, reader_only)):
            widget.clear()
            for record in records:
                first, last = record["slices"]
                x, y, zmm = record["centroid_mm"]
                item = QListWidgetItem(f"{record['volume_ml']:.2f} ml · z {first}–{last} · "
                                       f"({x:.0f}, {y:.0f}, {zmm:.0f}) mm")
                item.setData(Qt.ItemDataRole.UserRole, record["z"])
                widget.addItem(item)
            if not records:
                widget.addItem("none")

    def show_attention(self, volume: dict | None, slice_: dict | None, methods: list[str]) -> None:
        """Rows: each method on this slice and over its explained slices; '–' where undefined."""
        self.attention.setRowCount(2 * len(methods))
        self.attention.setMaximumHeight(24 + 21 * 2 * len(methods))
        labels = []
        for index, method in enumerate(methods):
            for offset, (where, figures) in enumerate((("slice", slice_), ("volume", volume))):
                labels.append(f"{METHOD_NAMES[method]}, {where}")
                record = (figures or {}).get(method, {})
                for column, (key, _) in enumerate(ATTENTION_COLUMNS):
                    # '–' undefined (e.g. no reader lesion here); '…' not computed (the tooltip says why)
                    item = QTableWidgetItem(_cell(record[key]) if key in record else "…")
                    item.setToolTip(record.get("status", "not computed yet") if key not in record else "")
                    self.attention.setItem(2 * index + offset, column, item)
        self.attention.setVerticalHeaderLabels(labels)

    # -- notes -------------------------------------------------------------------------------
    def show_notes(self, study: str, slice_note: str, z: int) -> None:
        """Fill the note boxes without reporting it as an edit."""
        self.slice_note_box.setTitle(f"Note on slice z {z}")
        for box, text in ((self.study_note, study), (self.slice_note, slice_note)):
            if box.toPlainText() != text:
                box.blockSignals(True)
                box.setPlainText(text)
                box.blockSignals(False)

    def _on_note_typed(self) -> None:
        self._note_timer.start()

    def flush_notes(self) -> None:
        """Report pending typing now (before a save, a slice change or closing)."""
        if self._note_timer.isActive():
            self._note_timer.stop()
            self._emit_notes()

    def _emit_notes(self) -> None:
        self.notesEdited.emit(self.study_note.toPlainText(), self.slice_note.toPlainText())

    def _on_lesion_clicked(self, item: QListWidgetItem) -> None:
        z = item.data(Qt.ItemDataRole.UserRole)
        if z is not None:
            self.jump.emit(int(z))
