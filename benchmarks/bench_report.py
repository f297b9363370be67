"""PDF report speed and size (issue: export, "Speed"): a 10-page report from cached maps.

The demo case is segmented and its maps computed first (Grad-CAM and Grad-CAM++ on every lesion
slice, as a report needs for final colour scales; LIME with few samples on the exported slices:
drawing costs the same whatever the samples). Then only the writing is timed: the summary page and
9 slice pages with all four panels, the reader's outline and figures. Median of 3 runs.

The naive baseline in the same run rasterises each panel at print resolution (300 dpi, smooth
resampling, as saving a figure at 300 dpi does) instead of embedding the scan's voxels upscaled 3x
with nearest neighbour.

Prints a human summary, then one JSON line (last line): s_per_page, mb_per_page, the baseline's,
device, cpu_bf16, torch.
Usage: QT_QPA_PLATFORM=offscreen python benchmarks/bench_report.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage  # noqa: E402

import app.report as report  # noqa: E402
from app.reader import Notes  # noqa: E402
from app.study import Study, grey_window  # noqa: E402
from explain.engine import ExplainParams, ExplanationEngine  # noqa: E402
from xnet_core.assets import DEMO_LESION, asset_path, demo_scan_path, demo_weights_path  # noqa: E402
from xnet_core.checkpoint import load_checkpoint  # noqa: E402
from xnet_core.inference import cpu_has_bf16  # noqa: E402
from xnet_core.reader_mask import load_reader_mask  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402

PAGES = 10
RUNS = 3
PRINT_PANEL_PT = 250  # a panel's width on the page, in points


def prepared_inputs(cache: Path) -> report.ReportInputs:
    checkpoint = load_checkpoint(demo_weights_path())
    volume = load_volume(demo_scan_path())
    engine = ExplanationEngine(checkpoint, device="cpu", cache_dir=cache)
    segmentation = engine.segmenter.segment(volume)
    context = engine.context(volume, segmentation)
    study = Study(volume, context.model_input)
    for z in segmentation.computed_slices:
        study.set_probabilities(z, segmentation.probabilities[:, :, z])
    area = segmentation.slice_area_mm2
    slices = sorted(int(z) for z in np.argsort(area)[::-1][:PAGES - 1])  # the largest lesion sections
    needed = report.maps_needed(study, slices, ["gradcam", "gradcampp", "lime"])
    for result in engine.explain(context, needed["gradcam"], ("gradcam", "gradcampp"), ExplainParams()):
        study.add_explanation(result)
    for result in engine.explain(context, slices, ("lime",), ExplainParams(lime_samples=20)):
        study.add_explanation(result)
    reader = load_reader_mask(asset_path(DEMO_LESION), volume).mask
    return report.ReportInputs(
        study=study, slices=slices, methods=["gradcam", "gradcampp", "lime"], levels=grey_window(volume.data),
        model=report.model_summary(checkpoint), device=str(engine.device),
        precision=report.report_precision(engine), reader_mask=reader, reader_name="demo_lesion_mask.nii.gz",
        notes=Notes("Benchmark study note.", {z: f"note on slice {z}" for z in slices[:3]}))


def print_resolution(rgb: np.ndarray) -> QImage:
    """The baseline's panel: resampled smoothly to the pixels it covers at 300 dpi (~1000 px wide)."""
    image = QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.strides[0], QImage.Format.Format_RGB888).copy()
    if image.width() < 100:  # colour bars keep their size
        return image
    width = int(PRINT_PANEL_PT / 72 * 300)
    return image.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)


def timed(inputs: report.ReportInputs, folder: Path, name: str) -> tuple[float, float]:
    """Median seconds per page and MB per page over RUNS writes."""
    seconds, size = [], 0
    for run in range(RUNS):
        path = folder / f"{name}-{run}.pdf"
        started = time.perf_counter()
        report.write_report(inputs, path)
        seconds.append(time.perf_counter() - started)
        size = path.stat().st_size
    return statistics.median(seconds) / PAGES, size / PAGES / 1e6


def main() -> None:
    application = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # painting text needs one
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        inputs = prepared_inputs(folder / "cache")
        s_page, mb_page = timed(inputs, folder, "ours")
        original_upscale, original_image = report.PANEL_UPSCALE, report._qimage
        report.PANEL_UPSCALE = 1
        report._qimage = print_resolution
        try:
            naive_s, naive_mb = timed(inputs, folder, "naive")
        finally:
            report.PANEL_UPSCALE, report._qimage = original_upscale, original_image
    application.processEvents()
    print(f"{PAGES}-page report of the demo case (summary + {PAGES - 1} slices, four panels each), from cached maps")
    print(f"panels as voxels upscaled {report.PANEL_UPSCALE}x (nearest neighbour, lossless): {s_page:.3f} s/page, "
          f"{mb_page:.3f} MB/page (median of {RUNS})")
    print(f"naive: panels rasterised at 300 dpi (smooth): {naive_s:.3f} s/page, {naive_mb:.3f} MB/page "
          f"-> {naive_s / s_page:.1f}x slower, {naive_mb / mb_page:.1f}x larger")
    print(json.dumps({"s_per_page": round(s_page, 4), "mb_per_page": round(mb_page, 4),
                      "baseline_s_per_page": round(naive_s, 4), "baseline_mb_per_page": round(naive_mb, 4),
                      "pages": PAGES, "device": "cpu (painting)", "cpu_bf16": cpu_has_bf16(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
