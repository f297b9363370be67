"""The one place that maps a volume to X-Net input slices (224x192) and back.

Geometry, from the official code: the paper's array is ``volume.transpose(2, 1, 0)`` (z, y, x) of
a 197x233x189 template-grid volume, cropped ``[5:229, 2:194]``. In our RAS ``[x, y, z]`` terms a
model slice is ``slice[h, w] = volume[2 + w, 5 + h, z]``: rows run along y (posterior to
anterior), columns along increasing RAS x (towards the patient's right). A scan on another grid
that was not registered (``xnet_core.registration`` normally puts every scan on the template grid)
gets a crop/pad of the same size centred on its brain, with a warning.

Normalisation (docs/design.md, Contracts): ``robust`` clips to the p0.5-p99.5 of brain voxels, scales to [0, 1]
and zeroes everything outside the brain mask; ``div100`` is the paper's ``/100`` for reproducing
X-Net on ATLAS R1.1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import nibabel as nib
import numpy as np

from xnet_core.assets import TEMPLATE_GM, TEMPLATE_T1, TEMPLATE_WM, asset_path
from xnet_core.image import Volume

log = logging.getLogger(__name__)

MODEL_HEIGHT = 224  # rows, along y
MODEL_WIDTH = 192  # columns, along x
TEMPLATE_SHAPE = (197, 233, 189)
TEMPLATE_X0 = 2  # the paper's column crop [2:194]
TEMPLATE_Y0 = 5  # the paper's row crop [5:229]
NORMALISATIONS = ("robust", "div100")
ROBUST_PERCENTILES = (0.5, 99.5)
ORIGIN_TOLERANCE_MM = 2.0


@dataclass(frozen=True)
class SliceGeometry:
    """Where the 224x192 model window sits in the volume's (x, y) plane.

    Model column ``w`` is volume ``x = x0 + w``; model row ``h`` is volume ``y = y0 + h``.
    Offsets may be negative or the window may overhang: those pixels are padding.
    """

    x0: int
    y0: int
    plane_shape: tuple[int, int]  # the volume's (nx, ny)

    def _overlap(self) -> tuple[slice, slice, slice, slice]:
        nx, ny = self.plane_shape
        xs, xe = max(self.x0, 0), min(self.x0 + MODEL_WIDTH, nx)
        ys, ye = max(self.y0, 0), min(self.y0 + MODEL_HEIGHT, ny)
        vol_x, vol_y = slice(xs, xe), slice(ys, ye)
        mod_w, mod_h = slice(xs - self.x0, xe - self.x0), slice(ys - self.y0, ye - self.y0)
        return vol_x, vol_y, mod_h, mod_w

    def to_model(self, volume_xyz: np.ndarray) -> np.ndarray:
        """``[x, y, z]`` (or ``[x, y]``) -> ``[z, 224, 192]`` (or ``[224, 192]``), zero padded."""
        planar = volume_xyz.ndim == 2
        vol = volume_xyz[..., None] if planar else volume_xyz
        out = np.zeros((vol.shape[2], MODEL_HEIGHT, MODEL_WIDTH), dtype=vol.dtype)
        vol_x, vol_y, mod_h, mod_w = self._overlap()
        out[:, mod_h, mod_w] = vol[vol_x, vol_y, :].transpose(2, 1, 0)
        return out[0] if planar else out

    def from_model(self, slices_zhw: np.ndarray) -> np.ndarray:
        """Exact inverse of ``to_model``: ``[z, 224, 192]`` -> ``[x, y, z]``; zero outside the window."""
        planar = slices_zhw.ndim == 2
        sl = slices_zhw[None] if planar else slices_zhw
        out = np.zeros((*self.plane_shape, sl.shape[0]), dtype=sl.dtype)
        vol_x, vol_y, mod_h, mod_w = self._overlap()
        out[vol_x, vol_y, :] = sl[:, mod_h, mod_w].transpose(2, 1, 0)
        return out[..., 0] if planar else out


@dataclass
class ModelInput:
    """A volume prepared for X-Net: normalised slices, the window geometry and the brain mask."""

    slices: np.ndarray  # float32 [z, 224, 192]
    geometry: SliceGeometry
    brain_mask: np.ndarray  # uint8 [x, y, z]
    brain_slices: np.ndarray  # bool [z]: slices with brain inside the model window
    normalisation: str
    on_template_grid: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return int(self.slices.shape[0])


@lru_cache(maxsize=1)
def template_affine() -> np.ndarray:
    """The template's RAS affine (the header only; the voxels are not read)."""
    affine = nib.as_closest_canonical(nib.load(asset_path(TEMPLATE_T1))).affine.copy()
    affine.setflags(write=False)
    return affine


def is_template_grid(volume: Volume) -> bool:
    """True for volumes on the grid X-Net was trained on: 197x233x189 voxels of 1 mm, RAS axes and
    the template's origin within 2 mm. Anything else is registered first (xnet_core.registration)."""
    if volume.shape != TEMPLATE_SHAPE:
        return False
    reference = template_affine()
    axes_match = np.allclose(volume.affine[:3, :3], reference[:3, :3], atol=0.01)
    return axes_match and float(np.linalg.norm(volume.affine[:3, 3] - reference[:3, 3])) <= ORIGIN_TOLERANCE_MM


@lru_cache(maxsize=1)
def template_brain_mask() -> np.ndarray:
    """The template's brain mask ([x, y, z] uint8, read-only): the skull-stripped T1's support."""
    template = nib.as_closest_canonical(nib.load(asset_path(TEMPLATE_T1)))
    mask = (np.asarray(template.dataobj) > 0).astype(np.uint8)
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=1)
def template_tissue_masks(probability: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """(grey matter, white matter) of the template as boolean [x, y, z] masks (probability >= 0.9)."""
    masks = []
    for name in (TEMPLATE_GM, TEMPLATE_WM):
        image = nib.as_closest_canonical(nib.load(asset_path(name)))
        mask = np.asarray(image.dataobj) >= probability
        mask.setflags(write=False)
        masks.append(mask)
    return masks[0], masks[1]


def looks_like_t1(volume: Volume, brain: np.ndarray) -> bool:
    """On the template grid: is white matter brighter than grey matter (as on a T1)? Elsewhere the
    tissue maps are not aligned, so no judgement is made (True)."""
    if not is_template_grid(volume):
        return True
    grey, white = template_tissue_masks()
    inside = brain > 0
    return float(np.median(volume.data[white & inside])) > float(np.median(volume.data[grey & inside]))


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """A head/brain mask for a scan off the template grid, until registration brings a real one.

    Skull-stripped scans (a constant background) keep everything above the background; others are
    thresholded at half the Otsu level. The largest component is kept, with holes filled.
    """
    from scipy import ndimage  # scipy.ndimage costs ~0.3 s to import: not on the viewer's path to its first frame

    background = float(data.min())
    if np.mean(data == background) > 0.2:
        mask = data > background
    else:
        mask = data > 0.5 * _otsu_threshold(data)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask).astype(np.uint8)


def _otsu_threshold(data: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(data, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    mean0 = np.cumsum(hist * centres) / np.maximum(weight0, 1)
    mean1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between))])


def brain_mask(volume: Volume) -> np.ndarray:
    """The template's mask on the template grid, else a foreground mask of the scan itself."""
    if is_template_grid(volume):
        return template_brain_mask().copy()
    return foreground_mask(volume.data)


def normalise(data: np.ndarray, mask: np.ndarray, recipe: str = "robust") -> np.ndarray:
    """Intensity normalisation; see the module docstring for the recipes."""
    if recipe == "div100":
        return (data / 100.0).astype(np.float32)
    if recipe != "robust":
        raise ValueError(f"unknown normalisation {recipe!r}; expected one of {NORMALISATIONS}")
    inside = data[mask > 0]
    if inside.size == 0:
        return np.zeros_like(data, dtype=np.float32)
    lo, hi = np.percentile(inside, ROBUST_PERCENTILES)
    scale = float(hi - lo) if hi > lo else 1.0
    # In place on one float32 copy: this runs before the first slice can be shown.
    out = np.subtract(data, np.float32(lo), dtype=np.float32)
    out *= np.float32(1.0 / scale)
    np.clip(out, 0.0, 1.0, out=out)
    out[mask == 0] = 0.0
    return out


def window_for(volume: Volume, mask: np.ndarray) -> SliceGeometry:
    """The paper's crop on the template grid; else a window centred on the brain."""
    nx, ny = volume.shape[:2]
    if is_template_grid(volume):
        return SliceGeometry(TEMPLATE_X0, TEMPLATE_Y0, (nx, ny))
    xs, ys = np.nonzero(mask.any(axis=2))
    if xs.size == 0:
        cx, cy = nx // 2, ny // 2
    else:
        cx, cy = (int(xs.min()) + int(xs.max()) + 1) // 2, (int(ys.min()) + int(ys.max()) + 1) // 2
    return SliceGeometry(cx - MODEL_WIDTH // 2, cy - MODEL_HEIGHT // 2, (nx, ny))


def prepare(volume: Volume, normalisation: str = "robust") -> ModelInput:
    """Volume -> normalised model slices, with the mask and geometry to map results back."""
    warnings: list[str] = []
    on_grid = is_template_grid(volume)
    if not on_grid:
        warnings.append(
            f"{volume.name}: not on the 197x233x189 1 mm template grid X-Net was trained on "
            f"(shape {volume.shape}, voxels {tuple(round(v, 2) for v in volume.voxel_sizes)} mm); "
            "using a centred crop/pad, results are unreliable until the scan is registered to the template."
        )
    mask = brain_mask(volume)
    geometry = window_for(volume, mask)
    normalised = normalise(volume.data, mask, normalisation)
    brain_slices = geometry.to_model(mask).reshape(volume.shape[2], -1).any(axis=1)
    for message in warnings:
        log.warning(message)
    return ModelInput(
        slices=geometry.to_model(normalised),
        geometry=geometry,
        brain_mask=mask,
        brain_slices=brain_slices,
        normalisation=normalisation,
        on_template_grid=on_grid,
        warnings=warnings,
    )
