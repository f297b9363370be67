"""``xnet-viewer``: the desktop program. For now the minimal viewer of the foundation issue:
one scan, one axial slice at a time, a voxel readout under the mouse and the disclaimer banner.

Display transforms (radiological flip, voxel aspect, grey window) live here and nowhere else;
the ``Volume`` stays in RAS ``[x, y, z]`` and slice numbers are its 0-based axial index ``z``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QKeyEvent, QTransform
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from xnet_core import DISCLAIMER, __version__
from xnet_core.assets import demo_scan_path
from xnet_core.errors import XNetError
from xnet_core.volume import Volume, load_volume

EXIT_BAD_INPUT = 2
PAGE_STEP = 10  # slices per PageUp / PageDown
WHEEL_NOTCH = 120  # angle delta of one mouse-wheel notch (1/8 degree units)
PERCENTILE_SAMPLE = 2_000_000  # voxels sampled for the grey window; plenty for a 1st/99th percentile
LETTER_STYLE = "color: #ffd54f; font-weight: bold; font-size: 16px; padding: 2px;"
BANNER_STYLE = "background: #ffcc00; color: black; font-weight: bold; font-size: 14px; padding: 6px;"
WARNING_STYLE = "background: #ffe0b2; color: black; padding: 4px;"


def grey_window(data: np.ndarray) -> tuple[float, float]:
    """1st–99.5th percentile of the non-background voxels: one grey window for every slice.

    Background (the minimum, e.g. the zeros around a skull-stripped brain) is left out, else it
    pulls the window down and white matter saturates.
    """
    step = max(1, data.size // PERCENTILE_SAMPLE)
    sample = data.ravel()[::step]
    foreground = sample[sample > sample.min()]
    sample = foreground if foreground.size > 0.05 * sample.size else sample
    low, high = (float(v) for v in np.percentile(sample, [1, 99.5]))
    if high <= low:  # mostly-constant scans (e.g. zero padding): fall back to the full range
        low, high = float(data.min()), float(data.max())
    return low, high


def radiological(axial: np.ndarray) -> np.ndarray:
    """An axial ``[x, y]`` RAS slice as shown: x reversed, so the patient's right is on the screen's left.

    Image column ``c`` shows RAS ``x = n_x - 1 - c``; image row ``r`` (drawn upwards) shows ``y = r``,
    so anterior is at the top.
    """
    return np.ascontiguousarray(axial[::-1, :])


class SliceViewBox(pg.ViewBox):
    """A ViewBox whose mouse wheel steps through slices; Ctrl + wheel still zooms."""

    sigWheelSteps = Signal(int)

    def __init__(self) -> None:
        # No context menu: its export would write images without the disclaimer (DESIGN.md).
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
            self.sigWheelSteps.emit(steps)
        ev.accept()


class HoverImageItem(pg.ImageItem):
    """An ImageItem that reports the image position under the mouse, or None when it leaves."""

    sigHover = Signal(object)

    def hoverEvent(self, ev) -> None:  # noqa: N802 (pyqtgraph's name)
        self.sigHover.emit(None if ev.isExit() else QPointF(ev.pos()))


class ScanWindow(QMainWindow):
    """One scan, one axial slice at a time, in radiological convention with R/L/A/P letters."""

    def __init__(self, volume: Volume, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.volume = volume
        self.levels = grey_window(volume.data)
        self._z = -1
        self._hover_xy: tuple[int, int] | None = None
        self.setWindowTitle(f"{volume.name} — X-Net Viewer {__version__}")
        self.image_item = self._make_image_item()
        self.view_box = SliceViewBox()
        self.view_box.addItem(self.image_item)
        self.graphics_view = pg.GraphicsView(background="k")
        self.graphics_view.setCentralItem(self.view_box)
        self.graphics_view.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.slider = self._make_slider()
        self.slice_label = QLabel()
        self.banner = self._make_banner(DISCLAIMER, BANNER_STYLE)
        self.warnings_label = self._make_banner("\n".join(volume.warnings), WARNING_STYLE)
        self.warnings_label.setVisible(bool(volume.warnings))
        self.orientation_labels = {letter: self._letter(letter) for letter in "RLAP"}
        self.setCentralWidget(self._layout())
        self._make_status_bar()
        self.view_box.sigWheelSteps.connect(self.step_slice)
        self.image_item.sigHover.connect(self._on_hover)
        self.set_slice(volume.shape[2] // 2)
        self.view_box.autoRange(padding=0.02)
        self.graphics_view.setFocus()
        self._fit_to_screen()

    # ----- construction -------------------------------------------------------------------

    def _make_image_item(self) -> HoverImageItem:
        item = HoverImageItem(axisOrder="col-major")
        size_x, size_y, _ = self.volume.voxel_sizes
        item.setTransform(QTransform.fromScale(size_x, size_y))  # mm on screen: true aspect
        return item

    def _make_banner(self, text: str, style: str) -> QLabel:
        label = QLabel(text)
        label.setStyleSheet(style)
        label.setWordWrap(True)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        return label

    def _make_slider(self) -> QSlider:
        slider = QSlider(Qt.Orientation.Vertical)  # top = superior, like the Up key
        slider.setRange(0, self.volume.shape[2] - 1)
        slider.setSingleStep(1)
        slider.setPageStep(PAGE_STEP)
        slider.setToolTip("Axial slice z (also: mouse wheel, Up/Down, PageUp/PageDown)")
        slider.valueChanged.connect(self.set_slice)
        return slider

    def _letter(self, letter: str) -> QLabel:
        label = QLabel(letter)
        label.setStyleSheet(LETTER_STYLE)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        return label

    def _image_panel(self) -> QFrame:
        panel = QFrame()
        panel.setStyleSheet("QFrame { background: black; }")
        grid = QGridLayout(panel)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(0)
        grid.addWidget(self.orientation_labels["A"], 0, 1)
        grid.addWidget(self.orientation_labels["R"], 1, 0)  # radiological: patient's right on the left
        grid.addWidget(self.graphics_view, 1, 1)
        grid.addWidget(self.orientation_labels["L"], 1, 2)
        grid.addWidget(self.orientation_labels["P"], 2, 1)
        return panel

    def _layout(self) -> QWidget:
        slider_column = QVBoxLayout()
        slider_column.addWidget(QLabel("S"), 0, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(self.slider, 1, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(QLabel("I"), 0, Qt.AlignmentFlag.AlignHCenter)
        slider_column.addWidget(self.slice_label, 0, Qt.AlignmentFlag.AlignHCenter)
        row = QHBoxLayout()
        row.addWidget(self._image_panel(), 1)
        row.addLayout(slider_column)
        central = QWidget()
        column = QVBoxLayout(central)
        column.addWidget(self.banner)
        column.addWidget(self.warnings_label)
        column.addLayout(row, 1)
        return central

    def _make_status_bar(self) -> None:
        self.readout_label = QLabel()
        self.statusBar().addWidget(self.readout_label, 1)
        shape = "×".join(str(n) for n in self.volume.shape)
        sizes = "×".join(f"{s:.2f}" for s in self.volume.voxel_sizes)
        self.statusBar().addPermanentWidget(QLabel(f"{shape} voxels, {sizes} mm"))

    def _fit_to_screen(self) -> None:
        available = self.screen().availableGeometry()
        self.resize(min(860, int(available.width() * 0.9)), min(900, int(available.height() * 0.9)))

    # ----- slices ---------------------------------------------------------------------------

    @property
    def current_slice(self) -> int:
        """The shown axial slice: 0-based ``z`` of the RAS volume (DESIGN.md's slice number)."""
        return self._z

    def set_slice(self, z: int) -> None:
        """Show axial slice ``z``, clamped to the volume."""
        z = int(np.clip(z, 0, self.volume.shape[2] - 1))
        if z == self._z:
            return
        self._z = z
        self.image_item.setImage(radiological(self.volume.data[:, :, z]), autoLevels=False, levels=self.levels)
        self.slider.setValue(z)
        self.slice_label.setText(f"z {z}\nof 0–{self.volume.shape[2] - 1}")
        self._show_readout()

    def step_slice(self, steps: int) -> None:
        self.set_slice(self._z + steps)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        steps = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1,
                 Qt.Key.Key_PageUp: PAGE_STEP, Qt.Key.Key_PageDown: -PAGE_STEP}.get(event.key())
        if steps is None:
            super().keyPressEvent(event)
            return
        self.step_slice(steps)
        event.accept()

    # ----- readout --------------------------------------------------------------------------

    def ras_xy_at(self, image_pos: QPointF) -> tuple[int, int] | None:
        """RAS ``(x, y)`` of the voxel under a point in image coordinates (undoes the flip), or None."""
        column, row = int(np.floor(image_pos.x())), int(np.floor(image_pos.y()))
        n_x, n_y, _ = self.volume.shape
        if not (0 <= column < n_x and 0 <= row < n_y):
            return None
        return n_x - 1 - column, row

    def readout(self, ras_index: tuple[int, int, int]) -> str:
        """Slice z, the file's own (i, j, k), world mm and the intensity of one RAS voxel."""
        x, y, z = (int(v) for v in ras_index)
        i, j, k = self.volume.source_index((x, y, z))
        mm = self.volume.affine @ np.array([x, y, z, 1.0])
        value = float(self.volume.data[x, y, z])
        return (
            f"slice z {z}    voxel (i, j, k) ({i}, {j}, {k})    "
            f"RAS ({mm[0]:.1f}, {mm[1]:.1f}, {mm[2]:.1f}) mm    value {value:.6g}"
        )

    def _on_hover(self, image_pos: QPointF | None) -> None:
        self._hover_xy = None if image_pos is None else self.ras_xy_at(image_pos)
        self._show_readout()

    def _show_readout(self) -> None:
        if self._hover_xy is None:
            self.readout_label.setText(f"slice z {self._z}    (point at the image for voxel values)")
        else:
            self.readout_label.setText(self.readout((*self._hover_xy, self._z)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnet-viewer", description=f"View a brain MRI scan slice by slice. {DISCLAIMER}"
    )
    parser.add_argument("scan", nargs="?", metavar="SCAN",
                        help="NIfTI scan (.nii or .nii.gz); default: the bundled demo scan")
    parser.add_argument("--weights", metavar="CKPT",
                        help="X-Net checkpoint (accepted, not used yet: segmentation in the viewer comes later)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"),
                        help="compute device (accepted, not used yet)")
    parser.add_argument("--version", action="version", version=f"xnet-viewer {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="xnet-viewer: %(levelname)s: %(message)s")
    try:
        volume = load_volume(args.scan or demo_scan_path())
    except XNetError as exc:
        print(f"xnet-viewer: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0]])
        app.setApplicationName("xnet-viewer")
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl+C in the terminal closes the viewer
    window = ScanWindow(volume)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
