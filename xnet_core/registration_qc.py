"""Does a registered scan's brain sit on the template's brain? A QC that holds on real scans.

The normalised cross-correlation with the template T1 (``registration.similarity``) falls with real
contrast, bias and atrophy: well-registered real scans score 0.27-0.55 on it. The measures here do not
depend on the scan's contrast:

- the scan's own brain mask (deepbet's), moved onto the template, against the template's brain mask:
  how much of the template's brain it covers, and how much of it lies outside the template's brain;
- the alignment of the edges (normalised gradient fields: the squared cosine between the scan's and the
  template's intensity gradients, weighted by their strengths), in two places: inside the template's
  brain, 4 mm in from its outline (sulci, ventricles, grey/white matter), and on a band 4 mm either
  side of its outline. Edges line up whatever the contrast; a rotation, shift or flip breaks that, a
  volume that is not a brain has no sulci or ventricles to line up. Only the interior is judged: the
  outline's edges fade under a strong bias field;
- the volume of the scan's brain mask, which an adult brain keeps within a known range.

Everything is measured on a 2 mm copy of the template grid from the scan as stored (no N4), so the QC
costs about half a second and can be recomputed from a cached transform and brain mask. Limits were
calibrated on real lesion-free adult T1s and on broken registrations made from them
(``benchmarks/bench_qc.py``). A left-right mirror image is invisible to any comparison with the
template, which is itself left-right symmetric: only the header can tell left from right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import nibabel as nib
import numpy as np

from xnet_core.assets import TEMPLATE_T1, asset_path
from xnet_core.preprocess import TEMPLATE_SHAPE, template_brain_mask
from xnet_core.sequences import resample_to_grid

QC_VOXEL_MM = 2.0
GRADIENT_SIGMA_VOXELS = 1.0  # 2 mm: the edges of sulci and ventricles, not the noise
# The interior is the template's brain shrunk by 4 mm, so that a brain-shaped blob (whose only edge is its
# outline) cannot pass on it; the outline band is the 4 mm either side of the template brain's edge.
EDGE_BAND_VOXELS = 2


@dataclass(frozen=True)
class Limit:
    """A pass limit on one measure and the unit of its score (the spread of real scans below their median)."""

    limit: float
    higher_is_better: bool
    spread: float

    def score(self, value: float) -> float:
        """How far the value lies on the good side of the limit, in spreads (negative: it fails)."""
        return (value - self.limit if self.higher_is_better else self.limit - value) / self.spread


# ``calibrate`` on the calibration half (15 scans) of the first 30 well-registered real scans of
# benchmarks/bench_qc.py, limits rounded to the lenient side.
LIMITS = {
    "template_brain_covered": Limit(0.90, True, 0.003),
    "brain_outside_template": Limit(0.19, False, 0.020),
    "edge_alignment": Limit(0.54, True, 0.025),
}
# Reported, not judged: the outline's edges fade under a strong bias field (the QC reads the scan without
# N4), and a well-registered real scan with one scored 0.59, below the misregistered scans' 0.63-0.70.
REPORTED_ONLY = ("brain_dice", "outline_alignment")
COVERED_AT_MOST = 0.90
BRAIN_VOLUME_ML = (800.0, 2400.0)  # an adult brain with deepbet's 2 mm margin; real scans: 1260-1890
BRAIN_VOLUME_SPREAD_ML = 200.0

# Reorientations tried when the edges do not line up, each as (description, 3x3 in template world).
_REORIENTATIONS = (
    ("flipped front-to-back", np.diag([1.0, -1.0, 1.0])),
    ("flipped top-to-bottom (upside down)", np.diag([1.0, 1.0, -1.0])),
    ("read with its left-right and front-back axes swapped", np.eye(3)[[1, 0, 2]]),
    ("read with its front-back and top-bottom axes swapped", np.eye(3)[[0, 2, 1]]),
    ("read with its left-right and top-bottom axes swapped", np.eye(3)[[2, 1, 0]]),
)


@dataclass
class RegistrationQC:
    """The QC measures of one registration and what they say is wrong (nothing: ``passed``)."""

    brain_volume_ml: float  # the scan's brain mask (deepbet's, 2 mm margin) on its own grid
    brain_dice: float  # the scan's brain mask on the template against the template's brain mask
    template_brain_covered: float  # the share of the template's brain that the scan's brain covers
    brain_outside_template: float  # the share of the scan's brain that lies outside the template's brain
    edge_alignment: float  # normalised gradient fields inside the brain, 1/3 (unrelated) to 1 (all parallel)
    outline_alignment: float  # the same on the band around the template brain's outline
    problems: list[str] = field(default_factory=list)
    reoriented: str | None = None  # the reorientation under which the edges would line up, if one does

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def score(self) -> float:
        """The worst measure's distance from its limit, in units of its real-scan spread (< 0: fails)."""
        return min(qc_scores(self.measures()).values())

    def measures(self) -> dict[str, float]:
        return {"brain_volume_ml": self.brain_volume_ml, "brain_dice": self.brain_dice,
                "template_brain_covered": self.template_brain_covered,
                "brain_outside_template": self.brain_outside_template, "edge_alignment": self.edge_alignment,
                "outline_alignment": self.outline_alignment}

    def summary(self) -> dict:
        """The ``qc`` entry of the registration summary."""
        return {**{k: round(v, 1 if k.endswith("_ml") else 4) for k, v in self.measures().items()},
                "score": round(self.score, 3), "passed": self.passed, "problems": list(self.problems)}

    @property
    def warning(self) -> str | None:
        if self.passed:
            return None
        return ("the registration to the template looks wrong: " + "; ".join(self.problems) + ". The model's "
                "results on this scan are not to be trusted; check that it is a whole-brain T1, or register it "
                "yourself and open the registered file.")


def calibrate(real: list[dict[str, float]]) -> dict[str, Limit]:
    """The rule that set ``LIMITS``, on measures of well-registered real scans: spread = the distance from
    the median to the 10th percentile on the bad side (robust to a few odd scans), limit = the median 3
    spreads to the bad side. The coverage limit is never stricter than 90 %: a large infarct or a cut
    cerebellum must not read as a failed registration."""
    out = {}
    for name, shipped in LIMITS.items():
        values = np.array([m[name] for m in real])
        median = float(np.median(values))
        tenth = float(np.percentile(values, 10 if shipped.higher_is_better else 90))
        spread = abs(median - tenth)
        limit = median - 3 * spread if shipped.higher_is_better else median + 3 * spread
        if name == "template_brain_covered":
            limit = min(limit, COVERED_AT_MOST)
        out[name] = Limit(limit, shipped.higher_is_better, spread)
    return out


def qc_scores(measures: dict[str, float]) -> dict[str, float]:
    """Each judged measure's score (``Limit.score``; the brain volume's against both ends of its range)."""
    low, high = BRAIN_VOLUME_ML
    ml = measures["brain_volume_ml"]
    scores = {"brain_volume_ml": min(ml - low, high - ml) / BRAIN_VOLUME_SPREAD_ML}
    scores.update({name: limit.score(measures[name]) for name, limit in LIMITS.items()})
    return scores


def assess(template_to_native: np.ndarray, native_affine: np.ndarray, native: np.ndarray,
           brain_mask: np.ndarray) -> RegistrationQC:
    """The QC of a transform (RAS world mm, template -> native) from the scan as stored (``native``, RAS
    [x, y, z] with ``native_affine``) and its brain mask on the same grid."""
    measures = measure(template_to_native, native_affine, native, brain_mask)
    qc = RegistrationQC(**measures)
    qc.problems = problems(measures)
    if qc_scores(measures)["edge_alignment"] < 0:
        qc.reoriented = _lines_up_when(template_to_native, native_affine, native)
        if qc.reoriented:
            qc.problems.insert(0, f"its edges would line up with the template's if the scan were "
                                  f"{qc.reoriented}: the orientation in the scan's header is probably wrong "
                                  "(check the conversion to NIfTI)")
    return qc


def measure(template_to_native: np.ndarray, native_affine: np.ndarray, native: np.ndarray,
            brain_mask: np.ndarray) -> dict[str, float]:
    """The QC measures of a transform (RAS, template -> native) and the scan's brain mask."""
    grid_shape, grid_affine = qc_grid()
    native_in_template = np.linalg.solve(template_to_native, native_affine)
    brain = resample_to_grid(brain_mask.astype(np.float32), native_in_template, grid_shape, grid_affine, 1) >= 0.5
    image = resample_to_grid(np.asarray(native, np.float32), native_in_template, grid_shape, grid_affine, 1)
    template_brain = _template_on_qc_grid()[1]
    overlap = float(np.count_nonzero(brain & template_brain))
    size, template_size = float(np.count_nonzero(brain)), float(np.count_nonzero(template_brain))
    voxel_ml = float(abs(np.linalg.det(native_affine[:3, :3]))) / 1000.0
    return {"brain_volume_ml": float(np.count_nonzero(brain_mask)) * voxel_ml,
            "brain_dice": 2 * overlap / (size + template_size),
            "template_brain_covered": overlap / template_size,
            "brain_outside_template": 1.0 - overlap / size if size else 1.0,
            **dict(zip(("edge_alignment", "outline_alignment"), edge_alignment(image)))}


def problems(measures: dict[str, float]) -> list[str]:
    """What the measures say is wrong, in words (empty: nothing)."""
    out = []
    ml, (low, high) = measures["brain_volume_ml"], BRAIN_VOLUME_ML
    if ml < low:
        out.append(f"the scan's brain mask holds only {ml:.0f} ml, where an adult brain holds {low:.0f}-{high:.0f} "
                   "ml: most of the brain is outside the field of view, or this is not a brain")
    elif ml > high:
        out.append(f"the scan's brain mask holds {ml:.0f} ml, more than an adult brain ({low:.0f}-{high:.0f} ml): "
                   "the brain extraction took in other tissue, or this is not a brain")
    covered = LIMITS["template_brain_covered"]
    if measures["template_brain_covered"] < covered.limit:
        out.append(f"the scan's brain covers only {measures['template_brain_covered']:.0%} of the template's "
                   f"brain (real scans: at least {covered.limit:.0%}): part of the brain is missing or cut off "
                   "by the field of view, or the brain is misplaced against the template")
    outside = LIMITS["brain_outside_template"]
    if measures["brain_outside_template"] > outside.limit:
        out.append(f"{measures['brain_outside_template']:.0%} of the scan's brain lies outside the template's "
                   f"brain (real scans: at most {outside.limit:.0%}): the brain is shifted, rotated or scaled "
                   "against the template")
    edges = LIMITS["edge_alignment"]
    if measures["edge_alignment"] < edges.limit:
        out.append(f"the edges inside the brain (ventricles, sulci, grey/white matter) do not line up with the "
                   f"template's (alignment {measures['edge_alignment']:.2f}, real scans at least {edges.limit:.2f}): "
                   "the brain is rotated, shifted or mirrored against the template, or this is not a brain")
    return out


def edge_alignment(image: np.ndarray) -> tuple[float, float]:
    """Normalised gradient fields of an image on the QC grid against the template's, (inside its brain, on
    its outline band): sum((a.b)^2 / (|a||b|)) / sum(|a||b|), the strength-weighted squared cosine (1/3
    for unrelated edges; the sign of an edge does not count, so a different contrast does not either)."""
    gradients = _gradients(image)
    out = []
    for b, region in _template_gradients():
        a = gradients[:, region]
        dot = (a * b).sum(axis=0)
        weight = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
        total = float(weight.sum())
        out.append(float((dot * dot / np.maximum(weight, 1e-20)).sum() / total) if total > 0 else 0.0)
    return out[0], out[1]


def _lines_up_when(template_to_native: np.ndarray, native_affine: np.ndarray, native: np.ndarray) -> str | None:
    """The reorientation of the template side under which the edges pass, the best one, if any."""
    _, template_brain = _template_on_qc_grid()
    grid_shape, grid_affine = qc_grid()
    centre = grid_affine @ np.r_[np.argwhere(template_brain).mean(axis=0), 1.0]
    best, best_alignment = None, LIMITS["edge_alignment"].limit
    for words, turn in _REORIENTATIONS:
        about_centre = np.eye(4)
        about_centre[:3, :3] = turn
        about_centre[:3, 3] = centre[:3] - turn @ centre[:3]
        native_in_template = np.linalg.solve(template_to_native @ about_centre, native_affine)
        image = resample_to_grid(np.asarray(native, np.float32), native_in_template, grid_shape, grid_affine, 1)
        alignment = edge_alignment(image)[0]
        if alignment >= best_alignment:
            best, best_alignment = words, alignment
    return best


def qc_grid() -> tuple[tuple[int, int, int], np.ndarray]:
    """The template grid at ``QC_VOXEL_MM``: its shape and RAS affine."""
    affine = _template_t1()[1].copy()
    affine[:3, :3] *= QC_VOXEL_MM
    shape = tuple(int(np.ceil(n / QC_VOXEL_MM)) for n in TEMPLATE_SHAPE)
    return shape, affine  # type: ignore[return-value]


@lru_cache(maxsize=1)
def _template_on_qc_grid() -> tuple[np.ndarray, np.ndarray]:
    """The template T1 and its brain mask on the QC grid."""
    template, template_affine = _template_t1()
    shape, affine = qc_grid()
    image = resample_to_grid(np.asarray(template), template_affine, shape, affine, 1)
    brain = resample_to_grid(template_brain_mask().astype(np.float32), template_affine, shape, affine, 1) >= 0.5
    return image, brain


@lru_cache(maxsize=1)
def _template_t1() -> tuple[np.ndarray, np.ndarray]:
    """The template T1 and its RAS affine (as ``registration.template_image``, which this module cannot
    import: registration imports it)."""
    image = nib.as_closest_canonical(nib.load(asset_path(TEMPLATE_T1)))
    return np.asarray(image.dataobj, dtype=np.float32), image.affine.copy()


@lru_cache(maxsize=1)
def _template_gradients() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The template's gradients (3 x n) and where, for the interior and for the outline band."""
    from scipy import ndimage

    image, brain = _template_on_qc_grid()
    interior = ndimage.binary_erosion(brain, iterations=EDGE_BAND_VOXELS)
    band = ndimage.binary_dilation(brain, iterations=EDGE_BAND_VOXELS) & ~interior
    gradients = _gradients(image)
    return (gradients[:, interior], interior), (gradients[:, band], band)


def _gradients(image: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    orders = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    return np.stack([ndimage.gaussian_filter(image, GRADIENT_SIGMA_VOXELS, order=o) for o in orders])


# -- words for the viewer and the report (they read the JSON ``registration`` entry, so old files work) --
def registration_badge(summary: dict) -> tuple[str, str]:
    """(label, tooltip) for the viewer's registration status, from a ``registration`` summary."""
    qc = summary.get("qc")
    figures = f"{summary['method']}; {summary['seconds']:.0f} s"
    if not qc:  # a summary written before the QC existed
        poor = " (poor)" if summary.get("warning") else ""
        return f"registered · similarity {summary['similarity']:.2f}{poor}", figures
    tooltip = f"{qc_figures(qc)}; similarity {summary['similarity']:.2f} (reported only); {figures}"
    if qc["passed"]:
        return "registered · QC passed", tooltip
    return "registered · QC FAILED: results not to be trusted", tooltip + "\n" + "\n".join(qc["problems"])


def qc_figures(qc: dict) -> str:
    """The QC's figures in one phrase."""
    return (f"the scan's brain covers {qc['template_brain_covered']:.0%} of the template's brain, "
            f"{qc['brain_outside_template']:.0%} of it lies outside; edge alignment {qc['edge_alignment']:.2f} "
            f"inside the brain, {qc.get('outline_alignment', float('nan')):.2f} on its outline; brain mask "
            f"{qc['brain_volume_ml']:.0f} ml")


def registration_sentence(summary: dict) -> str:
    """What the report says of a registered scan's QC, after the method (ends without a full stop)."""
    qc = summary.get("qc")
    if not qc:
        return (f"similarity {summary['similarity']:.3f} (normalised cross-correlation with the template, "
                f"{summary['seconds']:.0f} s)")
    verdict = "passed" if qc["passed"] else "FAILED"
    return (f"registration QC {verdict}: {qc_figures(qc)}; similarity {summary['similarity']:.3f} (normalised "
            f"cross-correlation with the template, reported only); {summary['seconds']:.0f} s")
