"""How far one LIME map can be trusted, from its own samples (no extra model passes): its local fit and
the agreement between the maps fitted on two halves of its samples. Light on imports: the viewer's
panels and the report say it under every LIME map."""

from __future__ import annotations

import numpy as np

STEADY_SPLIT_HALF = 0.7  # split-half agreement from which a map's ranking repeats (bench_explain.py)


SIGNIFICANCE_Z = 2.0  # a superpixel's weight is drawn when it is at least this many standard errors from 0
LIME_KERNEL_WIDTH = 0.25  # lime_image's default: the weights of the samples by their distance to the slice


def weighted_fit(rows: np.ndarray, scores: np.ndarray, kernel_width: float = LIME_KERNEL_WIDTH
                 ) -> tuple[np.ndarray, np.ndarray]:
    """lime's local model refitted: (weights, standard errors) per superpixel of ridge regression
    (alpha 1) of the scores on the shown/hidden rows, samples weighted by lime's kernel on the cosine
    distance to the unperturbed row. The standard errors are those of weighted least squares."""
    from sklearn.linear_model import Ridge

    ones = rows.sum(axis=1)
    distances = 1 - ones / np.sqrt(np.maximum(ones, 1) * rows.shape[1])  # cosine distance to the all-shown row
    weights = np.sqrt(np.exp(-(distances ** 2) / kernel_width ** 2))
    model = Ridge(alpha=1.0).fit(rows, scores, sample_weight=weights)
    design = np.hstack([np.ones((len(rows), 1)), rows])
    residual = scores - model.predict(rows)
    variance = float((weights * residual ** 2).sum() / max(weights.sum() - design.shape[1], 1.0))
    covariance = variance * np.linalg.pinv(design.T @ (design * weights[:, None]))
    return model.coef_.astype(np.float32), np.sqrt(np.clip(np.diag(covariance)[1:], 0, None)).astype(np.float32)


def significant(coefficients: np.ndarray, errors: np.ndarray, z: float = SIGNIFICANCE_Z) -> np.ndarray:
    """The weights the samples can tell from zero; the others become 0 ("no measurable effect"). Their
    ranking is noise, and it is what made two runs with different seeds disagree."""
    return np.where(np.abs(coefficients) >= z * errors, coefficients, 0.0).astype(np.float32)


def split_half_agreement(rows: np.ndarray, scores: np.ndarray, segments: np.ndarray) -> float:
    """How far one map can be trusted to repeat, from its own samples and at no model cost: the map
    refitted (``weighted_fit``, ``significant``) on the even and on the odd samples, each with the
    unperturbed slice, and the Spearman correlation of the two over the brain. Each half has half the
    samples, so this reads lower than the agreement of two whole runs with different seeds."""
    from explain.faithfulness import rank_correlation

    maps = []
    for half in (np.r_[0, np.arange(1, len(rows), 2)], np.r_[0, np.arange(2, len(rows), 2)]):
        shown = significant(*weighted_fit(rows[half], scores[half]))
        shown[0] = 0.0
        maps.append(shown[segments])
    return rank_correlation(maps[0], maps[1], segments > 0)


def quality_sentence(summary: dict) -> str:
    """What a LIME map's own figures say about it, for the viewer's caption and the report: its local
    fit (R^2) and how well the maps of its two halves of samples agree (``split_half_agreement``)."""
    parts = []
    if summary.get("n_significant") is not None and summary.get("n_segments"):
        parts.append(f"{summary['n_significant']} of {summary['n_segments']} regions with a measurable effect "
                     "(the others drawn as none)")
    if summary.get("lime_fit_r2") is not None:
        parts.append(f"local fit R² {summary['lime_fit_r2']:.2f}")
    if summary.get("split_half") is not None:
        halves = summary["split_half"]
        verdict = "steady" if halves >= STEADY_SPLIT_HALF else "unsteady: read its ranking with care"
        parts.append(f"its two halves agree {halves:.2f} ({verdict})")
    return " · ".join(parts)
