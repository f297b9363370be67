"""The ``xnet`` command. Each subcommand imports what it needs lazily, so ``xnet segment``
never loads Qt. Bad input: exit status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from xnet_core import DISCLAIMER, __version__
from xnet_core.atomic import write_json_atomic

EXIT_BAD_INPUT = 2


def _add_common(parser: argparse.ArgumentParser, slices: bool = True, slices_default: str = "all",
                methods: bool = False, methods_default: str = "gradcam,gradcampp,lime",
                json_required: bool = False) -> None:
    """The options DESIGN.md's Contracts give the same spelling and meaning everywhere."""
    parser.add_argument("--weights", metavar="CKPT", help="X-Net checkpoint (default: the shipped demo weights)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--fp32", action="store_true", help="full precision instead of bf16/fp16")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold of the mask")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false",
                        help="score each slice once instead of averaging it with its left-right mirror image "
                             "(twice as fast; the demo model's figures are with mirroring)")
    if slices:
        parser.add_argument("--slices", default=slices_default, metavar="lesion|all|A:B|z,z,...",
                            help=f"0-based axial slices of the RAS volume; A:B is inclusive (default {slices_default})")
    if methods:
        parser.add_argument("--methods", default=methods_default, metavar="gradcam,gradcampp,lime",
                            help=f"explanation methods (default {methods_default})")
    parser.add_argument("--json", metavar="OUT", required=json_required, help="write a JSON summary here")


def _add_scan(parser: argparse.ArgumentParser) -> None:
    """INPUT and the options of commands that read one scan (registered when off the template grid)."""
    parser.add_argument("input", metavar="INPUT", help="NIfTI scan (.nii/.nii.gz) or a folder of DICOM files")
    parser.add_argument("--series", metavar="UID|NUMBER", help="the DICOM series, when a folder holds several")
    parser.add_argument("--volume", type=int, default=None, metavar="K",
                        help="volume of a 4D file or series (default: the first)")
    parser.add_argument("--save-transform", metavar="OUT.json|OUT.tfm",
                        help="save the scan-to-template registration (JSON: RAS matrices; .tfm: ITK)")
    parser.add_argument("--no-cache", action="store_true",
                        help="neither read nor write the registration and explanation caches")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnet", description=f"X-Net stroke-lesion segmentation. {DISCLAIMER}"
    )
    parser.add_argument("--version", action="version", version=f"xnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    segment = commands.add_parser("segment", help="segment a scan slice by slice")
    _add_scan(segment)
    segment.add_argument("-o", "--output", required=True, metavar="MASK.nii.gz", help="lesion mask to write")
    segment.add_argument("--prob", metavar="PROB.nii.gz", help="also write the probability map")
    _add_common(segment)
    segment.set_defaults(handler=_segment)

    explain = commands.add_parser("explain", help="Grad-CAM, Grad-CAM++ and LIME maps of the model's lesion score")
    _add_scan(explain)
    explain.add_argument("--out-dir", required=True, metavar="DIR", help="where the maps and <stem>_explain.json go")
    explain.add_argument("--layer", default=None, metavar="NAME",
                         help="Grad-CAM target layer: fsm, decoders.0 ... decoders.3 (default decoders.1)")
    explain.add_argument("--lime-samples", type=int, default=None, metavar="N", help="LIME samples per slice")
    explain.add_argument("--lime-kernel", type=float, default=None, metavar="K",
                         help="LIME superpixel size: quickshift kernel (default 6, about 11 superpixels; 4: about 26)")
    explain.add_argument("--seed", type=int, default=0, help="LIME's segmentation and sampling seed")
    explain.add_argument("--reader", metavar="MASK", help="the reader's lesion mask: attention-vs-reader figures")
    explain.add_argument("--faithfulness", action="store_true",
                         help="deletion/insertion AUCs per map and the model-randomisation sanity check")
    _add_common(explain, slices_default="lesion", methods=True)
    explain.set_defaults(handler=_explain)

    compare = commands.add_parser("compare", help="the model and its attention against the reader's lesion mask")
    _add_scan(compare)
    compare.add_argument("--reader", required=True, metavar="MASK", help="the reader's lesion mask (NIfTI)")
    _add_common(compare, slices_default="lesion", methods=True, methods_default="gradcam,gradcampp",
                json_required=True)
    compare.set_defaults(handler=_compare)

    report = commands.add_parser("report", help="PDF report: summary page and the four panels of each slice")
    _add_scan(report)
    report.add_argument("--pdf", required=True, metavar="OUT.pdf", help="the report to write")
    report.add_argument("--reader", metavar="MASK", help="the reader's lesion mask: outlines and agreement")
    report.add_argument("--notes", metavar="NOTES.json", help="the reader's notes (the viewer's sidecar)")
    report.add_argument("--identify", action="store_true",
                        help="print patient identifiers (from DICOM headers only; never by default)")
    _add_common(report, slices_default="lesion", methods=True)
    report.set_defaults(handler=_report)

    synth = commands.add_parser("synth", help="write synthetic chronic-stroke cases (ATLAS R2.0 layout)")
    synth.add_argument("--n", type=int, required=True, help="number of cases")
    synth.add_argument("--seed", type=int, default=0, help="case k uses seed S + k")
    synth.add_argument("--out", required=True, metavar="DIR")
    synth.set_defaults(handler=_synth)

    evaluate = commands.add_parser("evaluate", help="score a model on ATLAS-layout scans with masks")
    evaluate.add_argument("--data", required=True, metavar="DIR", help="ATLAS R1.1/R1.2/R2.0 (or xnet synth) folder")
    evaluate.add_argument("--csv", metavar="OUT.csv", help="per-subject figures")
    evaluate.add_argument("--limit", type=int, help="only the first N scans")
    _add_common(evaluate, slices=False)
    evaluate.set_defaults(handler=_evaluate)

    train = commands.add_parser("train", help="train X-Net (paper recipe; synthetic cases unless --data)")
    train.add_argument("--out", required=True, metavar="DIR", help="where best.pt and last.pt go")
    train.add_argument("--data", metavar="DIR", help="an ATLAS copy (default: synthetic cases)")
    train.add_argument("--fold", type=int, default=0, help="validation fold of --data (0-4)")
    train.add_argument("--split", choices=("paper", "patient"), default="paper")
    train.add_argument("--train-cases", type=int, default=200, help="synthetic training cases in the pool")
    train.add_argument("--small-cases", type=int, default=0, metavar="N",
                       help="add N synthetic training cases with under 1.17 ml of lesion (the ATLAS lower "
                            "quartile), from the seeds after --train-cases (default 0: ATLAS sizes only)")
    train.add_argument("--val-cases", type=int, default=3, help="synthetic validation cases")
    train.add_argument("--steps-per-epoch", type=int, default=500)
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--batch", type=int, default=8)
    train.add_argument("--lr", type=float, default=1e-3,
                       help="Adam learning rate (the paper's 1e-3; lower it to fine-tune --init weights)")
    train.add_argument("--crop", metavar="HxW", help="random crops, sides divisible by 16 (CPU-friendly)")
    train.add_argument("--lesion-fraction", type=float, default=0.5, help="share of lesion slices sampled")
    train.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU")
    train.add_argument("--size-balance", type=float, default=0.0, metavar="A",
                       help="draw training cases with probability proportional to (lesion voxels)^-A: "
                            "more small lesions per batch (default 0: every case alike)")
    train.add_argument("--slice-dice", type=float, default=0.0, metavar="W",
                       help="add W x (1 - mean soft Dice of the lesion slices) to the paper's loss: small "
                            "lesions weigh as much as large ones (default 0: the paper's loss)")
    train.add_argument("--augment", action="store_true",
                       help="draw a new rotation, scale, gamma, contrast, blur and noise for every training "
                            "slice (default: left-right flips only; the paper has none)")
    train.add_argument("--workers", type=int, default=1, help="processes preparing synthetic cases")
    train.add_argument("--start-after", type=int, default=0, metavar="N",
                       help="start once N synthetic training cases are ready; the rest join the pool as "
                            "they are prepared (keeps a GPU busy; not reproducible step for step)")
    train.add_argument("--max-minutes", type=float, help="stop resumably after this long")
    train.add_argument("--resume", action="store_true", help="continue from the saved state")
    train.add_argument("--init", metavar="CKPT", help="start from these weights (e.g. the shipped demo model)")
    train.add_argument("--precise-bn", type=int, default=0, metavar="BATCHES",
                       help="re-estimate BatchNorm statistics on whole slices before each validation")
    train.add_argument("--keep-epochs", action="store_true",
                       help="also write epoch-N.pt after each epoch (to choose among or average with xnet average)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    train.set_defaults(handler=_train)

    average = commands.add_parser(
        "average", help="average checkpoints of one training run (SWA) and re-estimate BatchNorm")
    average.add_argument("checkpoints", nargs="+", metavar="CKPT", help="two or more checkpoints, e.g. epoch-*.pt")
    average.add_argument("--out", required=True, metavar="OUT.pt", help="the averaged checkpoint (with its card)")
    average.add_argument("--precise-bn", type=int, default=50, metavar="BATCHES",
                         help="whole-slice batches that re-estimate the BatchNorm statistics (default 50)")
    average.add_argument("--batch", type=int, default=8)
    average.add_argument("--data", metavar="DIR", help="an ATLAS copy: its training fold re-estimates BatchNorm")
    average.add_argument("--fold", type=int, default=0, help="validation fold of --data (0-4)")
    average.add_argument("--split", choices=("paper", "patient"), default="paper")
    average.add_argument("--train-cases", type=int, default=60, help="synthetic cases for BatchNorm (without --data)")
    average.add_argument("--lesion-fraction", type=float, default=0.6, help="share of lesion slices sampled")
    average.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU")
    average.add_argument("--seed", type=int, default=0)
    average.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    average.set_defaults(handler=_average)
    return parser


class _ProgressBar:
    """``on_progress(done, total)`` drawn on stderr: redrawn in place on a terminal, else one line."""

    def __init__(self, label: str, unit: str = "slices", stream=None) -> None:
        stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced since import
        self.label, self.unit, self.stream, self.started = label, unit, stream, time.perf_counter()
        self.interactive = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.interactive and done < total:
            return
        width = 30
        filled = width * done // max(total, 1)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (total - done) if done else 0.0
        line = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {self.unit}, ETA {eta:4.0f} s"
        self.stream.write(("\r" if self.interactive else "") + line + ("\n" if done >= total else ""))
        self.stream.flush()


def _check_output(path: str, inputs: list[str]) -> None:
    from xnet_core.errors import XNetError

    out = Path(path)
    if not out.parent.is_dir():
        raise XNetError(f"{out}: the folder {out.parent} does not exist; create it or choose another output.")
    if any(out.resolve() == Path(p).resolve() for p in inputs):
        raise XNetError(f"{out}: is an input file; input files are never overwritten, choose another name.")


def placed_scan(args: argparse.Namespace, device: str):
    """Load INPUT (file or DICOM folder) and register it when it is off the template grid; honours
    ``--series``, ``--volume``, ``--save-transform`` and ``--no-cache``. Shared by the scan commands."""
    from xnet_core.errors import XNetError
    from xnet_core.native import place
    from xnet_core.volume import load_volume

    if args.save_transform:
        from xnet_core.registration import check_transform_path

        _check_output(args.save_transform, [args.input])
        check_transform_path(args.save_transform)
    volume = load_volume(args.input, args.volume, series=args.series)
    scan = place(volume, device=device, use_cache=not args.no_cache,
                 on_progress=_ProgressBar(f"registering {volume.name} to the template", unit="steps"))
    if args.save_transform:
        if scan.registration is None:
            why = scan.not_registered or "it is already on the template grid"
            raise XNetError(f"--save-transform: {volume.name} was not registered ({why}); there is no "
                            "transform to save.")
        scan.registration.save_transform(args.save_transform, volume.name)
    return scan


def _segment(args: argparse.Namespace) -> int:
    import numpy as np

    from xnet_core.assets import demo_weights_path
    from xnet_core.checkpoint import load_checkpoint
    from xnet_core.inference import Segmenter
    from xnet_core.native import segment
    from xnet_core.slices import LESION, parse_slices
    from xnet_core.volume import save_like

    for out in filter(None, (args.output, args.prob, args.json)):
        _check_output(out, [args.input, args.weights or ""])
    started = time.perf_counter()
    checkpoint = load_checkpoint(args.weights or demo_weights_path())
    segmenter = Segmenter(checkpoint.build_model(), device=args.device, fp32=args.fp32,
                          normalisation=checkpoint.normalisation, threshold=args.threshold, mirror=args.mirror)
    scan = placed_scan(args, str(segmenter.device))
    volume = scan.volume
    load_s = time.perf_counter() - started
    chosen = parse_slices(args.slices, volume.shape[2])
    result, _ = segment(segmenter, scan, slices=None if chosen == LESION else chosen,
                        on_progress=_ProgressBar(f"segmenting {volume.name}"))
    started = time.perf_counter()
    descrip = f"xnet {checkpoint.short_hash} research use only"
    save_like(result.mask, volume, args.output, descrip, np.uint8)
    if args.prob:
        save_like(result.probabilities, volume, args.prob, descrip, np.float32)
    write_s = time.perf_counter() - started
    summary = {
        "input": str(args.input),
        "mask": str(args.output),
        "probabilities": args.prob,
        "lesion_volume_ml": round(result.lesion_volume_ml, 4),
        "n_lesions": result.n_lesions,
        "lesion_slices": result.lesion_slices,
        "lesions": [lesion.as_dict() for lesion in result.lesions],
        "slices_requested": len(result.requested_slices),
        "slices_computed": len(result.computed_slices),
        "threshold": result.threshold,
        "mirror": result.mirror,
        "device": result.device,
        "precision": result.precision,
        "batch_size": result.batch_size,
        "normalisation": checkpoint.normalisation,
        "registration": scan.registration_summary(),
        "timings_s": {"load": round(load_s, 4),  # registration included (see "registration")
                      **{k: round(v, 4) for k, v in result.timings_s.items()}, "write": round(write_s, 4)},
        "warnings": volume.warnings + scan.warnings() + result.warnings,
        "disclaimer": DISCLAIMER,
        **checkpoint.provenance(),
        "version": __version__,
    }
    if args.json:
        summary["timings_s"]["write"] = round(time.perf_counter() - started, 4)
        write_json_atomic(args.json, summary)
    for warning in scan.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{volume.name}: {result.n_lesions} lesion(s), {result.lesion_volume_ml:.2f} ml "
          f"on {len(result.lesion_slices)} slice(s); mask written to {args.output}. {DISCLAIMER}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from app.cli_explain import run

    return run(args, _ProgressBar, write_json_atomic, _check_output)


def _compare(args: argparse.Namespace) -> int:
    from app.cli_compare import run

    return run(args, _ProgressBar, write_json_atomic, _check_output)


def _report(args: argparse.Namespace) -> int:
    from app.cli_report import run

    return run(args, _ProgressBar, write_json_atomic, _check_output)


def _synth(args: argparse.Namespace) -> int:
    from xnet_core.errors import XNetError
    from xnet_core.training.synthetic import make_case, write_case

    if args.n < 1:
        raise XNetError(f"--n {args.n}: give at least one case.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = _ProgressBar("synthesising", unit="cases")
    rows = []
    for k in range(args.n):
        case = make_case(args.seed + k)
        image_path, mask_path = write_case(case, out, k + 1)
        rows.append({**case.meta, "image": str(image_path), "mask": str(mask_path),
                     "lesion_volume_ml": round(case.lesion_volume_ml, 4)})
        progress(k + 1, args.n)
    write_json_atomic(out / "synthetic_cases.json", {"cases": rows, "disclaimer": DISCLAIMER, "version": __version__,
                                               "derived_from": "MNI ICBM152 2009a template, see its LICENSE"})
    print(f"{args.n} synthetic cases written under {out / 'ATLAS_2'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from xnet_core.assets import demo_weights_path
    from xnet_core.checkpoint import load_checkpoint
    from xnet_core.training.datasets import find_scans
    from xnet_core.training.evaluate import evaluate, summarise, summary_table, write_csv
    from xnet_core.inference import Segmenter

    for out in filter(None, (args.csv, args.json)):
        _check_output(out, [])
    scans = find_scans(args.data)[: args.limit]
    checkpoint = load_checkpoint(args.weights or demo_weights_path())
    segmenter = Segmenter(checkpoint.build_model(), device=args.device, fp32=args.fp32,
                          normalisation=checkpoint.normalisation, threshold=args.threshold, mirror=args.mirror)
    started = time.perf_counter()
    scores = evaluate(scans, segmenter, on_progress=_ProgressBar("evaluating", unit="scans"))
    summary = summarise(scores)
    if args.csv:
        write_csv(scores, args.csv)
    if args.json:
        write_json_atomic(args.json, {
            **summary, "threshold": args.threshold, "mirror": segmenter.mirror, "device": segmenter.device.type,
            # "precision" is the metric; the arithmetic gets its own key
            "compute_precision": segmenter.precision, "data": str(args.data),
            "wall_s": round(time.perf_counter() - started, 1), "disclaimer": DISCLAIMER,
            **checkpoint.provenance(), "version": __version__})
    print(summary_table(summary))
    return 0


def _parse_crop(text: str | None) -> tuple[int, int] | None:
    from xnet_core.errors import XNetError

    if not text:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise XNetError(f"--crop {text}: expected HxW, e.g. 128x128.") from None
    if height % 16 or width % 16 or not (16 <= height <= 224 and 16 <= width <= 192):
        raise XNetError(f"--crop {text}: sides must be multiples of 16 within 224x192.")
    return height, width


def _distributed_device(name: str):
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs)."""
    import torch
    import torch.distributed as dist

    from xnet_core.inference import choose_device

    device = choose_device(name)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def _atlas_cases(args: argparse.Namespace) -> tuple[list, list, str]:
    """ATLAS scans of --data split by --split/--fold, prepared for training (held in memory)."""
    from xnet_core.training.datasets import find_scans, split
    from xnet_core.training.cases import atlas_volume_slices

    train_scans, val_scans = split(find_scans(args.data), args.fold, args.split)
    print(f"ATLAS: {len(train_scans)} training and {len(val_scans)} validation scans "
          f"(fold {args.fold}, split {args.split})", file=sys.stderr)
    prepared = [atlas_volume_slices(s) for s in train_scans], [atlas_volume_slices(s) for s in val_scans]
    releases = sorted({s.release for s in train_scans})
    return (*prepared, f"ATLAS {'/'.join(releases)} at {args.data}, {args.split} split, fold {args.fold}")


def _train(args: argparse.Namespace) -> int:
    from xnet_core.training.augment import SliceAugmentation
    from xnet_core.errors import XNetError
    from xnet_core.training.synthetic import SEED_RANGES
    from xnet_core.training.cases import (SMALL_LESION_ML, CaseStream, small_lesion_seeds, synthetic_case_cache,
                                          synthetic_pool)
    from xnet_core.training.sampling import SlicePool
    from xnet_core.training.trainer import TrainConfig, default_state_dir

    if args.small_cases < 0:
        raise XNetError(f"--small-cases {args.small_cases}: expected a number of cases >= 0.")
    if args.small_cases and args.data:
        raise XNetError("--small-cases adds synthetic cases; leave it out with --data.")
    regular_seeds = list(range(args.seed, args.seed + args.train_cases))
    small_seeds = small_lesion_seeds(args.seed + args.train_cases, args.small_cases)
    device = _distributed_device(args.device)
    out = Path(args.out)
    config = TrainConfig(
        out_dir=out, state_dir=default_state_dir(out.resolve().name), steps_per_epoch=args.steps_per_epoch,
        max_epochs=args.epochs, batch_size=args.batch, lr=args.lr, crop=_parse_crop(args.crop),
        lesion_fraction=args.lesion_fraction, bf16_cpu=args.bf16, seed=args.seed, max_minutes=args.max_minutes,
        precise_bn_batches=args.precise_bn,
        keep_epochs=args.keep_epochs, slice_dice_weight=args.slice_dice, size_balance=args.size_balance,
        augment=SliceAugmentation() if args.augment else None,
        data_description=(
            f"{args.train_cases} synthetic chronic-stroke cases (seeds {args.seed}..{args.seed + args.train_cases - 1})"
            + (f" and {len(small_seeds)} more with under {SMALL_LESION_ML} ml of lesion (the seeds from "
               f"{small_seeds[0]} to {small_seeds[-1]} that draw so little)" if small_seeds else "")
            + f" on the MNI152 2009a template; validation seeds {SEED_RANGES['validation']}..+{args.val_cases - 1}"),
    )
    if args.start_after < 0:
        raise XNetError(f"--start-after {args.start_after}: expected a number of cases >= 0.")
    if args.size_balance < 0:
        raise XNetError(f"--size-balance {args.size_balance:g}: expected an exponent >= 0 (0: cases alike).")
    if args.slice_dice < 0:
        raise XNetError(f"--slice-dice {args.slice_dice:g}: expected a weight >= 0 (0 is the paper's loss).")
    started = time.perf_counter()
    stream = None
    try:
        if args.data:
            train_cases, val_cases, config.data_description = _atlas_cases(args)
        else:
            train_seeds = regular_seeds + small_seeds
            print(f"preparing {len(train_seeds)} training and {args.val_cases} validation cases "
                  f"with {args.workers} worker(s)...", file=sys.stderr)
            cache = synthetic_case_cache()  # cases are pure functions of their seeds (and the code)
            val_seeds = list(range(SEED_RANGES["validation"], SEED_RANGES["validation"] + args.val_cases))
            if args.start_after > 0:
                stream = CaseStream(train_seeds, args.workers, cache_dir=cache)
                val_cases = synthetic_pool(val_seeds, min(args.workers, len(val_seeds)), cache_dir=cache)
                train_cases = stream.wait_for(args.start_after)  # the list keeps growing during training
            else:
                train_cases = synthetic_pool(train_seeds, args.workers, cache_dir=cache)
                val_cases = synthetic_pool(val_seeds, args.workers, cache_dir=cache)
        if not train_cases or not val_cases:
            raise XNetError("training needs at least one training and one validation scan.")
        print(f"{len(train_cases)} training and {len(val_cases)} validation cases ready in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        pool = SlicePool(train_cases, lesion_fraction=args.lesion_fraction, crop=config.crop,
                         size_balance=config.size_balance, augment=config.augment)
        return _run_training(args, config, device, pool, val_cases)
    finally:
        if stream is not None:
            stream.close()
            print(f"{len(stream.cases)} of {stream.total} training cases were in the pool at the end",
                  file=sys.stderr)
            if stream.error is not None:
                print(f"xnet: warning: preparing a training case failed: {stream.error}", file=sys.stderr)


def _run_training(args: argparse.Namespace, config, device, pool, val_cases: list) -> int:
    """Train from --init or the saved state (--resume) and report where the weights went."""
    from xnet_core.training.trainer import Trainer

    out = config.out_dir
    trainer = Trainer(config, pool, val_cases, device, on_log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.resume and not trainer.resume():
        print(f"no saved state in {config.state_dir}; starting afresh", file=sys.stderr)
    elif args.init and not args.resume:
        from xnet_core.checkpoint import load_checkpoint

        initial = load_checkpoint(args.init)
        trainer.model.load_state_dict({k: v.float() for k, v in initial.state_dict.items()})
        config.extra_card["initialised_from"] = f"{initial.path.name} (sha256 {initial.sha256})"
        print(f"starting from the weights of {initial.path}; validating them first", file=sys.stderr)
        trainer.validate_start()
    state = trainer.run()
    print(f"stopped after {state.epoch} epochs, {state.step} steps, {state.wall_s / 60:.1f} min; "
          f"best val loss {state.best_val:.4f}; weights in {out}")
    return 0


def _average(args: argparse.Namespace) -> int:
    """Stochastic weight averaging after the fact: the mean of CKPT..., BatchNorm re-estimated, with a card."""
    import numpy as np
    import torch

    from xnet_core.checkpoint import load_checkpoint, save_checkpoint
    from xnet_core.errors import XNetError
    from xnet_core.inference import choose_device
    from xnet_core.model import XNet
    from xnet_core.training.cases import synthetic_case_cache, synthetic_pool
    from xnet_core.training.sampling import SlicePool
    from xnet_core.training.swa import average_weights, recalibrate_batchnorm

    if len(args.checkpoints) < 2:
        raise XNetError("xnet average needs two or more checkpoints of one training run (e.g. its epoch-*.pt).")
    if args.precise_bn < 1:
        raise XNetError(f"--precise-bn {args.precise_bn}: the average needs its own BatchNorm statistics; "
                        "give a number of batches >= 1 (default 50).")
    out = Path(args.out)
    checkpoints = [load_checkpoint(path) for path in args.checkpoints]
    if any(c.path.resolve() == out.resolve() for c in checkpoints):
        raise XNetError(f"--out {out} is one of the checkpoints being averaged; choose another file.")
    try:
        weights = average_weights([c.state_dict for c in checkpoints])
    except ValueError as error:
        raise XNetError(f"{error}: give checkpoints of one X-Net training run.") from error
    device = choose_device(args.device)
    model = XNet()
    model.load_state_dict(weights)
    model.to(device, memory_format=torch.channels_last)
    if args.data:
        cases, description = _atlas_cases(args)[0], f"training fold of {args.data}"
    else:
        seeds = list(range(args.seed, args.seed + args.train_cases))
        cases = synthetic_pool(seeds, cache_dir=synthetic_case_cache())
        description = f"synthetic training seeds {seeds[0]}..{seeds[-1]}"
    started = time.perf_counter()
    recalibrate_batchnorm(model, SlicePool(cases, lesion_fraction=args.lesion_fraction), np.random.default_rng(args.seed),
                          args.precise_bn, args.batch, device, args.bf16)
    last = checkpoints[-1].card  # recipe, history and provenance of the run the checkpoints come from
    card = {k: v for k, v in last.items() if k not in ("sha256", "weights_file", "weights_dtype")}
    card.update({
        "checkpoint": out.name,
        "averaged_from": [f"{c.path.name} (sha256 {c.sha256}, step {c.card.get('steps', '?')})" for c in checkpoints],
        "weight_averaging": (f"uniform mean of {len(checkpoints)} checkpoints (stochastic weight averaging); "
                             f"BatchNorm re-estimated on {args.precise_bn} batches of {args.batch} whole slices "
                             f"({description}) in {time.perf_counter() - started:.0f} s"),
    })
    save_checkpoint(model.cpu(), out, card, half=False)
    print(f"averaged {len(checkpoints)} checkpoints into {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="xnet: %(levelname)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    from xnet_core.errors import XNetError

    try:
        return handler(args)
    except XNetError as exc:
        print(f"xnet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"xnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
