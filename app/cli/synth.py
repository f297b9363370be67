"""``xnet synth``: synthetic chronic-stroke cases in the ATLAS R2.0 layout (the training data generator)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli._common import ProgressBar, write_json
from xnet_core import DISCLAIMER, __version__

HELP = "write synthetic chronic-stroke cases (ATLAS R2.0 layout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, required=True, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="case k uses seed S + k")
    parser.add_argument("--out", required=True, metavar="DIR")


def run(args: argparse.Namespace) -> int:
    from xnet_core.errors import XNetError
    from xnet_core.training.synthetic import make_case, write_case

    if args.n < 1:
        raise XNetError(f"--n {args.n}: give at least one case.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = ProgressBar("synthesising", unit="cases")
    rows = []
    for k in range(args.n):
        case = make_case(args.seed + k)
        image_path, mask_path = write_case(case, out, k + 1)
        rows.append({**case.meta, "image": str(image_path), "mask": str(mask_path),
                     "lesion_volume_ml": round(case.lesion_volume_ml, 4)})
        progress(k + 1, args.n)
    write_json(out / "synthetic_cases.json", {"cases": rows, "disclaimer": DISCLAIMER, "version": __version__,
                                              "derived_from": "MNI ICBM152 2009a template, see its LICENSE"})
    print(f"{args.n} synthetic cases written under {out / 'ATLAS_2'}")
    return 0
