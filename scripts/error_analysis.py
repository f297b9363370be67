"""Where a model's errors are, on an evaluation folder (what `xnet evaluate` scores, taken apart).

    python scripts/error_analysis.py --data HELDOUT [--weights CKPT] [--device auto] [--json OUT.json]

Segments every scan through the same path as `xnet evaluate` (so the Dice column matches it) and reports
per case the false-positive components (predicted lesions touching no true lesion), the false-positive
voxels around found lesions, the missed lesions (true lesions no predicted voxel touches) and the
missed voxels; then false-positive components by size and by place (for scans on the template grid:
the component's centroid against the template's brain edge, ventricles and CSF, approximate because
cases are jittered by up to 7 % / 3 mm); and two what-ifs, for information only, since the metrics
contract fixes the mask (threshold 0.5, no post-processing): Dice at other thresholds and after
dropping predicted components under N voxels.

What it found on the demo model: docs/model.md, "Where it errs".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xnet_core import metrics  # noqa: E402
from xnet_core.assets import demo_weights_path  # noqa: E402
from xnet_core.checkpoint import load_checkpoint  # noqa: E402
from xnet_core.training.datasets import find_scans, load_lesion_mask  # noqa: E402
from xnet_core.training.evaluate import SIZE_BINS  # noqa: E402
from xnet_core.errors import XNetError  # noqa: E402
from xnet_core.inference import Segmenter  # noqa: E402
from xnet_core.native import place, segment  # noqa: E402
from xnet_core.preprocess import is_template_grid  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_SIZES = (0, 5, 10, 14, 20, 30, 50, 100)  # voxels; 14 mm^3 is a 3 mm lacune
COMPONENT_BINS = ((1, 10), (10, 50), (50, 200), (200, 1000), (1000, None))


class TemplatePlaces:
    """Coarse anatomical place of a template-grid voxel, from the template's tissue maps."""

    def __init__(self) -> None:
        from scipy import ndimage

        from xnet_core.training.synthetic import ORIGIN_VOXEL, template_tissues

        self.tissues = template_tissues()
        self.to_ventricle = ndimage.distance_transform_edt(~self.tissues.ventricles)
        self.to_sulcal_csf = ndimage.distance_transform_edt(~(self.tissues.csf & ~self.tissues.ventricles))
        self.origin_z = ORIGIN_VOXEL[2]

    def __call__(self, voxel: tuple[float, float, float]) -> str:
        i, j, k = (int(round(c)) for c in voxel)
        t = self.tissues
        if not t.brain[i, j, k]:
            return "outside the template brain"
        if t.depth[i, j, k] <= 5:
            return "brain edge, skull base (z < -10 mm)" if k - self.origin_z < -10 else "brain edge, convexity"
        if self.to_ventricle[i, j, k] <= 3:
            return "ventricle wall (<= 3 mm)"
        if self.to_ventricle[i, j, k] <= 8:
            return "periventricular (3-8 mm)"
        if self.to_sulcal_csf[i, j, k] <= 2:
            return "next to sulcal CSF (<= 2 mm)"
        return "deep tissue"


def analyse_case(probabilities: np.ndarray, truth: np.ndarray, places: TemplatePlaces | None) -> dict:
    """Errors of one case at threshold 0.5, plus the what-if Dice figures."""
    predicted = probabilities >= 0.5
    false_positives = metrics.unmatched_lesions(predicted, truth, 1.0)
    missed = metrics.unmatched_lesions(truth, predicted, 1.0)
    fp_component_voxels = sum(lesion.n_voxels for lesion in false_positives)
    labels, _ = metrics.label_lesions(predicted)
    sizes = np.bincount(labels.ravel())
    return {
        "true_voxels": int(truth.sum()),
        "dice": metrics.dice(predicted, truth),
        "fp_components": [lesion.n_voxels for lesion in false_positives],
        "fp_places": [places(lesion.centroid) for lesion in false_positives] if places else [],
        "fp_voxels_around_found": int((predicted & ~truth).sum()) - fp_component_voxels,
        "missed_lesions": [lesion.n_voxels for lesion in missed],
        "missed_voxels": int((truth & ~predicted).sum()),
        "dice_at_threshold": {str(t): metrics.dice(probabilities >= t, truth) for t in THRESHOLDS},
        "dice_min_size": {str(m): metrics.dice(np.isin(labels, np.flatnonzero(sizes >= m)) & (labels > 0), truth)
                          for m in MIN_SIZES},
    }


def _bin_means(cases: dict, key: str, sub: str, voxel_ml: dict) -> str:
    cells = []
    for label, lo, hi in (("all", 0.0, float("inf")), *SIZE_BINS):
        values = [c[key][sub] for name, c in cases.items() if lo <= c["true_voxels"] * voxel_ml[name] < hi]
        cells.append(f"{label} {np.mean(values):.4f}" if values else f"{label} -")
    return ", ".join(cells)


def report(cases: dict, voxel_ml: dict) -> str:
    lines = [f"{'case':<28}{'true ml':>9}{'dice':>8}{'FP comps':>9}{'FP ml':>8}{'FP ml near':>11}"
             f"{'missed':>7}{'FN ml':>8}"]
    for name, c in cases.items():
        ml = voxel_ml[name]
        lines.append(f"{name:<28}{c['true_voxels'] * ml:>9.3f}{c['dice']:>8.3f}{len(c['fp_components']):>9}"
                     f"{sum(c['fp_components']) * ml:>8.3f}{c['fp_voxels_around_found'] * ml:>11.3f}"
                     f"{len(c['missed_lesions']):>7}{c['missed_voxels'] * ml:>8.3f}")
    sizes = [s for c in cases.values() for s in c["fp_components"]]
    lines.append("\nfalse-positive components by size (voxels): count, voxels")
    for lo, hi in COMPONENT_BINS:
        chosen = [s for s in sizes if s >= lo and (hi is None or s < hi)]
        lines.append(f"  {lo}-{hi or 'more'}: {len(chosen)}, {sum(chosen)}")
    placed = [(p, s) for c in cases.values() for p, s in zip(c["fp_places"], c["fp_components"])]
    if placed:
        total = sum(s for _, s in placed)
        lines.append("false-positive component voxels by place (template-grid scans):")
        for where in sorted({p for p, _ in placed}, key=lambda w: -sum(s for p, s in placed if p == w)):
            voxels = sum(s for p, s in placed if p == where)
            lines.append(f"  {where}: {voxels} ({100 * voxels / total:.0f} %)")
    missed = [s for c in cases.values() for s in c["missed_lesions"]]
    lines.append(f"missed lesions: {len(missed)}, sizes (voxels) {sorted(missed, reverse=True)[:20]}")
    lines.append("\nwhat-ifs, for information (the metrics contract fixes threshold 0.5, no post-processing):")
    for t in THRESHOLDS:
        lines.append(f"  threshold {t}: {_bin_means(cases, 'dice_at_threshold', str(t), voxel_ml)}")
    for m in MIN_SIZES:
        lines.append(f"  drop components < {m} voxels: {_bin_means(cases, 'dice_min_size', str(m), voxel_ml)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a folder xnet evaluate reads (e.g. xnet synth output)")
    parser.add_argument("--weights", help="checkpoint (default: the shipped demo weights)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write the per-case figures here")
    args = parser.parse_args(argv)
    try:
        return _analyse(args)
    except XNetError as error:  # bad input: one line, as the xnet commands do
        print(f"error_analysis: {error}", file=sys.stderr)
        return 2


def _analyse(args: argparse.Namespace) -> int:
    checkpoint = load_checkpoint(args.weights or demo_weights_path())
    segmenter = Segmenter(checkpoint.build_model(), device=args.device, normalisation=checkpoint.normalisation)
    places = None
    cases, voxel_ml = {}, {}
    for scan in find_scans(args.data):
        volume = load_volume(scan.t1)
        truth = load_lesion_mask(scan, volume) > 0
        result, _ = segment(segmenter, place(volume, device=str(segmenter.device)))
        on_template = is_template_grid(volume)
        if on_template and places is None:
            places = TemplatePlaces()
        cases[scan.scan_id] = analyse_case(result.probabilities, truth, places if on_template else None)
        voxel_ml[scan.scan_id] = volume.voxel_volume_ml
        print(f"{scan.scan_id}: dice {cases[scan.scan_id]['dice']:.3f}", file=sys.stderr, flush=True)
    print(report(cases, voxel_ml))
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(checkpoint.path), "sha256": checkpoint.sha256,
                                               "cases": cases}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
