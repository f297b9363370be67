"""Prepared training cases: synthetic (made from a seed) or ATLAS scans, cached and streamed."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from xnet_core.atomic import atomic_path
from xnet_core.training.sampling import VolumeSlices
from xnet_core.training.trainer import default_state_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseRecipe:
    """Which brain each synthetic case is pasted into, and the variety only training gets.

    Each seed draws its background and whether it is a negative from its own stream, apart from the
    generator's, so that a template case of the plain recipe is the very case it always was.
    """

    backgrounds: tuple[str, ...] = ()  # prepared background files (xnet_core.training.backgrounds)
    template_share: float = 1.0  # share of cases on the template; the rest on the backgrounds
    negative_share: float = 0.0  # share of lesion-free cases (negatives)
    variety: bool = False  # unlabelled atrophy and a random tissue contrast

    def draw(self, seed: int) -> tuple[str | None, bool]:
        """(background file or None for the template, lesion-free) for this seed."""
        rng = np.random.default_rng([seed, 1])
        on_template = not self.backgrounds or rng.random() < self.template_share
        background = None if on_template else self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        return background, bool(rng.random() < self.negative_share)

    @property
    def plain(self) -> bool:
        return not self.backgrounds and self.negative_share == 0 and not self.variety

    def key(self) -> str:
        """A short name for the cache file names ('' for the plain recipe, whose names never change)."""
        if self.plain:
            return ""
        text = f"{sorted(Path(b).name for b in self.backgrounds)} {self.template_share} {self.negative_share} {self.variety}"
        return "-" + hashlib.sha256(text.encode()).hexdigest()[:10]

    def describe(self) -> str:
        if self.plain:
            return "the MNI152 2009a template"
        names = ", ".join(sorted(Path(b).name.rsplit("-", 1)[0] for b in self.backgrounds))
        return (f"{len(self.backgrounds)} real lesion-free brains ({names}) and the MNI152 2009a template "
                f"({self.template_share:.0%} of cases); {self.negative_share:.0%} lesion-free cases"
                + ("; unlabelled atrophy and random tissue contrast" if self.variety else ""))


@lru_cache(maxsize=2)
def background_tissues(prepared: str):
    """The generator's tissue maps of a prepared background (a few seconds: kept for the next case)."""
    from xnet_core.preprocess import template_brain_mask
    from xnet_core.training.backgrounds import load_background
    from xnet_core.training.synthetic import derive_tissues

    background = load_background(prepared)
    return derive_tissues(background.image, background.brain, background.gm, background.wm, name=background.name,
                          csf_level=background.levels[0], gm_level=background.levels[1],
                          support=template_brain_mask() > 0)


def recipe_case(seed: int, recipe: CaseRecipe, augment: bool = True):
    """The synthetic case of this seed under this recipe (its background, negative or not, variety)."""
    from xnet_core.training.synthetic import make_case

    background, lesion_free = recipe.draw(seed)
    tissues = None if background is None else background_tissues(background)
    return make_case(seed, augment=augment, background=tissues, variety=recipe.variety, lesion_free=lesion_free)


def synthetic_volume_slices(seed: int, normalisation: str = "robust", augment: bool = True,
                            recipe: CaseRecipe | None = None) -> VolumeSlices:
    """A synthetic case, prepared exactly as inference prepares a scan on the template grid."""
    from xnet_core.preprocess import TEMPLATE_X0, TEMPLATE_Y0, SliceGeometry, normalise, template_brain_mask
    from xnet_core.training.synthetic import SHAPE

    case = recipe_case(seed, recipe or CaseRecipe(), augment)
    mask = template_brain_mask()
    geometry = SliceGeometry(TEMPLATE_X0, TEMPLATE_Y0, SHAPE[:2])
    slices = geometry.to_model(normalise(case.image, mask, normalisation))
    brain = geometry.to_model(mask).reshape(len(slices), -1).any(axis=1)
    return VolumeSlices(slices.astype(np.float16), geometry.to_model(case.mask).astype(np.uint8), brain)


def atlas_volume_slices(scan, normalisation: str = "robust") -> VolumeSlices:
    """An ATLAS scan and its mask union, prepared exactly as inference prepares it."""
    from xnet_core.training.datasets import load_lesion_mask
    from xnet_core.preprocess import prepare
    from xnet_core.volume import load_volume

    volume = load_volume(scan.t1)
    prepared = prepare(volume, normalisation)
    masks = prepared.geometry.to_model(load_lesion_mask(scan, volume))
    return VolumeSlices(prepared.slices.astype(np.float16), masks.astype(np.uint8), prepared.brain_slices)


def _cached_case(seed: int, augment: bool, cache_dir: Path | None, recipe: CaseRecipe | None = None) -> VolumeSlices:
    """A prepared synthetic case, read from / written to ``cache_dir`` (cases are pure functions of
    their seed and recipe)."""
    key = recipe.key() if recipe is not None else ""
    path = cache_dir / f"case-{seed}{'' if augment else '-plain'}{key}.npz" if cache_dir else None
    cached = _read_cached_case(path) if path is not None and path.is_file() else None
    if cached is not None:
        return cached
    case = synthetic_volume_slices(seed, augment=augment, **({"recipe": recipe} if key else {}))
    if path is not None:
        _write_cached_case(path, case)
    return case


def _read_cached_case(path: Path) -> VolumeSlices | None:
    """A cached case, or None when the entry cannot be read (damaged on disk, or not a case): made again."""
    try:
        with np.load(path) as saved:
            return VolumeSlices(saved["slices"], saved["masks"], saved["brain"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        log.warning("ignoring damaged training case %s (%s); it is made again", path, error)
        return None


def _write_cached_case(path: Path, case: VolumeSlices) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".npz") as tmp:  # the suffix stops numpy appending its own
            np.savez(tmp, slices=case.slices, masks=case.masks, brain=case.brain)
    except OSError as error:  # a full or read-only disk costs time (the case is made again), not the run
        log.warning("training case not cached (%s)", error)


def synthetic_pool(seeds: list[int], workers: int = 1, augment: bool = True,
                   cache_dir: Path | None = None, recipe: CaseRecipe | None = None) -> list[VolumeSlices]:
    """Prepare synthetic cases, in parallel processes when ``workers`` > 1, cached when asked."""
    stream = CaseStream(seeds, workers, augment, cache_dir, recipe)
    try:
        return stream.wait_for(len(seeds))
    finally:
        stream.close()


class CaseStream:
    """Synthetic cases prepared in the background, so that training can start before all are ready.

    Preparing every case first leaves a GPU idle for minutes (docs/model.md, stage 4). ``cases``
    grows in seed order as cases are finished (a SlicePool can hold the same list: appending is
    atomic and the pool only ever reads ``len`` then one element). Which cases a step can draw from
    then depends on timing, so a streamed run is not reproducible step for step.
    """

    def __init__(self, seeds: list[int], workers: int = 1, augment: bool = True,
                 cache_dir: Path | None = None, recipe: CaseRecipe | None = None) -> None:
        import threading

        self.cases: list[VolumeSlices] = []
        self.total = len(seeds)
        self.error: BaseException | None = None
        self._finished = False  # set (under the condition) when the thread stops, for whatever reason
        self._seeds, self._workers, self._augment, self._cache_dir = seeds, workers, augment, cache_dir
        self._recipe = recipe
        self._stop = threading.Event()
        self._grown = threading.Condition()
        self._thread = threading.Thread(target=self._prepare, name="case-stream", daemon=True)
        self._thread.start()

    def _prepare(self) -> None:
        try:
            if self._workers <= 1:
                for seed in self._seeds:
                    if self._stop.is_set():
                        return
                    self._add(_cached_case(seed, self._augment, self._cache_dir, self._recipe))
                return
            import multiprocessing as mp
            from functools import partial

            with mp.get_context("spawn").Pool(self._workers) as pool:
                results = pool.imap(partial(_cached_case, augment=self._augment, cache_dir=self._cache_dir,
                                            recipe=self._recipe),
                                    self._seeds)
                while len(self.cases) < self.total and not self._stop.is_set():
                    try:
                        self._add(results.next(timeout=0.5))
                    except mp.TimeoutError:
                        continue
        except BaseException as error:  # handed to the waiting thread, which reports it
            self.error = error
        finally:
            with self._grown:
                self._finished = True
                self._grown.notify_all()

    def _add(self, case: VolumeSlices) -> None:
        with self._grown:
            self.cases.append(case)
            self._grown.notify_all()

    def wait_for(self, count: int) -> list[VolumeSlices]:
        """Block until ``count`` cases (at most all) are ready; re-raises a preparation error."""
        count = min(count, self.total)
        with self._grown:
            self._grown.wait_for(lambda: len(self.cases) >= count or self._finished)
        if self.error is not None:
            raise self.error
        return self.cases

    @property
    def done(self) -> bool:
        return len(self.cases) >= self.total

    def close(self) -> None:
        """Stop preparing: a case being made in this process is finished and kept; cases being made in
        worker processes are dropped and the workers end."""
        self._stop.set()
        self._thread.join()


# preprocessing (code), the template and the bank (data). synthetic_volume_slices is added by source.
CASE_CODE = ("training/synthetic.py", "training/shapes.py", "preprocess.py")


def synthetic_case_cache() -> Path:
    """The cache folder for prepared synthetic cases, one per version of what makes them.

    Keyed by seed alone, a cache filled before a change to the generator would silently mix old
    cases into a new run. Hashing the 7.5 MB of sources and assets takes a fraction of a second.
    """
    import hashlib
    import inspect

    from xnet_core.assets import TEMPLATE_GM, TEMPLATE_T1, TEMPLATE_WM, asset_path
    from xnet_core.training.shapes import SHAPE_BANK

    digest = hashlib.sha256(inspect.getsource(synthetic_volume_slices).encode())
    for path in [Path(__file__).parent.parent / name for name in CASE_CODE] + \
            [asset_path(name) for name in (TEMPLATE_T1, TEMPLATE_GM, TEMPLATE_WM, SHAPE_BANK)]:
        digest.update(Path(path).read_bytes())
    return default_state_dir("synthetic-cases") / f"v-{digest.hexdigest()[:12]}"
