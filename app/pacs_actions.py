"""The window's PACS commands (File → Open from PACS…, Send results to PACS…, PACS settings…): the glue
between the window and the self-contained dialogs of ``app/pacs_dialog.py`` and ``app/pacs_settings.py``.

The window holds one ``PacsActions`` as ``window.pacs``; the action table names its methods
(``"pacs.open_from_pacs"``). It needs from the window only ``volume``, ``study``, ``reader.read``,
``model`` (for the checkpoint), ``open_scan`` and ``show_error``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtWidgets import QDialog, QWidget

from xnet_core.errors import XNetError

log = logging.getLogger(__name__)


class PacsActions:
    """File menu commands that talk to the PACS, for one window."""

    def __init__(self, window: QWidget) -> None:
        self.window = window

    def settings(self):
        """The saved PACS settings, or the settings dialog when there are none (None: cancelled)."""
        from app.pacs_settings import edit_settings, load_settings

        return load_settings() or edit_settings(self.window)

    def edit_settings(self) -> None:
        from app.pacs_settings import edit_settings

        edit_settings(self.window)

    def open_from_pacs(self) -> None:
        """Search, retrieve a series whole, then open its folder as File → Open DICOM folder would."""
        from app.pacs_dialog import OpenFromPacsDialog

        settings = self.settings()
        if settings is None:
            return
        dialog = OpenFromPacsDialog(settings, parent=self.window)
        if dialog.exec() == QDialog.DialogCode.Accepted and dialog.retrieved_folder is not None:
            self.window.open_scan(str(dialog.retrieved_folder))

    def send_results(self) -> None:
        """Write the model's mask (and the reader's) as a DICOM SEG of the open DICOM series, then let the
        user send it, and any report PDF or other DICOM file added, to the PACS."""
        from app.pacs_dialog import SendResultsDialog

        window = self.window
        if window.volume.path is None or not Path(window.volume.path).is_dir():
            window.show_error("Send results to PACS: the scan was not opened from DICOM, so its results cannot "
                              "go into a PACS study; open the DICOM series (File → Open from PACS…).")
            return
        if not window.study.segmentation_complete:
            window.show_error("Send results to PACS: the segmentation is not finished yet; send once it is.")
            return
        settings = self.settings()
        if settings is None:
            return
        try:
            files = self.write_results()
        except XNetError as exc:
            window.show_error(f"Send results to PACS: {exc}")
            return
        SendResultsDialog(settings, files, parent=window, pdf_to_dicom=self.pdf_to_dicom).exec()

    def results_folder(self) -> Path:
        from app.pacs_dialog import pacs_cache_folder

        folder = pacs_cache_folder() / "results" / time.strftime("%Y%m%d-%H%M%S")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_results(self) -> list[Path]:
        """The SEG of the current study (model mask at the current threshold, the reader's when drawn)."""
        from xnet_core.dicom_results import source_series, write_seg

        window = self.window
        read = window.reader.read
        reader_mask = read.mask if read is not None and read.mask.any() else None
        path = self.results_folder() / "xnet-seg.dcm"
        write_seg(window.volume, source_series(window.volume), window.study.mask(), path,
                  self.algorithm(), reader_mask=reader_mask)
        return [path]

    def algorithm(self):
        from xnet_core.checkpoint import file_sha256
        from xnet_core.dicom_results import Algorithm

        model = self.window.model
        checkpoint = model.checkpoint or getattr(model.engine, "checkpoint", None)
        threshold = float(self.window.study.threshold)
        if checkpoint is not None:
            return Algorithm.from_checkpoint(checkpoint, threshold)
        from xnet_core import __version__

        weights = Path(model.weights_path)
        return Algorithm("X-Net", __version__, file_sha256(weights), weights.name, threshold)

    def pdf_to_dicom(self, pdf: Path) -> Path:
        """A report PDF added to the send list, as an Encapsulated PDF in the open series' study."""
        from xnet_core.dicom_results import source_series, write_encapsulated_pdf

        out = self.results_folder() / f"{pdf.stem}.dcm"
        return write_encapsulated_pdf(pdf, source_series(self.window.volume), out, f"X-Net report {pdf.stem}")
