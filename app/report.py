"""The PDF report: a summary page, one page per exported slice with the four panels, then one page per
requested finding whose maps explain that lesion alone.

Drawn with Qt's own ``QPdfWriter`` + ``QPainter``: text and lines are vectors; panel images are
embedded losslessly (Flate, not JPEG), upscaled with nearest neighbour so voxels stay crisp. The
viewer (File → Export report) and ``xnet report`` build the same ``ReportInputs`` from a ``Study``
and call ``write_report``; pages differ only by the date line.

Panels are composed here with numpy exactly as the viewer draws them: windowed scan, the model mask
(filled on the segmentation panel, outlined on the heatmap panels), each method's map on its one
colour scale, the reader's outline, radiological or neurological display.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import QMarginsF, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QImage, QPageLayout, QPageSize, QPainter, QPdfWriter

from app.comparison import slice_comparison, volume_comparison
from app.reader import Notes
from app.drawing import (MODEL_COLOUR, OUTSIDE_SAID, PANEL_ORDER, READER_COLOUR, axial_image, blend, coloured,
                         inside_brain, outline, windowed_grey)
from app.slice_panel import lookup_table
from app.study import ColourScale, Study, colour_scale
from explain.lime_quality import quality_sentence
from explain.methods import CAM_METHODS, METHOD_NAMES, METHODS
from xnet_core import DEFAULT_MIN_LESION_ML, DISCLAIMER, __version__
from xnet_core.atomic import atomic_path
from xnet_core.errors import Cancelled, SaveError, XNetError
from xnet_core.image import Volume
from xnet_core.metrics import split_findings
from xnet_core.registration_qc import registration_sentence

PAGE_W, PAGE_H = 595.0, 842.0  # A4 in points; the painter is scaled so one unit is one point
MARGIN = 36.0
RESOLUTION = 300
# Panels are embedded upscaled with nearest neighbour: Qt writes no /Interpolate flag and many PDF
# viewers smooth small images, so voxels and outlines would blur. Flate compresses the repeated
# pixels almost for free (3x: +30 % file size, measured in benchmarks/bench_report.py).
PANEL_UPSCALE = 3
CAPTION_HEIGHT = 29.0  # three lines of 7 pt under a panel: the LIME caption needs them in a half-page column
PANEL_ROW_EXTRA = 26 + CAPTION_HEIGHT + 12  # title and colour bar above a panel, its caption and a gap below
MAX_LESION_ROWS = 18
STATEMENT = ("This is a research / second-opinion output, not a diagnosis. The segmentation and the "
             "explanation maps come from a machine-learning model and must be checked by a qualified reader.")


@dataclass
class FindingPage:
    """One finding explained alone: its lesion-table row, the slice of its largest cross-section, its own
    voxels there and each method's map of the lesion logit summed over those voxels (or why none)."""

    number: int  # in the lesion table's order, 1 = largest (``xnet explain --lesion K``)
    row: dict  # ``Study.lesion_rows()`` entry
    z: int
    mask: np.ndarray  # uint8 [x, y]: the lesion alone on slice z
    maps: dict[str, np.ndarray]  # method -> [x, y] raw map
    status: dict[str, str]  # method -> "ok" or why there is no map
    details: dict[str, dict] = field(default_factory=dict)  # method -> SliceExplanation.summary()

    @classmethod
    def from_results(cls, number: int, row: dict, z: int, own_slice: np.ndarray, results) -> FindingPage:
        """The page from the ``SliceExplanation``s of slice ``z`` with the finding's target (``xnet report
        --lesion K`` and the viewer's export build it alike)."""
        return cls(number, row, z, own_slice, {r.method: r.map for r in results if r.ok},
                   {r.method: r.status for r in results}, {r.method: r.summary() for r in results})

    def scale(self, method: str) -> ColourScale:
        """The finding's own colour scale per method: its target differs from the slice pages'."""
        return colour_scale(self.maps[method], False)


def finding_numbers(text: str) -> list[int]:
    """"1,3": the findings to explain alone (1 = the largest), each once, in the order given."""
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise XNetError(f"finding numbers are whole numbers such as 1 or 1,3 (1 = the largest), not {text!r}.",
                        parameter="lesion") from None
    if any(k < 1 for k in numbers):
        raise XNetError(f"finding numbers count from 1 (the largest lesion): {text!r}.", parameter="lesion")
    return list(dict.fromkeys(numbers))


@dataclass
class ReportInputs:
    """Everything a report shows; the viewer and the CLI fill it from the same ``Study``."""

    study: Study
    slices: list[int]
    methods: list[str]  # methods included; others are marked "left out"
    levels: tuple[float, float]  # the scan's window
    model: dict  # file, sha256, training_data, intended_use, status (the card's quality status, may be absent)
    device: str
    precision: str
    colour_map: str = "inferno"
    opacity: float = 0.5
    mask_opacity: float = 0.45
    radiological: bool = True
    reader_mask: np.ndarray | None = None
    reader_name: str = ""
    notes: Notes = field(default_factory=Notes)
    identifiers: dict[str, str] | None = None  # patient identifiers, only when the user asked
    registration: dict | None = None  # PlacedScan.registration_summary(); None: not known
    background: Volume | None = None  # another sequence shown under the overlays (on the study's grid)
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML  # what the lesion table lists as findings
    findings: list[FindingPage] = field(default_factory=list)  # per-finding pages, after the slice pages
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M"))


def model_summary(checkpoint) -> dict:
    """The model as every report names it: file, SHA-256, training data and intended use (its card)."""
    return {"file": checkpoint.path.name, "sha256": checkpoint.sha256,
            "training_data": checkpoint.card.get("training_data", "not stated (no model card)"),
            "intended_use": checkpoint.card.get("intended_use", "not stated (no model card)"),
            "status": checkpoint.card.get("status", "")}


def maps_needed(study: Study, slices: list[int], methods: list[str]) -> dict[str, list[int]]:
    """The maps a report needs: its slices, and for Grad-CAM / Grad-CAM++ every lesion slice too, so
    that their colour bars carry the final scale (fixed from all lesion slices, docs/design.md) whichever
    slices are exported; LIME (about a minute a slice on a CPU) only on the exported slices."""
    lesion = set(study.lesion_slices)
    return {m: sorted(set(slices) | (lesion if m in CAM_METHODS else set())) for m in methods}


def registration_line(summary: dict, scan_name: str) -> str:
    """How the scan reached the model: already on the template grid, or registered (with its figure)."""
    if not summary.get("applied") and summary.get("warning"):
        return f"Model input: {scan_name} itself, not registered: {summary['warning']}."
    if not summary.get("applied"):
        return f"Model input: {scan_name} itself (on the 1 mm MNI template grid; no registration needed)."
    line = (f"Model input: {scan_name} registered to the MNI template ({summary['method']}); "
            f"{registration_sentence(summary)}; results mapped back to the scan's own grid.")
    return line + (f" WARNING: {summary['warning']}" if summary.get("warning") else "")


def report_precision(engine) -> str:
    """Segmentation and LIME share the Segmenter's precision; the CAMs always run in fp32. The
    segmentation may average each slice with its mirror image; the maps explain the single pass."""
    segmenter = engine.segmenter
    mirrored = " (mean with the left-right mirror image)" if segmenter.mirror else ""
    return f"segmentation {segmenter.precision}{mirrored}, LIME {segmenter.precision}, Grad-CAM/Grad-CAM++/HiResCAM fp32"


# -- panel images (numpy) -------------------------------------------------------------------
def _map_of(inputs: ReportInputs, name: str, z: int, finding: FindingPage | None):
    """(status, raw map [x, y], colour scale) of a method on slice ``z``: the slice's, or the finding's own."""
    if finding is not None:
        status = finding.status.get(name) or "not computed"
        return status, finding.maps.get(name), finding.scale(name) if status == "ok" else None
    study = inputs.study
    status = study.status(name, z)
    return status, study.maps[name][:, :, z], study.scale(name) if status == "ok" else None


def _drawn_map(inputs: ReportInputs, values: np.ndarray, z: int) -> tuple[np.ndarray, float]:
    """(the map inside the brain of the model's input, the share of its energy outside), as the viewer
    draws it: the model saw nothing beyond its window, and a map drawn to that edge means nothing."""
    return inside_brain(values, inputs.study.model_input.brain_mask[:, :, z] > 0)


def panel_image(inputs: ReportInputs, name: str, z: int, finding: FindingPage | None = None) -> np.ndarray:
    """RGB uint8 ``[rows, columns, 3]`` of one panel on axial slice ``z`` (a finding's page: that lesion
    alone, with its own maps)."""
    study = inputs.study
    rgb = windowed_grey((inputs.background or study.volume).data[:, :, z], inputs.levels)
    model = finding.mask if finding is not None else study.mask_slice(z) if study.segmented[z] else None
    if name == "segmentation":
        if model is not None:
            rgb = blend(rgb, MODEL_COLOUR, model * inputs.mask_opacity)
    elif name in inputs.methods and (shown := _map_of(inputs, name, z, finding))[0] == "ok":
        _, values, scale = shown
        lut = coloured(_drawn_map(inputs, values, z)[0], scale.low, scale.high, lookup_table(inputs.colour_map))
        rgb = blend(rgb, lut[..., :3], lut[..., 3] / 255.0 * inputs.opacity)
    if model is not None and name != "segmentation":
        rgb[outline(model)] = MODEL_COLOUR
    if inputs.reader_mask is not None:
        rgb[outline(inputs.reader_mask[:, :, z])] = READER_COLOUR
    return np.ascontiguousarray(axial_image(np.clip(rgb, 0, 255).astype(np.uint8), inputs.radiological))


def _font(size: float, bold: bool = False) -> QFont:
    """A font of ``size`` points on the page. The painter is scaled to points and Qt already sizes
    fonts for the writer's resolution, so the size is divided by that scale once."""
    font = QFont("DejaVu Sans")
    font.setPointSizeF(size * 72.0 / RESOLUTION)
    font.setBold(bold)
    # No ligatures: hashes and file names must copy out of the PDF verbatim ("ff" became "ﬀ")
    font.setFeature(QFont.Tag("liga"), 0)
    return font


def _qimage(rgb: np.ndarray) -> QImage:
    return QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.strides[0], QImage.Format.Format_RGB888).copy()


# -- drawing helpers ------------------------------------------------------------------------
class _Pen:
    """Text and lines at a running vertical position."""

    def __init__(self, painter: QPainter) -> None:
        self.painter = painter
        self.y = MARGIN

    def font(self, size: float, bold: bool = False) -> None:
        self.painter.setFont(_font(size, bold))

    def line(self, text: str, size: float = 9, bold: bool = False, x: float = MARGIN, gap: float = 3,
             width: float = PAGE_W - 2 * MARGIN) -> None:
        self.font(size, bold)
        rect = QRectF(x, self.y, width, 400)
        bounds = self.painter.boundingRect(rect, Qt.TextFlag.TextWordWrap, text)
        self.painter.drawText(rect, Qt.TextFlag.TextWordWrap, text)
        self.y += bounds.height() + gap

    def banner(self, text: str) -> None:
        self.font(9, True)
        rect = QRectF(MARGIN, self.y, PAGE_W - 2 * MARGIN, 400)
        bounds = self.painter.boundingRect(rect.adjusted(5, 4, -5, 0), Qt.TextFlag.TextWordWrap, text)
        box = QRectF(MARGIN, self.y, PAGE_W - 2 * MARGIN, bounds.height() + 8)
        self.painter.fillRect(box, QColor(255, 204, 0))
        self.painter.drawText(box.adjusted(5, 4, -5, -4), Qt.TextFlag.TextWordWrap, text)
        self.y += box.height() + 6

    def table(self, header: list[str], rows: list[list[str]], widths: list[float], size: float = 8) -> None:
        self.font(size, True)
        x = MARGIN
        for text, width in zip(header, widths):
            self.painter.drawText(QRectF(x, self.y, width, 12), Qt.AlignmentFlag.AlignLeft, text)
            x += width
        self.y += 12
        self.painter.drawLine(QPointF(MARGIN, self.y - 1), QPointF(MARGIN + sum(widths), self.y - 1))
        self.font(size)
        for row in rows:
            x = MARGIN
            for text, width in zip(row, widths):
                self.painter.drawText(QRectF(x, self.y, width, 12), Qt.AlignmentFlag.AlignLeft, text)
                x += width
            self.y += 11
        self.y += 4


def _footer(painter: QPainter, page: int, pages: int, inputs: ReportInputs) -> None:
    painter.setFont(_font(7))
    painter.setPen(QColor(60, 60, 60))
    rect = QRectF(MARGIN, PAGE_H - MARGIN + 6, PAGE_W - 2 * MARGIN, 24)
    painter.drawText(rect, Qt.TextFlag.TextWordWrap,
                     f"Page {page} of {pages} · {inputs.study.volume.name} · model {inputs.model['file']} "
                     f"({inputs.model['sha256'][:12]}) · X-Net Viewer {__version__}\n{DISCLAIMER}")
    painter.setPen(QColor(0, 0, 0))


def _figure(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "hit" if value else "miss"
    return f"{value:.{digits}f}"


# -- pages ----------------------------------------------------------------------------------
def _params_lines(inputs: ReportInputs, z: int | None = None, finding: FindingPage | None = None) -> list[str]:
    study, lines = inputs.study, []
    for method in METHODS:
        if method not in inputs.methods:
            lines.append(f"{METHOD_NAMES[method]}: left out of this report")
            continue
        if finding is not None:
            details = finding.details.get(method)
        elif z is not None:
            details = study.details[method].get(z)
        else:
            details = next(iter(study.details[method].values()), None)
        if not details:
            lines.append(f"{METHOD_NAMES[method]}: not computed")
            continue
        if method == "lime":
            segments = f", {details['n_segments']} segments" if "n_segments" in details else ""
            text = f"{details.get('num_samples')} samples{segments}, seed {details.get('seed')}, " \
                   f"quickshift kernel {details.get('kernel_size')}"
        else:
            text = f"layer {details.get('layer')}"
        target = {"predicted": "the model's predicted lesion mask",
                  "lesion": f"finding {finding.number if finding else ''} alone"}.get(details.get("target"),
                                                                                    details.get("target"))
        lines.append(f"{METHOD_NAMES[method]}: {text}; target: {target}")
    return lines


def _summary_page(pen: _Pen, inputs: ReportInputs, reader_figures: dict | None) -> None:
    study, volume = inputs.study, inputs.study.volume
    pen.line("X-Net Viewer report: stroke-lesion segmentation with explanations", 15, True, gap=6)
    pen.banner(f"{DISCLAIMER} {STATEMENT}")
    pen.line(f"Scan: {volume.name} ({volume.sequence}), {volume.shape[0]}×{volume.shape[1]}×{volume.shape[2]} "
             f"voxels of {' × '.join(f'{v:.2g}' for v in volume.voxel_sizes)} mm", 9, True)
    if inputs.identifiers:
        pen.line("Patient: " + ", ".join(f"{k} {v}" for k, v in inputs.identifiers.items()))
    else:
        pen.line("Patient identifiers: not included (they are added only on request, from DICOM headers).")
    pen.line(f"Report created: {inputs.created} · X-Net Viewer {__version__}")
    model = inputs.model
    pen.line(f"Model: {model['file']}, SHA-256 {model['sha256']}", 9, True)
    pen.line(f"Training data: {model.get('training_data', 'not stated')}")
    pen.line(f"Intended use: {model.get('intended_use', 'not stated')}")
    if model.get("status"):  # e.g. an interim demo model below its quality bar: the reader must know
        pen.line(f"Model status: {model['status']}", 9, True)
    pen.line(f"Device: {inputs.device} · precision: {inputs.precision} · threshold {study.threshold:.2f} · "
             f"window {inputs.levels[0]:.4g} – {inputs.levels[1]:.4g}")
    if inputs.registration is not None:
        pen.line(registration_line(inputs.registration, volume.name), 8, gap=1)
    for text in _params_lines(inputs):
        pen.line(text, 8, gap=1)
    pen.y += 6
    _lesion_table(pen, inputs)
    if reader_figures is not None:
        _reader_summary(pen, inputs, reader_figures)
    if inputs.notes.study.strip():
        pen.line("Reader's note on the study", 10, True, gap=1)
        pen.line(inputs.notes.study, 9)
    pen.line(f"Exported slices (z): {', '.join(str(z) for z in inputs.slices)}", 9, True)
    if inputs.findings:
        pen.line(f"Findings explained alone: {', '.join(str(f.number) for f in inputs.findings)} "
                 "(one page each, after the slice pages).", 9)
    if "lime" not in inputs.methods:  # about a minute a slice on a CPU
        pen.line("Left out to save time: LIME.", 9)
    others = [METHOD_NAMES[m] for m in METHODS if m not in inputs.methods and m != "lime"]
    if others:
        pen.line(f"Not included: {', '.join(others)}.", 9)


def _lesion_table(pen: _Pen, inputs: ReportInputs) -> None:
    """The findings (components of at least the minimum finding size), then the rest in one line; the
    total volume counts every component."""
    study = inputs.study
    split = split_findings(study.lesion_rows(), inputs.min_lesion_ml)
    listed = split.findings[:MAX_LESION_ROWS]
    pen.line(f"Model: {study.lesion_volume_ml():.2f} ml of lesion; {len(split.findings)} finding(s) of at least "
             f"{inputs.min_lesion_ml:g} ml (6-connected, threshold {study.threshold:.2f})", 11, True)
    probability = lambda value: "–" if value is None else f"{value:.2f}"  # noqa: E731
    rows = [[str(r["number"]), f"{r['volume_ml']:.2f}", probability(r.get("mean_probability")),
             probability(r.get("max_probability")), "({:.0f}, {:.0f}, {:.0f})".format(*r["centroid_mm"]),
             r["hemisphere"], f"{r['slices'][0]}–{r['slices'][1]}"] for r in listed]
    pen.table(["#", "Volume (ml)", "Mean p", "Max p", "Centroid (world mm, RAS)", "Side", "Slices z"], rows,
              [25, 60, 45, 45, 150, 35, 70])
    if len(split.findings) > MAX_LESION_ROWS:
        rest = split.findings[MAX_LESION_ROWS:]
        pen.line(f"… and {len(rest)} more finding(s), {sum(r['volume_ml'] for r in rest):.2f} ml together.", 8)
    if split.smaller:
        pen.line(split.smaller_line() + " (below the minimum finding size; in the mask and every figure).", 8)


def _reader_summary(pen: _Pen, inputs: ReportInputs, figures: dict) -> None:
    pen.line(f"Agreement with the reader's mask ({inputs.reader_name or 'painted in the viewer'})", 11, True)
    if figures["both_empty"]:
        pen.line("Model and reader: both empty.")
    else:
        pen.line(f"Dice {figures['dice']:.3f} · IoU {figures['iou']:.3f} · precision {figures['precision']:.3f} · "
                 f"recall {figures['recall']:.3f} · lesion-wise F1 {figures['lesion_f1']:.3f}")
    pen.line(f"Model {figures['model_volume_ml']:.2f} ml · reader {figures['reader_volume_ml']:.2f} ml · "
             f"{len(figures['model_only_lesions'])} lesion(s) only the model found · "
             f"{len(figures['reader_only_lesions'])} only the reader found")
    for method, record in figures["attention"].items():
        pen.line(f"{METHOD_NAMES[method]} vs reader (explained slices): energy inside "
                 f"{_figure(record['energy_in_mask'])}, pointing game {_figure(record['pointing_hit'])}, "
                 f"Otsu IoU {_figure(record['otsu_iou'])}", 8, gap=1)
    pen.y += 4


def report_panels(inputs: ReportInputs) -> list[str]:
    """The panels of a slice page: the segmentation and the maps of the report's methods (the viewer's
    order); with fewer than three methods the viewer's default three keep their places, marked left out."""
    methods = [m for m in METHODS if m in inputs.methods]
    return ["segmentation", *(methods if len(methods) >= 3 else PANEL_ORDER[1:])]


def _slice_page(painter: QPainter, pen: _Pen, inputs: ReportInputs, z: int,
                finding: FindingPage | None = None) -> None:
    study, volume = inputs.study, inputs.study.volume
    centre = volume.affine @ [volume.shape[0] / 2, volume.shape[1] / 2, z, 1.0]
    if finding is None:
        pen.line(f"Slice z {z} (axial) · {centre[2]:.1f} mm · {volume.name}", 13, True, gap=2)
    else:
        _finding_header(pen, finding, z, centre[2])
    shown = inputs.background or volume
    pen.line(f"Background: {shown.name} ({shown.sequence}) · model input: {volume.name} ({volume.sequence})", 8,
             gap=1)
    pen.line(f"Window {inputs.levels[0]:.4g} – {inputs.levels[1]:.4g} · threshold {study.threshold:.2f} · "
             f"{'radiological' if inputs.radiological else 'neurological'} display · model outline vermilion, "
             f"reader outline sky blue", 8)
    panels = report_panels(inputs)
    rows = (len(panels) + 1) // 2
    vx, vy, _ = volume.voxel_sizes
    aspect = (volume.shape[1] * vy) / (volume.shape[0] * vx)  # height / width in mm
    cell_w = (PAGE_W - 2 * MARGIN - 12) / 2
    image_w = cell_w - 24
    image_h = min(image_w * aspect, 250.0 if rows <= 2 else 160.0)
    image_w = image_h / aspect
    top = pen.y
    for index, name in enumerate(panels):
        x = MARGIN + (index % 2) * (cell_w + 12)
        y = top + (index // 2) * (image_h + PANEL_ROW_EXTRA)
        _panel(painter, inputs, name, z, QRectF(x + 12, y + 26, image_w, image_h), finding)
    pen.y = top + rows * (image_h + PANEL_ROW_EXTRA) + 4
    if finding is None:
        _slice_figures(pen, inputs, z)
        return
    for text in _params_lines(inputs, z, finding):
        pen.line(text, 7, gap=0)


def _finding_header(pen: _Pen, finding: FindingPage, z: int, height_mm: float) -> None:
    row = finding.row
    sure = "" if row.get("mean_probability") is None else (
        f", mean probability {row['mean_probability']:.2f} (max {row['max_probability']:.2f})")
    pen.line(f"Finding {finding.number}: {row['volume_ml']:.2f} ml{sure}", 13, True, gap=2)
    pen.line(f"Side {row['hemisphere']} · slices {row['slices'][0]}–{row['slices'][1]} · shown on slice z {z} "
             f"({height_mm:.1f} mm), its largest cross-section. Each map explains this lesion alone: the lesion "
             "logit summed over its voxels on this slice; colour scales are this page's own.", 8, gap=2)


def _panel(painter: QPainter, inputs: ReportInputs, name: str, z: int, rect: QRectF,
           finding: FindingPage | None = None) -> None:
    study = inputs.study
    painter.setFont(_font(9, True))
    title = "Segmentation" if name == "segmentation" else METHOD_NAMES[name]
    painter.drawText(QRectF(rect.left(), rect.top() - 24, rect.width(), 12), Qt.AlignmentFlag.AlignLeft, title)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
    pixels = panel_image(inputs, name, z, finding).repeat(PANEL_UPSCALE, axis=0).repeat(PANEL_UPSCALE, axis=1)
    painter.drawImage(rect, _qimage(np.ascontiguousarray(pixels)))
    painter.setFont(_font(8, True))
    painter.setPen(QColor(200, 120, 0))
    left, right = ("R", "L") if inputs.radiological else ("L", "R")
    painter.drawText(QRectF(rect.left() - 11, rect.center().y() - 6, 10, 12), Qt.AlignmentFlag.AlignCenter, left)
    painter.drawText(QRectF(rect.right() + 1, rect.center().y() - 6, 10, 12), Qt.AlignmentFlag.AlignCenter, right)
    painter.drawText(QRectF(rect.center().x() - 5, rect.top() - 11, 10, 10), Qt.AlignmentFlag.AlignCenter, "A")
    painter.drawText(QRectF(rect.center().x() - 5, rect.bottom() + 1, 10, 10), Qt.AlignmentFlag.AlignCenter, "P")
    painter.setPen(QColor(0, 0, 0))
    painter.setFont(_font(7))
    below = QRectF(rect.left(), rect.bottom() + 11, rect.width(), CAPTION_HEIGHT)
    if name == "segmentation":
        vx, vy, _ = study.volume.voxel_sizes
        area = float(finding.mask.sum()) * vx * vy if finding is not None else study.lesion_area_per_slice_mm2()[z]
        what = f"finding {finding.number}" if finding is not None else "lesion"
        painter.drawText(below, Qt.TextFlag.TextWordWrap, f"{what} on this slice: {area:.0f} mm² "
                                                          f"(threshold {study.threshold:.2f})")
        return
    if name not in inputs.methods:
        painter.drawText(below, Qt.TextFlag.TextWordWrap, "left out of this report (not requested)")
        return
    status, values, scale = _map_of(inputs, name, z, finding)
    if status != "ok":
        painter.drawText(below, Qt.TextFlag.TextWordWrap, status or "not computed")
        return
    if name == "lime":
        details = finding.details.get("lime", {}) if finding is not None else inputs.study.details["lime"].get(z, {})
        painter.drawText(below, Qt.TextFlag.TextWordWrap, quality_sentence(details))
    elif (outside := _drawn_map(inputs, values, z)[1]) >= OUTSIDE_SAID:
        painter.drawText(below, Qt.TextFlag.TextWordWrap, f"{outside:.0%} of this map lies outside the brain (not drawn)")
    lut = lookup_table(inputs.colour_map)
    strip = np.ascontiguousarray(np.repeat(lut[None, :, :3], 4, axis=0).astype(np.uint8))
    bar = QRectF(rect.left() + rect.width() * 0.36, rect.top() - 21, rect.width() * 0.28, 5)  # beside the title
    painter.drawImage(bar, _qimage(strip))
    painter.drawText(QRectF(bar.right() + 3, bar.top() - 3, rect.width() * 0.4, 10), Qt.AlignmentFlag.AlignLeft,
                     f"{scale.low:.3g} – {scale.high:.3g}{' (provisional)' if scale.provisional else ''}")


def _slice_figures(pen: _Pen, inputs: ReportInputs, z: int) -> None:
    study = inputs.study
    if inputs.reader_mask is not None and study.segmented[z]:
        status = {m: study.status(m, z) if m in inputs.methods else None for m in METHODS}
        record = slice_comparison(study.volume, z, study.mask_slice(z), inputs.reader_mask[:, :, z],
                                  {m: study.maps[m][:, :, z] for m in METHODS}, status)
        masks = "both empty" if record["both_empty"] else (
            f"Dice {record['dice']:.3f}, IoU {record['iou']:.3f}, precision {record['precision']:.3f}, "
            f"recall {record['recall']:.3f}")
        pen.line(f"Model vs reader on this slice: {masks}; model {record['model_volume_ml'] * 1000:.0f} mm³, "
                 f"reader {record['reader_volume_ml'] * 1000:.0f} mm³", 8, gap=1)
        for method in inputs.methods:
            figures = record["attention"][method]
            if "status" in figures:
                continue
            pen.line(f"{METHOD_NAMES[method]} vs reader: energy inside {_figure(figures['energy_in_mask'])}, "
                     f"pointing game {_figure(figures['pointing_hit'])}, Otsu IoU {_figure(figures['otsu_iou'])}",
                     8, gap=1)
    for text in _params_lines(inputs, z):
        pen.line(text, 7, gap=0)
    note = inputs.notes.slices.get(z, "").strip()
    if note:
        pen.y += 3
        pen.line(f"Reader's note on slice z {z}: {note}", 8)


# -- the file -------------------------------------------------------------------------------
def write_report(inputs: ReportInputs, path: str | os.PathLike,
                 on_progress: Callable[[int, int], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> Path:
    """Write the PDF to a temporary file beside ``path`` and rename it: a failed or cancelled export
    never leaves half a report under the requested name."""
    if QGuiApplication.instance() is None:  # fonts need one; the CLI makes an offscreen one
        raise RuntimeError("write_report needs a QGuiApplication (QT_QPA_PLATFORM=offscreen without a display)")
    path = Path(path)
    if not path.parent.is_dir():
        raise XNetError(f"{path}: the folder {path.parent} does not exist; choose another place for the report.")
    if not os.access(path.parent, os.W_OK):
        raise XNetError(f"{path}: cannot write in {path.parent} (permission denied); choose another folder.")
    reader_figures = None
    if inputs.reader_mask is not None and inputs.study.segmentation_complete:
        explained = {m: [z for z, s in inputs.study.explained[m].items() if s == "ok"] for m in inputs.methods}
        reader_figures = volume_comparison(inputs.study.volume, inputs.study.mask(), inputs.reader_mask,
                                           {m: inputs.study.maps[m] for m in inputs.methods}, explained)
    pages = 1 + len(inputs.slices) + len(inputs.findings)
    with atomic_path(path) as tmp:
        writer = QPdfWriter(str(tmp))
        writer.setResolution(RESOLUTION)
        writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                         QMarginsF(0, 0, 0, 0)))
        writer.setTitle(f"X-Net Viewer report: {inputs.study.volume.name}")
        writer.setCreator(f"X-Net Viewer {__version__}")
        painter = QPainter(writer)
        if not painter.isActive():
            raise XNetError(f"{path}: Qt cannot write a PDF there; choose another file name.")
        painter.scale(RESOLUTION / 72.0, RESOLUTION / 72.0)
        # Flate, not JPEG: thin outlines and colour bars must not blur.
        painter.setRenderHint(QPainter.RenderHint.LosslessImageRendering, True)
        try:
            for page in range(pages):
                if should_cancel is not None and should_cancel():
                    raise Cancelled("report cancelled")
                if page:
                    writer.newPage()
                pen = _Pen(painter)
                if page == 0:
                    _summary_page(pen, inputs, reader_figures)
                elif page <= len(inputs.slices):
                    _slice_page(painter, pen, inputs, inputs.slices[page - 1])
                else:
                    finding = inputs.findings[page - 1 - len(inputs.slices)]
                    _slice_page(painter, pen, inputs, finding.z, finding)
                _footer(painter, page + 1, pages, inputs)
                if on_progress is not None:
                    on_progress(page + 1, pages)
        finally:
            ended = painter.end()
        if not (ended and _pdf_is_whole(tmp)):
            raise SaveError(f"{path}: the PDF could not be written whole (is the disk full?); any previous report "
                            "of that name is unchanged. Free some space or choose another folder.")
    return path


def _pdf_is_whole(path: Path) -> bool:
    """Whether a written PDF ends with its end-of-file marker: Qt reports no write error, and a full
    disk leaves a truncated file that would otherwise be renamed over the user's report."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 1024))
            return b"%%EOF" in handle.read()
    except OSError:
        return False
