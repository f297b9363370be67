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
       [--baseline-slices 3] [--skip-lime] [--slices band]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explain.cam import DEFAULT_LAYER, CamExplainer, library_view  # noqa: E402
from explain.faithfulness import rank_correlation  # noqa: E402
from explain.lime_seg import DEFAULT_SAMPLES, KERNEL_SIZE, explain_slice  # noqa: E402
from explain.targets import Target, TargetSpec, resolve  # noqa: E402
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


def baseline_lime(predict, image, target, seed):
    """lime's defaults around ``predict`` (what a first user would write): (weights [H, W], segments)."""
    from lime import lime_image

    def classifier(rgb):
        score = target.mean_probability(predict(rgb[..., 0].astype(np.float32)))
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
    parser.add_argument("--baseline-slices", type=int, default=3,
                        help="slices of the set that lime's defaults run on (about 10 CPU-minutes per slice and "
                             "seed here; 0: none, no lime_speedup)")
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
        lesion_zs = [int(z) for z in np.flatnonzero(segmentation.mask.any(axis=(0, 1)))]
        demo_images = prepared.slices[lesion_zs]
        demo_brains = np.stack([geometry.to_model(prepared.brain_mask[:, :, k]) for k in lesion_zs])
        slices = lime_slice_set(segmenter, checkpoint.normalisation, demo_images, demo_brains,
                                segmenter.predict(demo_images, mirror=False), lesion_zs)
        result.update(lime_figures(args, slices, segmenter, model, device))
    if device.type == "cuda" and not args.skip_lime:
        _, seconds = timed(explain_slice, image, brain, target, segmenter.predict, num_samples=1000, seed=0)
        result["lime_gpu_1000_s"] = round(seconds, 3)
        print(f"LIME, 1000 samples on {torch.cuda.get_device_name()}: {seconds:.2f} s/slice")
    result.update(device=str(device), cpu_bf16=cpu_has_bf16(), torch=torch.__version__)
    print(json.dumps(result), flush=True)


HELD_OUT_CASES = {"small": 1_000_000, "medium": 1_000_003, "large": 1_000_012}  # 2.6, 11.7 and 70.3 ml: a
# small, a mid-sized and a large lesion among the 20 held-out synthetic cases (seeds 1000000-1000019)


@dataclass
class LimeSlice:
    """One slice LIME is scored on: a frozen target (the model's predicted mask there) on the model window."""

    case: str
    z: int
    image: np.ndarray
    brain: np.ndarray
    target: Target


def _two_slices(case: str, images: np.ndarray, brains: np.ndarray, probabilities: np.ndarray, zs: list[int]):
    """The slice of the largest predicted lesion and the one of the median predicted area (lesion slices only)."""
    areas = [(int((probabilities[i] > 0.5).sum()), z, i) for i, z in enumerate(zs)]
    areas = sorted(a for a in areas if a[0] >= 20)
    if not areas:
        return []
    chosen = {areas[-1], areas[len(areas) // 2]}
    return [LimeSlice(case, z, images[i].astype(np.float32), brains[i] > 0,
                      Target("predicted", (probabilities[i] > 0.5).astype(np.float32), f"{case}-{z}"))
            for _, z, i in sorted(chosen, key=lambda a: -a[0])]


def lime_slice_set(segmenter, normalisation: str, demo_images, demo_brains, demo_probabilities, demo_zs):
    """Eight lesion slices: two of the demo case and two of each held-out synthetic case (``HELD_OUT_CASES``)."""
    from xnet_core.preprocess import TEMPLATE_X0, TEMPLATE_Y0, SliceGeometry, template_brain_mask
    from xnet_core.training.cases import synthetic_volume_slices
    from xnet_core.training.synthetic import SHAPE

    chosen = _two_slices("demo", demo_images, demo_brains, demo_probabilities, demo_zs)
    brain = SliceGeometry(TEMPLATE_X0, TEMPLATE_Y0, SHAPE[:2]).to_model(template_brain_mask())
    for size, seed in HELD_OUT_CASES.items():
        case = synthetic_volume_slices(seed, normalisation)
        zs = [int(z) for z in np.flatnonzero(case.masks.reshape(len(case.masks), -1).any(axis=1))]
        images = case.slices[zs].astype(np.float32)
        probabilities = segmenter.predict(images, mirror=False)
        chosen += _two_slices(f"{size} {seed}", images, brain[zs], probabilities, zs)
    return chosen


def _stability(pair, shown: bool = True) -> float:
    """Spearman over the brain between two runs' maps: as shown (significant weights), or as lime fits them."""
    (first, _), (second, _) = pair
    if shown:
        return rank_correlation(first.weights, second.weights, first.segments > 0)
    return rank_correlation(first.raw_weights, second.raw_weights, first.segments > 0)


def lime_figures(args, slices: list[LimeSlice], segmenter, model, device) -> dict:
    """The shipped LIME's time and seed-to-seed stability on every slice; lime's defaults on a subset."""
    shipped, unfiltered, split_half, seconds = [], [], [], []
    for item in slices:
        pair = [timed(explain_slice, item.image, item.brain, item.target, segmenter.predict, seed=seed)
                for seed in (0, 1)]
        shipped.append(_stability(pair))
        unfiltered.append(_stability(pair, shown=False))
        split_half.append(pair[0][0].split_half)
        seconds += [t for _, t in pair]
        print(f"  {item.case:>15} z {item.z:3d} ({int(item.target.weights.sum()):5d} px): {pair[0][0].n_segments:2d} "
              f"superpixels ({pair[0][0].n_significant} significant), stability {shipped[-1]:.3f} (every weight "
              f"{unfiltered[-1]:.3f}), split-half {split_half[-1]:.3f}, "
              f"R^2 {pair[0][0].score:.3f}, {statistics.median(t for _, t in pair):.1f} s", flush=True)
    lime_ours = statistics.median(seconds)
    print(f"LIME shipped ({DEFAULT_SAMPLES} samples, quickshift kernel {KERNEL_SIZE}) on {len(slices)} slices: "
          f"stability median {statistics.median(shipped):.3f}, worst {min(shipped):.3f} (every weight, as lime fits "
          f"them: median {statistics.median(unfiltered):.3f}, worst {min(unfiltered):.3f}); {lime_ours:.1f} s/slice")
    result = {"lime_stability_median": round(statistics.median(shipped), 4), "lime_stability_worst": round(min(shipped), 4),
              "lime_split_half_median": round(statistics.median(split_half), 4), "slices": len(slices),
              "lime_stability_every_weight_median": round(statistics.median(unfiltered), 4),
              "lime_stability_every_weight_worst": round(min(unfiltered), 4),
              "slice_set": [f"{item.case} z{item.z}" for item in slices], "lime_shipped_s": round(lime_ours, 2),
              "lime_samples": DEFAULT_SAMPLES, "lime_kernel": KERNEL_SIZE,
              "lime_stability_per_slice": [round(v, 4) for v in shipped]}
    if args.baseline_slices:
        result.update(baseline_figures(args, slices[:: max(1, len(slices) // args.baseline_slices)][: args.baseline_slices],
                                       segmenter, model, device, lime_ours))
    for case in [c for c in args.study.split(",") if c.strip()]:
        kernel, samples = (float(v) for v in case.lower().split("x"))
        rhos = [_stability([timed(explain_slice, item.image, item.brain, item.target, segmenter.predict,
                                  num_samples=int(samples), kernel_size=kernel, seed=s) for s in (0, 1)])
                for item in slices]
        print(f"  study: kernel {kernel:g} x {int(samples):5d} samples -> stability median {statistics.median(rhos):.3f}, "
              f"worst {min(rhos):.3f}")
        result.setdefault("study", {})[case] = {"median": round(statistics.median(rhos), 4), "worst": round(min(rhos), 4)}
    return result


def baseline_figures(args, subset: list[LimeSlice], segmenter, model, device, lime_ours: float) -> dict:
    """lime's defaults: stability on ``subset`` around the shipped network pass (precision changes nothing
    measurable, and it keeps the baseline affordable); time with the plain fp32 model on the first slice."""
    stabilities = []
    for item in subset:
        pair = [baseline_lime(segmenter.predict, item.image, item.target, seed) for seed in (0, 1)]
        stabilities.append(rank_correlation(pair[0][0], pair[1][0], item.brain))
        print(f"  baseline {item.case:>15} z {item.z:3d}: {pair[0][1]} segments, stability {stabilities[-1]:.3f}", flush=True)

    def fp32(slices):
        with torch.no_grad():
            return torch.sigmoid(model(torch.from_numpy(slices)[:, None].to(device)))[:, 0].cpu().numpy()

    _, lime_base = timed(baseline_lime, fp32, subset[0].image, subset[0].target, 0)
    print(f"LIME baseline (lime's defaults: quickshift, 1000 samples, batch 10) on {len(subset)} slices: stability "
          f"median {statistics.median(stabilities):.3f}; fp32 {lime_base:.1f} s/slice -> shipped is "
          f"{lime_base / lime_ours:.2f}x faster")
    return {"lime_stability_baseline_median": round(statistics.median(stabilities), 4),
            "lime_baseline_slices": [f"{item.case} z{item.z}" for item in subset],
            "lime_speedup": round(lime_base / lime_ours, 3), "lime_baseline_s": round(lime_base, 2)}


if __name__ == "__main__":
    main()
