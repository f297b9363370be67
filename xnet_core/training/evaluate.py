"""Per-subject evaluation through the same Segmenter path as ``xnet segment``.

Figures per subject (``xnet_core.metrics``): the paper's Dice/IoU/precision/recall (3D, threshold,
whole volume) and the ATLAS R2.0 challenge's lesion-wise F1, volume difference (voxels) and lesion
count difference; volumes in ml on the scan's own grid. The summary averages over subjects with a
lesion, overall and by true lesion volume (< 1 ml, 1-10 ml, > 10 ml).

Lesion-free scans (an empty mask, or scans given without masks: ``evaluate_negatives``) are negatives:
every voxel called lesion is a false positive. For them the summary gives the false-positive ml and
connected components per scan, with the median and the maximum, the findings per scan (components the
lesion table lists: at least ``DEFAULT_MIN_LESION_ML``), and where the largest components lie.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from xnet_core import DEFAULT_MIN_LESION_ML, metrics
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
    predicted_components: int  # 6-connected components of the predicted mask
    predicted_findings: int  # those the lesion table lists as findings (at least DEFAULT_MIN_LESION_ML)
    largest_components: list[dict] = field(default_factory=list)  # the biggest few: ml and world mm
    registration_qc_passed: bool | None = None  # None: the scan was read on the template grid, unregistered

    @property
    def lesion_free(self) -> bool:
        return self.true_volume_ml == 0


def _largest_components(found: list[metrics.Lesion], affine: np.ndarray | None, keep: int = 5) -> list[dict]:
    """Where the largest predicted components (``found``, largest first) lie, so that a true finding in a
    "healthy" scan can be told from a model error."""
    out = []
    for lesion in found[:keep]:
        centre = np.asarray(lesion.centroid, float)
        world = (affine @ np.r_[centre, 1.0])[:3] if affine is not None else centre
        out.append({"ml": round(lesion.volume_ml, 4), "centre_mm": [round(float(v), 1) for v in world]})
    return out


def score_subject(scan_id: str, predicted: np.ndarray, truth: np.ndarray, voxel_ml: float,
                  affine: np.ndarray | None = None) -> SubjectScore:
    volume_difference = metrics.volume_difference(predicted, truth)
    found = metrics.lesions(predicted, voxel_ml)  # the lesion table's components, largest first
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
        predicted_components=len(found),
        predicted_findings=len(metrics.split_findings(found).findings),
        largest_components=_largest_components(found, affine) if not truth.any() else [],
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
        scores.append(score_subject(scan.scan_id, result.mask, truth, volume.voxel_volume_ml, volume.affine))
        if on_progress is not None:
            on_progress(done, len(scans))
    return scores


def evaluate_negatives(paths: list[Path], segmenter: Segmenter,
                       on_progress: Callable[[int, int], None] | None = None,
                       should_cancel: Callable[[], bool] | None = None) -> list[SubjectScore]:
    """Segment lesion-free scans given without masks (a folder of healthy T1s): all negatives."""
    scores = []
    for done, path in enumerate(paths, start=1):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"evaluation cancelled after {done - 1} of {len(paths)} scans.")
        volume = load_volume(path)
        placed = place(volume, device=str(segmenter.device))
        result, _ = segment(segmenter, placed)
        empty = np.zeros(volume.shape, np.uint8)
        score = score_subject(volume.name, result.mask, empty, volume.voxel_volume_ml, volume.affine)
        qc = placed.registration.qc if placed.registration is not None else None
        score.registration_qc_passed = qc.passed if qc is not None else None
        scores.append(score)
        if on_progress is not None:
            on_progress(done, len(paths))
    return scores


def _means(scores: list[SubjectScore]) -> dict:
    return {name: (float(np.mean([getattr(s, name) for s in scores])) if scores else None) for name in FIGURES} | {
        "n": len(scores)}


def summarise(scores: list[SubjectScore]) -> dict:
    """Means over subjects with a lesion, overall and by true lesion volume; lesion-free scans apart."""
    positives = [s for s in scores if not s.lesion_free]
    by_size = {label: _means([s for s in positives if lo <= s.true_volume_ml < hi]) for label, lo, hi in SIZE_BINS}
    return {**_means(positives), "by_size": by_size, "negatives": summarise_negatives(scores),
            "predicted_components": {s.scan_id: s.predicted_components for s in scores}}


def summarise_negatives(scores: list[SubjectScore]) -> dict:
    """False positives on the lesion-free scans: ml and components per scan, median and maximum.

    Scans whose registration failed the QC are listed but kept out of the figures: the viewer and every
    export already tell the reader not to trust the model on them, and a misplaced brain's "lesions"
    measure the registration, not the model."""
    negatives = [s for s in scores if s.lesion_free]
    if not negatives:
        return {"n": 0}
    counted = [s for s in negatives if s.registration_qc_passed is not False]
    failed = [s.scan_id for s in negatives if s.registration_qc_passed is False]
    figures = {"n": len(counted), "n_registration_qc_failed": len(failed), "registration_qc_failed": failed}
    if counted:
        ml = np.array([s.predicted_volume_ml for s in counted])
        components = np.array([s.predicted_components for s in counted])
        findings = np.array([s.predicted_findings for s in counted])
        figures |= {"false_positive_ml": {"median": float(np.median(ml)), "max": float(ml.max()),
                                          "mean": float(ml.mean())},
                    "components": {"median": float(np.median(components)), "max": int(components.max())},
                    "findings": {"median": float(np.median(findings)), "max": int(findings.max()),
                                 "min_lesion_ml": DEFAULT_MIN_LESION_ML}}
    return figures | {"scans": [{"scan_id": s.scan_id, "false_positive_ml": round(s.predicted_volume_ml, 4),
                                 "components": s.predicted_components, "findings": s.predicted_findings,
                                 "largest": s.largest_components,
                                 "registration_qc_passed": s.registration_qc_passed} for s in negatives]}


def write_csv(scores: list[SubjectScore], path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        fields = [k for k in asdict(scores[0]) if k != "largest_components"] if scores else ["scan_id"]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
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
    negatives = summary.get("negatives", {"n": 0})
    if negatives["n"]:
        ml, comp, found = negatives["false_positive_ml"], negatives["components"], negatives["findings"]
        lines.append(f"lesion-free scans: {negatives['n']}; false positives per scan: median {ml['median']:.3f} ml "
                     f"(max {ml['max']:.3f} ml), median {comp['median']:g} components (max {comp['max']}), "
                     f"median {found['median']:g} findings of {found['min_lesion_ml']:g} ml or more (max {found['max']})")
    if negatives.get("n_registration_qc_failed"):
        lines.append(f"left out of these figures, registration QC failed: {negatives['n_registration_qc_failed']} "
                     f"({', '.join(negatives['registration_qc_failed'])})")
    lines += [f"  {row['scan_id']:<40} {row['false_positive_ml']:>9.3f} ml {row['components']:>5} components "
              f"{row['findings']:>3} findings"
              f"{'  registration QC failed' if row['registration_qc_passed'] is False else ''}"
              for row in negatives.get("scans", [])]
    return "\n".join(lines)
