"""LIME for one segmentation slice, on top of the ``lime`` package.

What lime does wrong for MRI segmentation out of the box (docs/design.md, References: Explanations), and
what this module does instead:

* superpixels: lime's default quickshift runs on an RGB copy of the whole slice, so segments cross
  the brain edge and the background. Here quickshift runs on the grey slice and its segments are cut
  to the brain mask (``KERNEL_SIZE`` 6, ``max_dist`` 200, ``ratio`` 0.2: about 11 superpixels on a
  mid-brain slice of the demo case, 16 with kernel 5, 26 with lime's 4); everything outside the
  brain is one segment that hiding cannot change. Quickshift follows intensity, so a dark lesion is
  its own region; SLIC's regular grid cut it across several cells mixed with normal tissue.
* hidden superpixels take the background value (``hide_color=0``: the normalised slice is 0 outside
  the brain), ``labels=(1,)`` with ``top_labels=None`` so that the lesion class is the one explained.
* the classifier is the frozen target's mean lesion probability, ``[1 - s, s]`` per sample, from the
  Segmenter (its precision, BN folding and per-device batch size, chosen by measurement in
  ``inference.py``).
* lime's perturbation loop deep-copies the image and rebuilds a mask per superpixel per sample; it is
  replaced by an equivalent vectorised loop (same random draws from lime's own ``random_state``, same
  rows, same order) that also reports progress and honours cancel.
* both seeds are set: ``random_seed`` (segmentation) and ``random_state`` (sampling).

* the map draws a superpixel's weight only where the samples can tell it from zero (at least
  ``lime_quality.SIGNIFICANCE_Z`` standard errors of lime's weighted fit); the others are drawn as none.
  On a lesion slice the lesion's own superpixel carries nearly all of the score (weight 0.97 on the
  demo case's slice 81) and most others sit at 1e-4, inside their error: their ranking is noise, and
  it decided the pixel-wise Spearman between two seeds (0.71 in bench_explain.py). Resampling 40 pairs
  of 600 samples from a pool of 2,400 on that slice: every weight, median 0.79 (worst 0.42); the
  significant weights, median 1.00 (10th percentile 0.86), 3 of 12 regions kept. Paired (foldover)
  samples with uniform weights, meant to keep pairwise interactions out of the weights, gave 0.72:
  not kept. Each map also reports its split-half agreement (``lime_quality``).

``KERNEL_SIZE`` and ``DEFAULT_SAMPLES`` come from the stability study (``benchmarks/bench_explain.py
--study``; Spearman correlation between the maps of seeds 0 and 1 over the brain pixels of the demo
case's largest lesion slice, 2-core CPU, bf16): SLIC inside the brain, 96 / 46 / 23 superpixels x
300-500 samples: 0.27 / 0.32 / 0.40; quickshift inside the brain, kernel 4 (26 superpixels) x 500:
0.70, x 700: 0.75; kernel 5 (16) x 600: 0.80; kernel 6 (11) x 600: 0.86 (lime's own defaults, 1000
samples: 0.84). Precision (bf16 vs fp32) and the fill value (0 vs superpixel mean) changed nothing.
A few superpixels carry the lesion score; the others get noise-level weights whose ranks dominate a
pixel-wise Spearman, so coarser regions that follow the anatomy are steadier. ``--lime-kernel 4``
gives finer maps at the price of stability or samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from lime import lime_image
from skimage.segmentation import quickshift

from explain.lime_quality import significant, split_half_agreement, weighted_fit
from explain.targets import Target
from xnet_core.errors import Cancelled

KERNEL_SIZE = 6
MAX_DIST = 200
RATIO = 0.2
DEFAULT_SAMPLES = 600
LIME_BATCH = 32  # images built per call of the classifier; the Segmenter sub-batches them

Predict = Callable[[np.ndarray], np.ndarray]  # [N, H, W] float32 -> [N, H, W] probabilities


def superpixels(image: np.ndarray, brain: np.ndarray, kernel_size: float = KERNEL_SIZE, seed: int = 0) -> np.ndarray:
    """Quickshift labels of a grey slice ``[H, W]`` cut to the brain: 0 outside, 1..K inside (contiguous)."""
    if not brain.any():
        return np.zeros(image.shape, np.int64)
    grey = image.astype(np.float64)
    labels = quickshift(np.stack([grey] * 3, axis=-1), kernel_size=kernel_size, max_dist=MAX_DIST, ratio=RATIO,
                        rng=seed) + 1
    labels[~brain.astype(bool)] = 0
    _, contiguous = np.unique(labels, return_inverse=True)  # 0 stays 0 (outside), inside -> 1..K
    return contiguous.reshape(labels.shape).astype(np.int64)


@dataclass
class LimeResult:
    weights: np.ndarray  # float32 [H, W]: each superpixel's signed weight painted back where it is significant;
    # 0 outside the brain and where the samples cannot tell it from zero (``lime_quality.significant``)
    raw_weights: np.ndarray  # float32 [H, W]: every superpixel's weight as lime fits it
    n_significant: int  # superpixels in the brain with a weight the samples can tell from zero
    score: float  # R^2 of lime's local weighted linear fit
    intercept: float
    local_prediction: float
    segments: np.ndarray  # int [H, W]
    n_segments: int  # superpixels inside the brain
    kernel_size: float
    num_samples: int
    seed: int
    split_half: float = 0.0  # Spearman between the maps of the even and the odd samples (``split_half_agreement``)


class _Explainer(lime_image.LimeImageExplainer):
    """lime's explainer with its perturbation loop vectorised, progress and cancel."""

    def __init__(self, seed: int, on_progress=None, should_cancel=None) -> None:
        super().__init__(random_state=seed)
        self.on_progress, self.should_cancel = on_progress, should_cancel
        self.samples: tuple[np.ndarray, np.ndarray] | None = None  # (rows, scores) of the last explanation

    def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1
        labels = []
        for start in range(0, num_samples, batch_size):
            if self.should_cancel is not None and self.should_cancel():
                raise Cancelled(f"LIME cancelled after {start} of {num_samples} samples.")
            rows = data[start:start + batch_size]
            keep = rows[:, segments].astype(bool)[..., None]  # [n, H, W, 1]: superpixel shown?
            labels.extend(classifier_fn(np.where(keep, image[None], fudged_image[None])))
            if self.on_progress is not None:
                self.on_progress(min(start + batch_size, num_samples), num_samples)
        self.samples = (data, np.array(labels)[:, 1])
        return data, np.array(labels)


def explain_slice(
    image: np.ndarray,
    brain: np.ndarray,
    target: Target,
    predict: Predict,
    num_samples: int = DEFAULT_SAMPLES,
    kernel_size: float = KERNEL_SIZE,
    seed: int = 0,
    batch_size: int = LIME_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> LimeResult:
    """LIME weights for the lesion score of ``target`` on one normalised model slice ``[H, W]``."""
    segments = superpixels(image, brain, kernel_size, seed)

    def classifier(rgb: np.ndarray) -> np.ndarray:
        probabilities = predict(rgb[..., 0].astype(np.float32))
        score = target.mean_probability(probabilities)
        return np.stack([1.0 - score, score], axis=1)

    explainer = _Explainer(seed, on_progress, should_cancel)
    n_features = int(segments.max()) + 1
    explanation = explainer.explain_instance(
        image.astype(np.float64), classifier, labels=(1,), hide_color=0, top_labels=None,
        num_features=n_features, num_samples=num_samples, batch_size=batch_size,
        segmentation_fn=lambda _rgb: segments, random_seed=seed)
    lookup = np.zeros(n_features, np.float32)
    for segment, weight in explanation.local_exp[1]:
        lookup[segment] = weight
    lookup[0] = 0.0  # outside the brain: nothing to explain
    rows, scores = explainer.samples
    shown = significant(lookup, weighted_fit(rows, scores)[1])
    return LimeResult(
        weights=shown[segments],
        raw_weights=lookup[segments],
        n_significant=int(np.count_nonzero(shown[1:])),
        score=float(explanation.score),
        intercept=float(explanation.intercept[1]),
        local_prediction=float(np.ravel(explanation.local_pred)[0]),
        segments=segments,
        n_segments=n_features - 1,
        kernel_size=kernel_size,
        num_samples=num_samples,
        seed=seed,
        split_half=split_half_agreement(rows, scores, segments),
    )
