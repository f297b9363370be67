"""A bank of real stroke-lesion shapes on the template grid, for the synthetic-case generator.

Real lesion shapes are the strongest lever for synthetic stroke data (SynthStroke pastes real
ATLAS masks). The bank holds the LESYMAP chronic masks (Apache-2.0) and a subset of the SOOP
acute masks (BSD-2 / CC0), resampled with nearest neighbour onto the 197x233x189 template grid,
cropped to their bounding boxes and bit-packed. ``build_shape_bank`` makes the file once from a
masks folder (``lesymap/masks/``, ``soop/``); the generator reads only the bundled file
(``assets/lesion-shapes/``, with both licences and a README beside it).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from xnet_core.assets import asset_path

log = logging.getLogger(__name__)

SHAPE_BANK = "lesion-shapes/lesion_shapes.npz"
TEMPLATE_SHAPE = (197, 233, 189)
TEMPLATE_AFFINE = np.array([[1.0, 0, 0, -98], [0, 1.0, 0, -134], [0, 0, 1.0, -72], [0, 0, 0, 1]])
SOOP_EXCLUDED = {"sub-1373", "sub-1395"}  # > 850 ml across the midline: look wrong


@dataclass(frozen=True)
class LesionShape:
    """One real lesion on the template grid: a boolean box and where its corner sits."""

    source: str  # "lesymap" (chronic) or "soop" (acute)
    name: str
    offset: tuple[int, int, int]
    box: np.ndarray  # bool

    @property
    def n_voxels(self) -> int:
        return int(self.box.sum())

    @property
    def centroid(self) -> np.ndarray:
        return np.argwhere(self.box).mean(axis=0) + self.offset


def to_template_grid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling of a mask onto the template grid through the affines."""
    source_from_template = np.linalg.solve(affine, TEMPLATE_AFFINE)
    out = ndimage.affine_transform(
        (mask > 0).astype(np.uint8), source_from_template[:3, :3], offset=source_from_template[:3, 3],
        output_shape=TEMPLATE_SHAPE, order=0, mode="constant", cval=0,
    )
    return out > 0


def _crop(name: str, source: str, grid: np.ndarray) -> LesionShape | None:
    if not grid.any():
        return None
    box = ndimage.find_objects(grid.astype(np.uint8))[0]
    return LesionShape(source, name, tuple(int(s.start) for s in box), grid[box].copy())  # type: ignore[arg-type]


def _soop_choice(stats_csv: Path, limit: int, seed: int) -> list[str]:
    """A size-stratified, seeded subset of the SOOP masks (all of them would be 10 MB of assets)."""
    with open(stats_csv) as handle:
        rows = [r for r in csv.DictReader(handle)
                if r["subject_id"] not in SOOP_EXCLUDED and not r["fov_edges_touched"]
                and 0.05 <= float(r["volume_ml"]) <= 300]
    rows.sort(key=lambda r: float(r["volume_ml"]))
    picks = np.random.default_rng(seed).permutation(len(rows))[:limit]
    return [rows[i]["file"] for i in sorted(picks)]


def build_shape_bank(masks_root: Path, out: Path, soop_limit: int = 360, seed: int = 0) -> int:
    """Build the bundled bank from a masks folder (``lesymap/masks/``, ``soop/``); returns the number of shapes."""
    shapes: list[LesionShape] = []
    for path in sorted((masks_root / "lesymap" / "masks").glob("*.nii.gz")):
        image = nib.load(path)
        shape = _crop(path.name.split(".")[0], "lesymap", to_template_grid(np.asarray(image.dataobj), image.affine))
        shapes.append(shape) if shape else None
    for relative in _soop_choice(masks_root / "soop" / "lesion_stats.csv", soop_limit, seed):
        image = nib.load(masks_root / "soop" / relative)
        grid = to_template_grid(np.asarray(image.dataobj), image.affine)
        grid = ndimage.binary_closing(grid, iterations=1)  # acute DWI patches -> more cavity-like
        shape = _crop(Path(relative).name.split(".")[0], "soop", grid)
        shapes.append(shape) if shape else None
    save_shape_bank(shapes, out)
    return len(shapes)


def save_shape_bank(shapes: list[LesionShape], out: Path) -> None:
    packed = [np.packbits(s.box.ravel()) for s in shapes]
    np.savez_compressed(
        out,
        sources=np.array([s.source for s in shapes]),
        names=np.array([s.name for s in shapes]),
        offsets=np.array([s.offset for s in shapes], dtype=np.int32),
        box_shapes=np.array([s.box.shape for s in shapes], dtype=np.int32),
        bit_ends=np.cumsum([len(p) for p in packed]),
        bits=np.concatenate(packed),
    )


@lru_cache(maxsize=1)
def load_shape_bank() -> tuple[LesionShape, ...]:
    """The bundled real lesion shapes (read once; immutable)."""
    with np.load(asset_path(SHAPE_BANK)) as npz:
        bank = {key: npz[key] for key in npz.files}  # each npz access re-reads: read once
    ends = bank["bit_ends"]
    starts = np.r_[0, ends[:-1]]
    shapes = []
    for i, (source, name) in enumerate(zip(bank["sources"], bank["names"])):
        dims = tuple(int(d) for d in bank["box_shapes"][i])
        box = np.unpackbits(bank["bits"][starts[i]:ends[i]], count=int(np.prod(dims))).reshape(dims).astype(bool)
        box.setflags(write=False)
        shapes.append(LesionShape(str(source), str(name), tuple(int(o) for o in bank["offsets"][i]), box))
    return tuple(shapes)


if __name__ == "__main__":  # python -m xnet_core.training.shapes MASKS_DIR OUT.npz
    import sys

    logging.basicConfig(level=logging.INFO)
    count = build_shape_bank(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{count} shapes written to {sys.argv[2]}")
