"""Real lesion-free brains as backgrounds for synthetic lesions.

A background is a healthy T1 brought onto the template grid by the runtime's own native-scan pipeline
(brain extraction, N4, affine; ``xnet_core.native.place``), so that the model trains on exactly what it
sees at run time: the registered scan inside the template's brain mask, with its real sulci, ventricles,
atrophy, skull-stripping errors and scanner contrast. For each one we keep, on the template grid:

- the image, scaled so that its white matter sits at the template's white-matter level (the generator's
  intensities are written on the template's 0-255 scale);
- the scan's own brain (deepbet's mask, moved), where lesions may be placed;
- grey- and white-matter probabilities from a three-class Gaussian mixture of the brain's intensities
  (CSF, grey, white), from which the generator derives CSF spaces, ventricles and depth.

People are split into training and validation once, here, by person: ``VALIDATION_PEOPLE``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from xnet_core.atomic import atomic_path
from xnet_core.errors import XNetError
from xnet_core.nifti import NIFTI_SUFFIXES, file_stem
from xnet_core.training.synthetic import TEMPLATE_WM_LEVEL

log = logging.getLogger(__name__)

# Bump when what a prepared background holds changes: old files are then prepared again.
PREPARATION = "bg-2"  # bg-2: a background whose registration fails the QC is refused
TEMPLATE_BACKGROUND = "template"

# The held-out people of the healthy-T1 collection (18 of 78): 12 of the 52 older IXI volunteers
# (60-74 y, 2 mm), 4 of the 19 ds002748 people, the anisotropic OpenfMRI ds011 scan and the NiiVue
# whole-head scan. Everyone else trains. Fixed here so that no run can move a person across.
VALIDATION_PEOPLE = frozenset({
    "IXI072", "IXI175", "IXI257", "IXI284", "IXI327", "IXI335", "IXI363", "IXI385", "IXI452", "IXI483",
    "IXI516", "IXI605",
    "ds002748-sub53", "ds002748-sub58", "ds002748-sub66", "ds002748-depr-sub09",
    "ds011-sub02", "niivue-chris",
})

_PEOPLE_PATTERNS = (
    (re.compile(r"(?:^|_)(IXI\d{3})(?:_|$|-)"), lambda m: m.group(1)),
    (re.compile(r"ds2748_depr_(sub\d+)"), lambda m: f"ds002748-depr-{m.group(1)}"),
    (re.compile(r"ds2748_ctrl_(sub\d+)"), lambda m: f"ds002748-{m.group(1)}"),
    (re.compile(r"openfmri_ds011_(sub\d+)"), lambda m: f"ds011-{m.group(1)}"),
    (re.compile(r"openneuro_ds114_(sub\d+)"), lambda m: f"ds114-{m.group(1)}"),
    (re.compile(r"studyforrest_(sub\d+)"), lambda m: f"studyforrest-{m.group(1)}"),
    (re.compile(r"chris_t1"), lambda m: "niivue-chris"),
    (re.compile(r"fsformats_(subject\d+)"), lambda m: f"fsformats-{m.group(1)}"),
    (re.compile(r"niimath_bitmap"), lambda m: "niimath-bitmap"),
)


class BackgroundError(XNetError):
    """A background scan that cannot be loaded, registered or classified."""


def person_of(stem: str) -> str:
    """The person a healthy-T1 file shows: the data set and subject, whatever the file's other parts
    (so that two scans of one person always land in the same set). Unknown names are their own person."""
    for pattern, person in _PEOPLE_PATTERNS:
        match = pattern.search(stem)
        if match:
            return person(match)
    return stem


def find_background_scans(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BackgroundError(f"{folder}: no such folder of background scans; give a folder of NIfTI T1s.")
    return sorted(p for p in folder.iterdir() if p.name.lower().endswith(NIFTI_SUFFIXES))


def scans_of_people(folder: str | Path, people: str) -> list[Path]:
    """The folder's scans of ``people``: ``all``, or the ``training`` or ``validation`` side of the split."""
    paths = find_background_scans(folder)
    if people == "all":
        return paths
    training, validation = split_backgrounds(paths)
    return validation if people == "validation" else training


def split_backgrounds(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(training, validation) by person: ``VALIDATION_PEOPLE`` validate, everyone else trains."""
    training = [p for p in paths if person_of(file_stem(p)) not in VALIDATION_PEOPLE]
    validation = [p for p in paths if person_of(file_stem(p)) in VALIDATION_PEOPLE]
    return training, validation


@dataclass(frozen=True)
class Background:
    """A prepared background on the template grid."""

    name: str
    image: np.ndarray  # float32, white matter at the template's level
    brain: np.ndarray  # bool: the scan's own brain
    gm: np.ndarray  # float32 probability
    wm: np.ndarray  # float32 probability
    levels: tuple[float, float, float]  # CSF, grey and white matter on the scaled image


# -- tissue classes -------------------------------------------------------------------------------
def tissue_mixture(values: np.ndarray, iterations: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A three-class 1-D Gaussian mixture (CSF < grey < white on a T1): (means, sds, weights)."""
    values = np.asarray(values, np.float64)
    sample = values[:: max(1, values.size // 400_000)]
    means = np.percentile(sample, [8, 45, 85])
    sds = np.full(3, sample.std() / 4 + 1e-6)
    weights = np.full(3, 1 / 3)
    for _ in range(iterations):
        resp = _responsibilities(sample, means, sds, weights)
        total = resp.sum(axis=0) + 1e-9
        weights = total / total.sum()
        means = (resp * sample[:, None]).sum(axis=0) / total
        sds = np.sqrt((resp * (sample[:, None] - means) ** 2).sum(axis=0) / total) + 1e-6
    order = np.argsort(means)
    return means[order], sds[order], weights[order]


def _responsibilities(values: np.ndarray, means: np.ndarray, sds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    log_p = -0.5 * ((values[:, None] - means) / sds) ** 2 - np.log(sds) + np.log(weights + 1e-12)
    log_p -= log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p)
    return p / p.sum(axis=1, keepdims=True)


def classify(image: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(grey-matter probability, white-matter probability, levels) of a T1 inside ``brain``."""
    inside = image[brain]
    if inside.size < 1000:
        raise BackgroundError("too little brain to tell CSF, grey and white matter apart")
    means, sds, weights = tissue_mixture(inside)
    if not (means[0] < means[1] < means[2]) or means[2] <= 0:
        raise BackgroundError("its intensities do not separate into CSF, grey and white matter as on a T1")
    resp = _responsibilities(inside.astype(np.float64), means, sds, weights).astype(np.float32)
    gm = np.zeros(image.shape, np.float32)
    wm = np.zeros(image.shape, np.float32)
    gm[brain], wm[brain] = resp[:, 1], resp[:, 2]
    return gm, wm, (float(means[0]), float(means[1]), float(means[2]))


# -- preparation ----------------------------------------------------------------------------------
def _file_key(path: Path) -> str:
    digest = hashlib.sha256(PREPARATION.encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def prepared_path(path: Path, cache_dir: Path) -> Path:
    return cache_dir / f"{file_stem(path)}-{_file_key(path)}.npz"


def prepare_background(path: str | Path, cache_dir: str | Path, device: str = "cpu") -> Path:
    """Register, scale and classify one healthy scan; returns its prepared file (cached by content).

    Raises ``BackgroundError`` (or another ``XNetError`` from loading/registration) naming the file.
    """
    from xnet_core.native import place
    from xnet_core.preprocess import template_brain_mask
    from xnet_core.volume import load_volume

    path, cache_dir = Path(path), Path(cache_dir)
    out = prepared_path(path, cache_dir)
    if out.is_file():
        return out
    volume = load_volume(path)
    placed = place(volume, device=device)
    if placed.registration is None and placed.not_registered:
        raise BackgroundError(f"{path.name}: not registered ({placed.not_registered})")
    if placed.registration is not None and placed.registration.warning:
        # A misregistered brain would teach the model that tissue off the template's outline is normal.
        raise BackgroundError(f"{path.name}: its registration failed the QC ({placed.registration.warning})")
    support = template_brain_mask() > 0
    image = np.asarray(placed.model_volume.data, np.float32)
    if placed.registration is None:
        brain = support.copy()
    else:
        brain = placed.registration.to_template(placed.registration.brain_mask.astype(np.float32), order=1) >= 0.5
        brain &= support
    try:
        gm, wm, levels = classify(image, brain)
    except BackgroundError as error:
        raise BackgroundError(f"{path.name}: {error}") from None
    scale = TEMPLATE_WM_LEVEL / levels[2]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez_compressed(tmp, image=(np.clip(image * scale, 0, None) * support).astype(np.float16),
                            brain=np.packbits(brain.ravel()), gm=np.round(gm * 255).astype(np.uint8),
                            wm=np.round(wm * 255).astype(np.uint8),
                            levels=np.array(levels) * scale, name=np.array(file_stem(path)))
    return out


def prepare_backgrounds(paths: list[Path], cache_dir: str | Path, device: str = "cpu",
                        on_log: Callable[[str], None] | None = None) -> list[Path]:
    """Prepare every background that can be; one that fails to load, register or pass the QC is
    skipped with a warning naming it (to ``on_log`` when given, else to the log), and the others go on."""
    prepared = []
    for index, path in enumerate(paths, 1):
        try:
            prepared.append(prepare_background(path, cache_dir, device))
            (on_log or log.info)(f"background {index}/{len(paths)} {file_stem(path)}: ready")
        except XNetError as error:
            message = str(error) if Path(path).name in str(error) else f"{Path(path).name}: {error}"
            if on_log is None:
                log.warning("skipping background %s", message)
            else:
                on_log(f"warning: skipping background {message}")
    return prepared


@lru_cache(maxsize=4)
def load_background(prepared: str) -> Background:
    """A prepared background (a few cases in a row often share one: kept for the next)."""
    from xnet_core.preprocess import TEMPLATE_SHAPE

    with np.load(prepared) as saved:
        image = saved["image"].astype(np.float32)
        brain = np.unpackbits(saved["brain"], count=int(np.prod(TEMPLATE_SHAPE))).reshape(TEMPLATE_SHAPE) > 0
        gm, wm = saved["gm"].astype(np.float32) / 255, saved["wm"].astype(np.float32) / 255
        levels = tuple(float(v) for v in saved["levels"])
        name = str(saved["name"])
    for array in (image, brain, gm, wm):
        array.setflags(write=False)
    return Background(name, image, brain, gm, wm, levels)  # type: ignore[arg-type]
