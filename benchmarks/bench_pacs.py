"""From the PACS and back (issue 28): the round trip of a 180-slice series through a real Orthanc.

The demo case (197x233 voxels, 1 mm) is cut to 180 axial slices, so it is off the template grid as a
scanner's series would be, and written as a single-frame MR series; it is loaded into a temporary
Orthanc (the Debian package) through its REST API (not timed). Measured, on this machine:

- ``get_s``: C-FIND of the series' instances + C-GET of the 180 images into the cache folder;
- ``segment_s``: ``xnet segment CACHE_DIR --seg OUT.dcm --no-cache`` in a fresh process, from start to the
  SEG written (imports, model load, DICOM read, registration to the template, every slice, mapping back,
  the SEG with highdicom); ``seg_write_s``: the SEG alone, written again in this process;
- ``send_s``: C-STORE of the SEG to the PACS;
- ``round_trip_s`` = get + segment + send. Also: the SEG's size and whether it equals the mask.

Usage: python benchmarks/bench_pacs.py   (needs Orthanc: sudo apt-get install -y orthanc; several
minutes on 2 cores, most of it registration and segmentation)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dicom_series import write_series  # noqa: E402  (the tests' DICOM writer)
from tests.orthanc_server import INSTALL_HINT, OUR_AET, orthanc_binary, running_orthanc  # noqa: E402
from xnet_core.assets import demo_scan_path  # noqa: E402
from xnet_core.inference import cpu_has_bf16  # noqa: E402

N_SLICES = 180
FIRST_SLICE = 5  # slices 5..184 of the 189: the brain is whole inside


def _series(folder: Path) -> dict:
    image = nib.load(demo_scan_path())
    data = np.asarray(image.dataobj, dtype=np.float32)[:, :, FIRST_SLICE:FIRST_SLICE + N_SLICES]
    lps_axes = np.diag([-1.0, -1.0, 1.0])
    origin = lps_axes @ (image.affine @ [0, 0, FIRST_SLICE, 1.0])[:3]
    return write_series(folder, data, origin=origin, axes=lps_axes, description="demo t1 180 slices")


def main() -> int:
    if orthanc_binary() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    from xnet_core.checkpoint import load_checkpoint
    from xnet_core.assets import demo_weights_path
    from xnet_core.dicom_results import Algorithm, read_seg_masks, source_series, write_seg
    from xnet_core.pacs import PacsSettings, send
    from xnet_core.pacs_retrieve import retrieve
    from xnet_core.volume import load_volume

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        series = _series(tmp / "export")
        with running_orthanc(tmp / "orthanc") as orthanc:
            orthanc.upload(series["paths"])
            settings = PacsSettings("127.0.0.1", orthanc.dicom_port, orthanc.aet, OUR_AET, timeout_s=60)
            started = time.perf_counter()
            [got] = retrieve(settings, tmp / "cache", series_uid=series["series_uid"], method="get")
            get_s = time.perf_counter() - started

            seg_path, mask_path = tmp / "seg.dcm", tmp / "mask.nii.gz"
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "app.cli", "segment", str(got.folder), "--seg", str(seg_path),
                            "-o", str(mask_path), "--no-cache", "--device", "cpu"], check=True, cwd=ROOT)
            segment_s = time.perf_counter() - started

            volume = load_volume(got.folder)
            mask = load_volume(mask_path, is_mask=True).data.astype(np.uint8)
            started = time.perf_counter()
            write_seg(volume, source_series(volume), mask, tmp / "again.dcm",
                      Algorithm.from_checkpoint(load_checkpoint(demo_weights_path())))
            seg_write_s = time.perf_counter() - started
            equal = bool(np.array_equal(read_seg_masks(seg_path, volume)[1][1], mask))

            started = time.perf_counter()
            report = send(settings, [seg_path])
            send_s = time.perf_counter() - started
            assert not report.failed, report.summary()
            seg_mb = seg_path.stat().st_size / 1e6

    result = {"n_slices": N_SLICES, "get_s": round(get_s, 2), "segment_s": round(segment_s, 1),
              "seg_write_s": round(seg_write_s, 2), "send_s": round(send_s, 2),
              "round_trip_s": round(get_s + segment_s + send_s, 1), "seg_mb": round(seg_mb, 2),
              "seg_equals_mask": equal, "lesion_ml": round(float(mask.sum()) * volume.voxel_volume_ml, 2),
              "device": "cpu", "cpu_bf16": cpu_has_bf16(), "torch": torch.__version__}
    print(f"180-slice series: C-GET {get_s:.1f} s, xnet segment --seg {segment_s:.0f} s (SEG alone "
          f"{seg_write_s:.2f} s, {result['seg_mb']} MB, equals the mask: {equal}), C-STORE {send_s:.2f} s; "
          f"round trip {result['round_trip_s']:.0f} s on {torch.get_num_threads()} CPU threads")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
