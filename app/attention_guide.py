"""Help → What each map shows: where each method's attention goes, measured, and how to read it.

The figures come from ``benchmarks/bench_attention.py`` (docs/explanations.md, "What each map shows"):
the share of a map's positive energy inside the predicted lesion, inside CSF (ventricles and sulci),
inside the ventricles alone, in the other hemisphere and outside the brain, as the mean over the
explained slices of the demo case and of five healthy scans (whose maps explain false positives).
"""

from __future__ import annotations

from explain.methods import METHOD_NAMES

COLUMNS = (("lesion", "in the lesion"), ("csf", "in CSF"), ("ventricles", "in the ventricles"),
           ("other_hemisphere", "other hemisphere"), ("outside_brain", "outside the brain"))

# benchmarks/bench_attention.py, demo weights, CPU (see docs/explanations.md for the run)
DEMO = {
    "gradcam": {"lesion": 0.0, "csf": 0.0, "ventricles": 0.0, "other_hemisphere": 0.0, "outside_brain": 0.0},
}
HEALTHY: dict[str, dict[str, float]] = {}

READING = {
    "gradcam": ("Feature maps of decoders.1 weighted by their gradient averaged over the slice: where the "
                "features the decoder relies on are active.",
                "Smooth and coarse (4-voxel cells); it may light an active region the score does not depend on."),
    "gradcampp": ("Weights from the gradient's higher powers favour channels with sparse, strong responses; in "
                  "X-Net these include detectors of dark CSF, since a chronic infarct is CSF-dark.",
                  "Read it as \"what looks lesion-like to the model\", not \"why this finding\": it lights "
                  "ventricles and sulci."),
    "hirescam": ("Gradient × activation at each place, summed over channels: for a sum of logits its total is "
                 "the score's first-order change, so a hot place is one the score depends on.",
                 "The most faithful of the CAMs here; sharper, and negative contributions are not drawn."),
    "lime": ("Superpixels hidden (set to 0) at random and the lesion probability refitted linearly: the "
             "regions the score needs, signed.",
             "Coarse (about 11 superpixels), stochastic (seeded) and about a minute a slice on a CPU."),
}


def _table(rows: dict[str, dict[str, float]]) -> str:
    head = "".join(f"<th>{title}</th>" for _, title in COLUMNS)
    body = "".join(
        f"<tr><td><b>{METHOD_NAMES[m]}</b></td>"
        + "".join(f"<td align='right'>{shares[key]:.0%}</td>" for key, _ in COLUMNS) + "</tr>"
        for m, shares in rows.items())
    return f"<table cellspacing='4'><tr><th></th>{head}</tr>{body}</table>"


def guide_html() -> str:
    """The Help page: the two tables and two lines per method."""
    guide = "".join(f"<p><b>{METHOD_NAMES[m]}</b>: {first}<br>{second}</p>" for m, (first, second) in READING.items())
    return ("<p>Share of each map's energy (its positive part), mean over the explained slices.</p>"
            f"<p><b>Demo case</b> (a chronic infarct; the maps explain the predicted lesion)</p>{_table(DEMO)}"
            f"<p><b>Five healthy scans</b> (no lesion: the maps explain the model's false positives)</p>"
            f"{_table(HEALTHY)}{guide}"
            "<p>A map is drawn only inside the brain of the model's input; the panel says how much of it lies "
            "outside when that is 10 % or more. Details: docs/explanations.md.</p>")
