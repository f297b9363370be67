"""``xnet evaluate``: a model's figures on ATLAS-layout scans with masks (or ``xnet synth`` cases), and
false positives on lesion-free scans (an empty mask, or a folder of scans given without masks)."""

from __future__ import annotations

import argparse
import time

from app.cli._common import ProgressBar, add_common, check_output, load_model, provenance, write_json

HELP = "score a model on scans with masks, and its false positives on lesion-free scans"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DIR", help="ATLAS R1.1/R1.2/R2.0 (or xnet synth) folder; scans whose "
                                                      "mask is empty count as lesion-free")
    parser.add_argument("--negatives", metavar="DIR",
                        help="a folder of lesion-free NIfTI scans given without masks: every voxel called lesion "
                             "is a false positive (ml and components per scan, median and maximum)")
    parser.add_argument("--people", choices=("all", "validation", "training"), default="all",
                        help="with --negatives: only the held-out (validation) or the training people of the "
                             "healthy-T1 split fixed in xnet_core.training.backgrounds (default all)")
    parser.add_argument("--csv", metavar="OUT.csv", help="per-subject figures")
    parser.add_argument("--limit", type=int, help="only the first N scans")
    add_common(parser, slices=False)


def run(args: argparse.Namespace) -> int:
    from xnet_core.errors import XNetError
    from xnet_core.training.datasets import find_scans
    from xnet_core.training.evaluate import evaluate, evaluate_negatives, summarise, summary_table, write_csv

    if not (args.data or args.negatives):
        raise XNetError("give --data (scans with masks) or --negatives (lesion-free scans), or both.")
    for out in filter(None, (args.csv, args.json)):
        check_output(out, [])
    scans = find_scans(args.data)[: args.limit] if args.data else []
    negatives = _negative_scans(args.negatives, args.people)[: args.limit] if args.negatives else []
    checkpoint, segmenter = load_model(args)
    started = time.perf_counter()
    scores = evaluate(scans, segmenter, on_progress=ProgressBar("evaluating", unit="scans")) if scans else []
    scores += evaluate_negatives(negatives, segmenter, on_progress=ProgressBar("lesion-free", unit="scans"))
    summary = summarise(scores)
    if args.csv:
        write_csv(scores, args.csv)
    if args.json:
        write_json(args.json, {
            **summary, "threshold": args.threshold, "mirror": segmenter.mirror, "device": segmenter.device.type,
            # "precision" is the metric; the arithmetic gets its own key
            "compute_precision": segmenter.precision, "data": args.data, "negatives_folder": args.negatives,
            "people": args.people if args.negatives else None,
            "wall_s": round(time.perf_counter() - started, 1), **provenance(checkpoint)})
    print(summary_table(summary))
    return 0


def _negative_scans(folder: str, people: str) -> list:
    from xnet_core.errors import XNetError
    from xnet_core.training.backgrounds import scans_of_people

    paths = scans_of_people(folder, people)
    if not paths:
        raise XNetError(f"{folder}: no NIfTI scan (.nii, .nii.gz) of the {people} people found.")
    return paths
