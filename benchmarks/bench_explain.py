"""Explanations as shipped vs the libraries used naively (issue: explanation engine, "Speed").

On the demo case's slice with the largest predicted lesion area, target = lesion logit summed over
the predicted mask (the same frozen target for both sides):

* Grad-CAM + Grad-CAM++ + HiResCAM: ``explain.cam.CamExplainer`` (one forward and one backward for
  all three maps) vs pytorch-grad-cam's ``GradCAM``, ``GradCAMPlusPlus`` and ``HiResCAM`` one after
  the other on the same fp32 model, layer and target. ``cam_max_abs_diff`` compares the two after the library's own ReLU, per-image min-max and
  resize (``explain.cam.library_view``).
* LIME: ``explain.lime_seg.explain_slice`` with its defaults vs
  ``lime_image.LimeImageExplainer().explain_instance`` with lime's defaults (quickshift,
  ``num_samples=1000``, ``batch_size=10``, ``top_labels=5``, ``hide_color=None``) around the plain
  fp32 model. Stability = Spearman correlation over the slice's brain pixels between the maps of
  two runs with different seeds (0 and 1), for each side. Timings are medians of the runs.
* ``--study 4x600,5x600,...`` (quickshift kernel x samples): the stability study behind
  ``lime_seg.KERNEL_SIZE`` and ``lime_seg.DEFAULT_SAMPLES``.
* On CUDA also LIME with 1,000 samples (``lime_gpu_1000_s``; target <= 2 s per slice).

Prints a human summary, then one JSON line (last line) with the keys the issue names.
Usage: python benchmarks/bench_explain.py [--weights CKPT] [--device auto] [--cam-repeats 3] [--study 4x600]
       [--skip-baseline-lime] [--skip-lime] [--slices band]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explain.cam import DEFAULT_LAYER, CamExplainer, library_view  # noqa: E402
from explain.faithfulness import rank_correlation  # noqa: E402
from explain.lime_seg import DEFAULT_SAMPLES, KERNEL_SIZE, explain_slice  # noqa: E402
from explain.targets import TargetSpec, resolve  # noqa: E402
from xnet_core.assets import DEMO_LESION, asset_path, demo_scan_path, demo_weights_path  # noqa: E402
from xnet_core.checkpoint import load_checkpoint  # noqa: E402
from xnet_core.inference import Segmenter, choose_device, cpu_has_bf16  # noqa: E402
from xnet_core.preprocess import prepare  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def library_cams(model, layer, image, target, device):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    x = torch.from_numpy(image)[:, None].to(device)
    out = {}
    for name, method in (("gradcam", GradCAM), ("gradcampp", GradCAMPlusPlus), ("hirescam", HiResCAM)):
        with method(model, [model.get_submodule(layer)]) as cam:
            out[name] = cam(x, [SemanticSegmentationTarget(0, target.weights)])
    return out


def baseline_lime(model, image, target, device, seed):
    """lime's defaults around the plain fp32 model (what a first user would write)."""
    from lime import lime_image

    def classifier(rgb):
        x = torch.from_numpy(rgb[..., 0].astype(np.float32))[:, None].to(device)
        with torch.no_grad():
            probabilities = torch.sigmoid(model(x))[:, 0].cpu().numpy()
        score = target.mean_probability(probabilities)
        return np.stack([1 - score, score], axis=1)

    explanation = lime_image.LimeImageExplainer(random_state=seed).explain_instance(image.astype(np.float64), classifier)
    lookup = np.zeros(int(explanation.segments.max()) + 1, np.float32)
    for segment, weight in explanation.local_exp[1]:
        lookup[segment] = weight
    return lookup[explanation.segments], int(explanation.segments.max()) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cam-repeats", type=int, default=3)
    parser.add_argument("--study", default="", help="comma-separated KERNELxSAMPLES for the stability study")
    parser.add_argument("--skip-baseline-lime", action="store_true", help="smoke runs only (no lime_speedup)")
    parser.add_argument("--skip-lime", action="store_true", help="the CAM methods only (no LIME at all)")
    parser.add_argument("--slices", choices=("all", "band"), default="all",
                        help="band: segment 13 slices around the ground-truth lesion instead of the whole volume")
    args = parser.parse_args()

    device = choose_device(args.device)
    checkpoint = load_checkpoint(args.weights or demo_weights_path())
    model = checkpoint.build_model().to(device).eval()
    volume = load_volume(demo_scan_path())
    prepared = prepare(volume, checkpoint.normalisation)
    # LIME explains the network's single pass, as in the shipped engine (ExplanationEngine.network_predict)
    segmenter = Segmenter(checkpoint.build_model(), device=device, normalisation=checkpoint.normalisation,
                          mirror=False)
    band = None
    if args.slices == "band":  # the slice with the largest predicted area lies near the true lesion's centre
        centre = int(np.argmax(load_volume(asset_path(DEMO_LESION)).data.sum(axis=(0, 1))))
        band = range(centre - 6, centre + 7)
    segmentation = segmenter.segment(volume, slices=band, prepared=prepared)
    z = int(np.argmax(segmentation.slice_area_mm2))
    geometry = prepared.geometry
    target = resolve(TargetSpec(), geometry, segmentation.mask[:, :, z])
    image = prepared.slices[z]
    brain = geometry.to_model(prepared.brain_mask[:, :, z]) > 0
    print(f"demo case {volume.name}, slice z={z}: predicted lesion {target.area} voxels; device {device}, "
          f"Segmenter precision {segmenter.precision}, torch threads {torch.get_num_threads()}")

    # -- Grad-CAM + Grad-CAM++ + HiResCAM --------------------------------------------------------
    ours = CamExplainer(checkpoint.build_model(), device, DEFAULT_LAYER)
    ours(image[None], [target])  # warm-up, both sides
    library_cams(model, DEFAULT_LAYER, image[None], target, device)
    our_times, lib_times = [], []
    for _ in range(args.cam_repeats):
        mine, seconds = timed(ours, image[None], [target])
        our_times.append(seconds)
        theirs, seconds = timed(library_cams, model, DEFAULT_LAYER, image[None], target, device)
        lib_times.append(seconds)
    diff = max(float(np.abs(library_view(mine.layer_maps[m], image.shape) - theirs[m]).max())
               for m in ("gradcam", "gradcampp", "hirescam"))
    per_method = {m: float(np.abs(library_view(mine.layer_maps[m], image.shape) - theirs[m]).max())
                  for m in ("gradcam", "gradcampp", "hirescam")}
    cam_ours, cam_lib = statistics.median(our_times), statistics.median(lib_times)
    print(f"Grad-CAM + Grad-CAM++ + HiResCAM ({DEFAULT_LAYER}): pytorch-grad-cam {cam_lib:.2f} s/slice, shipped "
          f"{cam_ours:.2f} s/slice -> {cam_lib / cam_ours:.2f}x; max |difference| "
          + ", ".join(f"{m} {d:.2e}" for m, d in per_method.items()))

    result = {"cam_speedup": round(cam_lib / cam_ours, 3), "cam_max_abs_diff": diff,
              "cam_max_abs_diff_per_method": per_method, "cam_methods": ["gradcam", "gradcampp", "hirescam"],
              "cam_shipped_s": round(cam_ours, 3), "cam_library_s": round(cam_lib, 3)}
    if not args.skip_lime:
        result.update(lime_figures(args, image, brain, target, segmenter, model, device))
    if device.type == "cuda" and not args.skip_lime:
        _, seconds = timed(explain_slice, image, brain, target, segmenter.predict, num_samples=1000, seed=0)
        result["lime_gpu_1000_s"] = round(seconds, 3)
        print(f"LIME, 1000 samples on {torch.cuda.get_device_name()}: {seconds:.2f} s/slice")
    result.update(device=str(device), cpu_bf16=cpu_has_bf16(), torch=torch.__version__)
    print(json.dumps(result), flush=True)


def lime_figures(args, image, brain, target, segmenter, model, device) -> dict:
    """The shipped LIME's time and stability, lime's defaults beside it, and the stability study."""
    runs = [timed(explain_slice, image, brain, target, segmenter.predict, seed=seed) for seed in (0, 1)]
    lime_ours = statistics.median(seconds for _, seconds in runs)
    stability = rank_correlation(runs[0][0].weights, runs[1][0].weights, brain)
    print(f"LIME shipped: {DEFAULT_SAMPLES} samples, {runs[0][0].n_segments} superpixels in the brain "
          f"(quickshift kernel {KERNEL_SIZE}), {lime_ours:.1f} s/slice, stability (Spearman, seeds 0 vs 1) {stability:.3f}, "
          f"local R^2 {runs[0][0].score:.3f}")
    result = {"lime_shipped_s": round(lime_ours, 2), "lime_stability": round(stability, 4),
              "lime_samples": DEFAULT_SAMPLES}
    if not args.skip_baseline_lime:
        base = [timed(baseline_lime, model, image, target, device, seed) for seed in (0, 1)]
        lime_base = statistics.median(seconds for _, seconds in base)
        base_stability = rank_correlation(base[0][0][0], base[1][0][0], brain)
        print(f"LIME baseline (lime defaults: quickshift {base[0][0][1]} segments, 1000 samples, batch 10, fp32): "
              f"{lime_base:.1f} s/slice, stability {base_stability:.3f} -> shipped is {lime_base / lime_ours:.2f}x faster")
        result.update(lime_speedup=round(lime_base / lime_ours, 3), lime_stability_baseline=round(base_stability, 4),
                      lime_baseline_s=round(lime_base, 2))
    for case in [c for c in args.study.split(",") if c.strip()]:
        kernel, samples = (float(v) for v in case.lower().split("x"))
        pair = [timed(explain_slice, image, brain, target, segmenter.predict, num_samples=int(samples),
                      kernel_size=kernel, seed=s) for s in (0, 1)]
        rho = rank_correlation(pair[0][0].weights, pair[1][0].weights, brain)
        print(f"  study: kernel {kernel:g} ({pair[0][0].n_segments} superpixels) x {int(samples):5d} samples -> stability {rho:.3f}, "
              f"{statistics.median(t for _, t in pair):.1f} s/slice")
        result.setdefault("study", {})[case] = round(rho, 4)
    return result


if __name__ == "__main__":
    main()
