"""``xnet explain``: maps as NIfTI on the input's grid plus a JSON of per-slice and volume figures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from xnet_core import DISCLAIMER, __version__

FEW_LIME_SLICES = 3  # beyond this, say how long LIME will take before starting


def run(args: argparse.Namespace, progress_bar, write_json, check_output) -> int:
    from explain import agreement
    from explain.cam import DEFAULT_LAYER, check_layer
    from explain.engine import ExplainParams, ExplanationEngine
    from explain.methods import METHOD_NAMES, check_methods
    from explain.lime_seg import DEFAULT_SAMPLES, KERNEL_SIZE
    from xnet_core.assets import demo_weights_path
    from xnet_core.checkpoint import load_checkpoint
    from xnet_core.errors import XNetError
    from xnet_core.reader_mask import load_reader_mask
    from xnet_core.slices import LESION, parse_slices
    from app.cli import placed_scan
    from explain.native import explain_slices
    from xnet_core.native import segment
    from xnet_core.volume import save_like

    methods = check_methods(m.strip() for m in args.methods.split(",") if m.strip())
    params = ExplainParams(layer=check_layer(args.layer or DEFAULT_LAYER),
                           lime_samples=args.lime_samples or DEFAULT_SAMPLES,
                           lime_kernel=args.lime_kernel or KERNEL_SIZE, seed=args.seed)
    if params.lime_samples < 10 or not 1 <= params.lime_kernel <= 20:
        raise XNetError("--lime-samples must be at least 10 and --lime-kernel between 1 and 20.")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = scan_stem(args)
    outputs = {m: out_dir / f"{stem}_{m}.nii.gz" for m in methods}
    json_path = out_dir / f"{stem}_explain.json"
    for out in [*outputs.values(), json_path, *filter(None, [args.json])]:
        check_output(str(out), [args.input, args.reader or "", args.weights or ""])

    started = time.perf_counter()
    checkpoint = load_checkpoint(args.weights or demo_weights_path())
    engine = ExplanationEngine(checkpoint, device=args.device, fp32=args.fp32, threshold=args.threshold,
                               use_cache=not args.no_cache, mirror=args.mirror)
    scan = placed_scan(args, str(engine.device))
    volume = scan.volume
    reader = load_reader_mask(args.reader, volume) if args.reader else None
    chosen = parse_slices(args.slices, volume.shape[2])
    segmentation, on_template = segment(engine.segmenter, scan, slices=None if chosen == LESION else chosen,
                                        on_progress=progress_bar(f"segmenting {volume.name}"))
    context = engine.context(scan.model_volume, on_template)
    registered = scan.registration is not None
    slices = segmentation.lesion_slices if chosen == LESION else chosen
    if not slices:
        print(f"{volume.name}: no lesion predicted on any slice; nothing to explain (use --slices to choose).")
    if "lime" in methods and len(slices) > FEW_LIME_SLICES:
        per_sample = seconds_per_sample(engine, context)
        model_slices = len(scan.template_slices(slices))  # a registered scan's slice crosses several
        minutes = per_sample * params.lime_samples * model_slices / 60
        print(f"LIME on {len(slices)} slices x {params.lime_samples} samples: about {minutes:.0f} min "
              f"on {engine.device.type} (maps already in the cache are not recomputed).", flush=True)
    results = explain_slices(engine, scan, context, slices, methods, params,
                             on_progress=progress_bar(f"explaining {volume.name}", unit="model passes"),
                             native_mask=segmentation.mask)

    maps = {m: np.zeros(volume.shape, np.float32) for m in methods}
    per_slice: dict[int, dict] = {z: {"z": z, "methods": {}} for z in slices}
    for result in sorted(results, key=lambda r: (r.z, methods.index(r.method))):
        entry = result.summary()
        if result.ok:
            maps[result.method][:, :, result.z] = result.map
            if reader is not None:
                entry["agreement"] = agreement.agreement(result.map, reader.mask[:, :, result.z]).as_dict()
            if args.faithfulness and not registered:
                entry["faithfulness"] = _rounded(engine.faithfulness(context, result, seed=args.seed))
        per_slice[result.z]["methods"][result.method] = entry
    descrip = f"xnet {checkpoint.short_hash} research use only"
    for method, path in outputs.items():
        save_like(maps[method], volume, path, descrip, np.float32)

    explained = {m: sorted(r.z for r in results if r.method == m and r.ok) for m in methods}
    summary = {
        "input": str(args.input),
        "maps": {m: str(p) for m, p in outputs.items()},
        "methods": {m: METHOD_NAMES[m] for m in methods},
        "slices": slices,
        "slices_explained": explained,
        "target": "lesion logit summed over the model's predicted mask on each slice",
        "params": {m: params.for_method(m) for m in methods},
        "threshold": args.threshold,
        "mirror": engine.segmenter.mirror,  # of the segmentation; the maps explain the single pass
        "device": str(engine.device),
        "precision": {"gradcam": "fp32", "gradcampp": "fp32", "lime": engine.segmenter.precision},
        "lesion_volume_ml": round(segmentation.lesion_volume_ml, 4),
        "registration": scan.registration_summary(),
        "volume": {m: {"map_max": float(maps[m].max()), "map_min": float(maps[m].min())} for m in methods},
    }
    if reader is not None:
        summary["reader"] = {"path": str(args.reader), "resampled": reader.resampled, "notes": reader.notes,
                             "volume_ml": round(float(reader.mask.sum()) * volume.voxel_volume_ml, 4)}
        for m in methods:
            summary["volume"][m]["agreement"] = agreement.per_volume(maps[m], reader.mask, explained[m]).as_dict()
    if args.faithfulness and registered:
        summary["faithfulness"] = ("not computed: deletion/insertion curves perturb model-input pixels, which "
                                   "a registered scan's native slices are not; open the scan on the template grid")
    elif args.faithfulness:
        summary["randomisation"] = _randomisation(engine, context, segmentation, params, methods)
        for m in methods:
            figures = [per_slice[z]["methods"][m].get("faithfulness") for z in explained[m]]
            figures = [f for f in figures if f and "deletion_auc" in f]
            if figures:
                summary["volume"][m]["faithfulness"] = {
                    key: round(float(np.mean([f[key] for f in figures])), 4)
                    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")}
    summary.update({
        "per_slice": [per_slice[z] for z in slices],
        "warnings": volume.warnings + scan.warnings() + segmentation.warnings,
        "wall_s": round(time.perf_counter() - started, 2),
        "disclaimer": DISCLAIMER,
        **checkpoint.provenance(),
        "version": __version__,
    })
    write_json(json_path, summary)
    if args.json:
        write_json(args.json, summary)
    served = sum(r.source != "computed" for r in results if r.ok)
    print(f"{volume.name}: {sum(len(v) for v in explained.values())} map(s) on {len(slices)} slice(s) "
          f"({served} from the cache); written to {out_dir}. {DISCLAIMER}")
    return 0


def scan_stem(args: argparse.Namespace) -> str:
    """DESIGN.md's ``<stem>``: the file name without .nii/.nii.gz, or the folder plus ``_s<SeriesNumber>``."""
    from xnet_core.nifti import file_stem

    if not Path(args.input).is_dir():
        return file_stem(args.input)
    from xnet_core.dicom import pick_series, series_stem

    return series_stem(Path(args.input), pick_series(args.input, args.series))


def seconds_per_sample(engine, context) -> float:
    """Time a few forward passes on a real slice (the first pays for start-up, so it is not counted)."""
    z = int(np.argmax(context.segmentation.slice_area_mm2))
    batch = np.repeat(context.model_input.slices[z:z + 1], 4, axis=0)
    engine.network_predict(batch[:1])
    started = time.perf_counter()
    engine.network_predict(batch)
    return (time.perf_counter() - started) / len(batch)


def _randomisation(engine, context, segmentation, params, methods) -> dict:
    """The sanity check on the slice with the largest predicted lesion area (Grad-CAM methods)."""
    if not {"gradcam", "gradcampp"} & set(methods) or not segmentation.lesion_slices:
        return {"status": "not run (needs Grad-CAM or Grad-CAM++ and a predicted lesion)"}
    z = int(np.argmax(segmentation.slice_area_mm2))
    steps = engine.randomisation(context, z, params)
    return {"z": z, "layer": params.layer, "cascade": [
        {"randomised_down_to": s["randomised_down_to"],
         "spearman": {m: round(v, 4) for m, v in s["spearman"].items() if m in methods}} for s in steps]}


def _rounded(figures: dict) -> dict:
    out = {}
    for key, value in figures.items():
        if isinstance(value, float):
            out[key] = round(value, 4)
        elif isinstance(value, dict):
            out[key] = {k: ([round(x, 4) for x in v] if isinstance(v, list) else round(v, 4)) for k, v in value.items()}
        else:
            out[key] = value
    return out
