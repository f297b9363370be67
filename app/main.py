"""``xnet-viewer``: the desktop program. It opens a scan (default: the bundled demo case) in the
four-panel viewer of ``app.window``: the model's segmentation next to Grad-CAM, Grad-CAM++ and LIME.

A scan that cannot be read ends with exit status 2 and one line; weights that cannot be loaded
leave the scan on screen with the problem shown in the window (the viewer stays usable).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QStandardPaths, QTimer
from PySide6.QtWidgets import QApplication

from app.memory import steady_heap
from app.window import ViewerWindow
from xnet_core import DISCLAIMER, __version__
from xnet_core.assets import demo_scan_path, demo_weights_path
from xnet_core.errors import XNetError
from xnet_core.volume import load_volume

EXIT_BAD_INPUT = 2
FIRST_FRAME_ENV = "XNET_VIEWER_FIRST_FRAME"  # set by benchmarks/bench_viewer.py only
STALLS_ENV = "XNET_VIEWER_STALLS"  # idem: longest UI stalls until the segmentation ends


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnet-viewer", description=f"View a brain MRI scan slice by slice. {DISCLAIMER}"
    )
    parser.add_argument("scans", nargs="*", metavar="SCAN",
                        help="scans of one subject (NIfTI files or DICOM folders, any grids): the T1 (or the "
                             "first) feeds the model, the others can be the background; default: the demo scan")
    parser.add_argument("--series", metavar="UID|NUMBER",
                        help="the DICOM series to open when a folder holds several")
    parser.add_argument("--weights", metavar="CKPT", help="X-Net checkpoint (default: the bundled demo model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"), help="compute device")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false",
                        help="segment each slice once instead of averaging it with its left-right mirror image")
    parser.add_argument("--version", action="version", version=f"xnet-viewer {__version__}")
    return parser


def _log_to_file() -> None:
    """The app also logs to ``xnet-viewer.log`` in its data directory (QStandardPaths.AppDataLocation)."""
    folder = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(folder / "xnet-viewer.log")
    except OSError:
        return  # a read-only profile costs the log file, not the viewer
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def _start_loading_torch() -> None:
    """Begin importing torch on a background thread while the window is built.

    Its C initialisation holds the GIL for about 350 ms (measured) and nothing can split it; started
    here it falls before the first frame instead of freezing the scan on screen. The model worker's
    own import then finds torch loaded (or waits for it on the import lock).
    """
    threading.Thread(target=importlib.import_module, args=("torch",), name="torch-preload", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="xnet-viewer: %(levelname)s: %(message)s")
    try:
        volumes = [load_volume(path, series=args.series) for path in args.scans or [demo_scan_path()]]
    except XNetError as exc:
        print(f"xnet-viewer: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    steady_heap()  # before the first volume-sized arrays are freed (app/memory.py)
    _start_loading_torch()  # the input is readable: the model will be wanted
    volume = next((v for v in volumes if v.sequence == "T1w"), volumes[0])
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0]])
        app.setApplicationName("xnet-viewer")
        app.setOrganizationName("xnet-viewer")
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl+C in the terminal closes the viewer
    _log_to_file()
    try:
        weights = Path(args.weights) if args.weights else demo_weights_path()
    except XNetError as exc:  # no demo weights installed: the scan still opens
        weights, problem = None, f"Model not loaded: {exc}"
    else:
        problem = None
    # The weights load on the model's worker thread (torch included): the scan shows first.
    window = ViewerWindow(volume, weights, device=args.device, mirror=args.mirror)
    for other in volumes:
        if other is not volume:
            window.add_sequence(other)
    if problem:
        window.controls.add_warning(problem)
    window.show()
    if os.environ.get(FIRST_FRAME_ENV):
        _report_first_frame(app, window, Path(os.environ[FIRST_FRAME_ENV]))
    if os.environ.get(STALLS_ENV) and window.model.worker is not None:
        window._stall_probe = _StallProbe(app, window, Path(os.environ[STALLS_ENV]))
    return app.exec()


class _FirstPaint(QObject):
    """benchmarks/bench_viewer.py: write the wall-clock time of the first painted scan, then quit."""

    def __init__(self, app: QApplication, path: Path) -> None:
        super().__init__()
        self.app, self.path, self.done = app, path, False

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Paint and not self.done:
            self.done = True
            QTimer.singleShot(0, self._report)  # after this paint has been drawn
        return False

    def _report(self) -> None:
        self.path.write_text(f"{time.time():.6f}\n")
        self.app.quit()


class _StallProbe(QObject):
    """benchmarks/bench_viewer.py: tick every 5 ms from the scan on screen (the model, torch included,
    loads on the worker thread meanwhile) until the whole-volume segmentation ends; write the longest
    gaps between ticks in ms, then quit."""

    def __init__(self, app: QApplication, window: ViewerWindow, path: Path) -> None:
        super().__init__()
        self.app, self.path, self.ticks = app, path, [time.perf_counter()]
        self.timer = QTimer(self)
        self.timer.setInterval(5)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()
        window.model.worker.segmentationFinished.connect(self._report)

    def _report(self) -> None:
        self.timer.stop()
        gaps = sorted((b - a for a, b in zip(self.ticks, self.ticks[1:])), reverse=True)
        self.path.write_text(" ".join(f"{1000 * g:.1f}" for g in gaps[:10]) + "\n")
        self.app.quit()


def _report_first_frame(app: QApplication, window: ViewerWindow, path: Path) -> None:
    watcher = _FirstPaint(app, path)
    window.panels["segmentation"].graphics_view.viewport().installEventFilter(watcher)
    window._first_paint_watcher = watcher  # keep it alive


if __name__ == "__main__":
    sys.exit(main())
