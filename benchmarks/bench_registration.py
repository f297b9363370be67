"""Native whole-head T1 -> template -> back (issue: native scans in the core).

The demo case (a synthetic case of the held-out seed range, 37 ml lesion) is moved by a known rigid
motion onto an oblique 1.1 x 1.0 x 1.2 mm grid of 170x230x200 voxels, with a head (CSF, skull, scalp)
around the brain and a bias field. Measured:

- ``registration_s``: brain extraction + N4 + affine registration + resampling (``register``, no cache);
- ``segment_native_total_s``: ``xnet segment NATIVE -o MASK --no-cache`` in a fresh process, from start
  to the mask written (imports, model load, registration, all slices, mapping back);
- ``similarity``: the QC figure; and the Dice of the mapped-back mask against the moved ground truth,
  next to the unmoved case's Dice and the naive baseline (the native scan given to the model as it is,
  through the centred crop the foundation used before registration existed).

Usage: python benchmarks/bench_registration.py  (about 3 minutes on 2 cores)
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

from xnet_core.assets import DEMO_LESION, DEMO_SCAN, asset_path, demo_weights_path
from xnet_core.checkpoint import load_checkpoint
from xnet_core.inference import Segmenter, cpu_has_bf16
from xnet_core.metrics import dice
from xnet_core.registration import register
from xnet_core.training.native_cases import native_case
from xnet_core.volume import load_volume


def moved_demo(folder: Path) -> tuple[Path, np.ndarray]:
    image = nib.load(asset_path(DEMO_SCAN)).get_fdata(dtype=np.float32)
    mask = np.asarray(nib.load(asset_path(DEMO_LESION)).dataobj) > 0
    case = native_case(image, mask.astype(np.uint8))
    path = folder / "native_T1w.nii.gz"
    nib.save(nib.Nifti1Image(case.image, case.affine), path)
    return path, case.mask


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        native_path, native_truth = moved_demo(folder)
        volume = load_volume(native_path)

        started = time.perf_counter()
        registration = register(volume, use_cache=False)
        registration_s = time.perf_counter() - started

        out, summary_path = folder / "mask.nii.gz", folder / "summary.json"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "app.cli", "segment", str(native_path), "-o", str(out),
                        "--no-cache", "--json", str(summary_path)], check=True, stdout=subprocess.DEVNULL)
        total_s = time.perf_counter() - started
        summary = json.loads(summary_path.read_text())
        registered_mask = np.asarray(nib.load(out).dataobj) > 0

        segmenter = Segmenter(load_checkpoint(demo_weights_path()).build_model())
        unmoved = load_volume(asset_path(DEMO_SCAN))
        unmoved_truth = np.asarray(nib.as_closest_canonical(nib.load(asset_path(DEMO_LESION))).dataobj) > 0
        dice_unmoved = dice(segmenter.segment(unmoved).mask, unmoved_truth)
        dice_naive = dice(segmenter.segment(volume).mask, native_truth)  # centred crop, no registration
    dice_registered = dice(registered_mask, native_truth)
    timings = registration.timings_s
    print(f"native whole-head T1 {volume.shape}, voxels {tuple(round(v, 2) for v in volume.voxel_sizes)} mm, "
          f"oblique; demo case moved by a known rigid motion")
    print(f"registration {registration_s:.1f} s (brain extraction {timings['brain_extraction']:.1f}, "
          f"N4 {timings['n4']:.1f}, affine {timings['registration']:.1f}, resampling {timings['resample']:.1f}); "
          f"similarity {registration.similarity:.3f}")
    print(f"xnet segment, fresh process, load to mask written: {total_s:.1f} s")
    print(f"Dice vs ground truth: registered {dice_registered:.3f} ({dice_registered / dice_unmoved:.2f}x the "
          f"unmoved case's {dice_unmoved:.3f}); naive baseline without registration {dice_naive:.3f}")
    print(json.dumps({"registration_s": round(registration_s, 2), "segment_native_total_s": round(total_s, 2),
                      "similarity": round(registration.similarity, 4),
                      "dice_registered": round(dice_registered, 4), "dice_unmoved": round(dice_unmoved, 4),
                      "dice_no_registration": round(dice_naive, 4),
                      "registration_steps_s": timings, "cli_registration": summary["registration"]["seconds"],
                      "device": "cpu", "cpu_bf16": cpu_has_bf16(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
