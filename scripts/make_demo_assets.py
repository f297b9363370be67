"""Package a trained checkpoint as the shipped demo model, and write the demo case.

Steps, as run for the bundled files (see assets/weights/xnet-demo.card.json for the record):

    xnet train --out RUN ...                                    # see the card's "recipe"
    python scripts/make_demo_assets.py weights RUN/best.pt      # fp16 weights + card
    python scripts/make_demo_assets.py case 1000103             # demo scan + ground truth
    xnet synth --n 20 --seed 1000000 --out HELDOUT
    xnet evaluate --data HELDOUT --json EVAL.json               # with the shipped file
    python scripts/make_demo_assets.py metrics EVAL.json "<the command line>" EVAL.txt

The card's sha256 always describes the weights file; metrics are added to the card afterwards
(the card is a separate file, so adding them does not change the hash).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xnet_core.assets import DEMO_LESION, DEMO_SCAN, DEMO_WEIGHTS, assets_dir  # noqa: E402
from xnet_core.checkpoint import card_path_for, load_checkpoint, save_checkpoint  # noqa: E402

INTENDED_USE = ("T1-weighted scans, chronic infarcts; demo model trained on synthetic lesions in one template "
                "brain; not validated on patients; not for clinical use.")


def package_weights(source: Path) -> None:
    checkpoint = load_checkpoint(source)
    card = {k: v for k, v in checkpoint.card.items() if k not in ("sha256", "weights_file", "weights_dtype")}
    card.update({
        "name": "xnet-demo",
        "intended_use": INTENDED_USE,
        "disclaimer": "Research and second-opinion use only. Not a diagnostic device.",
        "trained_from": f"{source.name} (sha256 {checkpoint.sha256})",
        "not_comparable_to": "X-Net trained on real ATLAS R1.1 (paper: Dice 0.4867, IoU 0.3723)",
    })
    out = assets_dir() / DEMO_WEIGHTS
    save_checkpoint(checkpoint.build_model(), out, card, half=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def write_demo_case(seed: int) -> None:
    from xnet_core.synthetic import make_case, write_template_nifti

    case = make_case(seed)
    descrip = f"xnet synthetic demo seed {seed} research use only"
    write_template_nifti(np.round(case.image), assets_dir() / DEMO_SCAN, np.int16, descrip)
    write_template_nifti(case.mask, assets_dir() / DEMO_LESION, np.uint8, descrip)
    info = {**case.meta, "lesion_volume_ml": round(case.lesion_volume_ml, 3),
            "note": "Synthetic case from the held-out seed range, derived from the MNI152 2009a template "
                    "(see ../template/LICENSE) with a real lesion shape or a procedural one (see ../lesion-shapes)."}
    (assets_dir() / "demo" / "demo_case.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"demo case seed {seed}: {case.meta['kind']}, {case.lesion_volume_ml:.1f} ml")


def add_metrics(eval_json: Path, command: str, table: Path | None) -> None:
    card_path = card_path_for(assets_dir() / DEMO_WEIGHTS)
    card = json.loads(card_path.read_text())
    report = json.loads(eval_json.read_text())
    if report.get("checkpoint_sha256") != card["sha256"]:
        raise SystemExit("the evaluation was not made with the shipped weights file; rerun it with them")
    keep = ("dice", "iou", "precision", "recall", "lesion_f1", "volume_difference", "volume_difference_ml",
            "lesion_count_difference", "n", "by_size", "threshold", "device", "compute_precision", "wall_s")
    card["heldout_metrics"] = {
        "data": "20 synthetic cases, seeds 1000000-1000019 (held-out range), written by xnet synth",
        "command": command,
        "figures": {k: report[k] for k in keep if k in report},
        "output": table.read_text() if table else None,
    }
    dice = report["dice"]
    card["status"] = ("meets the demo quality bar (held-out mean Dice >= 0.75)" if dice >= 0.75 else
                      f"INTERIM: held-out mean Dice {dice:.3f} is below the demo quality bar of 0.75; "
                      "continue training (xnet train --init) before relying on it even as a demo")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"metrics added to {card_path}: {card['status']}")


if __name__ == "__main__":
    action = sys.argv[1]
    if action == "weights":
        package_weights(Path(sys.argv[2]))
    elif action == "case":
        write_demo_case(int(sys.argv[2]))
    elif action == "metrics":
        add_metrics(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]) if len(sys.argv) > 4 else None)
    else:
        raise SystemExit(__doc__)
