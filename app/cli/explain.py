"""``xnet explain``: maps as NIfTI on the input's grid plus a JSON of per-slice and volume figures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from app.cli._common import (ProgressBar, add_common, add_scan, announce_lime, check_output, load_model,
                             parse_methods, placed_scan, provenance, write_json)
from xnet_core import DISCLAIMER

HELP = "Grad-CAM, Grad-CAM++, HiResCAM and LIME maps of the model's lesion score"
FAITHFULNESS_KEYS = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scan(parser)
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="where the maps and <stem>_explain.json go")
    parser.add_argument("--layer", default=None, metavar="NAME",
                        help="Grad-CAM target layer: fsm, decoders.0 ... decoders.3 (default decoders.1)")
    parser.add_argument("--lime-samples", type=int, default=None, metavar="N", help="LIME samples per slice")
    parser.add_argument("--lime-kernel", type=float, default=None, metavar="K",
                        help="LIME superpixel size: quickshift kernel (default 6, about 11 superpixels; 4: about 26)")
    parser.add_argument("--seed", type=int, default=0, help="LIME's segmentation and sampling seed")
    parser.add_argument("--reader", metavar="MASK", help="the reader's lesion mask: attention-vs-reader figures")
    parser.add_argument("--lesion", type=int, default=None, metavar="K",
                        help="explain lesion K of the lesion table alone (1 = the largest) on its slices; "
                             "maps go to <stem>_lesion<K>_<method>.nii.gz")
    parser.add_argument("--faithfulness", action="store_true",
                        help="deletion/insertion AUCs per map and the model-randomisation sanity check")
    add_common(parser, slices_default="lesion", methods=True)


def run(args: argparse.Namespace) -> int:
    from xnet_core.native import segment
    from xnet_core.reader_mask import load_reader_mask
    from xnet_core.slices import LESION, parse_slices

    from xnet_core.errors import XNetError

    methods = parse_methods(args)
    params = _params(args)
    if args.lesion is not None and args.lesion < 1:
        raise XNetError(f"--lesion counts from 1 (the largest lesion), not {args.lesion}.")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = scan_stem(args) + (f"_lesion{args.lesion}" if args.lesion is not None else "")
    outputs = {m: out_dir / f"{stem}_{m}.nii.gz" for m in methods}
    json_path = out_dir / f"{stem}_explain.json"
    for out in [*outputs.values(), json_path, *filter(None, [args.json])]:
        check_output(str(out), [args.input, args.reader or "", args.weights or ""])

    started = time.perf_counter()
    checkpoint, engine = load_model(args, explain=True)
    scan = placed_scan(args, str(engine.device))
    volume = scan.volume
    reader = load_reader_mask(args.reader, volume) if args.reader else None
    chosen = parse_slices(args.slices, volume.shape[2])
    whole = chosen == LESION or args.lesion is not None  # the lesion table needs every slice
    segmentation, on_template = segment(engine.segmenter, scan, slices=None if whole else chosen,
                                        on_progress=ProgressBar(f"segmenting {volume.name}"))
    context = engine.context(scan.model_volume, on_template)
    target, gate = _target(args, scan, segmentation)
    slices = _slices_to_explain(args, chosen, segmentation)
    if not slices:
        print(f"{volume.name}: no lesion predicted on any slice; nothing to explain (use --slices to choose).")
    if "lime" in methods:
        announce_lime(engine, scan, context, slices, params.lime_samples)
    results = _explain(engine, scan, context, slices, methods, params, gate, target)
    maps, per_slice = _collect(args, engine, context, volume, results, slices, methods, reader,
                               registered=scan.registration is not None)
    _save_maps(maps, outputs, volume, checkpoint)
    explained = {m: sorted(r.z for r in results if r.method == m and r.ok) for m in methods}
    summary = _summary(args, engine, scan, segmentation, methods, params, slices, outputs, maps, explained)
    if args.lesion is not None:
        summary["lesion"] = {"number": args.lesion, **segmentation.lesions[args.lesion - 1].as_dict()}
        summary["target"] = (f"lesion logit summed over lesion {args.lesion}'s voxels alone (the lesion table's "
                             "order, 1 = largest) on each of its slices")
    if reader is not None:
        _add_reader(summary, args, reader, volume, maps, explained, methods)
    _add_faithfulness(summary, args, engine, context, segmentation, params, methods, per_slice, explained,
                      registered=scan.registration is not None)
    summary.update({
        "per_slice": [per_slice[z] for z in slices],
        "warnings": volume.warnings + scan.warnings() + segmentation.warnings,
        "wall_s": round(time.perf_counter() - started, 2),
        **provenance(checkpoint),
    })
    write_json(json_path, summary)
    if args.json:
        write_json(args.json, summary)
    served = sum(r.source != "computed" for r in results if r.ok)
    print(f"{volume.name}: {sum(len(v) for v in explained.values())} map(s) on {len(slices)} slice(s) "
          f"({served} from the cache); written to {out_dir}. {DISCLAIMER}")
    return 0


def _params(args: argparse.Namespace):
    """``ExplainParams`` from ``--layer``, ``--lime-samples``, ``--lime-kernel`` and ``--seed``."""
    from explain.cam import DEFAULT_LAYER, check_layer
    from explain.engine import ExplainParams
    from explain.lime_seg import DEFAULT_SAMPLES, KERNEL_SIZE
    from xnet_core.errors import XNetError

    params = ExplainParams(layer=check_layer(args.layer or DEFAULT_LAYER),
                           lime_samples=args.lime_samples or DEFAULT_SAMPLES,
                           lime_kernel=args.lime_kernel or KERNEL_SIZE, seed=args.seed)
    if params.lime_samples < 10 or not 1 <= params.lime_kernel <= 20:
        raise XNetError("--lime-samples must be at least 10 and --lime-kernel between 1 and 20.")
    return params


def _target(args: argparse.Namespace, scan, segmentation) -> tuple:
    """(the target on the grid the model reads, the native mask that says which slices have one):
    the predicted mask, or with ``--lesion K`` lesion K alone."""
    from explain.native import lesion_target
    from explain.targets import TargetSpec

    if args.lesion is None:
        return TargetSpec(), segmentation.mask
    target, own, _ = lesion_target(scan, segmentation.mask, args.lesion)
    return target, own


def _slices_to_explain(args: argparse.Namespace, chosen, segmentation) -> list[int]:
    """``--slices`` as given; its default (lesion): the predicted lesion's slices, or lesion K's."""
    from xnet_core.slices import LESION

    if chosen != LESION:
        return chosen
    if args.lesion is not None:
        return segmentation.lesions[args.lesion - 1].slices
    return segmentation.lesion_slices


def _explain(engine, scan, context, slices, methods, params, native_mask, target) -> list:
    from explain.native import explain_slices

    return explain_slices(engine, scan, context, slices, methods, params,
                          on_progress=ProgressBar(f"explaining {scan.volume.name}", unit="model passes"),
                          native_mask=native_mask, target=target)


def _collect(args, engine, context, volume, results, slices, methods, reader, registered: bool) -> tuple[dict, dict]:
    """Each method's maps as volumes and the per-slice entries (agreement, faithfulness) of the JSON."""
    import numpy as np

    from explain import agreement

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
    return maps, per_slice


def _save_maps(maps: dict, outputs: dict, volume, checkpoint) -> None:
    import numpy as np

    from xnet_core.volume import save_like

    for method, path in outputs.items():
        save_like(maps[method], volume, path, checkpoint.nifti_descrip, np.float32)


def _summary(args, engine, scan, segmentation, methods, params, slices, outputs, maps, explained) -> dict:
    from explain.methods import METHOD_NAMES

    return {
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
        "precision": {m: engine.segmenter.precision if m == "lime" else "fp32" for m in methods},
        "lesion_volume_ml": round(segmentation.lesion_volume_ml, 4),
        "registration": scan.registration_summary(),
        "volume": {m: {"map_max": float(maps[m].max()), "map_min": float(maps[m].min())} for m in methods},
    }


def _add_reader(summary: dict, args, reader, volume, maps, explained, methods) -> None:
    from explain import agreement

    summary["reader"] = {"path": str(args.reader), "resampled": reader.resampled, "notes": reader.notes,
                         "volume_ml": round(float(reader.mask.sum()) * volume.voxel_volume_ml, 4)}
    for m in methods:
        summary["volume"][m]["agreement"] = agreement.per_volume(maps[m], reader.mask, explained[m]).as_dict()


def _add_faithfulness(summary: dict, args, engine, context, segmentation, params, methods, per_slice, explained,
                      registered: bool) -> None:
    """With ``--faithfulness``: the randomisation check and each method's mean deletion/insertion AUCs."""
    import numpy as np

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
                    key: round(float(np.mean([f[key] for f in figures])), 4) for key in FAITHFULNESS_KEYS}


def scan_stem(args: argparse.Namespace) -> str:
    """docs/design.md's ``<stem>``: the file name without .nii/.nii.gz, or the folder plus ``_s<SeriesNumber>``."""
    from xnet_core.nifti import file_stem

    if not Path(args.input).is_dir():
        return file_stem(args.input)
    from xnet_core.dicom import pick_series, series_stem

    return series_stem(Path(args.input), pick_series(args.input, args.series))


def _randomisation(engine, context, segmentation, params, methods) -> dict:
    """The sanity check on the slice with the largest predicted lesion area (Grad-CAM methods)."""
    import numpy as np

    from explain.methods import CAM_METHODS

    if not set(CAM_METHODS) & set(methods) or not segmentation.lesion_slices:
        return {"status": "not run (needs a CAM method and a predicted lesion)"}
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
