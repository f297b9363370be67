"""Brush-stroke repaint latency (issue: the reader's read, "Speed").

Offscreen Qt, 1600x1000 window, the demo case on its largest ground-truth lesion slice, all four
panels with every overlay on (model mask, Grad-CAM, Grad-CAM++ and LIME maps of the slice computed
beforehand, reader outline, paint mode's translucent fill). Real mouse events: a left-button press,
then >= 200 moves along a path over the brain (each move is one stroke segment), then a release;
each segment is timed from sending the move event until all four views have repainted (forced).

The naive baseline in the same run redraws every layer of every panel after each segment (the
window's full refresh) instead of only the reader's layer.

Prints a human summary, then one JSON line (last line): stroke_p50_ms, stroke_p95_ms, the baseline's
p50/p95 and their ratio, device, cpu_bf16, torch.
Usage: QT_QPA_PLATFORM=offscreen python benchmarks/bench_paint.py [--segments 240]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QEvent, QPointF, QStandardPaths, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.window import ViewerWindow  # noqa: E402
from explain.engine import ExplainParams, ExplanationEngine  # noqa: E402
from xnet_core.assets import DEMO_LESION, asset_path, demo_scan_path, demo_weights_path  # noqa: E402
from xnet_core.checkpoint import load_checkpoint  # noqa: E402
from xnet_core.inference import cpu_has_bf16  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402

MOVE_INTERVAL_S = 0.011  # moves arrive at most every 11 ms: each one is a stroke segment


def prepared_window(app: QApplication, cache: Path) -> tuple[ViewerWindow, int]:
    """The window with the lesion slice segmented and explained (no background worker running)."""
    checkpoint = load_checkpoint(demo_weights_path())
    volume = load_volume(demo_scan_path())
    z = int(np.argmax(load_volume(asset_path(DEMO_LESION)).data.sum(axis=(0, 1))))
    engine = ExplanationEngine(checkpoint, device="cpu", cache_dir=cache)
    window = ViewerWindow(volume, checkpoint, engine=engine, start_model=False)
    window.resize(1600, 1000)
    window.show()
    segmentation = engine.segmenter.segment(volume, slices=[z])
    window.study.set_probabilities(z, segmentation.probabilities[:, :, z])
    for result in engine.explain(engine.context(volume, segmentation), [z], params=ExplainParams(lime_samples=20)):
        window.study.add_explanation(result)
    window.set_slice(z)
    window.set_paint_mode(True)
    window.reader.set_brush(4)
    app.processEvents()
    return window, z


def mouse(kind: QEvent.Type, view, point, buttons) -> QMouseEvent:
    local = QPointF(point)
    return QMouseEvent(kind, local, view.mapToGlobal(local), Qt.MouseButton.LeftButton, buttons,
                       Qt.KeyboardModifier.NoModifier)


def stroke_times(app: QApplication, window: ViewerWindow, segments: int) -> list[float]:
    """Press, ``segments`` moves on a circle over the brain, release; ms per move until repainted."""
    panel = window.panels["segmentation"]
    view = panel.graphics_view
    viewport = view.viewport()
    views = [p.graphics_view.viewport() for p in window.panels.values()]
    centre = view.mapFromScene(panel.scan_item.mapToScene(QPointF(98, 130)))
    radius = 0.25 * min(viewport.width(), viewport.height())
    points = [centre + QPointF(radius * np.cos(a), radius * np.sin(a)).toPoint()
              for a in np.linspace(0, 4 * np.pi, segments + 1)]
    left = Qt.MouseButton.LeftButton
    QApplication.sendEvent(viewport, mouse(QEvent.Type.MouseButtonPress, viewport, points[0], left))
    times, previous = [], 0.0
    for point in points[1:]:
        while time.perf_counter() - previous < MOVE_INTERVAL_S:
            time.sleep(0.0005)  # pyqtgraph drops moves faster than its mouse rate limit (100 Hz)
        started = previous = time.perf_counter()
        QApplication.sendEvent(viewport, mouse(QEvent.Type.MouseMove, viewport, point, left))
        for v in views:
            v.repaint()
        times.append((time.perf_counter() - started) * 1000)
    QApplication.sendEvent(viewport, mouse(QEvent.Type.MouseButtonRelease, viewport, points[-1],
                                           Qt.MouseButton.NoButton))
    app.processEvents()
    return times[2:]  # the first moves only pass pyqtgraph's drag threshold


def counting_strokes(window: ViewerWindow) -> list[int]:
    """Count the stroke segments that reach the reader (every timed move must be one)."""
    calls = [0]
    stroke = window.reader.stroke

    def counted(xy, phase):
        calls[0] += 1
        stroke(xy, phase)

    window.reader.stroke = counted
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=240)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    QStandardPaths.setTestModeEnabled(True)  # recovery copies go to Qt's test folder
    with tempfile.TemporaryDirectory() as cache:
        window, z = prepared_window(app, Path(cache))
        calls = counting_strokes(window)
        ours = stroke_times(app, window, args.segments)
        assert calls[0] >= len(ours), f"only {calls[0]} of {len(ours)} moves reached the brush"
        painted = int(window.reader.read.mask[:, :, z].sum())
        window.reader.undo()
        targeted = window.redraw_reader

        def naive() -> None:  # the baseline: every layer of every panel (the refresh draws the reader too)
            window.redraw_reader = targeted
            try:
                window._refresh()
            finally:
                window.redraw_reader = naive

        window.redraw_reader = naive
        naive = stroke_times(app, window, args.segments)
        window.reader.read.saved_revision = window.reader.read.revision
        window.reader.discard_recovery()
        window.close()
    p50, p95 = float(np.percentile(ours, 50)), float(np.percentile(ours, 95))
    n50, n95 = float(np.percentile(naive, 50)), float(np.percentile(naive, 95))
    print(f"demo case slice z {z}, 1600x1000, four panels with every overlay, brush radius 4 ({painted} voxels painted)")
    print(f"stroke segment -> repainted panels: p50 {p50:.1f} ms, p95 {p95:.1f} ms over {len(ours)} segments")
    print(f"naive baseline (full redraw each segment): p50 {n50:.1f} ms, p95 {n95:.1f} ms -> "
          f"{n95 / p95:.2f}x slower at p95")
    print(json.dumps({"stroke_p50_ms": round(p50, 2), "stroke_p95_ms": round(p95, 2),
                      "baseline_p50_ms": round(n50, 2), "baseline_p95_ms": round(n95, 2),
                      "speedup_p95": round(n95 / p95, 2), "segments": len(ours), "device": "cpu (UI thread)",
                      "cpu_bf16": cpu_has_bf16(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
