"""Package a trained checkpoint as the shipped demo model, and write the demo case.

Steps, as run for the bundled files (see assets/weights/xnet-demo.card.json for the record):

    xnet train --out RUN ...                                    # see the card's "recipe"
    python scripts/make_demo_assets.py weights RUN/best.pt --note "why this checkpoint" \
        --backgrounds HEALTHY                                   # fp16 weights + card (+ its backgrounds)
    python scripts/make_demo_assets.py case 1000103             # demo scan + ground truth
    xnet synth --n 20 --seed 1000000 --out HELDOUT
    xnet evaluate --data HELDOUT --json EVAL.json               # with the shipped file
    xnet evaluate --negatives HEALTHY --people validation --json NEG.json
    xnet synth --backgrounds HEALTHY --people validation --seed 900000 --n 18 --out PASTED
    xnet evaluate --data PASTED --json PASTED.json
    python scripts/make_demo_assets.py metrics EVAL.json "<the command lines>" EVAL.txt \
        --negatives NEG.json --pasted PASTED.json

The card's sha256 always describes the weights file; metrics are added to the card afterwards
(the card is a separate file, so adding them does not change the hash). The card's status is set by the
real-anatomy targets (xnet_core.training.release) and names each one the model misses. A checkpoint trained with
``--init`` from the shipped model adds a stage to the card's ``lineage`` and its totals; any other
checkpoint starts a new lineage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xnet_core.assets import DEMO_LESION, DEMO_SCAN, DEMO_WEIGHTS, assets_dir  # noqa: E402
from xnet_core.atomic import write_json_atomic  # noqa: E402
from xnet_core.checkpoint import card_path_for, load_checkpoint, save_checkpoint  # noqa: E402
from xnet_core.training.release import (background_sources, real_anatomy_figures, release_status,  # noqa: E402
                                        without_name_lists)

INTENDED_USE = ("T1-weighted scans, chronic infarcts; demo model trained on synthetic lesions pasted into real "
                "healthy brains and the template; not validated on patients; not for clinical use.")


def package_weights(source: Path, note: str | None = None, total_hardware: str | None = None,
                    backgrounds: Path | None = None) -> None:
    checkpoint = load_checkpoint(source)
    out = assets_dir() / DEMO_WEIGHTS
    shipped_card = card_path_for(out)
    previous = json.loads(shipped_card.read_text()) if shipped_card.exists() else None
    card = {k: v for k, v in checkpoint.card.items() if k not in ("sha256", "weights_file", "weights_dtype")}
    card.update({
        "name": "xnet-demo",
        "intended_use": INTENDED_USE,
        "disclaimer": "Research and second-opinion use only. Not a diagnostic device.",
        "trained_from": f"{source.name} (sha256 {checkpoint.sha256})",
        "not_comparable_to": "X-Net trained on real ATLAS R1.1 (paper: Dice 0.4867, IoU 0.3723)",
    })
    card.update(lineage_after(previous, checkpoint.card, note, total_hardware))
    if backgrounds is not None:
        described = str(checkpoint.card.get("training_data", ""))
        card["backgrounds"] = background_sources(backgrounds, described)
        card["training_data"] = without_name_lists(described)
    save_checkpoint(checkpoint.build_model(), out, card, half=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), lineage stage {card['lineage'][-1]['stage']}")


def lineage_after(previous: dict | None, trained: dict, note: str | None, total_hardware: str | None) -> dict:
    """The lineage and totals of a model trained with ``trained`` (a checkpoint card): one stage more than
    ``previous`` (the shipped card) when it was initialised from the shipped weights, else a new lineage."""
    recipe = trained.get("recipe", {})
    continues = bool(previous) and previous["sha256"] in str(trained.get("initialised_from", ""))
    earlier = previous.get("lineage", []) if continues else []
    stage = {
        "stage": len(earlier) + 1,
        "from": (f"stage {len(earlier)} as shipped before (xnet-demo.pt sha256 {previous['sha256']})" if continues
                 else trained.get("initialised_from", "random initialisation")),
        "steps": trained.get("steps"), "batch_size": recipe.get("batch_size"), "lr": recipe.get("lr"),
        "wall_time_s": trained.get("wall_time_s"), "train_cases": recipe.get("data_description"),
        "crop": recipe.get("crop"), "lesion_fraction": recipe.get("lesion_fraction"),
        "precise_bn_batches": recipe.get("precise_bn_batches"), "hardware": trained.get("hardware"),
        "history": trained.get("history"),
    }
    for key in ("weight_averaging", "averaged_from"):  # set by xnet average
        if key in trained:
            stage[key] = trained[key]
    if note:
        stage["note"] = note
    totals_before = (previous.get("total_steps", 0), previous.get("total_wall_time_s", 0.0)) if continues else (0, 0.0)
    return {
        "lineage": earlier + [stage],
        "total_steps": totals_before[0] + (stage["steps"] or 0),
        "total_wall_time_s": round(totals_before[1] + (stage["wall_time_s"] or 0.0), 1),
        "total_hardware": total_hardware or (previous.get("total_hardware") if continues else None) or stage["hardware"],
    }


def write_demo_case(seed: int) -> None:
    from xnet_core.training.synthetic import make_case, write_template_nifti

    case = make_case(seed)
    descrip = f"xnet synthetic demo seed {seed} research use only"
    write_template_nifti(np.round(case.image), assets_dir() / DEMO_SCAN, np.int16, descrip)
    write_template_nifti(case.mask, assets_dir() / DEMO_LESION, np.uint8, descrip)
    info = {**case.meta, "lesion_volume_ml": round(case.lesion_volume_ml, 3),
            "note": "Synthetic case from the held-out seed range, derived from the MNI152 2009a template "
                    "(see ../template/LICENSE) with a real lesion shape or a procedural one (see ../lesion-shapes)."}
    (assets_dir() / "demo" / "demo_case.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"demo case seed {seed}: {case.meta['kind']}, {case.lesion_volume_ml:.1f} ml")


def add_metrics(eval_json: Path, command: str, table: Path | None, negatives: Path | None = None,
                pasted: Path | None = None) -> None:
    """The template held-out figures, and with ``negatives`` and ``pasted`` the real-anatomy validation
    that sets the card's status; every report must come from the shipped weights file."""
    card_path = card_path_for(assets_dir() / DEMO_WEIGHTS)
    card = json.loads(card_path.read_text())
    report = json.loads(eval_json.read_text())
    reports = [report] + [json.loads(path.read_text()) for path in (negatives, pasted) if path is not None]
    if any(r.get("checkpoint_sha256") != card["sha256"] for r in reports):
        raise SystemExit("an evaluation was not made with the shipped weights file; rerun it with them")
    keep = ("dice", "iou", "precision", "recall", "lesion_f1", "volume_difference", "volume_difference_ml",
            "lesion_count_difference", "n", "by_size", "threshold", "mirror", "device", "compute_precision",
            "wall_s")
    card["heldout_metrics"] = {
        "data": "20 synthetic cases, seeds 1000000-1000019 (held-out range), written by xnet synth",
        "command": command,
        "figures": {k: report[k] for k in keep if k in report},
        "output": table.read_text() if table else None,
    }
    if negatives is None or pasted is None:
        card["status"] = "INTERIM: not validated on real anatomy (no false-positive or pasted-lesion figures)"
    else:
        figures = real_anatomy_figures(reports[1], reports[2], report)
        card["real_anatomy_validation"] = {
            "data": "the held-out people of the healthy-T1 split: the scans alone (false positives; scans whose "
                    "registration fails the QC listed apart) and with lesions pasted in (xnet synth --backgrounds "
                    "--people validation --seed 900000 --n 18)",
            "figures": figures,
        }
        card["status"] = release_status(figures)
    write_json_atomic(card_path, card)
    print(f"metrics added to {card_path}: {card['status']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True)
    weights = actions.add_parser("weights", help="package a checkpoint as the shipped demo model")
    weights.add_argument("checkpoint", type=Path)
    weights.add_argument("--note", help="why this checkpoint (goes into its lineage stage)")
    weights.add_argument("--total-hardware", help="the hardware of all stages together, when it changes")
    weights.add_argument("--backgrounds", type=Path, help="the healthy-T1 folder the run pasted lesions into")
    case = actions.add_parser("case", help="write the demo scan and its ground truth")
    case.add_argument("seed", type=int)
    metrics = actions.add_parser("metrics", help="add held-out metrics measured with the shipped file")
    metrics.add_argument("eval_json", type=Path)
    metrics.add_argument("command", help="the command line that produced the evaluation")
    metrics.add_argument("table", type=Path, nargs="?", help="xnet evaluate's printed table")
    metrics.add_argument("--negatives", type=Path, help="xnet evaluate --negatives HEALTHY --people validation --json")
    metrics.add_argument("--pasted", type=Path, help="xnet evaluate --json on lesions pasted into those people")
    args = parser.parse_args()
    if args.action == "weights":
        package_weights(args.checkpoint, args.note, args.total_hardware, args.backgrounds)
    elif args.action == "case":
        write_demo_case(args.seed)
    else:
        add_metrics(args.eval_json, args.command, args.table, args.negatives, args.pasted)


if __name__ == "__main__":
    main()
