"""A long viewer session (issue 29, item 3): many scans in turn in one window, memory and threads after each.

One offscreen ``ViewerWindow`` opens ``--scans`` scans in turn, cycling through the demo case (template
grid), a whole-head native scan that the viewer registers to the template (unless
``--no-registration``), a native NIfTI scan and a DICOM series. All are made from the demo scan in a
temporary folder: the whole head resampled to 1.5 mm and shifted, and cropped slabs (fields of view
under 100 mm, shown as they are) stored left-right flipped with 2 mm slices or as a 3 mm DICOM series.
Each copy differs from the others, so no cache answers for a scan seen before. The registered scan
comes second so that what registration loads once (the brain-extraction model, the template) is in
memory before scan 3, from which the growth is measured.

For each scan: the whole-volume segmentation, 40 slice steps, Grad-CAM / Grad-CAM++ / HiResCAM of a
few slices (those with predicted lesion, then the middle one, at most ``--maps``) through the worker
as the viewer asks for them, LIME of one slice on one scan only (``--skip-lime`` leaves it out), a
reader's stroke saved as a mask, and a one-slice PDF report. After each scan it prints the process's
RSS (after a garbage collection), its thread count and the model-worker threads of earlier scans still
running.

The model is a seeded X-Net at small widths (``tiny_weights``): the soak measures the viewer, not the
model. Such a model calls most of a scan a lesion at the default threshold, and a report computes the
CAMs of every lesion slice (their shared colour scale): the first version of this benchmark spent 20
minutes on scan 1 that way. So after each segmentation the benchmark raises the toolbar's threshold, as
a reader would, to the lowest value at which at most ``--lesion-slices`` slices hold predicted lesion.

Targets: RSS growth from scan 3 to the last <= 100 MB, the thread count flat (``threads_end`` equal to
``threads_start``, counted after scan 1, when every pool has started), no retired worker still running.
Prints one line per scan, then one JSON line (last line): rss_growth_mb, threads_start, threads_end,
scans, retired_workers_running, rss_mb (per scan), threads (per scan), lesion_slices (per scan),
seconds, device, torch, cpu_bf16.
Usage: QT_QPA_PLATFORM=offscreen python benchmarks/bench_soak.py [--scans 20] [--quick] [--skip-lime]
       [--no-registration] [--maps 3] [--lesion-slices 3] [--glibc-default-heap]
The heap is set up as the viewer's (``app.memory.steady_heap``); ``--glibc-default-heap`` measures
without it.
``--quick``: 5 scans, 10 slice steps, no LIME, no registration (under a minute on a 2-core CPU; the
default 20 scans take about 3 minutes).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QCoreApplication, QEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.memory import steady_heap  # noqa: E402
from benchmarks.bench_viewer import wait_until  # noqa: E402
from tests.conftest import write_nifti  # noqa: E402
from tests.dicom_series import write_series  # noqa: E402
from xnet_core.assets import demo_scan_path  # noqa: E402
from xnet_core.checkpoint import default_card, save_checkpoint  # noqa: E402
from xnet_core.inference import cpu_has_bf16  # noqa: E402
from xnet_core.model import XNet  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402

KINDS = ("demo", "registered", "native", "dicom")  # every kind but DICOM within the warm-up (scans 1-2)
WORKER_THREAD = "xnet-model"  # app.jobs.ModelWorker's thread


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


# -- the scans -------------------------------------------------------------------------------------
def _slab(data: np.ndarray, k: int, step: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A 140 x 160 x 72 mm crop, every ``step``-th slice, placed differently for each ``k``."""
    x0, y0, z0 = 25 + 3 * (k % 5), 35 + 2 * (k % 7), 30 + 4 * (k % 6)
    return data[x0:x0 + 140, y0:y0 + 160, z0:z0 + 72:step], (x0, y0, z0)


def _affine_of_crop(affine: np.ndarray, start: tuple[int, int, int], steps: tuple[float, float, float]) -> np.ndarray:
    out = affine @ np.array([[1, 0, 0, start[0]], [0, 1, 0, start[1]], [0, 0, 1, start[2]], [0, 0, 0, 1]], float)
    return out @ np.diag([*steps, 1.0])


def make_scans(folder: Path, n: int, kinds: tuple[str, ...]) -> list[str]:
    """``n`` paths, cycling through ``kinds``; every one but the demo is a distinct copy of it."""
    demo = load_volume(demo_scan_path())
    data = (demo.data / max(float(demo.data.max()), 1e-6) * 1000).astype(np.float32)  # DICOM holds integers
    paths = []
    for k in range(n):
        kind = kinds[k % len(kinds)]
        if kind == "demo":
            paths.append(str(demo_scan_path()))
        elif kind == "native":  # stored left-right flipped (LAS), 2 mm slices
            slab, start = _slab(data, k, 2)
            affine = _affine_of_crop(demo.affine, start, (1.0, 1.0, 2.0))
            affine[:3, 3] += affine[:3, 0] * (slab.shape[0] - 1)
            affine[:3, 0] *= -1
            paths.append(str(write_nifti(folder / f"native{k}_T1w.nii.gz", slab[::-1].copy(), affine)))
        elif kind == "dicom":  # 3 mm slices of a slab, one file per slice
            slab = _slab(data, k, 3)[0]
            write_series(folder / f"dicom{k}", slab, spacing=(1.0, 1.0, 3.0), series_number=k + 1, seed=k)
            paths.append(str(folder / f"dicom{k}"))
        else:  # the whole head at 1.5 mm, shifted: registered to the template by the viewer
            from scipy.ndimage import zoom

            head = zoom(data, 1 / 1.5, order=1).astype(np.float32)
            affine = demo.affine @ np.diag([1.5, 1.5, 1.5, 1.0])
            affine[:3, 3] += (2.0 + k % 3, -3.0 + k % 4, 1.5 * (k % 5))
            paths.append(str(write_nifti(folder / f"head{k}_T1w.nii.gz", head, affine)))
    return paths


# -- the model and the threshold ------------------------------------------------------------------
def tiny_weights(folder: Path) -> Path:
    torch.manual_seed(0)
    model = XNet(widths=(8, 16, 32, 64, 128))
    path = folder / "soak-xnet.pt"
    save_checkpoint(model, path, default_card(model, training_data="none (soak benchmark)"))
    return path


def threshold_for(study, most: int) -> float:
    """The lowest threshold the toolbar offers (0.05 to 0.95 in steps of 0.01) at which between 1 and
    ``most`` slices have predicted lesion; else the highest at which at least one has."""
    peaks = study.probabilities.max(axis=(0, 1))
    candidates = np.round(np.arange(0.05, 0.951, 0.01), 2)
    counts = np.array([(peaks >= t).sum() for t in candidates])
    fitting = candidates[(counts >= 1) & (counts <= most)]
    if fitting.size:
        return float(fitting[0])
    some = candidates[counts >= 1]
    return float(some[-1]) if some.size else 0.5


# -- one scan -------------------------------------------------------------------------------------
def _maps_done(study, zs: list[int]) -> bool:
    return all(study.status("gradcam", z) is not None for z in zs)


def one_scan(app: QApplication, window, path: str, out: Path, k: int, steps: int, maps: int, lesion_slices: int,
             lime: bool) -> None:
    """Open, segment, scroll, compute maps of a few slices (LIME of one when ``lime``), paint and save a
    read, export a one-slice report."""
    assert window.open_scan(path), f"could not open {path}: {window.last_error}"
    assert wait_until(app, lambda: window.study.segmentation_complete, 900), "segmentation did not end"
    study = window.study
    window.set_threshold(threshold_for(study, lesion_slices))  # as a reader would, for a few findings
    assert wait_until(app, lambda: not window._threshold_timer.isActive(), 60), "the threshold did not settle"
    n_z = study.volume.shape[2]
    for step in range(steps):
        window.set_slice((step * 7) % n_z)
        app.processEvents()
    chosen = list(dict.fromkeys([*study.lesion_slices, n_z // 2]))[:maps]
    window.model.worker.request_maps(chosen, lime=False)
    assert wait_until(app, lambda: _maps_done(study, chosen), 600), f"maps of slices {chosen} did not come"
    window.set_slice(chosen[0])
    if lime:
        window.request_lime()
        assert wait_until(app, lambda: study.status("lime", chosen[0]) is not None, 900), "LIME did not end"
    window.set_paint_mode(True)
    window.reader.stroke((30.0, 30.0), "start")
    window.reader.stroke((40.0, 35.0), "move")
    window.reader.stroke((42.0, 44.0), "finish")
    window.set_paint_mode(False)
    assert window.reader.save(str(out / f"read{k}.nii.gz")), f"the reader's mask was not saved: {window.last_error}"
    export = window.export_report(str(out / f"report{k}.pdf"), choice="current", lime=False)
    assert export is not None, f"no report export: {window.last_error}"
    if not wait_until(app, lambda: export.finished, 600) or not export.result:
        waiting = "" if export.finished else f"; still waiting for the maps (slice, method) {export._missing()}"
        raise AssertionError(f"no report: {window.last_error or window.statusBar().currentMessage()}{waiting}")


def _retired_workers(window) -> int:
    """Model-worker threads alive besides the current study's."""
    current = window.model.worker._thread if window.model.worker is not None else None
    return sum(1 for t in threading.enumerate() if t.name == WORKER_THREAD and t is not current and t.is_alive())


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 scans, 10 steps, no LIME, no registration")
    parser.add_argument("--steps", type=int, default=40, help="slice steps per scan")
    parser.add_argument("--maps", type=int, default=3, help="slices whose CAMs are computed per scan")
    parser.add_argument("--lesion-slices", type=int, default=3, help="most slices of predicted lesion per scan")
    parser.add_argument("--skip-lime", action="store_true", help="no LIME (default: one slice of scan 3)")
    parser.add_argument("--no-registration", action="store_true", help="leave out the registered whole-head scans")
    parser.add_argument("--glibc-default-heap", action="store_true",
                        help="leave glibc's dynamic mmap threshold on (the viewer fixes it: app/memory.py)")
    args = parser.parse_args()
    if args.quick:
        args.scans, args.steps, args.skip_lime, args.no_registration = min(args.scans, 5), 10, True, True
    if args.scans < 4:
        parser.error("--scans must be at least 4 (the growth is measured from scan 3)")
    return args


def run(args: argparse.Namespace, folder: Path) -> dict:
    kinds = tuple(kind for kind in KINDS if kind != "registered" or not args.no_registration)
    started = time.perf_counter()
    scans = make_scans(folder, args.scans, kinds)
    weights = tiny_weights(folder)
    print(f"{len(scans)} scans and the model made in {time.perf_counter() - started:.0f} s", flush=True)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("xnet-viewer")  # as app.main does; XDG_* point into the temporary folder
    app.setOrganizationName("xnet-viewer")
    from app.window import ViewerWindow  # after the QApplication, as the app does

    window = ViewerWindow(load_volume(scans[0]), weights, device="cpu")
    window.resize(1600, 1000)
    window.show()
    rss, threads, retired, lesions = [], [], [], []
    started = time.perf_counter()
    for k, path in enumerate(scans):
        one_scan(app, window, path, folder, k, args.steps, args.maps, args.lesion_slices,
                 lime=not args.skip_lime and k == 2)
        app.processEvents()
        # What the event loop does between events (app.exec(), which this script does not run).
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        gc.collect()
        rss.append(_status("VmRSS") / 1024)
        threads.append(_status("Threads"))
        retired.append(_retired_workers(window))
        lesions.append(len(window.study.lesion_slices))
        print(f"scan {k + 1:2d} {Path(path).name:22s} {time.perf_counter() - started:6.0f} s  lesion slices "
              f"{lesions[-1]}  RSS {rss[-1]:7.1f} MB  threads {threads[-1]}  retired workers running {retired[-1]}",
              flush=True)
    seconds = time.perf_counter() - started
    window.close()
    return {"rss_growth_mb": round(rss[-1] - rss[2], 1), "threads_start": threads[0], "threads_end": threads[-1],
            "scans": len(rss), "retired_workers_running": retired[-1], "rss_mb": [round(r, 1) for r in rss],
            "threads": threads, "lesion_slices": lesions, "seconds": round(seconds, 1)}


def main() -> None:
    args = _parse()
    if not args.glibc_default_heap:
        steady_heap()  # as app.main does for the viewer
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            os.environ[name] = str(folder / name)
        result = run(args, folder)
    ok = result["rss_growth_mb"] <= 100 and result["threads_end"] <= result["threads_start"] \
        and result["retired_workers_running"] == 0
    print(f"{result['scans']} scans in {result['seconds']:.0f} s: RSS growth from scan 3 {result['rss_growth_mb']} MB "
          f"(target <= 100), threads {result['threads_start']} -> {result['threads_end']}, retired workers still "
          f"running {result['retired_workers_running']}: {'targets met' if ok else 'TARGETS MISSED'}")
    print(json.dumps({**result, "device": "cpu", "torch": torch.__version__, "cpu_bf16": cpu_has_bf16()}))


if __name__ == "__main__":
    main()
