"""``xnet synth``: synthetic chronic-stroke cases in the ATLAS R2.0 layout (the training data generator)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli._common import ProgressBar, write_json
from xnet_core import DISCLAIMER, __version__

HELP = "write synthetic chronic-stroke cases (ATLAS R2.0 layout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, required=True, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="case k uses seed S + k")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--backgrounds", metavar="DIR",
                        help="paste the lesions into these real lesion-free T1s (registered to the template once "
                             "and cached) instead of the template alone")
    parser.add_argument("--people", choices=("all", "validation", "training"), default="validation",
                        help="with --backgrounds: whose scans (the split fixed in xnet_core.training.backgrounds; "
                             "default the held-out validation people)")
    parser.add_argument("--template-share", type=float, default=0.0, metavar="P",
                        help="with --backgrounds: share of cases on the template (default 0)")


def run(args: argparse.Namespace) -> int:
    from xnet_core.errors import XNetError
    from xnet_core.training.cases import recipe_case
    from xnet_core.training.synthetic import write_case

    if args.n < 1:
        raise XNetError(f"--n {args.n}: give at least one case.")
    recipe = _recipe(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = ProgressBar("synthesising", unit="cases")
    rows = []
    for k in range(args.n):
        case = recipe_case(args.seed + k, recipe)
        image_path, mask_path = write_case(case, out, k + 1)
        rows.append({**case.meta, "image": str(image_path), "mask": str(mask_path),
                     "lesion_volume_ml": round(case.lesion_volume_ml, 4)})
        progress(k + 1, args.n)
    write_json(out / "synthetic_cases.json", {"cases": rows, "disclaimer": DISCLAIMER, "version": __version__,
                                              "derived_from": "MNI ICBM152 2009a template, see its LICENSE" + (
                                                  f"; real backgrounds: {recipe.describe()} (see the healthy-T1 "
                                                  "collection's README for sources and licences)"
                                                  if recipe.backgrounds else "")})
    print(f"{args.n} synthetic cases written under {out / 'ATLAS_2'}")
    return 0


def _recipe(args: argparse.Namespace):
    from xnet_core.assets import user_cache_dir
    from xnet_core.errors import XNetError
    from xnet_core.training.backgrounds import prepare_backgrounds, scans_of_people
    from xnet_core.training.cases import CaseRecipe

    if not args.backgrounds:
        return CaseRecipe()
    if not 0.0 <= args.template_share <= 1.0:
        raise XNetError(f"--template-share {args.template_share:g}: expected a share between 0 and 1.")
    paths = scans_of_people(args.backgrounds, args.people)
    prepared = prepare_backgrounds(paths, user_cache_dir("backgrounds"),
                                   on_log=lambda line: print(line, file=sys.stderr, flush=True))
    if not prepared:
        raise XNetError(f"{args.backgrounds}: none of the {args.people} people's scans could be prepared.")
    return CaseRecipe(tuple(str(p) for p in prepared), args.template_share)

