"""One linked slice panel: the scan, an overlay (model mask or a heatmap), outlines, a crosshair,
orientation letters and a colour bar. The numpy side of drawing (sections, flips, outlines, colours)
lives in ``app.drawing``; the colour maps' tables come from pyqtgraph, so they live here."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QImage, QPixmap, QTransform
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QVBoxLayout

from app.drawing import PLANE_AXES, PLANE_LETTERS, displayed, flips_columns, outline_image

WHEEL_NOTCH = 120  # angle delta of one mouse-wheel notch (1/8 degree units)
LETTER_STYLE = "color: #ffd54f; font-weight: bold; font-size: 14px; padding: 1px;"
TITLE_STYLE = "color: white; font-weight: bold; padding: 2px;"
CAPTION_STYLE = "color: #ffd54f; padding: 1px 3px;"
_JET = pg.ColorMap(np.linspace(0, 1, 5), [(0, 0, 143), (0, 127, 255), (127, 255, 127), (255, 127, 0), (127, 0, 0)])


@lru_cache(maxsize=8)
def lookup_table(name: str) -> np.ndarray:
    """RGBA table of a colour map whose lowest 2 % is transparent (no tint where the map is ~0)."""
    colour_map = _JET if name == "jet" else pg.colormap.get(name)
    lut = colour_map.getLookupTable(0.0, 1.0, 256, alpha=True)
    lut[:6, 3] = 0
    return lut


class SliceViewBox(pg.ViewBox):
    """A ViewBox whose mouse wheel steps through slices (Shift: 5); Ctrl + wheel zooms."""

    sigWheelSteps = Signal(int)

    def __init__(self) -> None:
        # No context menu: its export would write images without the disclaimer (docs/design.md, Contracts).
        super().__init__(lockAspect=True, invertY=False, enableMenu=False)
        self._wheel_rest = 0  # trackpads send fractions of a notch

    def wheelEvent(self, ev, axis=None) -> None:  # noqa: N802 (Qt's name)
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        self._wheel_rest += ev.delta()
        steps = int(self._wheel_rest / WHEEL_NOTCH)
        self._wheel_rest -= steps * WHEEL_NOTCH
        if steps:
            factor = 5 if ev.modifiers() & Qt.KeyboardModifier.ShiftModifier else 1
            self.sigWheelSteps.emit(steps * factor)
        ev.accept()


class HoverImageItem(pg.ImageItem):
    """An ImageItem that reports the image position under the mouse, or None when it leaves."""

    sigHover = Signal(object)

    def hoverEvent(self, ev) -> None:  # noqa: N802 (pyqtgraph's name)
        self.sigHover.emit(None if ev.isExit() else QPointF(ev.pos()))


class ColourBar(QLabel):
    """A small horizontal strip of a colour map."""

    def show_lut(self, lut: np.ndarray) -> None:
        strip = np.ascontiguousarray(np.repeat(lut[None, :, :3], 10, axis=0).astype(np.uint8))
        image = QImage(strip.data, strip.shape[1], strip.shape[0], strip.strides[0], QImage.Format.Format_RGB888)
        self.setPixmap(QPixmap.fromImage(image.copy()).scaled(140, 10))


class Caption(QLabel):
    """A panel's caption under the image: it wraps at the panel's width, never clips, and keeps its
    full text as a tooltip (a narrow panel may still shorten a single long word)."""

    def __init__(self) -> None:
        super().__init__("")
        self.setWordWrap(True)
        self.setStyleSheet(CAPTION_STYLE)
        self.setMinimumWidth(1)  # wraps rather than widening the panel
        self.setVisible(False)

    def show_text(self, text: str) -> None:
        self.setText(text)
        self.setToolTip(text)
        self.setVisible(bool(text))

    def toPlainText(self) -> str:  # noqa: N802 (the name pyqtgraph's TextItem had, which callers use)
        return self.text()


class SlicePanel(QFrame):
    """The scan plus one overlay, with letters, title and colour bar; views are linked by the window."""

    hovered = Signal(object)  # RAS (x, y) or None
    wheelSteps = Signal(int)

    def __init__(self, title: str, voxel_sizes: tuple[float, float, float]) -> None:
        super().__init__()
        self.setStyleSheet("QFrame { background: black; }")
        self.title = QLabel(title)
        self.title.setStyleSheet(TITLE_STYLE)
        self.view_box = SliceViewBox()
        self.graphics_view = pg.GraphicsView(background="k")
        self.graphics_view.setCentralItem(self.view_box)
        self.graphics_view.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.scan_item = HoverImageItem(axisOrder="col-major")
        self.overlay_item = pg.ImageItem(axisOrder="col-major")
        self.model_outline_item = pg.ImageItem(axisOrder="col-major")
        self.reader_item = pg.ImageItem(axisOrder="col-major")
        self.template_item = pg.ImageItem(axisOrder="col-major")
        self.status_text = Caption()
        self.image_items = (self.scan_item, self.overlay_item, self.template_item, self.model_outline_item,
                            self.reader_item)
        for item in self.image_items:
            self.view_box.addItem(item)
        self.cross_v = pg.InfiniteLine(angle=90, pen=pg.mkPen((0, 255, 0, 120), width=1), movable=False)
        self.cross_h = pg.InfiniteLine(angle=0, pen=pg.mkPen((0, 255, 0, 120), width=1), movable=False)
        self.view_box.addItem(self.cross_v)
        self.view_box.addItem(self.cross_h)
        self.colour_bar = ColourBar()
        self.range_label = QLabel("")
        self.range_label.setStyleSheet("color: white; font-size: 11px;")
        self.letters = {letter: self._letter(letter) for letter in "RLAP"}
        self._layout()
        self.scan_item.sigHover.connect(self._on_hover)
        self.view_box.sigWheelSteps.connect(self.wheelSteps)
        self.shape_xy = (0, 0)
        self.radiological_view, self.plane, self.flip = True, "axial", True
        self.set_voxel_sizes(voxel_sizes)

    def set_voxel_sizes(self, voxel_sizes: tuple[float, float, float]) -> None:
        """Millimetres on screen: every image item is scaled by the voxel size (true aspect)."""
        self.volume_voxel_sizes = voxel_sizes
        columns, rows, _ = PLANE_AXES[self.plane]
        self.voxel_sizes = (voxel_sizes[columns], voxel_sizes[rows])
        scale = QTransform.fromScale(*self.voxel_sizes)
        for item in self.image_items:
            item.setTransform(scale)

    def _letter(self, letter: str) -> QLabel:
        label = QLabel(letter)
        label.setStyleSheet(LETTER_STYLE)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        return label

    def _layout(self) -> None:
        column = QVBoxLayout(self)
        column.setContentsMargins(2, 2, 2, 2)
        column.setSpacing(0)
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.colour_bar)
        header.addWidget(self.range_label)
        column.addLayout(header)
        grid = QGridLayout()
        grid.setSpacing(0)
        grid.addWidget(self.letters["A"], 0, 1)
        grid.addWidget(self.letters["R"], 1, 0)
        grid.addWidget(self.graphics_view, 1, 1)
        grid.addWidget(self.letters["L"], 1, 2)
        grid.addWidget(self.letters["P"], 2, 1)
        column.addLayout(grid, 1)
        column.addWidget(self.status_text)

    def set_orientation(self, radiological_view: bool, plane: str = "axial") -> None:
        """Display convention and plane; the letters keys name their edge in the axial view."""
        self.radiological_view, self.plane = radiological_view, plane
        self.flip = flips_columns(plane, radiological_view)
        left, right, top, bottom = PLANE_LETTERS[plane]
        if plane != "sagittal" and not radiological_view:
            left, right = right, left
        for key, text in zip("RLAP", (left, right, top, bottom)):
            self.letters[key].setText(text)
        self.set_voxel_sizes(self.volume_voxel_sizes)

    def show_scan(self, section: np.ndarray, levels: tuple[float, float]) -> None:
        self.show_scan_image(displayed(section, self.flip), levels, section.shape)

    def show_scan_image(self, image: np.ndarray, levels: tuple[float, float], shape_xy: tuple[int, int]) -> None:
        """An already displayed section (``displayed``), shared by the panels of one redraw."""
        self.shape_xy = shape_xy
        self.scan_item.setImage(image, autoLevels=False, levels=levels)

    def show_overlay(self, values: np.ndarray | None, lut: np.ndarray, levels: tuple[float, float],
                     opacity: float) -> None:
        if values is None:
            self.overlay_item.clear()
            return
        self.overlay_item.setImage(displayed(values, self.flip), autoLevels=False,
                                   levels=levels, lut=lut)
        self.overlay_item.setOpacity(opacity)

    def show_outline(self, item: pg.ImageItem, mask: np.ndarray | None, colour: tuple[int, int, int],
                     hatched_rows: np.ndarray | None = None) -> None:
        """A mask's outline; ``hatched_rows`` (bool per row) are striped: not computed yet."""
        self.show_image(item, outline_image(mask, colour, self.flip, self.shape_xy, hatched_rows))

    @staticmethod
    def show_image(item: pg.ImageItem, image: np.ndarray | None) -> None:
        """An already displayed RGBA image, or nothing."""
        if image is None:
            item.clear()
        else:
            item.setImage(image, autoLevels=False)

    def image_to_section(self, image_pos: QPointF) -> tuple[float, float]:
        """Continuous section coordinates (voxel centres at whole numbers) of a point in image
        coordinates; undoes the flip. The brush uses them, so a disc is centred where the mouse is."""
        column, row = image_pos.x() - 0.5, image_pos.y() - 0.5
        return (self.shape_xy[0] - 1 - column if self.flip else column), row

    def show_scale(self, lut: np.ndarray | None, low: float, high: float, provisional: bool) -> None:
        """The colour bar and its numeric range; ``lut`` None hides both (the segmentation panel)."""
        self.colour_bar.setVisible(lut is not None)
        self.range_label.setVisible(lut is not None)
        if lut is not None:
            self.colour_bar.show_lut(lut)
            self.range_label.setText(f" {low:.3g} – {high:.3g}{' (provisional)' if provisional else ''}")

    def show_status(self, text: str) -> None:
        self.status_text.show_text(text)

    def set_crosshair(self, xy: tuple[int, int] | None) -> None:
        """Crosshair at section coordinates (column axis, row axis), e.g. RAS (x, y) on an axial panel."""
        visible = xy is not None
        self.cross_v.setVisible(visible)
        self.cross_h.setVisible(visible)
        if visible:
            column = self.shape_xy[0] - 1 - xy[0] if self.flip else xy[0]
            self.cross_v.setPos((column + 0.5) * self.voxel_sizes[0])
            self.cross_h.setPos((xy[1] + 0.5) * self.voxel_sizes[1])

    def ras_xy_at(self, image_pos: QPointF) -> tuple[int, int] | None:
        """Section coordinates under a point in image coordinates (undoes the flip), or None outside:
        RAS (x, y) on an axial panel, (x, z) coronal, (y, z) sagittal."""
        column, row = int(np.floor(image_pos.x())), int(np.floor(image_pos.y()))
        n_x, n_y = self.shape_xy
        if not (0 <= column < n_x and 0 <= row < n_y):
            return None
        return (n_x - 1 - column if self.flip else column), row

    def _on_hover(self, image_pos: QPointF | None) -> None:
        self.hovered.emit(None if image_pos is None else self.ras_xy_at(image_pos))
