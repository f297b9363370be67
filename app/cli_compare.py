"""``xnet compare``: the model against the reader's mask (Dice ... lesion F1, volumes, lesions only one
of them found) and the model's attention against it (energy inside, pointing game, Otsu IoU)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from app.comparison import lesion_slices, rounded, slice_comparison, volume_comparison
from xnet_core import DISCLAIMER, __version__


def run(args: argparse.Namespace, progress_bar, write_json, check_output) -> int:
    from explain.engine import ExplainParams, ExplanationEngine
    from explain.methods import check_methods
    from xnet_core.assets import demo_weights_path
    from xnet_core.checkpoint import load_checkpoint
    from xnet_core.reader_mask import load_reader_mask
    from xnet_core.slices import LESION, parse_slices
    from app.cli import placed_scan
    from explain.native import explain_slices
    from xnet_core.native import segment

    methods = check_methods(m.strip() for m in args.methods.split(",") if m.strip())
    check_output(args.json, [args.input, args.reader, args.weights or ""])
    started = time.perf_counter()
    checkpoint = load_checkpoint(args.weights or demo_weights_path())
    engine = ExplanationEngine(checkpoint, device=args.device, fp32=args.fp32, threshold=args.threshold,
                               use_cache=not args.no_cache, mirror=args.mirror)
    scan = placed_scan(args, str(engine.device))
    volume = scan.volume
    reader = load_reader_mask(args.reader, volume)
    chosen = parse_slices(args.slices, volume.shape[2])
    # Dice and lesion F1 are whole-volume figures: the model always runs on every slice.
    segmentation, on_template = segment(engine.segmenter, scan,
                                        on_progress=progress_bar(f"segmenting {volume.name}"))
    model_mask, reader_mask = segmentation.mask, reader.mask
    slices = lesion_slices(model_mask, reader_mask) if chosen == LESION else chosen
    params = ExplainParams()
    results = explain_slices(engine, scan, engine.context(scan.model_volume, on_template), slices, methods, params,
                             on_progress=progress_bar(f"explaining {volume.name}", unit="model passes"),
                             native_mask=segmentation.mask)

    maps = {m: np.zeros(volume.shape, np.float32) for m in methods}
    status: dict[int, dict[str, str]] = {z: {} for z in slices}
    for result in results:
        status[result.z][result.method] = result.status
        if result.ok:
            maps[result.method][:, :, result.z] = result.map
    explained = {m: sorted(z for z in slices if status[z].get(m) == "ok") for m in methods}
    figures = volume_comparison(volume, model_mask, reader_mask, maps, explained)
    for m in methods:  # the contract lists every asked method, computed or not
        figures["attention"].setdefault(m, {"energy_in_mask": None, "pointing_hit": None, "otsu_iou": None})
    summary = {
        **figures,
        "slices": [slice_comparison(volume, z, model_mask[:, :, z], reader_mask[:, :, z],
                                    {m: maps[m][:, :, z] for m in methods}, status[z]) for z in slices],
        "input": str(args.input),
        "reader": {"path": str(args.reader), "resampled": reader.resampled, "notes": reader.notes},
        "threshold": args.threshold,
        "mirror": engine.segmenter.mirror,  # of the segmentation; the maps explain the single pass
        "registration": scan.registration_summary(),
        "methods": methods,
        "params": {m: params.for_method(m) for m in methods},
        "target": "lesion logit summed over the model's predicted mask on each slice",
        "device": str(engine.device),
        "warnings": volume.warnings + scan.warnings() + segmentation.warnings,
        "wall_s": round(time.perf_counter() - started, 2),
        "disclaimer": DISCLAIMER,
        **checkpoint.provenance(),
        "version": __version__,
    }
    write_json(args.json, rounded(summary))
    both = " (both empty)" if figures["both_empty"] else ""
    print(f"{volume.name}: Dice {figures['dice']:.3f}{both}, model {figures['model_volume_ml']:.2f} ml, "
          f"reader {figures['reader_volume_ml']:.2f} ml, {len(summary['model_only_lesions'])} model-only and "
          f"{len(summary['reader_only_lesions'])} reader-only lesion(s); written to {args.json}. {DISCLAIMER}")
    return 0
