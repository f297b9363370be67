"""Per-subject evaluation through the same Segmenter path as ``xnet segment``.

Figures per subject (``xnet_core.metrics``): the paper's Dice/IoU/precision/recall (3D, threshold,
whole volume) and the ATLAS R2.0 challenge's lesion-wise F1, volume difference (voxels) and lesion
count difference; volumes in ml on the scan's own grid. The summary averages over subjects, overall
and by true lesion volume (< 1 ml, 1-10 ml, > 10 ml).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from xnet_core import metrics
from xnet_core.training.datasets import Scan, load_lesion_mask
from xnet_core.errors import Cancelled
from xnet_core.inference import Segmenter
from xnet_core.native import place, segment
from xnet_core.volume import load_volume

FIGURES = ("dice", "iou", "precision", "recall", "lesion_f1", "volume_difference", "volume_difference_ml",
           "lesion_count_difference")
SIZE_BINS = (("<1ml", 0.0, 1.0), ("1-10ml", 1.0, 10.0), (">10ml", 10.0, float("inf")))


@dataclass
class SubjectScore:
    scan_id: str
    true_volume_ml: float
    predicted_volume_ml: float
    dice: float
    iou: float
    precision: float
    recall: float
    lesion_f1: float
    volume_difference: int
    volume_difference_ml: float
    lesion_count_difference: int


def score_subject(scan_id: str, predicted: np.ndarray, truth: np.ndarray, voxel_ml: float) -> SubjectScore:
    volume_difference = metrics.volume_difference(predicted, truth)
    return SubjectScore(
        scan_id=scan_id,
        true_volume_ml=float(np.count_nonzero(truth)) * voxel_ml,
        predicted_volume_ml=float(np.count_nonzero(predicted)) * voxel_ml,
        dice=metrics.dice(predicted, truth),
        iou=metrics.iou(predicted, truth),
        precision=metrics.precision(predicted, truth),
        recall=metrics.recall(predicted, truth),
        lesion_f1=metrics.lesion_f1(predicted, truth),
        volume_difference=volume_difference,
        volume_difference_ml=volume_difference * voxel_ml,
        lesion_count_difference=metrics.lesion_count_difference(predicted, truth),
    )


def evaluate(
    scans: list[Scan],
    segmenter: Segmenter,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[SubjectScore]:
    """Segment every scan and score it against its mask."""
    scores = []
    for done, scan in enumerate(scans, start=1):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"evaluation cancelled after {done - 1} of {len(scans)} scans.")
        volume = load_volume(scan.t1)
        truth = load_lesion_mask(scan, volume)
        # native scans (ATLAS R2.0's native release, a scanner's NIfTI) are registered, as in xnet segment
        result, _ = segment(segmenter, place(volume, device=str(segmenter.device)))
        scores.append(score_subject(scan.scan_id, result.mask, truth, volume.voxel_volume_ml))
        if on_progress is not None:
            on_progress(done, len(scans))
    return scores


def _means(scores: list[SubjectScore]) -> dict:
    return {name: (float(np.mean([getattr(s, name) for s in scores])) if scores else None) for name in FIGURES} | {
        "n": len(scores)}


def summarise(scores: list[SubjectScore]) -> dict:
    """Means over subjects, overall and by true lesion volume."""
    by_size = {label: _means([s for s in scores if lo <= s.true_volume_ml < hi]) for label, lo, hi in SIZE_BINS}
    return {**_means(scores), "by_size": by_size}


def write_csv(scores: list[SubjectScore], path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(scores[0]).keys()) if scores else ["scan_id"])
        writer.writeheader()
        for score in scores:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(score).items()})


def summary_table(summary: dict) -> str:
    """A plain-text table of the summary, overall and by size."""
    columns = ("n", "dice", "iou", "precision", "recall", "lesion_f1", "volume_difference_ml")
    rows = [("all", summary)] + [(label, figures) for label, figures in summary["by_size"].items()]
    lines = ["subset   " + " ".join(f"{c:>11}" for c in columns)]
    for label, figures in rows:
        cells = [f"{figures[c]:>11}" if c == "n" else (f"{figures[c]:>11.4f}" if figures[c] is not None else f"{'-':>11}")
                 for c in columns]
        lines.append(f"{label:<8} " + " ".join(cells))
    return "\n".join(lines)
