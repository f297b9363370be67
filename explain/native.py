"""Explanations of native slices of a registered scan (DESIGN.md, Slices).

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
from explain.targets import TargetSpec
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
) -> list[SliceExplanation]:
    """Maps of native ``slices`` x ``methods`` on the scan's own grid."""
    methods = check_methods(methods)
    slices = [int(z) for z in dict.fromkeys(slices)]
    if scan.registration is None:
        return engine.explain(template_context, slices, methods, params, TargetSpec(),
                              on_progress=on_progress, should_cancel=should_cancel)
    per_native = {z: scan.template_slices([z]) for z in slices}
    needed = sorted(set(t for ts in per_native.values() for t in ts))
    results = engine.explain(template_context, needed, methods, params, TargetSpec(),
                             on_progress=on_progress, should_cancel=should_cancel)
    by_key = {(r.method, r.z): r for r in results}
    return [_native_result(scan, z, method, [by_key[(method, t)] for t in per_native[z]], params)
            for z in slices for method in methods]


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
