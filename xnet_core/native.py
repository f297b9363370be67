"""A scan as the user has it, placed for the model: registered when off the template grid.

Everything the user sees, measures and saves stays on the scan's own (native) grid; the model runs on
the template grid. ``PlacedScan`` holds both sides and ``segment`` runs the Segmenter on the template
side and maps the probabilities back, so that the CLI and the viewer never branch on registration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from xnet_core.image import Volume
from xnet_core.preprocess import (MODEL_HEIGHT, MODEL_WIDTH, ModelInput, foreground_mask, is_template_grid,
                                  looks_like_t1, prepare, template_brain_mask, window_for)
from xnet_core.registration import Registration, register

if TYPE_CHECKING:  # torch stays off the viewer's path to its first frame
    from xnet_core.inference import Segmentation, Segmenter

NOT_T1_SEQUENCES = ("DWI", "ADC", "FLAIR", "T2w")
MIN_EXTENT_MM = 100.0  # smaller fields of view hold no whole brain to register (a slab, a test volume)


@dataclass
class PlacedScan:
    volume: Volume  # the scan on its own grid: what is shown, measured and saved
    registration: Registration | None  # None on the template grid (or too small a field of view)
    not_registered: str | None = None  # why a scan off the template grid was not registered

    @property
    def model_volume(self) -> Volume:
        """What X-Net sees: the scan itself, or the bias-corrected scan resampled onto the template."""
        return self.volume if self.registration is None else self.registration.template_volume

    def registration_summary(self) -> dict:
        """The ``registration`` entry of every JSON (docs/design.md, Contracts): the same keys whether
        or not the scan was registered; a scan the model read as it is has no transform and no QC."""
        if self.registration is not None:
            return self.registration.summary()
        return {"applied": False, "method": "none: " + (self.not_registered or "the scan is on the template grid"),
                "similarity": None, "seconds": 0.0, "warning": self.not_registered, "from_cache": False,
                "qc": None, "template_to_native_ras": None}

    def template_slices(self, native_slices: Iterable[int]) -> list[int]:
        """Template slices the model must see for these native slices (the same ones on the grid)."""
        native_slices = sorted(set(int(z) for z in native_slices))
        if self.registration is None:
            return native_slices
        return self.registration.template_slices_for(native_slices)

    def display_input(self, normalisation: str) -> ModelInput:
        """The scan's own ModelInput on the template grid; for a registered scan, what display code needs
        of one on the native grid: its brain mask (deepbet's) and which slices hold brain. The model
        never sees the latter (its ``slices`` are empty): it reads ``model_volume``."""
        if self.registration is None:
            return prepare(self.volume, normalisation)
        return _display_only(self.volume, self.registration.brain_mask, normalisation)

    def template_outline(self) -> np.ndarray | None:
        """The template's brain mask on the scan's grid, to judge the alignment by eye (None for a scan
        the model saw unregistered: there is no alignment to judge)."""
        if self.registration is not None:
            return self.registration.to_native(template_brain_mask(), order=0)
        return template_brain_mask() if self.not_registered is None else None

    def warnings(self) -> list[str]:
        """The intended-use and registration warnings (the demo model and X-Net read T1s)."""
        out = [f"{self.volume.name}: {self.not_registered}"] if self.not_registered else []
        if self.registration is not None and self.registration.warning:
            out.append(f"{self.volume.name}: {self.registration.warning}")
        label = self.volume.sequence
        if label in NOT_T1_SEQUENCES:
            said = f" (series description {self.volume.description!r})" if self.volume.description else ""
            out.append(f"{self.volume.name}: this looks like a {label} scan{said}, but X-Net and the demo model "
                       "were trained on T1-weighted scans; results on other sequences are not meaningful.")
        elif not looks_like_t1(self.model_volume, template_brain_mask()):
            out.append(f"{self.volume.name}: white matter is not brighter than grey matter, so this does not "
                       "look like a T1-weighted scan; X-Net and the demo model were trained on T1s.")
        return out


def provisional_input(volume: Volume, normalisation: str) -> ModelInput:
    """Before registration (the viewer shows the scan at once): a foreground mask says which slices
    hold a head; the model reads nothing from it."""
    return _display_only(volume, foreground_mask(volume.data), normalisation)


def _display_only(volume: Volume, brain: np.ndarray, normalisation: str) -> ModelInput:
    return ModelInput(slices=np.zeros((0, MODEL_HEIGHT, MODEL_WIDTH), np.float32),
                      geometry=window_for(volume, brain), brain_mask=brain, brain_slices=brain.any(axis=(0, 1)),
                      normalisation=normalisation, on_template_grid=False)


def place(volume: Volume, device: str = "cpu", use_cache: bool = True,
          on_progress: Callable[[int, int], None] | None = None,
          should_cancel: Callable[[], bool] | None = None) -> PlacedScan:
    """Register the scan to the template unless it is already on the template grid."""
    if is_template_grid(volume):
        return PlacedScan(volume, None)
    extent = np.array(volume.shape) * np.array(volume.voxel_sizes)
    if extent.min() < MIN_EXTENT_MM:
        return PlacedScan(volume, None, (
            f"the field of view ({' x '.join(f'{e:.0f}' for e in extent)} mm) is too small to hold a whole brain, "
            "so it was not registered to the template; the model saw it as it is (a centred crop), and its "
            "results are unreliable"))
    return PlacedScan(volume, register(volume, device=device, use_cache=use_cache,
                                       on_progress=on_progress, should_cancel=should_cancel))


def segment(segmenter: Segmenter, scan: PlacedScan, slices: Iterable[int] | None = None,
            on_progress: Callable[[int, int], None] | None = None,
            should_cancel: Callable[[], bool] | None = None) -> tuple[Segmentation, Segmentation]:
    """(native segmentation, template segmentation): the same object twice on the template grid.

    ``slices`` are native slice numbers; on a registered scan the model runs on every template slice
    they intersect, and the probabilities are resampled (linearly) onto the native grid before the
    threshold, so that masks, lesions and millilitres are those of the scan's own voxels.
    """
    chosen = None if slices is None else sorted(set(int(z) for z in slices))
    template_slices = None if chosen is None else scan.template_slices(chosen)
    on_template = segmenter.segment(scan.model_volume, slices=template_slices, on_progress=on_progress,
                                    should_cancel=should_cancel)
    if scan.registration is None:
        return on_template, on_template
    started = time.perf_counter()
    registration = scan.registration
    probabilities = registration.to_native(on_template.probabilities, order=1)
    np.clip(probabilities, 0.0, 1.0, out=probabilities)
    n_z = scan.volume.shape[2]
    requested = list(range(n_z)) if chosen is None else chosen
    # Template slices without brain were answered too (nothing to compute): all requested ones count.
    done = set(on_template.requested_slices)
    computed = [z for z in requested if set(registration.template_slices_for([z])) <= done
                and registration.brain_mask[:, :, z].any()]
    # Native slices next to the chosen ones cross the same template slices: they were not asked for.
    not_computed = np.setdiff1d(np.arange(n_z), computed)
    probabilities[:, :, not_computed] = 0.0
    timings = {**on_template.timings_s, "map_back": time.perf_counter() - started}
    native = segmenter.from_probabilities(scan.volume, probabilities, requested, computed, timings,
                                          [w for w in on_template.warnings if "template grid" not in w])
    return native, on_template
