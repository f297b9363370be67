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

# benchmarks/bench_attention.py, demo weights, CPU (benchmarks/results/bench_attention_cpu.txt): the demo
# case on 2 slices (LIME on 1, 300 samples); five healthy scans on 2 slices each, on the template grid.
DEMO = {
    "gradcam": {"lesion": 0.157, "csf": 0.002, "ventricles": 0.000, "other_hemisphere": 0.465, "outside_brain": 0.676},
    "gradcampp": {"lesion": 0.048, "csf": 0.021, "ventricles": 0.019, "other_hemisphere": 0.485,
                  "outside_brain": 0.418},
    "hirescam": {"lesion": 0.828, "csf": 0.000, "ventricles": 0.000, "other_hemisphere": 0.000, "outside_brain": 0.171},
    "lime": {"lesion": 0.871, "csf": 0.001, "ventricles": 0.001, "other_hemisphere": 0.017, "outside_brain": 0.000},
}
HEALTHY = {
    "gradcam": {"lesion": 0.057, "csf": 0.008, "ventricles": 0.000, "other_hemisphere": 0.427, "outside_brain": 0.361},
    "gradcampp": {"lesion": 0.010, "csf": 0.034, "ventricles": 0.029, "other_hemisphere": 0.490,
                  "outside_brain": 0.395},
    "hirescam": {"lesion": 0.265, "csf": 0.018, "ventricles": 0.000, "other_hemisphere": 0.274, "outside_brain": 0.043},
}

READING = {
    "gradcam": ("Feature maps weighted by their gradient averaged over the slice: where the features the decoder "
                "relies on are active, not where the score depends on them.",
                "Measured: 16 % of its energy on the demo's lesion, about half in the other hemisphere and two "
                "thirds outside the brain (the dark background around it): read it as context, not as the lesion."),
    "gradcampp": ("Weights from the gradient's higher powers favour channels with sparse, strong responses, "
                  "among them the model's detectors of dark, CSF-like signal (a chronic infarct is CSF-dark).",
                  "Measured: 5 % on the lesion, ten times Grad-CAM's share in the ventricles, 40 % outside the "
                  "brain: it shows what looks dark and lesion-like, not why this finding."),
    "hirescam": ("Gradient × activation at each place, summed over channels: for a sum of logits its total is "
                 "the score's first-order change, so a hot place is one the score depends on.",
                 "Measured: 83 % on the demo's lesion, nothing in the other hemisphere; the CAM to read first."),
    "lime": ("Superpixels hidden at random and the lesion probability refitted linearly: the regions the score "
             "needs, signed; coarse (about 11 superpixels) and about a minute a slice on a CPU.",
             "Measured: 87 % on the demo's lesion (one slice); not run on the healthy scans (cost)."),
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
    return ("<p>Share of each map's energy (its positive part), mean over the explained slices "
            "(benchmarks/bench_attention.py).</p>"
            f"<p><b>Demo case</b> (a chronic infarct; the maps explain the predicted lesion)</p>{_table(DEMO)}"
            f"<p><b>Five healthy scans</b> (no lesion: the maps explain the model's false positives)</p>"
            f"{_table(HEALTHY)}{guide}"
            "<p>A map is drawn only inside the brain of the model's input; the panel says how much of it lies "
            "outside when that is 10 % or more. Details: docs/explanations.md.</p>")
