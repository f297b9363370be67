"""What the viewer knows about one scan, as plain arrays (no Qt): the model's probabilities as they
arrive slice by slice, the threshold and its mask, the explanation maps and their colour scales.

Anything the window shows is computed here, so tests can check it without a display.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from explain.methods import METHODS
from xnet_core.image import Volume
from xnet_core.metrics import Lesion, largest_cross_section, lesions
from xnet_core.preprocess import ModelInput

if TYPE_CHECKING:  # the engine imports torch; the window must show before that
    from explain.engine import SliceExplanation

SCALE_PERCENTILE = 99.5  # colour scales ignore the hottest 0.5 % (single-voxel spikes)
PERCENTILE_SAMPLE = 2_000_000


def grey_window(data: np.ndarray, percentiles: tuple[float, float] = (1, 99.5)) -> tuple[float, float]:
    """Percentile window of the non-background voxels: one grey window for every slice.

    Background (the minimum, e.g. the zeros around a skull-stripped brain) is left out, else it
    pulls the window down and white matter saturates.
    """
    step = max(1, data.size // PERCENTILE_SAMPLE)
    sample = data.ravel()[::step]
    foreground = sample[sample > sample.min()]
    sample = foreground if foreground.size > 0.05 * sample.size else sample
    low, high = (float(v) for v in np.percentile(sample, percentiles))
    if high <= low:  # mostly-constant scans (e.g. zero padding): fall back to the full range
        low, high = float(data.min()), float(data.max())
    return low, high


def slice_major(shape: tuple[int, int, int]) -> np.ndarray:
    """A zero float32 volume indexed ``[x, y, z]`` but stored slice after slice ([z, x, y] memory).

    Results arrive one axial slice at a time. In [x, y, z] memory a slice is one value every 756
    bytes, so the first write touches all 35 MB of fresh zero pages (~100 ms of page faults on the UI
    thread, measured); stored slice-major, it writes one contiguous 180 kB block."""
    return np.moveaxis(np.zeros((shape[2], shape[0], shape[1]), np.float32), 0, 2)


@dataclass
class ColourScale:
    low: float
    high: float
    provisional: bool  # True until every lesion slice of the method is computed


def colour_scale(values: np.ndarray, provisional: bool) -> ColourScale:
    """One map's scale from its computed values: 0 to the positive values' 99.5th percentile."""
    positive = values[values > 0]
    high = float(np.percentile(positive, SCALE_PERCENTILE)) if positive.size else 1.0
    return ColourScale(0.0, max(high, 1e-12), provisional)


class ExplainedMaps:
    """What the study and a finding hold alike: each method's maps (slice-major ``[x, y, z]``), status
    and details slice by slice, and the answers the panels ask of them."""

    maps: dict[str, np.ndarray]
    explained: dict[str, dict[int, str]]  # method -> z -> status
    details: dict[str, dict[int, dict]]  # method -> z -> parameters, target, source

    def _start_maps(self, shape: tuple[int, int, int]) -> None:
        self.maps = {m: slice_major(shape) for m in METHODS}
        self.explained = {m: {} for m in METHODS}
        self.details = {m: {} for m in METHODS}

    def _changed(self) -> None:
        """Hook: a map or status changed (the study drops its cached whole-volume figures)."""

    def add_explanation(self, result: SliceExplanation) -> None:
        self.explained[result.method][result.z] = result.status
        self.details[result.method][result.z] = result.summary()
        if result.ok:
            self.maps[result.method][:, :, result.z] = result.map
        self._changed()

    def status(self, method: str, z: int) -> str | None:
        return self.explained[method].get(z)

    def unexplained_slices(self, method: str) -> np.ndarray:
        """bool [z]: axial slices with no answer yet from ``method`` (hatched in coronal/sagittal views)."""
        return np.array([z not in self.explained[method] for z in range(self.maps[method].shape[2])])

    def _scale_of(self, method: str, slices_to_explain: list[int]) -> ColourScale:
        """The method's scale from its computed maps, provisional until ``slices_to_explain`` all are."""
        done = [z for z, status in self.explained[method].items() if status == "ok"]
        if not done:
            return ColourScale(0.0, 1.0, True)
        return colour_scale(self.maps[method][:, :, done], not set(slices_to_explain) <= set(self.explained[method]))


@dataclass
class Study(ExplainedMaps):
    """Whole-volume figures (mask volume, area per slice, colour scales) are cached until the next
    change (a segmented slice, a map, a threshold), so stepping through slices never recomputes them."""

    volume: Volume
    model_input: ModelInput
    threshold: float = 0.5
    probabilities: np.ndarray = field(init=False)
    segmented: np.ndarray = field(init=False)  # bool [z]
    maps: dict[str, np.ndarray] = field(init=False)
    explained: dict[str, dict[int, str]] = field(init=False)  # method -> z -> status
    details: dict[str, dict[int, dict]] = field(init=False)  # method -> z -> parameters, target, source

    def __setattr__(self, name: str, value) -> None:
        if name == "threshold":
            self.__dict__["_cache"] = {}
        super().__setattr__(name, value)

    def _cached(self, key, compute):
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    def _changed(self) -> None:
        self.__dict__["_cache"] = {}

    def __post_init__(self) -> None:
        self.probabilities = slice_major(self.volume.shape)
        self.segmented = ~self.model_input.brain_slices.copy()  # brain-free slices: nothing to compute
        self._start_maps(self.volume.shape)

    def use_model_input(self, model_input: ModelInput) -> None:
        """The scan was registered (on the worker thread, before any slice was segmented): its own
        brain mask replaces the provisional one; slices without brain need no model."""
        self.model_input = model_input
        self.segmented = ~model_input.brain_slices.copy()
        self._changed()

    # -- segmentation ----------------------------------------------------------------------
    def set_probabilities(self, z: int, plane: np.ndarray) -> None:
        self.probabilities[:, :, z] = plane
        self.segmented[z] = True
        self._changed()

    @property
    def segmentation_complete(self) -> bool:
        return bool(self.segmented.all())

    def next_slice_to_segment(self, near: int) -> int | None:
        """The unsegmented slice nearest ``near`` (the slice on screen first, then outwards)."""
        remaining = np.flatnonzero(~self.segmented)
        if remaining.size == 0:
            return None
        return int(remaining[np.argmin(np.abs(remaining - near))])

    def mask(self, threshold: float | None = None) -> np.ndarray:
        return (self.probabilities >= (self.threshold if threshold is None else threshold)).astype(np.uint8)

    def mask_slice(self, z: int) -> np.ndarray:
        return (self.probabilities[:, :, z] >= self.threshold).astype(np.uint8)

    def lesions(self, threshold: float | None = None) -> list[Lesion]:
        """Every component, largest first, with the model's mean and maximum probability in it."""
        return lesions(self.mask(threshold), self.volume.voxel_volume_ml, self.probabilities)

    def lesion_rows(self, threshold: float | None = None) -> list[dict]:
        """The lesion table, largest first: its number (1 = largest, what ``--lesion K`` counts), volume,
        mean and maximum probability, centroid in world mm, hemisphere, first and last slice and the
        slice to show. Every component: the minimum finding size splits the rows for display only."""
        affine, brain = self.volume.affine, self.model_input.brain_mask
        from scipy import ndimage  # scipy.ndimage costs ~0.3 s to import: not on the viewer's path to its first frame

        centre = ndimage.center_of_mass(brain) if brain.any() else [n / 2 for n in brain.shape]
        midline_x = float((affine @ [*centre, 1.0])[0])
        rows = []
        for number, lesion in enumerate(self.lesions(threshold), start=1):
            centre = affine @ [*lesion.centroid, 1.0]
            rows.append({
                "number": number,
                "volume_ml": lesion.volume_ml,
                "mean_probability": lesion.mean_probability,
                "max_probability": lesion.max_probability,
                "centroid_mm": tuple(float(v) for v in centre[:3]),
                # RAS: world x grows towards the patient's right; the brain's centre stands for the midline
                "hemisphere": "R" if centre[0] > midline_x else "L",
                "slices": lesion.z_range,
                "z": int(round(lesion.centroid[2])),
            })
        return rows

    def lesion_area_per_slice_mm2(self) -> np.ndarray:
        vx, vy, _ = self.volume.voxel_sizes
        return self._cached("area", lambda: (self.probabilities >= self.threshold).sum(axis=(0, 1)) * vx * vy)

    @property
    def lesion_slices(self) -> list[int]:
        """The axial slices with predicted lesion at the current threshold (``Segmentation.lesion_slices``
        of ``xnet_core.inference`` for a study that grows slice by slice; that module imports torch)."""
        found = self._cached("lesion_slices", lambda: [int(z) for z in np.flatnonzero(self.lesion_area_per_slice_mm2())])
        return list(found)  # the cached list stays intact whatever callers do with theirs

    def lesion_volume_ml(self) -> float:
        vx, vy, vz = self.volume.voxel_sizes
        return float(self.lesion_area_per_slice_mm2().sum() * vz / 1000.0)

    # -- explanations ----------------------------------------------------------------------
    def explained_at_other_threshold(self) -> bool:
        """Whether a stored map explains the predicted mask of another threshold than the current one."""
        return any(d.get("threshold", self.threshold) != self.threshold
                   for per_slice in self.details.values() for d in per_slice.values())

    def forget_explanations(self) -> None:
        """Every map is dropped (not drawn, not in scales): their target was another threshold's mask."""
        self.explained = {m: {} for m in METHODS}
        self.details = {m: {} for m in METHODS}
        self._changed()

    def scale(self, method: str) -> ColourScale:
        """One scale per method for every slice (docs/design.md, Heatmap display): from the computed maps, provisional
        until all lesion slices are explained; LIME shows its positive weights by default."""
        return self._cached(("scale", method), lambda: self._scale(method))

    def _scale(self, method: str) -> ColourScale:
        scale = self._scale_of(method, self.lesion_slices)
        scale.provisional = scale.provisional or not self.segmentation_complete
        return scale


@dataclass(eq=False)  # compared by identity: it holds arrays
class FindingMaps(ExplainedMaps):
    """One finding of the lesion table explained alone (no Qt): its own voxels and, slice by slice, each
    method's map of the lesion logit summed over those voxels. The panels draw these instead of the
    study's whole-mask maps while the finding is chosen; ``status``, ``scale``, ``maps`` and
    ``unexplained_slices`` answer as the study's do."""

    study: Study  # the scan the finding belongs to (another scan's finding is never drawn)
    number: int  # in the lesion table's order at ``threshold``, 1 = largest (``xnet explain --lesion K``)
    row: dict  # its ``Study.lesion_rows`` entry
    mask: np.ndarray  # uint8 [x, y, z]: the lesion's own voxels on the scan's grid
    threshold: float
    slices: list[int] = field(init=False)  # every axial slice the finding reaches
    maps: dict[str, np.ndarray] = field(init=False)
    explained: dict[str, dict[int, str]] = field(init=False)
    details: dict[str, dict[int, dict]] = field(init=False)

    def __post_init__(self) -> None:
        self.slices = [int(z) for z in np.flatnonzero(self.mask.any(axis=(0, 1)))]
        self._start_maps(self.mask.shape)

    @property
    def largest_slice(self) -> int:
        """The slice of its largest cross-section (where the viewer and the report show it)."""
        return largest_cross_section(self.mask)

    def scale(self, method: str) -> ColourScale:
        """The finding's own scale per method (its target is not the whole mask's), provisional until
        every slice of the finding is explained."""
        return self._scale_of(method, self.slices)

    def area_mm2(self, z: int) -> float:
        vx, vy, _ = self.study.volume.voxel_sizes
        return float(self.mask[:, :, z].sum()) * vx * vy
