"""How sections of a volume are drawn, with numpy alone (no Qt): the panels and the PDF report share it.

A section is a 2D ``[column axis, row axis]`` array of a RAS volume (axial ``[x, y]``, coronal
``[x, z]``, sagittal ``[y, z]``); rows are drawn upwards, so anterior / superior sit at the top.
"""

from __future__ import annotations

import numpy as np

MODEL_COLOUR = (255, 64, 32)  # model mask / outline: vermilion
TEMPLATE_COLOUR = (0, 158, 115)  # the template's brain outline: bluish green (Okabe-Ito)
READER_COLOUR = (86, 180, 233)  # reader's mask: sky blue (Okabe-Ito; tells apart from vermilion in all CVD types)
HATCH_RGBA = (160, 160, 160, 200)  # rows not computed yet
READER_FILL_ALPHA = 90  # the reader's mask while painting: a translucent fill under its outline
COLOUR_MAPS = ("inferno", "viridis", "jet")
PANEL_ORDER = ("segmentation", "gradcam", "gradcampp", "lime")  # the viewer's grid and the report's page
OUTSIDE_SAID = 0.10  # a map with at least this share of its energy outside the brain says so

PLANES = ("axial", "coronal", "sagittal")
PLANE_AXES = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}  # columns, rows, fixed axis
# Letters at the (left, right, top, bottom) edges; radiological swaps left/right of axial and coronal.
PLANE_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}


def plane_slice(volume_xyz: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D ``[column axis, row axis]`` section of a RAS volume through ``index`` on the plane's
    fixed axis."""
    where: list = [slice(None)] * 3
    where[PLANE_AXES[plane][2]] = int(index)
    return volume_xyz[tuple(where)]  # a view: the panel copies once, when it draws


def flips_columns(plane: str, radiological_view: bool) -> bool:
    """Axial and coronal: x reversed in radiological display; sagittal: anterior on the left."""
    return radiological_view if plane != "sagittal" else True


def displayed(section: np.ndarray, flip: bool) -> np.ndarray:
    """A section as drawn. Flipped: image column ``c`` shows section column ``n - 1 - c`` (radiological
    axial: RAS ``x = n_x - 1 - c``, the patient's right on the screen's left); rows are drawn upwards."""
    return np.ascontiguousarray(section[::-1, :]) if flip else np.ascontiguousarray(section)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a 2D mask (4-neighbourhood)."""
    inside = mask > 0
    padded = np.pad(inside, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return inside & ~interior


def outline_image(mask: np.ndarray | None, colour: tuple[int, int, int], flip: bool,
                  shape_xy: tuple[int, int], hatched_rows: np.ndarray | None = None) -> np.ndarray | None:
    """A mask's outline as a displayed RGBA image (None when there is nothing to draw); ``hatched_rows``
    (bool per row) are striped: not computed yet. Made once per redraw and shared by the panels."""
    has_hatch = hatched_rows is not None and hatched_rows.any()
    if (mask is None or not mask.any()) and not has_hatch:
        return None
    rgba = np.zeros((*shape_xy, 4), np.uint8)
    if mask is not None:
        rgba[outline(mask)] = (*colour, 255)
    if has_hatch:
        columns, rows = np.indices(shape_xy)
        stripes = ((columns + rows) % 6 == 0) & hatched_rows[None, :]
        rgba[stripes] = HATCH_RGBA
    return displayed(rgba, flip)


def reader_rgba(section: np.ndarray, filled: bool) -> np.ndarray | None:
    """The reader's mask on a section: its outline, plus a translucent fill while painting."""
    inside = section > 0
    if not inside.any():
        return None
    rgba = np.zeros((*section.shape, 4), np.uint8)
    if filled:
        rgba[inside] = (*READER_COLOUR, READER_FILL_ALPHA)
    rgba[outline(section)] = (*READER_COLOUR, 255)
    return rgba


def mask_lut() -> np.ndarray:
    """The filled model mask's two-entry table: transparent outside, the model colour inside."""
    lut = np.zeros((2, 4), np.uint8)
    lut[1] = (*MODEL_COLOUR, 255)
    return lut


def windowed_grey(section: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    """A section through a grey window as float RGB in [0, 255] (the report's panels)."""
    low, high = levels
    grey = np.clip((section - low) / max(high - low, 1e-12), 0, 1) * 255
    return np.repeat(grey[..., None], 3, axis=2).astype(np.float32)


def blend(base: np.ndarray, rgb, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` laid over ``base`` with a per-pixel opacity."""
    alpha = alpha[..., None]
    return base * (1 - alpha) + np.asarray(rgb, np.float32) * alpha


def coloured(values: np.ndarray, low: float, high: float, lut: np.ndarray) -> np.ndarray:
    """RGBA of a map through a colour table on the scale ``[low, high]``."""
    scaled = np.clip((values - low) / max(high - low, 1e-12), 0, 1)
    return lut[np.round(scaled * 255).astype(np.int32)]


def axial_image(section: np.ndarray, radiological: bool) -> np.ndarray:
    """An axial section ``[x, y, ...]`` as image rows/columns (a file's or a page's order, not the
    panels' column-major one): anterior at the top, the patient's right on the left in radiological display."""
    image = np.swapaxes(section, 0, 1)[::-1]
    return image[:, ::-1] if radiological else image


def inside_brain(values: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, float]:
    """(the map drawn inside the brain only, the share of its positive energy outside the brain)."""
    positive = np.maximum(values, 0)
    total = float(positive.sum())
    if not brain.any():
        return values, 0.0
    outside = float(positive[~brain].sum()) / total if total > 0 else 0.0
    return np.where(brain, values, 0.0).astype(np.float32), outside
