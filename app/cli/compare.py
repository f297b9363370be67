"""``xnet compare``: the model against the reader's mask (Dice ... lesion F1, volumes, lesions only one
of them found) and the model's attention against it (energy inside, pointing game, Otsu IoU)."""

from __future__ import annotations

import argparse
import time

from app.cli._common import (ProgressBar, add_common, add_scan, check_output, load_model, parse_methods,
                             placed_scan, provenance, write_json)
from xnet_core import DISCLAIMER

HELP = "the model and its attention against the reader's lesion mask"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scan(parser)
    parser.add_argument("--reader", required=True, metavar="MASK", help="the reader's lesion mask (NIfTI)")
    add_common(parser, slices_default="lesion", methods=True, methods_default="gradcam,gradcampp",
               json_required=True)


def run(args: argparse.Namespace) -> int:
    from app.comparison import lesion_slices, rounded, volume_comparison
    from explain.engine import ExplainParams
    from explain.native import explain_slices
    from xnet_core.native import segment
    from xnet_core.reader_mask import load_reader_mask
    from xnet_core.slices import LESION, parse_slices

    methods = parse_methods(args)
    check_output(args.json, [args.input, args.reader, args.weights or ""])
    started = time.perf_counter()
    checkpoint, engine = load_model(args, explain=True)
    scan = placed_scan(args, str(engine.device))
    volume = scan.volume
    reader = load_reader_mask(args.reader, volume)
    chosen = parse_slices(args.slices, volume.shape[2])
    # Dice and lesion F1 are whole-volume figures: the model always runs on every slice.
    segmentation, on_template = segment(engine.segmenter, scan,
                                        on_progress=ProgressBar(f"segmenting {volume.name}"))
    model_mask, reader_mask = segmentation.mask, reader.mask
    slices = lesion_slices(model_mask, reader_mask) if chosen == LESION else chosen
    params = ExplainParams()
    results = explain_slices(engine, scan, engine.context(scan.model_volume, on_template), slices, methods, params,
                             on_progress=ProgressBar(f"explaining {volume.name}", unit="model passes"),
                             native_mask=segmentation.mask)
    maps, status = _maps(volume, results, slices, methods)
    explained = {m: sorted(z for z in slices if status[z].get(m) == "ok") for m in methods}
    figures = volume_comparison(volume, model_mask, reader_mask, maps, explained)
    for m in methods:  # the contract lists every asked method, computed or not
        figures["attention"].setdefault(m, {"energy_in_mask": None, "pointing_hit": None, "otsu_iou": None})
    summary = {
        **figures,
        "slices": _slice_figures(volume, slices, model_mask, reader_mask, maps, status, methods),
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
        **provenance(checkpoint),
    }
    write_json(args.json, rounded(summary))
    both = " (both empty)" if figures["both_empty"] else ""
    print(f"{volume.name}: Dice {figures['dice']:.3f}{both}, model {figures['model_volume_ml']:.2f} ml, "
          f"reader {figures['reader_volume_ml']:.2f} ml, {len(summary['model_only_lesions'])} model-only and "
          f"{len(summary['reader_only_lesions'])} reader-only lesion(s); written to {args.json}. {DISCLAIMER}")
    return 0


def _maps(volume, results, slices: list[int], methods) -> tuple[dict, dict[int, dict[str, str]]]:
    """Each method's maps as volumes (zero where not computed) and each slice's status per method."""
    import numpy as np

    maps = {m: np.zeros(volume.shape, np.float32) for m in methods}
    status: dict[int, dict[str, str]] = {z: {} for z in slices}
    for result in results:
        status[result.z][result.method] = result.status
        if result.ok:
            maps[result.method][:, :, result.z] = result.map
    return maps, status


def _slice_figures(volume, slices, model_mask, reader_mask, maps, status, methods) -> list[dict]:
    from app.comparison import slice_comparison

    return [slice_comparison(volume, z, model_mask[:, :, z], reader_mask[:, :, z],
                             {m: maps[m][:, :, z] for m in methods}, status[z]) for z in slices]
