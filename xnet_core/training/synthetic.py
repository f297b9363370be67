"""Synthetic chronic-stroke T1 cases on the template grid (docs/design.md, References: Synthetic lesions).

One case = the bundled MNI152 2009a T1 with one lesion (plus satellites), made like this:

1. **Where and how big.** The total volume is drawn from the ATLAS R2.0 quantiles; the kind
   (deep/lacunar, MCA cortical-subcortical, PCA, ACA, posterior fossa) follows the documented
   proportions, conditioned on size (lacunes are small, territorial infarcts large).
2. **Shape.** Real shapes (LESYMAP chronic, SOOP acute; mirrored, rescaled, shifted) or procedural
   ones: MCA wedges with their base on the cortex and apex toward the ventricle, irregular blobs
   from smoothed random fields inside a territory, lacunes elongated along z. Ventricles are never
   labelled (ATLAS tracers leave them out).
3. **Look.** Chronic infarcts are tissue loss: a CSF-dark to gliotic-grey core with strands of
   residual tissue, a partial-volume rim, open to the brain surface for cortical lesions and
   merging with widened sulci; the ipsilateral ventricle enlarges with large lesions.
4. **Distractors (unlabelled).** Periventricular hypointensities, perivascular spaces, an imperfect
   brain edge with a residual rim of dura/CSF (what skull stripping with a warped template mask
   leaves), so that CSF spaces and edges are learnt as negatives.
5. **Global augmentation.** Affine jitter + elastic warp, bias field, contrast remapping, gamma,
   blur and noise.

Everything random comes from ``np.random.default_rng(seed)``: a case is a pure function of its seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from xnet_core.assets import TEMPLATE_GM, TEMPLATE_T1, TEMPLATE_WM, asset_path
from xnet_core.training.shapes import TEMPLATE_AFFINE, LesionShape, load_shape_bank

log = logging.getLogger(__name__)

SHAPE = (197, 233, 189)
ORIGIN_VOXEL = (98, 134, 72)  # world (0, 0, 0) mm on the template grid
# ATLAS R2.0 training set, total lesion volume per subject (ml): (quantile, value) (docs/design.md, References: ATLAS).
VOLUME_QUANTILES_ML = ((0.0, 0.013), (0.05, 0.18), (0.10, 0.38), (0.25, 1.17), (0.50, 5.29),
                       (0.75, 36.1), (0.90, 106.0), (0.95, 153.0), (1.0, 496.7))
KIND_SHARES = {"deep": 0.45, "mca": 0.40, "pca": 0.07, "aca": 0.03, "posterior_fossa": 0.05}
KIND_VOLUME_ML = {"deep": (0.01, 25.0), "mca": (0.5, 500.0), "pca": (0.3, 150.0), "aca": (0.3, 120.0),
                  "posterior_fossa": (0.01, 40.0)}
CSF_LEVEL = 69.0  # median CSF intensity of the template (0-255 scale)
GM_LEVEL = 166.0  # median grey-matter intensity of the template (probability >= 0.9)
TEMPLATE_WM_LEVEL = 222.0  # median white-matter intensity of the template (probability >= 0.9)
SEED_RANGES = {"train": 0, "validation": 900_000, "test": 1_000_000}


@dataclass(frozen=True)
class Tissues:
    """A background brain and the tissue maps derived from it (read-only, shared by its cases).

    The template is one background; a real healthy scan on the template grid is another
    (``xnet_core.training.backgrounds``). Intensities are on the template's 0-255 scale, with the
    background's own CSF and grey-matter levels, from which every pasted intensity is drawn.
    """

    t1: np.ndarray  # float32, 0-255
    brain: np.ndarray  # bool: where lesions may lie
    gm: np.ndarray  # float32 probability
    wm: np.ndarray  # float32 probability
    csf: np.ndarray  # bool: brain & gm + wm < 0.1
    ventricles: np.ndarray  # bool: the central CSF components
    depth: np.ndarray  # float32: mm from the brain's outer surface
    name: str = "template"
    csf_level: float = CSF_LEVEL
    gm_level: float = GM_LEVEL
    support: np.ndarray | None = None  # bool: what the model sees (the template's brain mask); None: ``brain``

    def level(self, template_value: float) -> float:
        """A template-scale intensity expressed on this background: the same place between its CSF
        and grey-matter levels (the identity on the template)."""
        return self.csf_level + (template_value - CSF_LEVEL) * (self.gm_level - self.csf_level) / (GM_LEVEL - CSF_LEVEL)

    @property
    def shown(self) -> np.ndarray:
        return self.brain if self.support is None else self.support


def derive_tissues(t1: np.ndarray, brain: np.ndarray, gm: np.ndarray, wm: np.ndarray, **extra) -> Tissues:
    """CSF spaces, ventricles and depth from a background's tissue maps (any brain on the template grid)."""
    csf = brain & (gm + wm < 0.1)
    depth = ndimage.distance_transform_edt(brain).astype(np.float32)
    labels, _ = ndimage.label(csf & (depth > 12))
    x, y, z = _world_grid()
    central = (np.abs(x) < 30) & (np.abs(y + 10) < 45) & (np.abs(z - 10) < 25)
    ids = np.unique(labels[central & (labels > 0)])
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, ids)
    ventricles = np.isin(labels, ids[sizes > 200])
    ventricles = ndimage.binary_dilation(ventricles, iterations=1) & csf
    tissues = Tissues(t1, brain, gm, wm, csf, ventricles, depth, **extra)
    for array in (tissues.t1, tissues.brain, tissues.gm, tissues.wm, tissues.csf, tissues.ventricles, tissues.depth):
        array.setflags(write=False)
    return tissues


@lru_cache(maxsize=1)
def template_tissues() -> Tissues:
    def load(name: str) -> np.ndarray:
        return np.asarray(nib.load(asset_path(name)).dataobj, dtype=np.float32)

    t1, gm, wm = load(TEMPLATE_T1), load(TEMPLATE_GM) / 255.0, load(TEMPLATE_WM) / 255.0
    return derive_tissues(t1, t1 > 0, gm, wm)


def _smooth_field(rng: np.random.Generator, coarse_step: int) -> np.ndarray:
    """A smooth random field on the template grid: coarse noise, linearly upsampled (fast)."""
    coarse = tuple(max(s // coarse_step, 2) + 1 for s in SHAPE)
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 0.7)
    noise /= noise.std() + 1e-6
    up = ndimage.zoom(noise, [(s + coarse_step) / c for s, c in zip(SHAPE, coarse)], order=1, prefilter=False)
    return up[: SHAPE[0], : SHAPE[1], : SHAPE[2]]


def _world_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World mm of the template voxels as broadcastable (x, y, z) arrays."""
    i, j, k = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return (i - ORIGIN_VOXEL[0]).astype(np.float32), (j - ORIGIN_VOXEL[1]).astype(np.float32), \
        (k - ORIGIN_VOXEL[2]).astype(np.float32)


@dataclass
class SyntheticCase:
    image: np.ndarray  # float32 [x, y, z], template intensity scale
    mask: np.ndarray  # uint8
    seed: int
    meta: dict = field(default_factory=dict)

    @property
    def lesion_volume_ml(self) -> float:
        return float(self.mask.sum()) / 1000.0


# --- sizes and kinds ------------------------------------------------------------------------------


def sample_total_volume_ml(rng: np.random.Generator) -> float:
    """Inverse-CDF sample of the ATLAS R2.0 total lesion volume, log-linear between quantiles."""
    q, v = zip(*VOLUME_QUANTILES_ML)
    return float(np.exp(np.interp(rng.random(), q, np.log(v))))


def sample_kind(rng: np.random.Generator, volume_ml: float) -> str:
    """The documented case mix (docs/design.md), restricted to the kinds that can be this big."""
    kinds = [k for k, (lo, hi) in KIND_VOLUME_ML.items() if lo <= volume_ml <= hi]
    shares = np.array([KIND_SHARES[k] for k in kinds])
    return str(rng.choice(kinds, p=shares / shares.sum()))


# --- territories and shapes -----------------------------------------------------------------------


def territory(kind: str, side: int, tissues: Tissues) -> np.ndarray:
    """Coarse vascular-territory-like regions in MNI mm; ``side`` +1 right, -1 left."""
    x, y, z = _world_grid()
    lateral = x * side  # > 0 in the chosen hemisphere
    if kind == "deep":
        box = (lateral > 6) & (lateral < 32) & (y > -32) & (y < 26) & (z > -6) & (z < 32)
    elif kind == "mca":
        box = (lateral > 20) & (y > -80) & (y < 50) & (z > -22) & (z < 64)
    elif kind == "pca":
        box = (lateral > 2) & (lateral < 62) & (((y < -58) & (z > -20) & (z < 36))
                                                | ((y > -45) & (y < -8) & (z > -30) & (z < -2) & (lateral > 16)))
    elif kind == "aca":
        box = (lateral > 1) & (lateral < 22) & (y > -45) & (y < 56) & (z > 8) & (z < 76)
    else:  # posterior fossa: cerebellar hemisphere and pons
        box = (lateral > -8) & (lateral < 54) & (y > -96) & (y < -16) & (z < -14)
    return box & tissues.brain & ~tissues.ventricles & ((tissues.gm + tissues.wm) > 0.3)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to unit standard deviation."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field_ / (field_.std() + 1e-6)


def _box_around(centre: np.ndarray, radius: int) -> tuple[slice, slice, slice]:
    return tuple(slice(max(int(c) - radius, 0), min(int(c) + radius + 1, s))  # type: ignore[return-value]
                 for c, s in zip(centre, SHAPE))


def _top_voxels(score: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` highest-scoring allowed voxels (the thresholding that hits a target volume)."""
    values = np.where(allowed, score, -np.inf).ravel()
    n = int(min(n, np.count_nonzero(allowed)))
    chosen = np.zeros(values.size, bool)
    if n > 0:
        chosen[np.argpartition(values, -n)[-n:]] = True
    return chosen.reshape(score.shape) & allowed


def procedural_shape(rng: np.random.Generator, kind: str, side: int, n_voxels: int,
                     tissues: Tissues) -> np.ndarray:
    """A lesion of about ``n_voxels`` in the territory: wedge (cortical kinds), blob or lacune."""
    region = territory(kind, side, tissues)
    candidates = np.argwhere(region & (tissues.depth < 6)) if kind in ("mca", "pca", "aca") else np.argwhere(region)
    if len(candidates) == 0:
        candidates = np.argwhere(region)
    centre = candidates[rng.integers(len(candidates))].astype(np.float32)
    radius = float(np.clip(1.8 * (3 * n_voxels / (4 * np.pi)) ** (1 / 3) + 8, 6, 90))
    box = _box_around(centre, int(radius))
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1).astype(np.float32)
    offset = grid - centre
    size = (3 * n_voxels / (4 * np.pi)) ** (1 / 3)
    if kind in ("mca", "pca", "aca"):
        apex = np.array([side * 16 + ORIGIN_VOXEL[0], -12 + ORIGIN_VOXEL[1], 16 + ORIGIN_VOXEL[2]], np.float32)
        axis = apex - centre
        length = np.linalg.norm(axis) * rng.uniform(0.35, 0.9)
        axis /= np.linalg.norm(axis) + 1e-6
        along = offset @ axis
        across = np.linalg.norm(offset - along[..., None] * axis, axis=-1)
        cone = np.maximum(1.0 - 0.75 * np.clip(along / max(length, 1), 0, 1), 0.25)
        score = -across / (cone * size * 1.2) - np.abs(np.minimum(along, 0)) / (0.5 * size) \
            - np.maximum(along - length, 0) / 4.0
    else:
        stretch = np.array([1.0, 1.0, rng.uniform(1.5, 2.5) if n_voxels < 2000 else rng.uniform(0.8, 1.4)])
        score = -np.linalg.norm(offset / stretch, axis=-1) / size
    roughness = rng.uniform(0.3, 0.9) if n_voxels > 200 else 0.15
    score = score + roughness * _smooth_noise(rng, score.shape, rng.uniform(1.5, 4.0))
    chosen = _top_voxels(score, region[box], n_voxels)
    labels, n = ndimage.label(chosen)
    if n > 1:
        chosen = labels == (np.argmax(ndimage.sum_labels(chosen, labels, range(1, n + 1))) + 1)
    out = np.zeros(SHAPE, bool)
    out[box] = ndimage.binary_closing(chosen, iterations=1) & region[box] if n_voxels > 50 else chosen
    return out


def real_shape(rng: np.random.Generator, kind: str, side: int, n_voxels: int,
               bank: tuple[LesionShape, ...], tissues: Tissues) -> np.ndarray | None:
    """A real lesion shape near the target size, moved to the chosen hemisphere and rescaled."""
    chronic_first = kind in ("mca", "pca", "aca") and n_voxels > 3000
    pool = [s for s in bank if (s.source == "lesymap") == chronic_first] or list(bank)
    sizes = np.array([s.n_voxels for s in pool], np.float64)
    close = np.flatnonzero(np.abs(np.log(sizes / n_voxels)) < np.log(2.0))
    index = int(rng.choice(close)) if len(close) else int(np.argmin(np.abs(np.log(sizes / n_voxels))))
    shape = pool[index]
    factor = float(np.clip((n_voxels / shape.n_voxels) ** (1 / 3), 0.7, 1.4))
    box = ndimage.zoom(shape.box.astype(np.float32), factor, order=1) > 0.5
    if not box.any():
        return None
    centre = shape.centroid
    shape_side = 1 if centre[0] > ORIGIN_VOXEL[0] else -1
    if shape_side != side:
        box = box[::-1]
        centre = centre.copy()
        centre[0] = 2 * ORIGIN_VOXEL[0] - centre[0]
    centre = centre + rng.uniform(-4, 4, 3)
    start = np.round(centre - np.array(box.shape) / 2).astype(int)
    out = np.zeros(SHAPE, bool)
    dst = tuple(slice(max(s, 0), min(s + n, d)) for s, n, d in zip(start, box.shape, SHAPE))
    src = tuple(slice(d.start - s, d.stop - s) for d, s in zip(dst, start))
    out[dst] = box[src]
    out &= tissues.brain & ~tissues.ventricles
    return out if out.any() else None


def satellites(rng: np.random.Generator, main: np.ndarray, tissues: Tissues) -> np.ndarray:
    """0-3 small lesions (< 0.5 ml) near the main one: 53 % of real masks have several components."""
    out = np.zeros(SHAPE, bool)
    count = int(rng.choice([0, 1, 2, 3], p=[0.45, 0.3, 0.15, 0.1]))
    voxels = np.argwhere(main)
    allowed = tissues.brain & ~tissues.ventricles & ~ndimage.binary_dilation(main, iterations=2)
    for _ in range(count):
        centre = voxels[rng.integers(len(voxels))] + rng.normal(0, 10, 3)
        centre = np.clip(centre, 0, np.array(SHAPE) - 1)
        size = rng.uniform(1.0, 3.5)
        box = _box_around(centre, int(size) + 2)
        grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1)
        blob = np.linalg.norm((grid - centre) / [1, 1, rng.uniform(1, 2)], axis=-1) < size
        out[box] |= blob & allowed[box]
    return out


# --- appearance -----------------------------------------------------------------------------------


def _lesion_alpha(rng: np.random.Generator, lesion: np.ndarray) -> np.ndarray:
    """Soft lesion map: core 0.75-1 with residual strands, a 1-4 mm partial-volume halo."""
    core = ndimage.gaussian_filter(lesion.astype(np.float32), rng.uniform(0.5, 1.0))
    alpha = core * rng.uniform(0.8, 1.0)
    big = lesion.sum() > 3000
    if big:  # strands of residual grey tissue crossing the cavity
        strands = np.abs(_smooth_noise(rng, SHAPE, rng.uniform(1.2, 2.2))) < rng.uniform(0.08, 0.2)
        alpha = np.where(strands & lesion, alpha * rng.uniform(0.45, 0.7), alpha)
    halo_width = int(rng.integers(1, 5))
    halo = ndimage.binary_dilation(lesion, iterations=halo_width) & ~lesion
    halo_alpha = ndimage.gaussian_filter(halo.astype(np.float32), 1.0) * rng.uniform(0.25, 0.45)
    return np.maximum(alpha, halo_alpha).astype(np.float32)


def _enlarge_ventricle(rng: np.random.Generator, lesion: np.ndarray, side: int, tissues: Tissues) -> np.ndarray:
    """Ex-vacuo dilatation of the ipsilateral ventricle, in proportion to the lesion volume."""
    volume_ml = lesion.sum() / 1000.0
    if volume_ml < 5 or rng.random() < 0.25:
        return np.zeros(SHAPE, bool)
    x, _, _ = _world_grid()
    iterations = int(np.clip(volume_ml / 35.0, 1, 4))
    grown = ndimage.binary_dilation(tissues.ventricles, iterations=iterations)
    return grown & ~tissues.ventricles & (x * side > 0) & tissues.brain


def _widen_sulci(rng: np.random.Generator, lesion: np.ndarray, tissues: Tissues) -> np.ndarray:
    """CSF spaces next to a cortical lesion open up (1-2 mm of adjacent grey matter lost)."""
    near = ndimage.binary_dilation(lesion, iterations=int(rng.integers(3, 7))) & ~lesion
    next_to_csf = ndimage.binary_dilation(tissues.csf | ~tissues.brain, iterations=int(rng.integers(1, 3)))
    return near & next_to_csf & (tissues.gm > 0.4)


def _distractors(rng: np.random.Generator, tissues: Tissues) -> tuple[np.ndarray, np.ndarray]:
    """Unlabelled look-alikes: (periventricular hypointensity alpha, perivascular-space mask)."""
    alpha = np.zeros(SHAPE, np.float32)
    if rng.random() < 0.5:
        band = ndimage.binary_dilation(tissues.ventricles, iterations=int(rng.integers(3, 7)))
        band &= ~tissues.ventricles & (tissues.wm > 0.5)
        patchy = np.clip(_smooth_noise(rng, SHAPE, 3.0) + 0.5, 0, None)
        alpha = np.where(band, np.clip(patchy * rng.uniform(0.1, 0.3), 0, 0.45), 0).astype(np.float32)
    pvs = np.zeros(SHAPE, bool)
    if rng.random() < 0.6:
        deep = np.argwhere(territory("deep", 1, tissues) | territory("deep", -1, tissues))
        for voxel in deep[rng.integers(len(deep), size=int(rng.integers(4, 30)))]:
            length = int(rng.integers(1, 4))
            pvs[voxel[0], voxel[1], voxel[2]:voxel[2] + length] = True
    return alpha, pvs


def _edge_artefacts(rng: np.random.Generator, image: np.ndarray, tissues: Tissues) -> np.ndarray:
    """An imperfect brain edge: a residual rim of dura/CSF here, eroded cortex there."""
    gate = _smooth_noise(rng, SHAPE, 6.0)
    rim = ndimage.binary_dilation(tissues.brain, iterations=int(rng.integers(1, 4))) & ~tissues.brain
    level = rng.uniform(35, 120)
    image = np.where(rim & (gate > rng.uniform(-0.5, 0.8)), level * (1 + 0.15 * gate), image)
    shell = tissues.brain & ~ndimage.binary_erosion(tissues.brain, iterations=int(rng.integers(1, 3)))
    return np.where(shell & (gate < rng.uniform(-1.5, -0.3)), 0.0, image).astype(np.float32)


# --- global augmentation --------------------------------------------------------------------------


def _spatial_warp(rng: np.random.Generator, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine jitter (±7°, ±7 %, ±3 mm) plus a smooth elastic warp (<= 3 mm), in one resampling."""
    angles = np.radians(rng.uniform(-7, 7, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rotation = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
                @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
    matrix = rotation * rng.uniform(0.93, 1.07, 3)
    centre = np.array(ORIGIN_VOXEL, np.float32)
    amplitude = rng.uniform(0, 3.0)
    grid = np.indices(SHAPE, dtype=np.float32)
    coords = np.tensordot(matrix.astype(np.float32), grid - centre[:, None, None, None], axes=1)
    coords += (centre + rng.uniform(-3, 3, 3)).astype(np.float32)[:, None, None, None]
    for axis in range(3):
        coords[axis] += amplitude * _smooth_field(rng, 14)
    warped = ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=0.0)
    warped_label = ndimage.map_coordinates(label.astype(np.float32), coords, order=1, mode="constant") > 0.5
    return warped.astype(np.float32), warped_label


def _intensity_augment(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Bias field, contrast remapping, gamma, blur and noise: the scanner-to-scanner variation."""
    scale = 255.0
    out = image / scale
    knots_x = np.array([0, 0.3, 0.55, 0.8, 1.0])
    knots_y = np.clip(knots_x + rng.uniform(-0.06, 0.06, 5) * [0, 1, 1, 1, 0], 0, 1)
    out = np.interp(out, knots_x, np.sort(knots_y)).astype(np.float32)
    out = np.power(np.clip(out, 0, None), rng.uniform(0.75, 1.4))
    out *= np.exp(rng.uniform(0, 0.2) * _smooth_field(rng, 40))
    if rng.random() < 0.4:
        out = ndimage.gaussian_filter(out, rng.uniform(0.3, 0.9))
    out += rng.normal(0, rng.uniform(0.005, 0.03), SHAPE).astype(np.float32) * (out > 0)
    return np.clip(out * scale, 0, None).astype(np.float32)


# --- the case -------------------------------------------------------------------------------------


def _atrophy(rng: np.random.Generator, image: np.ndarray, tissues: Tissues) -> np.ndarray:
    """Unlabelled age-related atrophy: patchy widening of the sulci and larger ventricles, asymmetric
    by chance (the older brains real stroke patients bring; the template has none)."""
    out = image.copy()
    if rng.random() < 0.6:
        gate = _smooth_noise(rng, SHAPE, 8.0) + rng.uniform(-0.6, 1.2)
        sulci = tissues.csf & ~tissues.ventricles
        grown = ndimage.binary_dilation(sulci, iterations=int(rng.integers(1, 3))) & tissues.brain
        grown &= (tissues.gm > 0.4) & (gate > 0) & ~sulci
        out = np.where(grown, 0.25 * out + 0.75 * tissues.csf_level, out)
    if rng.random() < 0.5:
        x, _, _ = _world_grid()
        side = rng.choice([-1.0, 1.0])
        grown = ndimage.binary_dilation(tissues.ventricles, iterations=int(rng.integers(1, 4))) & tissues.brain
        grown &= (x * side > -rng.uniform(0, 40)) & ~tissues.ventricles
        out = np.where(grown, tissues.csf_level * rng.uniform(0.85, 1.1), out)
    return out.astype(np.float32)


def _tissue_contrast(rng: np.random.Generator, image: np.ndarray, tissues: Tissues) -> np.ndarray:
    """A new T1 contrast: CSF and grey matter moved to random levels below white matter (a monotone
    remapping through the tissue levels), so that one scanner's look is no cue."""
    wm = float(TEMPLATE_WM_LEVEL)
    csf_new = wm * rng.uniform(0.12, 0.5)
    gm_new = wm * rng.uniform(max(csf_new / wm + 0.12, 0.55), 0.9)
    knots_x = [0.0, tissues.csf_level, tissues.gm_level, wm, 4 * wm]
    knots_y = [0.0, csf_new, gm_new, wm, 4 * wm]
    return np.interp(image, knots_x, knots_y).astype(np.float32)


def _lesion(rng: np.random.Generator, tissues: Tissues) -> tuple[np.ndarray, dict, float, str, int]:
    """(lesion mask, metadata, total volume ml, kind, side) drawn from the ATLAS statistics."""
    volume_ml = sample_total_volume_ml(rng)
    kind = sample_kind(rng, volume_ml)
    side = int(rng.choice([-1, 1]))
    n_satellite_budget = 0.08 if volume_ml > 1 else 0.0
    target = max(int(volume_ml * 1000 * (1 - n_satellite_budget)), 10)
    use_real = rng.random() < (0.65 if kind in ("mca", "pca", "aca") else 0.4)
    lesion = real_shape(rng, kind, side, target, load_shape_bank(), tissues) if use_real else None
    source = "real" if lesion is not None else "procedural"
    if lesion is None:
        lesion = procedural_shape(rng, kind, side, target, tissues)
    if volume_ml > 1:
        lesion |= satellites(rng, lesion, tissues)
    meta = {"kind": kind, "side": "right" if side > 0 else "left", "shape": source,
            "target_volume_ml": round(volume_ml, 4)}
    return lesion, meta, volume_ml, kind, side


def make_case(seed: int, augment: bool = True, background: Tissues | None = None, variety: bool = False,
              lesion_free: bool = False) -> SyntheticCase:
    """One synthetic chronic-stroke case; a pure function of its arguments.

    ``background``: the brain to paste into (default: the template). ``variety``: unlabelled atrophy
    and a random tissue contrast (training only: validation cases keep the plain recipe).
    ``lesion_free``: the background with its distractors and no lesion (a negative).
    """
    rng = np.random.default_rng(seed)
    tissues = template_tissues() if background is None else background
    if lesion_free:
        lesion, meta, kind, side = np.zeros(SHAPE, bool), {"kind": "none", "target_volume_ml": 0.0}, "none", 1
    else:
        lesion, meta, _, kind, side = _lesion(rng, tissues)
    image = tissues.t1.copy()
    if variety:
        image = _atrophy(np.random.default_rng([seed, 2]), image, tissues)
    enlarged = _enlarge_ventricle(rng, lesion, side, tissues)
    image[enlarged] = tissues.level(CSF_LEVEL * rng.uniform(0.8, 1.1))
    if kind in ("mca", "pca", "aca"):
        sulci = _widen_sulci(rng, lesion, tissues)
        image = np.where(sulci, 0.3 * image + 0.7 * tissues.csf_level, image)
    pvh_alpha, pvs = _distractors(rng, tissues)
    image = (1 - pvh_alpha) * image + pvh_alpha * tissues.level(rng.uniform(120, 160))
    image[pvs] = tissues.level(CSF_LEVEL * rng.uniform(0.9, 1.3))

    alpha = _lesion_alpha(rng, lesion) if lesion.any() else np.zeros(SHAPE, np.float32)
    # CSF-dark cavities most often; gliotic cores stay darker than grey matter: drawn between the
    # background's own CSF and grey-matter levels.
    core_level = tissues.level(rng.uniform(45, 110) if rng.random() < 0.8 else rng.uniform(110, 140))
    texture = 10 * (tissues.gm_level - tissues.csf_level) / (GM_LEVEL - CSF_LEVEL) * _smooth_noise(rng, SHAPE, 1.5)
    image = (1 - alpha) * image + alpha * (core_level + texture)
    image = np.where(tissues.shown, image, 0.0).astype(np.float32)
    label = (alpha >= 0.5) & lesion & ~tissues.ventricles & ~enlarged
    if variety and rng.random() < 0.8:
        image = _tissue_contrast(np.random.default_rng([seed, 3]), image, tissues)
    if augment:
        image, label = _augment(rng, image, label, tissues)
    meta.update(seed=seed, core_intensity=round(float(core_level), 1), background=tissues.name)
    return SyntheticCase(image=image, mask=label.astype(np.uint8), seed=seed, meta=meta)


def _augment(rng: np.random.Generator, image: np.ndarray, label: np.ndarray,
             tissues: Tissues) -> tuple[np.ndarray, np.ndarray]:
    """Edge artefacts (the template only: a real scan brings its own), warp and intensity changes."""
    if rng.random() < 0.7 and tissues.support is None:
        image = _edge_artefacts(rng, image, tissues)
    image, label = _spatial_warp(rng, image, label)
    if tissues.support is not None:  # the model sees the template's mask, not a warped one
        image = np.where(tissues.support, image, 0.0)
        label &= tissues.support
    return _intensity_augment(rng, image), label


def case_paths(out_dir: Path, index: int) -> tuple[Path, Path]:
    """ATLAS R2.0 layout and file names for case ``index`` of a run."""
    subject = f"sub-r001s{index:03d}" if index < 1000 else f"sub-r001s{index}"
    anat = out_dir / "ATLAS_2" / "Training" / "R001" / subject / "ses-1" / "anat"
    stem = f"{subject}_ses-1_space-MNI152NLin2009aSym"
    return anat / f"{stem}_T1w.nii.gz", anat / f"{stem}_label-L_desc-T1lesion_mask.nii.gz"


def write_template_nifti(array: np.ndarray, path: Path, dtype: type, descrip: str) -> Path:
    """Write an array on the template grid (its affine, sform/qform code 2) with a provenance note."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(array).astype(dtype), TEMPLATE_AFFINE)
    image.set_sform(TEMPLATE_AFFINE, code=2)
    image.set_qform(TEMPLATE_AFFINE, code=2)
    image.header["descrip"] = descrip.encode()[:79]
    nib.save(image, path)
    return path


def write_case(case: SyntheticCase, out_dir: Path, index: int) -> tuple[Path, Path]:
    """Write one case (int16 T1, uint8 mask) with the template's affine and a provenance note."""
    image_path, mask_path = case_paths(out_dir, index)
    descrip = f"xnet synthetic seed {case.seed} MNI152-2009a derived"
    write_template_nifti(np.round(case.image), image_path, np.int16, descrip)
    write_template_nifti(case.mask, mask_path, np.uint8, descrip)
    return image_path, mask_path
