"""The report's slice pages as RGB images: for a DICOM Secondary Capture (a PACS without SEG support).

Painted by the very functions that paint the PDF's pages (``app.report``), onto a ``QImage`` instead
of a ``QPdfWriter``, so the images show what the PDF shows: the four panels, the outlines, the
figures and the footer with the disclaimer.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter

from app import report
from app.report import ReportInputs

CAPTURE_DPI = 150  # A4 at 150 dpi: 1240 x 1754 pixels, enough to read the 7 pt footer


def slice_page_images(inputs: ReportInputs, dpi: int = CAPTURE_DPI) -> list[np.ndarray]:
    """One RGB uint8 ``[rows, columns, 3]`` image per slice page of the report (``inputs.slices``)."""
    if QGuiApplication.instance() is None:
        raise RuntimeError("slice_page_images needs a QGuiApplication (QT_QPA_PLATFORM=offscreen without a display)")
    scale = dpi / 72.0
    width, height = round(report.PAGE_W * scale), round(report.PAGE_H * scale)
    pages = 1 + len(inputs.slices)
    images = []
    for page, z in enumerate(inputs.slices, 2):
        image = QImage(width, height, QImage.Format.Format_RGB888)
        image.fill(Qt.GlobalColor.white)
        painter = QPainter(image)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
            painter.scale(scale, scale)
            pen = report._Pen(painter)  # noqa: SLF001 - the PDF's own page painter, on purpose
            report._slice_page(painter, pen, inputs, z)  # noqa: SLF001
            report._footer(painter, page, pages, inputs)  # noqa: SLF001
        finally:
            painter.end()
        images.append(_to_array(image))
    return images


def _to_array(image: QImage) -> np.ndarray:
    rows = image.height()
    stride = image.bytesPerLine()
    raw = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * rows).reshape(rows, stride)
    return np.ascontiguousarray(raw[:, : image.width() * 3].reshape(rows, image.width(), 3))
