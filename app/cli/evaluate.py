"""``xnet evaluate``: a model's figures on ATLAS-layout scans with masks (or ``xnet synth`` cases)."""

from __future__ import annotations

import argparse
import time

from app.cli._common import ProgressBar, add_common, check_output, load_model, provenance, write_json

HELP = "score a model on ATLAS-layout scans with masks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="ATLAS R1.1/R1.2/R2.0 (or xnet synth) folder")
    parser.add_argument("--csv", metavar="OUT.csv", help="per-subject figures")
    parser.add_argument("--limit", type=int, help="only the first N scans")
    add_common(parser, slices=False)


def run(args: argparse.Namespace) -> int:
    from xnet_core.training.datasets import find_scans
    from xnet_core.training.evaluate import evaluate, summarise, summary_table, write_csv

    for out in filter(None, (args.csv, args.json)):
        check_output(out, [])
    scans = find_scans(args.data)[: args.limit]
    checkpoint, segmenter = load_model(args)
    started = time.perf_counter()
    scores = evaluate(scans, segmenter, on_progress=ProgressBar("evaluating", unit="scans"))
    summary = summarise(scores)
    if args.csv:
        write_csv(scores, args.csv)
    if args.json:
        write_json(args.json, {
            **summary, "threshold": args.threshold, "mirror": segmenter.mirror, "device": segmenter.device.type,
            # "precision" is the metric; the arithmetic gets its own key
            "compute_precision": segmenter.precision, "data": str(args.data),
            "wall_s": round(time.perf_counter() - started, 1), **provenance(checkpoint)})
    print(summary_table(summary))
    return 0
