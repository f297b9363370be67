"""File → Open from PACS… and File → Send results to PACS…: self-contained dialogs over ``xnet_core.pacs``.

Network work runs on a plain Python thread and reports through Qt signals (queued to the UI thread),
so the window keeps painting; Cancel sets an event the library polls (``should_cancel``). A series is
handed back to the window only when it arrived whole (``retrieved_folder``); a partial one is named
with its missing instances and not opened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QStandardPaths, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QListWidgetItem, QProgressBar, QPushButton, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from xnet_core.errors import Cancelled, XNetError
from xnet_core.pacs import PacsSettings, SeriesRecord, StudyQuery, StudyRecord, quiet_pynetdicom

log = logging.getLogger(__name__)

STUDY_COLUMNS = ("Date", "Patient ID", "Patient name", "Description", "Accession", "Modalities", "Series")
SERIES_COLUMNS = ("Number", "Description", "Modality", "Images", "Date")
ERROR_STYLE = "color: #b00020"


def pacs_cache_folder() -> Path:
    """Where retrieved studies are kept: ``<cache>/pacs/<StudyInstanceUID>/<SeriesInstanceUID>/``."""
    location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.CacheLocation)
    return Path(location) / "pacs"


class _Task(QObject):
    """One piece of network work on a thread: progress, then finished(result) or failed(message, error)."""

    progress = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str, object)

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self.cancel = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, work: Callable[[threading.Event], object]) -> None:
        self.cancel.clear()

        def body() -> None:
            try:
                result = work(self.cancel)
            except XNetError as exc:
                self.failed.emit(str(exc), exc)
            except Exception as exc:  # a bug or an unexpected library error: say so, log the traceback
                log.exception("PACS task failed")
                self.failed.emit(f"unexpected error: {exc}", exc)
            else:
                self.finished.emit(result)

        self.thread = threading.Thread(target=body, name="pacs-task", daemon=True)
        self.thread.start()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait(self, timeout_s: float = 60.0) -> None:
        if self.thread is not None:
            self.thread.join(timeout_s)


def _table(columns: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def _fill(table: QTableWidget, rows: list[tuple]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.setItem(r, c, QTableWidgetItem("" if value is None else str(value)))


class OpenFromPacsDialog(QDialog):
    """Search studies, list their series, retrieve one with progress and Cancel.

    After ``exec()`` returns Accepted, ``retrieved_folder`` is the complete series' folder, to be opened
    as any DICOM folder is."""

    def __init__(self, settings: PacsSettings, cache: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        quiet_pynetdicom()
        self.setWindowTitle(f"Open from PACS — {settings.describe()}")
        self.settings, self.cache = settings, cache or pacs_cache_folder()
        self.studies: list[StudyRecord] = []
        self.series: list[SeriesRecord] = []
        self.retrieved_folder: Path | None = None
        self.patient_id, self.patient_name = QLineEdit(), QLineEdit()
        self.patient_name.setPlaceholderText("DOE^J*")
        self.date_from, self.date_to = QLineEdit(), QLineEdit()
        for edit in (self.date_from, self.date_to):
            edit.setPlaceholderText("YYYYMMDD")
        self.modality, self.accession = QLineEdit(), QLineEdit()
        self.search_button = QPushButton("Search")
        self.study_table, self.series_table = _table(STUDY_COLUMNS), _table(SERIES_COLUMNS)
        self.retrieve_button, self.cancel_button = QPushButton("Retrieve and open"), QPushButton("Cancel")
        self.progress = QProgressBar()
        self.status = QLabel("Search by patient, date, modality or accession number.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.task = _Task(self)
        self.task.progress.connect(self._progress)
        self._on_done: Callable[[object], None] = lambda result: None
        self.task.finished.connect(lambda result: self._on_done(result))
        self.task.failed.connect(self._failed)
        self._layout()
        self.search_button.clicked.connect(self.search)
        self.study_table.itemSelectionChanged.connect(self._study_chosen)
        self.series_table.itemSelectionChanged.connect(self._update_buttons)
        self.retrieve_button.clicked.connect(self.retrieve)
        self.cancel_button.clicked.connect(self.cancel)
        self._update_buttons()

    def _layout(self) -> None:
        form = QFormLayout()
        dates = QHBoxLayout()
        dates.addWidget(self.date_from)
        dates.addWidget(QLabel("to"))
        dates.addWidget(self.date_to)
        for label, field in (("Patient ID", self.patient_id), ("Patient name", self.patient_name),
                             ("Study date", dates), ("Modality", self.modality), ("Accession", self.accession)):
            form.addRow(label, field)
        form.addRow("", self.search_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.retrieve_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Studies"))
        layout.addWidget(self.study_table, 2)
        layout.addWidget(QLabel("Series"))
        layout.addWidget(self.series_table, 2)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(820, 640)

    # -- what the user does ------------------------------------------------------------------------
    def query(self) -> StudyQuery:
        low, high = self.date_from.text().strip(), self.date_to.text().strip()
        dates = f"{low}-{high}" if high and high != low else low if low else f"-{high}" if high else ""
        return StudyQuery(patient_id=self.patient_id.text(), patient_name=self.patient_name.text(), study_date=dates,
                          accession=self.accession.text(), modality=self.modality.text())

    def search(self) -> None:
        from xnet_core.pacs import find

        try:
            query = self.query()
        except XNetError as exc:
            return self._show_error(str(exc))
        self._run("searching…", lambda cancel: find(self.settings, query, with_series=False), self._studies_found)

    def retrieve(self) -> None:
        from xnet_core.pacs_retrieve import retrieve

        series = self.chosen_series()
        if series is None:
            return
        self.progress.setRange(0, max(series.n_images or 0, 1))
        self.progress.setValue(0)
        self._run(f"retrieving series {series.number if series.number is not None else ''} "
                  f"({series.n_images or '?'} images)…",
                  lambda cancel: retrieve(self.settings, self.cache, series_uid=series.uid,
                                          study_uid=series.study_uid, on_progress=self.task.progress.emit,
                                          should_cancel=cancel.is_set),
                  self._retrieved)

    def cancel(self) -> None:
        """Stop the retrieval or search under way (images received stay whole); close when idle."""
        if self.task.running:
            self.task.cancel.set()
            self.status.setText("cancelling…")
        else:
            self.reject()

    def chosen_study(self) -> StudyRecord | None:
        rows = self.study_table.selectionModel().selectedRows()
        return self.studies[rows[0].row()] if rows else None

    def chosen_series(self) -> SeriesRecord | None:
        rows = self.series_table.selectionModel().selectedRows()
        return self.series[rows[0].row()] if rows else None

    # -- results ---------------------------------------------------------------------------------
    def _run(self, message: str, work: Callable[[threading.Event], object], on_done: Callable[[object], None]) -> None:
        if self.task.running:
            return
        self.status.setStyleSheet("")
        self.status.setText(message)
        self._on_done = on_done
        self.task.start(work)
        self._update_buttons()

    def _studies_found(self, studies: list[StudyRecord]) -> None:
        self.studies = list(studies)
        _fill(self.study_table, [(s.date, s.patient_id, s.patient_name, s.description, s.accession, s.modalities,
                                  s.n_series) for s in self.studies])
        self.series = []
        _fill(self.series_table, [])
        self.status.setText(f"{len(self.studies)} stud{'y' if len(self.studies) == 1 else 'ies'} found; choose one.")
        self._update_buttons()

    def _study_chosen(self) -> None:
        from xnet_core.pacs import find_series

        study = self.chosen_study()
        if study is not None:
            self._run("listing series…", lambda cancel: find_series(self.settings, study.uid), self._series_found)

    def _series_found(self, series: list[SeriesRecord]) -> None:
        self.series = list(series)
        _fill(self.series_table, [(s.number, s.description, s.modality, s.n_images, s.date) for s in self.series])
        self.status.setText(f"{len(self.series)} series; choose one to retrieve and open.")
        self._update_buttons()

    def _retrieved(self, retrieved: list) -> None:
        self.retrieved_folder = retrieved[0].folder
        self.status.setText(f"retrieved {retrieved[0].n_instances} images with {retrieved[0].method}.")
        self._update_buttons()
        self.accept()

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _failed(self, message: str, error: object) -> None:
        self._show_error(("Cancelled: " if isinstance(error, Cancelled) else "") + message)
        self._update_buttons()

    def _show_error(self, message: str) -> None:
        self.status.setStyleSheet(ERROR_STYLE)
        self.status.setText(message)

    def _update_buttons(self) -> None:
        busy = self.task.running
        self.search_button.setEnabled(not busy)
        self.retrieve_button.setEnabled(not busy and self.chosen_series() is not None)
        self.cancel_button.setText("Cancel" if busy else "Close")

    def done(self, result: int) -> None:
        """Closing while work runs cancels it first (files received stay whole)."""
        if self.task.running:
            self.task.cancel.set()
            self.task.wait(self.settings.timeout_s)
        super().done(result)


class SendResultsDialog(QDialog):
    """The result files to store on the PACS (a SEG, an Encapsulated PDF, Secondary Captures), each
    instance's status afterwards; the ones that failed are listed in red with the PACS's reason."""

    def __init__(self, settings: PacsSettings, files: list[Path], parent: QWidget | None = None,
                 pdf_to_dicom: Callable[[Path], Path] | None = None) -> None:
        """``pdf_to_dicom``: turns a report PDF added to the list into an Encapsulated PDF before sending."""
        super().__init__(parent)
        quiet_pynetdicom()
        self.setWindowTitle(f"Send results to PACS — {settings.describe()}")
        self.settings, self.pdf_to_dicom = settings, pdf_to_dicom
        self.files = QListWidget()
        for path in files:
            self._add(Path(path))
        self.report = None
        self.add_button, self.send_button, self.close_button = (QPushButton("Add files…"), QPushButton("Send"),
                                                                QPushButton("Close"))
        self.progress = QProgressBar()
        self.status = QLabel("Results carry the research-use disclaimer and the source study's identifiers.")
        self.status.setWordWrap(True)
        self.task = _Task(self)
        self.task.progress.connect(lambda done, total: (self.progress.setRange(0, total), self.progress.setValue(done)))
        self.task.finished.connect(self._sent)
        self.task.failed.connect(lambda message, error: self._finish(message, error=True))
        buttons = QHBoxLayout()
        for button in (self.add_button, self.send_button, self.close_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.files, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.add_button.clicked.connect(self.add_files)
        self.send_button.clicked.connect(self.send)
        self.close_button.clicked.connect(self.close_or_cancel)
        self.resize(640, 420)

    def _add(self, path: Path) -> None:
        item = QListWidgetItem(str(path))
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked)
        self.files.addItem(item)

    def add_files(self) -> None:
        kinds = "DICOM or report PDF (*.dcm *.pdf);;All files (*)" if self.pdf_to_dicom else "DICOM (*.dcm);;All files (*)"
        paths, _ = QFileDialog.getOpenFileNames(self, "Files to send", "", kinds)
        for path in paths:
            self._add(Path(path))

    def chosen(self) -> list[Path]:
        return [Path(self.files.item(i).text()) for i in range(self.files.count())
                if self.files.item(i).checkState() == Qt.CheckState.Checked]

    def send(self) -> None:
        from xnet_core.pacs import send

        try:
            paths = [self.pdf_to_dicom(p) if self.pdf_to_dicom and p.suffix.lower() == ".pdf" else p
                     for p in self.chosen()]
        except XNetError as exc:
            return self._finish(str(exc), error=True)
        if not paths or self.task.running:
            return
        self.send_button.setEnabled(False)
        self.close_button.setText("Cancel")
        self.status.setStyleSheet("")
        self.status.setText(f"sending {len(paths)} file(s)…")
        self.task.start(lambda cancel: send(self.settings, paths, on_progress=self.task.progress.emit,
                                            should_cancel=cancel.is_set))

    def _sent(self, report) -> None:
        self.report = report
        for i in range(self.files.count()):
            item = self.files.item(i)
            status = next((s for s in report.instances if str(s.path) == item.text()), None)
            if status is not None:
                item.setText(str(status.path))
                item.setToolTip(status.message)
                if not status.ok:
                    item.setForeground(Qt.GlobalColor.red)
        self._finish(report.summary(), error=bool(report.failed))

    def _finish(self, message: str, error: bool) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(message)
        self.send_button.setEnabled(True)
        self.close_button.setText("Close")

    def close_or_cancel(self) -> None:
        if self.task.running:
            self.task.cancel.set()
        else:
            self.accept()

    def done(self, result: int) -> None:
        if self.task.running:
            self.task.cancel.set()
            self.task.wait(self.settings.timeout_s)
        super().done(result)
