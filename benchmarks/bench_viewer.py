"""The viewer's speed (issue: desktop viewer, "Speed"): slice stepping, launch, event-loop stalls.

Offscreen Qt, 1600x1000 window, the demo case, all four panels and every overlay on.

* ``step_p50_ms`` / ``step_p95_ms``: >= 200 slice steps (Up/Down key events through a band of lesion
  slices) with background work idle and every map of the stepped slices computed beforehand (LIME
  with few samples: drawing costs the same whatever the samples), from the key event until every panel
  has repainted (forced repaint of each view).
* ``first_image_s``: from starting the ``xnet-viewer`` process (imports included) until the first
  painted frame with the scan (the app writes the time when ``XNET_VIEWER_FIRST_FRAME`` is set).
* ``multiseq_step_p95_ms``: the same stepping with a second sequence on another grid (the demo T1
  resampled onto an oblique 0.9 x 0.9 x 4 mm grid with inverted contrast, like a FLAIR) as the panels'
  background; it is resampled onto the model input's grid once when added (``add_sequence_s``), so
  every slice, first visit included, costs the same. ``multiseq_switch_p95_ms``: switching the
  background between the two sequences, repainted. ``side_by_side_step_p95_ms``: stepping in the
  side-by-side mode.
* ``max_stall_ms``: the longest gap between 5 ms timer ticks of the UI thread from the scan on screen
  until the whole-volume segmentation ends, model load included: the larger of two runs, one in this
  process (torch already imported) and one of the app in a fresh process (``XNET_VIEWER_STALLS``),
  where the worker thread imports torch and grad-cam while the scan is on screen.

Prints a human summary, then one JSON line (last line) with the keys the issue names.
Usage: QT_QPA_PLATFORM=offscreen python benchmarks/bench_viewer.py [--steps 200] [--launches 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QElapsedTimer, QEvent, Qt, QTimer  # noqa: E402
from PySide6.QtGui import QKeyEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.window import ViewerWindow  # noqa: E402
from explain.engine import ExplainParams, ExplanationEngine  # noqa: E402
from xnet_core.assets import demo_scan_path, demo_weights_path  # noqa: E402
from xnet_core.checkpoint import load_checkpoint  # noqa: E402
from xnet_core.inference import cpu_has_bf16  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402


def wait_until(app: QApplication, condition, timeout_s: float) -> bool:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > deadline:
            return False
        app.processEvents()
        time.sleep(0.002)
    return True


def measure_stalls(app: QApplication, checkpoint, cache_dir: Path) -> tuple[float, float, ViewerWindow]:
    """Open the window (engine built on the worker thread), tick a 5 ms timer until segmentation ends."""
    volume = load_volume(demo_scan_path())
    ticks: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(clock.nsecsElapsed() / 1e6))
    window = ViewerWindow(volume, checkpoint.path)  # as the app: the worker thread loads the weights
    window.resize(1600, 1000)
    window.show()
    app.processEvents()
    started = time.perf_counter()
    timer.start()
    ticks.append(clock.nsecsElapsed() / 1e6)
    wait_until(app, lambda: window.study.segmentation_complete, 900)
    timer.stop()
    seconds = time.perf_counter() - started
    gaps = np.diff(ticks)
    return float(gaps.max()), seconds, window


def measure_steps(app: QApplication, window: ViewerWindow, engine: ExplanationEngine, steps: int) -> list[float]:
    study = window.study
    lesion = np.flatnonzero(study.lesion_area_per_slice_mm2() > 0)
    centre = int(lesion[len(lesion) // 2]) if lesion.size else study.volume.shape[2] // 2
    band = list(range(centre - 5, centre + 6))
    for result in window.model.worker.slices.explain(band, ("gradcam", "gradcampp", "lime"), ExplainParams(lime_samples=20),
                                               study.mask(study.threshold), study.threshold):
        study.add_explanation(result)
    window.set_slice(band[0])
    wait_until(app, lambda: all(study.status("gradcam", z) for z in band), 60)
    return step_times(app, window, band, steps)


def flair_like(volume):
    """The demo T1 on an oblique, thick-slice grid with inverted contrast: a second sequence."""
    import dataclasses

    import nibabel as nib

    from xnet_core.sequences import resample_to_grid
    from xnet_core.training.native_cases import rotation

    affine = rotation((8.0, 0.0, 12.0)) @ np.diag([0.9, 0.9, 4.0, 1.0])
    shape = (220, 260, 45)
    centre = volume.affine @ np.r_[(np.array(volume.shape) - 1) / 2, 1.0]
    affine[:3, 3] = centre[:3] - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    data = resample_to_grid(volume.data, volume.affine, shape, affine, order=1)
    inverted = np.where(data > 0, float(data.max()) - data, 0).astype(np.float32)
    return dataclasses.replace(volume, data=inverted, affine=affine, source_header=nib.Nifti1Header(),
                               source_affine=affine, source_shape=shape, name="demo_FLAIR-like", sequence="FLAIR")


def step_times(app: QApplication, window: ViewerWindow, band: list[int], steps: int) -> list[float]:
    views = [panel.graphics_view.viewport() for panel in window.grid.all_panels() if panel.isVisible()]
    times, direction = [], 1
    window.set_slice(band[0])
    for _ in range(steps):
        if not band[0] <= window.current_slice + direction <= band[-1]:
            direction = -direction
        key = Qt.Key.Key_Up if direction > 0 else Qt.Key.Key_Down
        started = time.perf_counter()
        QApplication.sendEvent(window, QKeyEvent(QEvent.Type.KeyPress, key, Qt.KeyboardModifier.NoModifier))
        for view in views:
            view.repaint()
        times.append((time.perf_counter() - started) * 1000)
    return times


def measure_multiseq(app: QApplication, window: ViewerWindow, steps: int) -> dict[str, float]:
    study = window.study
    lesion = np.flatnonzero(study.lesion_area_per_slice_mm2() > 0)
    centre = int(lesion[len(lesion) // 2]) if lesion.size else study.volume.shape[2] // 2
    band = list(range(centre - 5, centre + 6))
    second = flair_like(window.volume)
    started = time.perf_counter()
    window.add_sequence(second)
    add_s = time.perf_counter() - started
    window.controls.background_box.setCurrentIndex(1)
    stepping = step_times(app, window, band, steps)
    views = [panel.graphics_view.viewport() for panel in window.grid.all_panels() if panel.isVisible()]
    switches = []
    for index in range(60):
        started = time.perf_counter()
        window.controls.background_box.setCurrentIndex(index % 2)
        for view in views:
            view.repaint()
        switches.append((time.perf_counter() - started) * 1000)
    window.actions_by_name["side"].setChecked(True)
    app.processEvents()
    side = step_times(app, window, band, steps)
    window.actions_by_name["side"].setChecked(False)
    return {"multiseq_step_p95_ms": float(np.percentile(stepping, 95)),
            "multiseq_step_p50_ms": float(np.percentile(stepping, 50)),
            "multiseq_switch_p95_ms": float(np.percentile(switches, 95)),
            "side_by_side_step_p95_ms": float(np.percentile(side, 95)), "add_sequence_s": add_s}


def measure_launch(launches: int) -> list[float]:
    results = []
    for _ in range(launches):
        with tempfile.TemporaryDirectory() as folder:
            report = Path(folder) / "first_frame"
            env = {**os.environ, "XNET_VIEWER_FIRST_FRAME": str(report), "QT_QPA_PLATFORM": "offscreen",
                   "XDG_CONFIG_HOME": folder, "XDG_DATA_HOME": folder}
            started = time.time()
            subprocess.run([sys.executable, "-m", "app.main"], env=env, timeout=300, check=True,
                           cwd=Path(__file__).resolve().parent.parent)
            results.append(float(report.read_text()) - started)
    return results


def measure_app_stalls() -> list[float]:
    """The app as users start it (a fresh process: torch and grad-cam imported by the worker thread
    after the scan is on screen): its longest UI stalls until the whole-volume segmentation ends."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "stalls"
        env = {**os.environ, "XNET_VIEWER_STALLS": str(report), "QT_QPA_PLATFORM": "offscreen",
               "XDG_CONFIG_HOME": folder, "XDG_DATA_HOME": folder, "XDG_CACHE_HOME": folder}
        subprocess.run([sys.executable, "-m", "app.main"], env=env, timeout=900, check=True,
                       cwd=Path(__file__).resolve().parent.parent)
        return [float(v) for v in report.read_text().split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--launches", type=int, default=3)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    checkpoint = load_checkpoint(demo_weights_path())
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        max_stall, seg_s, window = measure_stalls(app, checkpoint, Path(cache))
        print(f"whole-volume segmentation in the background: {seg_s:.1f} s; longest UI stall {max_stall:.1f} ms")
        times = measure_steps(app, window, window.model.engine, args.steps)
        multiseq = measure_multiseq(app, window, args.steps)
        window.close()
    p50, p95 = float(np.percentile(times, 50)), float(np.percentile(times, 95))
    print(f"slice step, 4 panels, all overlays: p50 {p50:.1f} ms, p95 {p95:.1f} ms over {len(times)} steps")
    print(f"second sequence on another grid ({multiseq['add_sequence_s']:.2f} s to add, resampled once): step "
          f"p50 {multiseq['multiseq_step_p50_ms']:.1f} ms, p95 {multiseq['multiseq_step_p95_ms']:.1f} ms; background "
          f"switch p95 {multiseq['multiseq_switch_p95_ms']:.1f} ms; side by side step p95 "
          f"{multiseq['side_by_side_step_p95_ms']:.1f} ms")
    app_stalls = measure_app_stalls()
    print(f"the app in a fresh process (model and torch load on its worker thread): longest UI stalls "
          f"{', '.join(f'{g:.0f}' for g in app_stalls[:5])} ms until the segmentation ends")
    max_stall = max(max_stall, app_stalls[0])
    launches = measure_launch(args.launches)
    first = statistics.median(launches)
    print(f"first image after process start: median {first:.2f} s over {len(launches)} launches "
          f"({', '.join(f'{t:.2f}' for t in launches)})")
    print(json.dumps({"step_p50_ms": round(p50, 2), "step_p95_ms": round(p95, 2), "first_image_s": round(first, 3),
                      "max_stall_ms": round(max_stall, 1),
                      **{key: round(value, 2) for key, value in multiseq.items() if key != "multiseq_step_p50_ms"},
                      "device": str(window.model.engine.device),
                      "cpu_bf16": cpu_has_bf16(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
