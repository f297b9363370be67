"""The status bar's readout, as text from plain arrays (no Qt): what lies at one voxel, or the window."""

from __future__ import annotations

import numpy as np

from app.backgrounds import Backgrounds
from app.study import FindingMaps, Study
from app.view_state import ViewState
from explain.methods import METHOD_NAMES, METHODS


def voxel_readout(study: Study, ras_index: tuple[int, int, int], reader_mask: np.ndarray | None,
                  backgrounds: Backgrounds, focus: FindingMaps | None = None) -> str:
    """Slice, file voxel (i, j, k), world mm, intensity, model probability, each map's value (of the
    finding explained alone, ``focus``, when there is one), the reader's mask and every other sequence
    at the same world point."""
    volume = study.volume
    x, y, z = (int(v) for v in ras_index)
    i, j, k = volume.source_index((x, y, z))
    mm = volume.affine @ np.array([x, y, z, 1.0])
    parts = [f"slice z {z}", f"voxel (i, j, k) ({i}, {j}, {k})",
             f"RAS ({mm[0]:.1f}, {mm[1]:.1f}, {mm[2]:.1f}) mm", f"value {float(volume.data[x, y, z]):.6g}"]
    parts.append(f"p {study.probabilities[x, y, z]:.3f}" if study.segmented[z] else "p …")
    maps, whose = (study, "") if focus is None else (focus, f" (finding {focus.number})")
    for method in METHODS:
        if maps.status(method, z) == "ok":
            parts.append(f"{METHOD_NAMES[method]}{whose} {maps.maps[method][x, y, z]:.3g}")
    if reader_mask is not None:
        parts.append(f"reader {'lesion' if reader_mask[x, y, z] else '–'}")
    for name in backgrounds:
        parts.append(f"{name} {float(backgrounds.value_at(name, (x, y, z), mm[:3])):.6g}")
    return "    ".join(parts)


def window_readout(state: ViewState) -> str:
    """With the mouse off the panels: the slice and the grey window."""
    low, high = state.levels
    return f"slice z {state.slice}    W {high - low:.4g} L {(low + high) / 2:.4g}    (point at the image for values)"
