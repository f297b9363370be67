"""Explanations of native slices of a registered scan (docs/design.md, Contracts: Slices).

The model runs on the template grid, so a map of native slice ``z`` is made from the maps of every
template slice that native slice intersects, stacked and resampled (linearly) onto the native plane.
Each result records the template slices used (``params["template_slices"]``). On the template grid
this is exactly ``engine.explain``.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from explain.engine import ExplainParams, ExplanationEngine, ScanContext, SliceExplanation
from explain.methods import check_methods
from explain.targets import LESION_ABSENT, NO_LESION, TargetSpec
from xnet_core.metrics import Lesion, lesion_mask
from xnet_core.native import PlacedScan


def explain_slices(
    engine: ExplanationEngine,
    scan: PlacedScan,
    template_context: ScanContext,
    slices: Iterable[int],
    methods: Iterable[str],
    params: ExplainParams = ExplainParams(),
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    native_mask: np.ndarray | None = None,
    target: TargetSpec = TargetSpec(),
) -> list[SliceExplanation]:
    """Maps of native ``slices`` x ``methods`` on the scan's own grid.

    ``native_mask``: the predicted mask on the scan's grid (for a lesion target, that lesion's); a
    native slice without lesion of its own gets no map (as on the template grid) even when a template
    slice it crosses has one, and the target's size is counted in the scan's own voxels. ``target``
    is on the grid the model reads (``lesion_target`` makes a lesion's).
    """
    methods = check_methods(methods)
    slices = [int(z) for z in dict.fromkeys(slices)]
    if scan.registration is None:
        return engine.explain(template_context, slices, methods, params, target,
                              on_progress=on_progress, should_cancel=should_cancel)
    own_lesion = {z: native_mask is None or bool(native_mask[:, :, z].any()) for z in slices}
    per_native = {z: scan.template_slices([z]) if own_lesion[z] else [] for z in slices}
    needed = sorted(set(t for ts in per_native.values() for t in ts))
    results = engine.explain(template_context, needed, methods, params, target,
                             on_progress=on_progress, should_cancel=should_cancel)
    by_key = {(r.method, r.z): r for r in results}
    absent = LESION_ABSENT if target.kind == "lesion" else NO_LESION
    out = []
    for z in slices:
        for method in methods:
            if not own_lesion[z]:
                out.append(SliceExplanation(method, z, absent, None, target.kind, 0,
                                            {**params.for_method(method), "template_slices": []}))
                continue
            result = _native_result(scan, z, method, [by_key[(method, t)] for t in per_native[z]], params)
            if native_mask is not None and result.ok:
                result.target_area = int(native_mask[:, :, z].sum())  # the scan's own voxels
            out.append(result)
    return out


def lesion_target(scan: PlacedScan, native_mask: np.ndarray, number: int) -> tuple[TargetSpec, np.ndarray, Lesion]:
    """Lesion ``number`` of the lesion table (1 = largest) of the predicted mask on the scan's grid:
    (its target on the grid the model reads, its own voxels on the scan's grid, its record).

    On a registered scan the lesion is moved onto the template grid (nearest neighbour, or linear
    and half-covered voxels for a lesion too small to keep a voxel that way)."""
    own, lesion = lesion_mask(native_mask, number)
    if scan.registration is None:
        return TargetSpec("lesion", mask=own, lesion=number), own, lesion
    moved = scan.registration.to_template(own, order=0) > 0
    if not moved.any():
        moved = scan.registration.to_template(own.astype(np.float32), order=1) >= 0.25
    return TargetSpec("lesion", mask=moved.astype(np.uint8), lesion=number), own, lesion


def _native_result(scan: PlacedScan, z: int, method: str, parts: list[SliceExplanation],
                   params: ExplainParams) -> SliceExplanation:
    used = [part for part in parts if part.ok]
    base = {**params.for_method(method), "template_slices": [part.z for part in used]}
    if not used:
        status = parts[0].status if parts else "no brain on this slice"
        return SliceExplanation(method, z, status, None, "none", 0, base)
    z0 = min(part.z for part in used)
    stack = np.zeros((*used[0].map.shape, max(part.z for part in used) - z0 + 1), dtype=np.float32)
    for part in used:
        stack[:, :, part.z - z0] = part.map
    fits = [part.fit_score for part in used if part.fit_score is not None]
    return SliceExplanation(
        method, z, "ok", scan.registration.native_plane(stack, z0, z), used[0].target_kind,
        sum(part.target_area for part in used), base,
        fit_score=float(np.mean(fits)) if fits else None,
        seconds=sum(part.seconds for part in used),
        source="computed" if any(part.source == "computed" for part in used) else used[0].source,
    )


class _MaskAt:
    """The part of the Segmentation interface the engine reads: a mask and its area per slice."""

    def __init__(self, mask: np.ndarray, voxel_area_mm2: float) -> None:
        self.mask = mask
        self.slice_area_mm2 = mask.sum(axis=(0, 1)).astype(np.float64) * voxel_area_mm2


class SliceModel:
    """The model's answers one displayed slice at a time, for interactive use (the viewer's worker).

    ``probabilities(z)`` and ``explain(zs, ...)`` take native slice numbers. On a registered scan the
    template slices a native slice needs are predicted once and kept, so neighbouring native slices
    (which share most of them) cost little; on the template grid this is one model slice per slice.
    """

    def __init__(self, engine: ExplanationEngine, scan: PlacedScan, model_input) -> None:
        """``model_input``: ``prepare(scan.model_volume)`` (done by the caller, off the UI thread)."""
        self.engine, self.scan, self.model_input = engine, scan, model_input
        self._template_probs = np.zeros(scan.model_volume.shape, np.float32)
        self._predicted: set[int] = set()
        self._context: ScanContext | None = None

    def probabilities(self, z: int) -> np.ndarray:
        """Probabilities of native slice ``z`` on its plane ``[x, y]``."""
        needed = self.scan.template_slices([z])
        self._predict([t for t in needed if t not in self._predicted])
        if self.scan.registration is None:
            return self._template_probs[:, :, z].copy()
        if not needed:
            return np.zeros(self.scan.volume.shape[:2], np.float32)
        z0, z1 = needed[0], needed[-1]
        plane = self.scan.registration.native_plane(self._template_probs[:, :, z0:z1 + 1], z0, z)
        return np.clip(plane, 0.0, 1.0, out=plane)

    def _predict(self, template_slices: list[int]) -> None:
        brain = [t for t in template_slices if self.model_input.brain_slices[t]]
        if brain:
            predicted = self.engine.segmenter.predict(self.model_input.slices[brain])
            for t, model_plane in zip(brain, predicted):
                self._template_probs[:, :, t] = self.model_input.geometry.from_model(model_plane)
        self._predicted.update(template_slices)

    def explain(self, zs: list[int], methods: Iterable[str], params: ExplainParams, native_mask: np.ndarray,
                threshold: float, on_progress: Callable[[int, int], None] | None = None,
                should_cancel: Callable[[], bool] | None = None, lesion: int | None = None) -> list[SliceExplanation]:
        """Maps of native slices; the target is the predicted mask at ``threshold`` (``native_mask`` on
        the template grid; on a registered scan, the template probabilities at that threshold), or with
        ``lesion`` only that lesion of ``native_mask``'s lesion table (1 = largest)."""
        volume = self.scan.model_volume
        vx, vy, _ = volume.voxel_sizes
        mask = native_mask if self.scan.registration is None else (
            self._template_probs >= threshold).astype(np.uint8)
        segmentation = _MaskAt(mask, vx * vy)
        if self._context is None:
            self._context = self.engine.context(volume, segmentation, self.model_input)
        self._context.segmentation = segmentation
        target, gate = TargetSpec(), native_mask
        if lesion is not None:
            target, gate, _ = lesion_target(self.scan, native_mask, lesion)
        return explain_slices(self.engine, self.scan, self._context, zs, methods, params,
                              on_progress=on_progress, should_cancel=should_cancel,
                              native_mask=None if self.scan.registration is None else gate, target=target)
