"""Regenerate docs/viewer.png: the demo case on its largest lesion slice with all four panels.

Usage: QT_QPA_PLATFORM=offscreen python scripts/screenshot_viewer.py [--reader | --native | --healthy SCAN] [OUT.png]
(Runs the demo model: whole-volume segmentation, Grad-CAM/Grad-CAM++ and LIME of one slice.)
``--reader``: the demo case's ground truth loaded as the reader's mask (both outlines) and the
comparison dock in front; default output docs/viewer_reader.png. ``--native``: the demo case moved onto
an oblique whole-head grid (``synthetic.native_case``), registered by the viewer, with the model outline,
Grad-CAM maps and the template's outline; default output docs/viewer_native.png. ``--healthy SCAN``: a
real lesion-free whole-head scan, registered by the viewer: the registration QC's verdict in the status
bar, the slice with the most voxels called lesion, and the lesion table with its minimum finding size;
default output docs/viewer_healthy.png.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.window import ViewerWindow  # noqa: E402
from xnet_core.assets import DEMO_LESION, asset_path, demo_scan_path, demo_weights_path  # noqa: E402
from xnet_core.checkpoint import load_checkpoint  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402


def wait(app: QApplication, condition, timeout: float) -> None:
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        app.processEvents()
        time.sleep(0.01)


def native_demo(folder: Path) -> Path:
    import nibabel as nib

    from xnet_core.assets import DEMO_SCAN
    from xnet_core.training.native_cases import native_case

    image = nib.load(asset_path(DEMO_SCAN)).get_fdata(dtype=np.float32)
    mask = (np.asarray(nib.load(asset_path(DEMO_LESION)).dataobj) > 0).astype(np.uint8)
    case = native_case(image, mask)
    path = folder / "native_demo_T1w.nii.gz"
    nib.save(nib.Nifti1Image(case.image, case.affine), path)
    return path


def main() -> None:
    import tempfile

    reader, native = "--reader" in sys.argv, "--native" in sys.argv
    healthy = sys.argv[sys.argv.index("--healthy") + 1] if "--healthy" in sys.argv else None
    arguments = [a for a in sys.argv[1:] if a not in ("--reader", "--native", "--healthy", healthy)]
    default = ("viewer_reader.png" if reader else "viewer_native.png" if native else
               "viewer_healthy.png" if healthy else "viewer.png")
    out = Path(arguments[0] if arguments else Path(__file__).resolve().parent.parent / "docs" / default)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setOrganizationName("xnet-viewer-screenshot")
    scan = native_demo(Path(tempfile.mkdtemp())) if native else healthy or demo_scan_path()
    window = ViewerWindow(load_volume(scan), load_checkpoint(demo_weights_path()))
    window.resize(1600, 1000)
    window.show()
    wait(app, lambda: window.study.segmentation_complete, 1800)
    z = int(np.argmax(window.study.lesion_area_per_slice_mm2()))
    window.set_slice(z)
    if healthy:  # what a reader sees on a healthy brain: the QC verdict, the findings above the size floor
        window.actions_by_name["outline"].setChecked(True)
        window.docks["Lesions"].raise_()
        waiting = window.navigator.summary.text()  # the worker labels the lesions after the segmentation
        wait(app, lambda: window.navigator.summary.text() != waiting, 300)
        wait(app, lambda: window.study.status("gradcam", z) is not None, 900)
    elif native:  # LIME of a native slice means LIME on every template slice it crosses: left out here
        window.actions_by_name["template"].setChecked(True)
        window.actions_by_name["outline"].setChecked(True)
        wait(app, lambda: window.study.status("gradcam", z) is not None, 900)
    else:
        window.request_lime()
        wait(app, lambda: window.study.status("lime", z) is not None and window.study.status("gradcam", z), 900)
    window.set_threshold(0.5)
    if reader:
        window.reader.load(str(asset_path(DEMO_LESION)))
        window.docks["Reader"].raise_()
        wait(app, lambda: window.reader.volume_figures is not None, 60)
        window.reader.panel.study_note.setPlainText("Demo case: the reader's mask is the synthetic ground truth.")
        window.reader.panel.slice_note.setPlainText("Model and reader agree on the cortical lesion.")
        window.reader.panel.flush_notes()
        window.reader.read.saved_revision = window.reader.read.revision  # a screenshot, nothing to save
        window.reader.show_source()
    app.processEvents()
    window.grab().scaledToWidth(1080 if reader or native or healthy else 1120, Qt.TransformationMode.SmoothTransformation).save(
        str(out), "PNG", 0)  # 0: the strongest PNG compression (lossless either way)
    print(f"slice z {z}: {out} ({out.stat().st_size / 1024:.0f} KB)")
    window.close()


if __name__ == "__main__":
    main()
