"""What a shipped model's card says about real anatomy: its backgrounds, and its validation against targets.

A demo model is chosen on real anatomy (docs/training.md): false positives on the held-out healthy
people, Dice on lesions pasted into those people, and the template-only held-out cases for regression.
The card records each figure with the command that measured it and a status that names every target the
model misses, so that the viewer's banner and every report carry it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xnet_core import DEFAULT_MIN_LESION_ML
from xnet_core.training.backgrounds import VALIDATION_PEOPLE, person_of


@dataclass(frozen=True)
class RealAnatomyTargets:
    """The bars a shipped model is held to (issue 25 of this project)."""

    fp_median_ml: float = 0.5  # per held-out healthy scan
    fp_max_ml: float = 3.0
    components_median: float = 5.0
    pasted_dice: float = 0.70  # lesions pasted into the held-out healthy people
    template_dice: float = 0.70  # template-only held-out cases (seeds 1,000,000+)


def background_sources(folder: str | Path, description: str) -> dict[str, Any]:
    """The healthy-T1 scans a training run's ``description`` names, with each one's source and licence
    from the collection's ``index.json``, and the split they were drawn from."""
    index = json.loads((Path(folder) / "index.json").read_text(encoding="utf-8"))
    named = set(re.findall(r"[A-Za-z0-9_]+", description))

    def record(entry: dict) -> dict:
        return {key: entry.get(key) for key in ("file", "source", "path", "licence")}

    used = [entry for entry in index if entry["file"] in named]
    return {
        "collection": "healthy-t1 (78 real lesion-free adult T1s; sources and licences per file)",
        "training": [record(e) for e in used if person_of(e["file"]) not in VALIDATION_PEOPLE],
        "validation": [record(e) for e in used if person_of(e["file"]) in VALIDATION_PEOPLE],
        "split": "by person, fixed in xnet_core.training.backgrounds.VALIDATION_PEOPLE "
                 f"({len(VALIDATION_PEOPLE)} held-out people)",
        "licences": sorted({str(e.get("licence")) for e in used}),
        "attribution": "IXI scans: data from the IXI data set (brain-development.org, Imperial College London), "
                       "CC BY-SA 3.0, as NiChart's 2 mm derivatives. No image is shipped; the weights were "
                       "trained on them.",
    }


def without_name_lists(description: str) -> str:
    """A run's data description with its lists of scan names replaced by a pointer to the card's
    ``backgrounds``: the description goes onto the first page of every report, the names do not."""
    return re.sub(r"\((?:[A-Za-z0-9_]+, )+[A-Za-z0-9_]+\)", "(named in the card's backgrounds)", description)


def real_anatomy_figures(negatives: dict, pasted: dict, template: dict) -> dict[str, Any]:
    """The figures the targets read, from three ``xnet evaluate --json`` reports of one weights file."""
    shas = {report.get("checkpoint_sha256") for report in (negatives, pasted, template)}
    if len(shas) != 1:
        raise ValueError("the three evaluations were not made with the same weights file")
    summary = negatives["negatives"]
    return {
        "checkpoint_sha256": shas.pop(),
        "negatives_scans": summary["n"],
        "negatives_registration_qc_failed": summary.get("registration_qc_failed", []),
        "fp_median_ml": round(summary["false_positive_ml"]["median"], 3),
        "fp_max_ml": round(summary["false_positive_ml"]["max"], 3),
        "components_median": summary["components"]["median"],
        "components_max": summary["components"]["max"],
        "findings_median": summary.get("findings", {}).get("median"),  # components the lesion table lists
        "findings_max": summary.get("findings", {}).get("max"),
        "pasted_dice": round(pasted["dice"], 4),
        "pasted_cases": pasted["n"],
        "template_dice": round(template["dice"], 4),
        "template_cases": template["n"],
    }


_LOWER_IS_BETTER = ("fp_median_ml", "fp_max_ml", "components_median")


def unmet_targets(figures: dict, targets: RealAnatomyTargets = RealAnatomyTargets()) -> list[str]:
    """The names of the targets (``RealAnatomyTargets`` fields) the figures miss; empty when all are met."""
    return [key for key, bar in asdict(targets).items()
            if ((figures[key] > bar) if key in _LOWER_IS_BETTER else (figures[key] < bar))]


def release_status(figures: dict, targets: RealAnatomyTargets = RealAnatomyTargets()) -> str:
    """The card's status, which the banner and every report print next to the model: every figure, and
    the target beside each one it misses."""
    missed, bars = unmet_targets(figures, targets), asdict(targets)

    def figure(key: str, text: str, unit: str = "") -> str:
        sign = "≤" if key in _LOWER_IS_BETTER else "≥"
        return text + (f" (target {sign} {bars[key]:g}{unit})" if key in missed else "")

    findings = figures.get("findings_median")
    parts = [figure("fp_median_ml", f"false positives median {figures['fp_median_ml']:.2f} ml", " ml"),
             figure("fp_max_ml", f"largest {figures['fp_max_ml']:.2f} ml", " ml"),
             figure("components_median", f"{figures['components_median']:g} components per scan")
             + ("" if findings is None else f", {findings:g} of them {DEFAULT_MIN_LESION_ML:g} ml or more")]
    measured = (f"on held-out healthy brains {', '.join(parts)}; "
                + figure("pasted_dice", f"Dice {figures['pasted_dice']:.3f} on lesions pasted into them") + "; "
                + figure("template_dice", f"Dice {figures['template_dice']:.3f} on template cases") + ".")
    if not missed:
        return f"meets every real-anatomy target: {measured}"
    return f"INTERIM, {len(missed)} of {len(bars)} real-anatomy targets missed: {measured}"
