"""A long viewer session (issue 29, item 3): many scans in turn in one window, memory and threads after each.

One offscreen ``ViewerWindow`` opens ``--scans`` scans in turn, cycling through the demo case (template
grid), small native NIfTI scans and DICOM series (fields of view under 100 mm, so that they are shown
as they are rather than registered, which would take minutes per scan here). For each: the whole-volume
segmentation, 40 slice steps, Grad-CAM maps of three slices, a reader's stroke saved as a mask with its
notes, and a one-slice PDF report. After each scan it prints the process's RSS and its thread count.
The model is a seeded X-Net at small widths unless ``--weights`` names one (``demo``: the shipped
weights): the soak measures the viewer, not the model's speed.

Targets: RSS growth from scan 3 to the last <= 100 MB, the thread count flat.
Not yet run to completion: its one run here (20 scans, a 2-core machine shared at load 12-19) was
stopped by its 20-minute limit during scan 1, while the viewer explained every slice the small random
model called a lesion.
Prints one line per scan, then one JSON line (last line): rss_growth_mb, threads_start, threads_end,
scans, rss_mb (per scan), seconds, device, torch, cpu_bf16.
Usage: QT_QPA_PLATFORM=offscreen python benchmarks/bench_soak.py [--scans 20] [--weights demo|PATH]
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
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from benchmarks.bench_viewer import wait_until  # noqa: E402
from explain.engine import ExplainParams  # noqa: E402
from tests.conftest import write_nifti  # noqa: E402
from tests.dicom_series import write_series  # noqa: E402
from xnet_core.assets import demo_scan_path, demo_weights_path  # noqa: E402
from xnet_core.checkpoint import default_card, save_checkpoint  # noqa: E402
from xnet_core.inference import cpu_has_bf16  # noqa: E402
from xnet_core.model import XNet  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def make_scans(folder: Path, n: int) -> list[str]:
    """Demo, native NIfTI and DICOM in turn; the native ones differ in shape and orientation."""
    paths = []
    rng = np.random.default_rng(0)
    for k in range(n):
        kind = k % 3
        if kind == 0:
            paths.append(str(demo_scan_path()))
            continue
        shape = (64 + 4 * k, 72, 18 + k % 4)
        grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
        data = (900 * np.exp(-2 * sum(g**2 for g in grids)) + rng.normal(0, 20, shape)).clip(0).astype(np.float32)
        if kind == 1:
            affine = np.diag([-1.2, 1.1, 2.5, 1.0])  # LAS, 1.2 x 1.1 x 2.5 mm
            paths.append(str(write_nifti(folder / f"native{k}_T1w.nii.gz", data, affine)))
        else:
            write_series(folder / f"dicom{k}", data, spacing=(1.1, 1.1, 3.0), series_number=k, seed=k)
            paths.append(str(folder / f"dicom{k}"))
    return paths


def tiny_weights(folder: Path) -> Path:
    torch.manual_seed(0)
    model = XNet(widths=(8, 16, 32, 64, 128))
    path = folder / "soak-xnet.pt"
    save_checkpoint(model, path, default_card(model, training_data="none (soak benchmark)"))
    return path


def one_scan(app: QApplication, window, path: str, out: Path, k: int) -> None:
    """Open, segment, scroll, explain three slices, paint and save a read, export a one-slice report."""
    assert window.open_scan(path), f"could not open {path}"
    assert wait_until(app, lambda: window.study.segmentation_complete, 900), "segmentation did not end"
    study = window.study
    n_z = study.volume.shape[2]
    for step in range(40):
        window.set_slice((step * 7) % n_z)
        app.processEvents()
    middle = n_z // 2
    band = [max(middle - 1, 0), middle, min(middle + 1, n_z - 1)]
    for result in window.model.worker.slices.explain(band, ("gradcam",), ExplainParams(),
                                                     study.mask(study.threshold), study.threshold):
        study.add_explanation(result)
    window.set_slice(middle)
    window.set_paint_mode(True)
    window.reader.stroke((3.0, 3.0), "start")
    window.reader.stroke((9.0, 5.0), "move")
    window.reader.stroke((9.0, 8.0), "finish")
    window.set_paint_mode(False)
    assert window.reader.save(str(out / f"read{k}.nii.gz")), "the reader's mask was not saved"
    export = window.export_report(str(out / f"report{k}.pdf"), choice="current", lime=False)
    assert wait_until(app, lambda: export.finished, 600) and export.result, "the report was not written"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--weights", help="'demo' for the shipped weights, or a checkpoint (default: a small X-Net)")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    from app.window import ViewerWindow  # after the QApplication, as the app does

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            os.environ[name] = str(folder / name)
        weights = demo_weights_path() if args.weights == "demo" else Path(args.weights or tiny_weights(folder))
        scans = make_scans(folder, args.scans)
        window = ViewerWindow(load_volume(scans[0]), weights, device="cpu")
        window.resize(1600, 1000)
        window.show()
        started = time.perf_counter()
        rss, threads = [], []
        for k, path in enumerate(scans):
            one_scan(app, window, path, folder, k)
            app.processEvents()
            rss.append(_status("VmRSS") / 1024)
            threads.append(_status("Threads"))
            print(f"scan {k + 1:2d} {Path(path).name:28s} RSS {rss[-1]:7.1f} MB  threads {threads[-1]}", flush=True)
        seconds = time.perf_counter() - started
        window.close()
    growth = rss[-1] - rss[min(2, len(rss) - 1)]
    print(json.dumps({"rss_growth_mb": round(growth, 1), "threads_start": threads[0], "threads_end": threads[-1],
                      "scans": len(rss), "rss_mb": [round(r, 1) for r in rss], "seconds": round(seconds, 1),
                      "device": "cpu", "torch": torch.__version__, "cpu_bf16": cpu_has_bf16()}))


if __name__ == "__main__":
    main()
