"""Segmenter vs the naive baseline on the demo volume (issue: foundation, "Speed").

Naive baseline: fp32, eager, channels-first, batch 8, every slice, BatchNorm unfolded; with test-time
mirroring (the default; ``--no-mirror`` turns it off on both sides) it runs the mirrored batch as a second
pass, so that both sides compute the same output.
Segmenter: as shipped (BN folded, bf16/fp16 where the hardware has it, channels-last, per-device
batch size, slices without brain skipped), requested slice first.

Both include preprocessing of the loaded volume. ``first_slice_s`` runs from the ``segment`` call
(model loaded and warmed up) until the requested slice's result arrives; the warm-up is reported
separately. On CUDA the Segmenter figure is the steady state over ``--volumes`` runs (>= 20).

Prints a human summary, then one JSON line (last line) with the keys the issue names.
Usage: python benchmarks/bench_inference.py [--weights CKPT] [--device auto] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xnet_core.assets import demo_scan_path  # noqa: E402
from xnet_core.checkpoint import load_checkpoint  # noqa: E402
from xnet_core.errors import AssetError  # noqa: E402
from xnet_core.inference import Segmentation, Segmenter, choose_device, cpu_has_bf16  # noqa: E402
from xnet_core.metrics import dice  # noqa: E402
from xnet_core.model import XNet  # noqa: E402
from xnet_core.preprocess import prepare  # noqa: E402
from xnet_core.volume import load_volume  # noqa: E402

NAIVE_BATCH = 8


def load_model(weights: str | None) -> tuple[XNet, str, str]:
    """The given or demo weights; a seeded random X-Net when no demo weights are bundled yet."""
    try:
        if weights:
            checkpoint = load_checkpoint(weights)
        else:
            from xnet_core.assets import demo_weights_path

            checkpoint = load_checkpoint(demo_weights_path())
        return checkpoint.build_model(), str(checkpoint.path), checkpoint.normalisation
    except AssetError:
        torch.manual_seed(0)
        return XNet().eval(), "random-init X-Net (seed 0; no demo weights bundled yet)", "robust"


def naive_segment(model: XNet, volume, device: torch.device, normalisation: str,
                  mirror: bool) -> tuple[np.ndarray, float]:
    """The baseline: every slice, fp32, channels-first, batch 8, plain eager PyTorch."""
    started = time.perf_counter()
    prepared = prepare(volume, normalisation)
    model = model.to(device)
    probs = np.empty(prepared.slices.shape, np.float32)
    with torch.no_grad():
        for start in range(0, prepared.n_slices, NAIVE_BATCH):
            batch = torch.from_numpy(prepared.slices[start:start + NAIVE_BATCH])[:, None].to(device)
            batch_probs = torch.sigmoid(model(batch))[:, 0]
            if mirror:
                batch_probs = (batch_probs + torch.sigmoid(model(batch.flip(-1)))[:, 0].flip(-1)) / 2
            probs[start:start + NAIVE_BATCH] = batch_probs.cpu().numpy()
    volume_probs = prepared.geometry.from_model(probs)
    return volume_probs, time.perf_counter() - started


def timed_segment(segmenter: Segmenter, volume, first: int) -> tuple[Segmentation, float, float]:
    """One Segmenter run; returns the result, wall time and time until slice ``first`` arrived."""
    arrived: dict[int, float] = {}
    started = time.perf_counter()
    result = segmenter.segment(volume, first=[first],
                               on_slice=lambda z, _: arrived.setdefault(z, time.perf_counter()))
    wall = time.perf_counter() - started
    return result, wall, arrived[first] - started


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux), so a phase's own peak can be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset (VmHWM), else since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batch_sweep(segmenter: Segmenter, slices: np.ndarray, sizes=(1, 2, 4, 8)) -> dict[int, float]:
    """Seconds per slice at each batch size, in the Segmenter's own precision and layout."""
    chosen = segmenter.batch_size
    timings = {}
    for size in sizes:
        segmenter.batch_size = size
        segmenter.predict(slices[:size])  # warm this shape
        started = time.perf_counter()
        segmenter.predict(slices)
        timings[size] = (time.perf_counter() - started) / len(slices)
    segmenter.batch_size = chosen
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="Segmenter runs on the CPU (median reported)")
    parser.add_argument("--volumes", type=int, default=20, help="steady-state volumes on a GPU")
    parser.add_argument("--no-sweep", action="store_true", help="skip the batch-size sweep")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false",
                        help="one pass per slice on both sides (no test-time mirroring)")
    args = parser.parse_args()

    device = choose_device(args.device)
    model, weights_label, normalisation = load_model(args.weights)
    volume = load_volume(demo_scan_path())
    n_slices = volume.shape[2]
    print(f"demo volume {volume.name} {volume.shape}, weights: {weights_label}")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"CPU bf16: {cpu_has_bf16()}")

    print(f"test-time mirroring: {'on' if args.mirror else 'off'} (both sides)")
    naive_probs, naive_s = naive_segment(model, volume, device, normalisation, args.mirror)
    naive_peak_mb = peak_rss_mb()
    model = model.cpu()
    rss_reset = reset_peak_rss()  # the Segmenter's own peak, not the baseline's batch-8 activations
    print(f"naive    : {naive_s:7.2f} s for {n_slices} slices ({n_slices / naive_s:6.2f} slices/s), "
          f"fp32 batch {NAIVE_BATCH}, channels-first")

    segmenter = Segmenter(model, device=device, normalisation=normalisation, mirror=args.mirror)
    warmup_s = segmenter.warm_up()
    middle = n_slices // 2
    n_runs = max(args.volumes, 1) if device.type == "cuda" else max(args.repeats, 1)
    walls, firsts, network_s = [], [], []
    for i in range(n_runs):  # keep only the first result: 20 full volumes would not fit the RSS target
        result, wall, first = timed_segment(segmenter, volume, first=middle + 7 * (i % 5))
        walls.append(wall)
        firsts.append(first)
        network_s.append(result.timings_s["inference"])
        if i == 0:
            seg_probs = result.probabilities
        del result
    model_only_s = statistics.median(network_s)
    segmenter_s = statistics.median(walls) if device.type != "cuda" else sum(walls) / len(walls)
    prepared = prepare(volume, normalisation)
    computed = int(prepared.brain_slices.sum())
    print(f"segmenter: {segmenter_s:7.2f} s per volume ({n_slices / segmenter_s:6.2f} slices/s), "
          f"{segmenter.precision} batch {segmenter.batch_size} channels-last, {computed}/{n_slices} slices "
          f"with brain; runs {', '.join(f'{w:.2f}' for w in walls)} s")
    print(f"  of which the network (no pre/post-processing): {model_only_s:.2f} s "
          f"({computed / model_only_s:.1f} brain slices/s)")
    print(f"first slice (z={middle}...): median {statistics.median(firsts):.3f} s "
          f"[{', '.join(f'{f:.3f}' for f in firsts)}], warm-up {warmup_s:.2f} s")

    segmenter_peak_mb = peak_rss_mb()
    brain = prepared.geometry.from_model(np.broadcast_to(
        prepared.brain_slices[:, None, None], prepared.slices.shape).astype(np.uint8)) > 0
    # Compared where both ran: the Segmenter leaves brain-free slices at 0 by design.
    agreement = dice((seg_probs >= 0.5) & brain, (naive_probs >= 0.5) & brain)
    max_diff = float(np.abs(seg_probs - naive_probs)[brain].max())
    print(f"output agreement on brain slices: mask Dice {agreement:.4f} (naive mask {int((naive_probs >= 0.5).sum())} voxels, "
          f"segmenter {int((seg_probs >= 0.5).sum())}); max |p diff| on brain slices {max_diff:.4f}")

    if not args.no_sweep:
        sizes = (1, 2, 4, 8) if device.type == "cpu" else (8, 16, 32, 64, 128)
        brain_slices = prepared.slices[prepared.brain_slices]
        sweep = batch_sweep(segmenter, brain_slices[:16] if device.type == "cpu" else brain_slices, sizes)
        print("batch sweep (s/slice): " + ", ".join(f"b{k} {v:.3f}" for k, v in sweep.items()))

    speedup = naive_s / segmenter_s
    print(f"peak RSS: whole process after the baseline {naive_peak_mb:.0f} MB; Segmenter phase "
          f"{segmenter_peak_mb:.0f} MB ({'own peak' if rss_reset else 'counter not resettable: process peak'})")
    print(f"speedup {speedup:.2f}x (target >= 3), first slice {statistics.median(firsts):.3f} s "
          f"(target <= 0.5), peak RSS {segmenter_peak_mb:.0f} MB (target <= 2048)")
    print(json.dumps({
        "naive_slices_per_s": round(n_slices / naive_s, 3),
        "segmenter_slices_per_s": round(n_slices / segmenter_s, 3),
        "speedup": round(speedup, 3),
        "first_slice_s": round(statistics.median(firsts), 4),
        "warmup_s": round(warmup_s, 3),
        "peak_rss_mb": round(segmenter_peak_mb, 1),
        "peak_rss_with_naive_mb": round(naive_peak_mb, 1),
        "precision": segmenter.precision,
        "mirror": segmenter.mirror,
        "mask_dice_vs_naive": round(agreement, 5),
        "network_slices_per_s": round(computed / model_only_s, 2),
        "device": str(device),
        "cpu_bf16": cpu_has_bf16(),
        "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
