"""Where each explanation method's attention goes (issue 26, "Say what each map shows").

For every map, the share of its energy (the positive part, summed) that lies

* inside the model's predicted lesion on that slice (the target it explains),
* inside CSF (ventricles and sulci: the template's CSF map, ``template_tissues().csf``, moved onto the
  scan by its registration), and inside the ventricles alone,
* in the other hemisphere (the side without the larger part of the slice's predicted lesion; the
  midline is the template's x = 0 moved onto the scan),
* outside the brain (the template's brain mask moved onto the scan).

Cases: the demo case (on the template grid; the slices with the largest predicted lesion near its
ground truth) and five healthy lesion-free T1s from ``../shared/data/healthy-t1`` (native whole-head
scans registered through ``xnet_core.native.place``; only scans whose registration is cached are
used, so no scan costs minutes). A healthy scan has no lesion: its maps explain the model's false
positives, on the sampled slices where it predicts the most. By default a healthy scan is measured on
the template grid after its registration (the model's own view, where the template's tissue maps lie
as they are): an oblique native slice crosses dozens of template slices, each needing its own
segmentation and CAM pass, too many for a shared CPU. ``--native`` measures on the scan's own slices,
with the tissue maps moved there (``Registration.to_native``). LIME runs on the demo case only (one
slice, ``--lime-samples``), being about a minute a slice on a CPU.

Prints a table per case and the mean per method, then one JSON line.
Usage: python benchmarks/bench_attention.py [--healthy 5] [--slices 2] [--every 8] [--lime-samples 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explain.engine import ExplainParams, ExplanationEngine  # noqa: E402
from explain.methods import CAM_METHODS, METHOD_NAMES, METHODS  # noqa: E402
from explain.native import explain_slices  # noqa: E402
from xnet_core.assets import DEMO_LESION, asset_path, demo_scan_path, demo_weights_path  # noqa: E402
from xnet_core.checkpoint import load_checkpoint  # noqa: E402
from xnet_core.inference import cpu_has_bf16  # noqa: E402
from xnet_core.native import PlacedScan, place, segment  # noqa: E402
from xnet_core.preprocess import template_affine, template_brain_mask  # noqa: E402
from xnet_core.registration import cached_registration  # noqa: E402
from xnet_core.training.synthetic import template_tissues  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402

HEALTHY = Path(__file__).resolve().parents[2] / "shared" / "data" / "healthy-t1"
SHARES = ("lesion", "csf", "ventricles", "other_hemisphere", "outside_brain")


def template_regions() -> dict[str, np.ndarray]:
    """Regions on the template grid: CSF, ventricles, brain and the left hemisphere (world x < 0)."""
    tissues = template_tissues()
    x_world = (template_affine() @ np.stack([np.arange(tissues.csf.shape[0]), np.zeros(tissues.csf.shape[0]),
                                              np.zeros(tissues.csf.shape[0]), np.ones(tissues.csf.shape[0])]))[0]
    left = np.broadcast_to((x_world < 0)[:, None, None], tissues.csf.shape)
    return {"csf": tissues.csf, "ventricles": tissues.ventricles, "brain": template_brain_mask() > 0, "left": left}


def regions_on(scan: PlacedScan, regions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if scan.registration is None:
        return regions
    return {name: scan.registration.to_native(mask.astype(np.float32), order=0) > 0.5
            for name, mask in regions.items()}


def shares(saliency: np.ndarray, lesion: np.ndarray, regions: dict[str, np.ndarray], z: int) -> dict[str, float]:
    """Energy shares of one map [x, y] on slice z; the other hemisphere is the side with less lesion."""
    energy = np.maximum(saliency, 0)
    total = float(energy.sum())
    if total <= 0:
        return {}
    left = regions["left"][:, :, z]
    lesion_side_left = (lesion & left).sum() >= (lesion & ~left).sum()
    other = ~left if lesion_side_left else left
    part = lambda mask: float(energy[mask].sum()) / total  # noqa: E731
    return {"lesion": part(lesion), "csf": part(regions["csf"][:, :, z]),
            "ventricles": part(regions["ventricles"][:, :, z]), "other_hemisphere": part(other),
            "outside_brain": part(~regions["brain"][:, :, z])}


def case_rows(engine, scan: PlacedScan, slices: list[int], methods, params, regions, name: str) -> list[dict]:
    """Segment ``slices`` (native), explain the ``n`` with the largest predicted area, measure each map."""
    native, on_template = segment(engine.segmenter, scan, slices=slices)
    context = engine.context(scan.model_volume, on_template)
    placed = regions_on(scan, regions)
    rows = []
    for result in explain_slices(engine, scan, context, slices, methods, params, native_mask=native.mask):
        if result.ok:
            figures = shares(result.map, native.mask[:, :, result.z] > 0, placed, result.z)
            if figures:
                rows.append({"case": name, "z": result.z, "method": result.method, **figures})
    return rows


def pick_slices(engine, scan: PlacedScan, candidates: list[int], n: int) -> list[int]:
    """The ``n`` candidate slices where the model predicts the most lesion."""
    native, _ = segment(engine.segmenter, scan, slices=candidates)
    areas = native.slice_area_mm2
    ranked = [z for z in sorted(candidates, key=lambda z: -areas[z]) if areas[z] > 0]
    return sorted(ranked[:n])


def healthy_scans(count: int) -> list[tuple[str, PlacedScan, float]]:
    """The first ``count`` healthy scans whose registration is cached, placed (seconds each)."""
    out = []
    for path in sorted(HEALTHY.glob("*.nii*")):
        volume = load_volume(path)
        if cached_registration(volume) is None:
            continue
        started = time.perf_counter()
        scan = place(volume, use_cache=True)
        out.append((volume.name, scan, time.perf_counter() - started))
        print(f"  {volume.name}: placed in {out[-1][2]:.0f} s (registration from the cache)", flush=True)
        if len(out) == count:
            break
    return out


def print_table(rows: list[dict], methods) -> dict[str, dict[str, float]]:
    means = {}
    print(f"{'method':12s} " + " ".join(f"{s:>16s}" for s in SHARES) + "   maps")
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        means[method] = {s: round(float(np.mean([r[s] for r in mine])), 3) for s in SHARES}
        print(f"{METHOD_NAMES[method]:12s} " + " ".join(f"{means[method][s]:16.3f}" for s in SHARES)
              + f"   {len(mine)}")
    return means


def demo_case(engine, params, regions, args) -> dict[str, dict[str, float]]:
    demo = PlacedScan(load_volume(demo_scan_path()), None)
    truth = load_volume(asset_path(DEMO_LESION)).data
    centre = int(np.argmax(truth.sum(axis=(0, 1))))
    demo_slices = pick_slices(engine, demo, list(range(centre - 6, centre + 7, 3)), args.slices)
    rows = case_rows(engine, demo, demo_slices, CAM_METHODS, params, regions, "demo")
    if args.lime_samples:
        rows += case_rows(engine, demo, demo_slices[:1], ("lime",), params, regions, "demo")
    print(f"demo case, slices {demo_slices}:")
    return print_table(rows, METHODS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=int, default=5, help="healthy scans (with a cached registration)")
    parser.add_argument("--slices", type=int, default=2, help="slices explained per case")
    parser.add_argument("--every", type=int, default=8, help="healthy scans: segment every Nth slice to pick them")
    parser.add_argument("--lime-samples", type=int, default=300, help="LIME on the demo case (0: leave it out)")
    parser.add_argument("--native", action="store_true", help="healthy scans on their own slices (slow)")
    parser.add_argument("--no-demo", action="store_true", help="the healthy scans only")
    args = parser.parse_args()
    torch.manual_seed(0)
    engine = ExplanationEngine(load_checkpoint(demo_weights_path()), device="cpu")
    regions = template_regions()
    params = ExplainParams(lime_samples=max(args.lime_samples, 10))
    started = time.perf_counter()

    by_case = {} if args.no_demo else {"demo": demo_case(engine, params, regions, args)}
    healthy_rows = []
    for name, scan, _ in healthy_scans(args.healthy):
        if not args.native:  # the registered scan as the model sees it, on the template grid
            scan = PlacedScan(scan.model_volume, None)
        brain = scan.registration.brain_mask if scan.registration is not None else template_brain_mask()
        brain_slices = [z for z in range(scan.volume.shape[2]) if brain[:, :, z].any()]
        chosen = pick_slices(engine, scan, brain_slices[::args.every], args.slices)
        if not chosen:
            print(f"{name}: no predicted voxel on the sampled slices; nothing to explain")
            continue
        found = case_rows(engine, scan, chosen, CAM_METHODS, params, regions, name)
        print(f"{name} (false positives), slices {chosen}:")
        by_case[name] = print_table(found, METHODS)
        healthy_rows += found
    print("healthy scans together:")
    healthy_means = print_table(healthy_rows, METHODS)
    print(f"wall {time.perf_counter() - started:.0f} s")
    result = {"demo": by_case.get("demo"), "healthy": healthy_means, "healthy_grid": "native" if args.native
              else "template", "per_case": by_case,
              "healthy_scans": [c for c in by_case if c != "demo"], "slices_per_case": args.slices,
              "lime_samples": args.lime_samples, "device": "cpu", "cpu_bf16": cpu_has_bf16(),
              "torch": torch.__version__}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
