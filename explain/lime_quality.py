"""How far one LIME map can be trusted, from its own samples (no extra model passes): its local fit and
the agreement between the maps fitted on two halves of its samples. Light on imports: the viewer's
panels and the report say it under every LIME map."""

from __future__ import annotations

import numpy as np

STEADY_SPLIT_HALF = 0.7  # split-half agreement from which a map's ranking repeats (bench_explain.py)


def split_half_agreement(rows: np.ndarray, scores: np.ndarray, segments: np.ndarray,
                         kernel_width: float = 0.25) -> float:
    """How far one map can be trusted to repeat, from its own samples and at no model cost: lime's
    weighted ridge fit on the even and on the odd samples (each with the unperturbed slice), and the
    Spearman correlation of the two maps over the brain. Each half has half the samples, so this reads
    lower than the agreement of two whole runs with different seeds."""
    from sklearn.linear_model import Ridge

    from explain.faithfulness import rank_correlation

    ones = rows.sum(axis=1)
    distances = 1 - ones / np.sqrt(np.maximum(ones, 1) * rows.shape[1])  # cosine distance to the all-shown row
    weights = np.sqrt(np.exp(-(distances ** 2) / kernel_width ** 2))
    maps = []
    for half in (np.r_[0, np.arange(1, len(rows), 2)], np.r_[0, np.arange(2, len(rows), 2)]):
        coef = Ridge(alpha=1.0).fit(rows[half], scores[half], sample_weight=weights[half]).coef_.astype(np.float32)
        coef[0] = 0.0
        maps.append(coef[segments])
    return rank_correlation(maps[0], maps[1], segments > 0)


def quality_sentence(summary: dict) -> str:
    """What a LIME map's own figures say about it, for the viewer's caption and the report: its local
    fit (R^2) and how well the maps of its two halves of samples agree (``split_half_agreement``)."""
    parts = []
    if summary.get("lime_fit_r2") is not None:
        parts.append(f"local fit R² {summary['lime_fit_r2']:.2f}")
    if summary.get("split_half") is not None:
        halves = summary["split_half"]
        verdict = "steady" if halves >= STEADY_SPLIT_HALF else "unsteady: read its ranking with care"
        parts.append(f"its two halves agree {halves:.2f} ({verdict})")
    return " · ".join(parts)
