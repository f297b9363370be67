"""Seeds, mutations and targets of the input fuzzer (``benchmarks/fuzz_inputs.py``).

A case is a set of small files (``Case.files``: name -> bytes) and the entry point that reads them
(``Case.target``), the same functions the CLI and the viewer call. ``run_case`` writes the files into a
folder and calls the target: it returns normally (the input was used, and what came back keeps the
reader's contract) or raises ``XNetError`` (the input was refused with a message). Anything else is a
finding. ``tests/test_fuzz_corpus.py`` replays saved findings through ``run_case`` too.

The seeds are tiny valid inputs made here: NIfTI-1 and NIfTI-2 scans (3D and 4D, .nii and .nii.gz), a
4-slice DICOM series, an X-Net checkpoint of the real architecture at small widths with its card, the
reader's notes sidecar, the viewer's recovery copy, the registration and explanation caches and the
viewer's settings file.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from xnet_core.errors import XNetError

SCAN = "scan.nii"
MASK = "mask.nii.gz"
WEIGHTS = "xnet.pt"
CARD = "xnet.card.json"
NOTES = "mask_notes.json"
SETTINGS = "xnet-viewer.conf"  # the viewer's QSettings file (INI on Linux: ~/.config/xnet-viewer/)
SMALL_WIDTHS = (2, 4, 8, 16, 32)  # the real X-Net layers, 19 k parameters: a checkpoint loads in milliseconds


class ContractError(AssertionError):
    """A reader accepted an input but returned something its callers cannot use (a finding)."""


@dataclass
class Case:
    """Files to write into an empty folder, the entry point that reads them, and how they were made."""

    target: str
    files: dict[str, bytes]
    mutation: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"target": self.target, "mutation": self.mutation, "files": sorted(self.files)}


# -- seeds -----------------------------------------------------------------------------------------
def seed_array(shape: tuple[int, ...] = (12, 10, 8)) -> np.ndarray:
    """A smooth blob with noise: every voxel differs, so a loaded scan is never 'all one value'."""
    rng = np.random.default_rng(0)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:3]], indexing="ij")
    blob = 800 * np.exp(-sum(g**2 for g in grids) * 2)
    data = blob + rng.normal(0, 20, shape[:3])
    if len(shape) == 4:
        data = np.stack([data * (1 + 0.1 * t) for t in range(shape[3])], axis=-1)
    return np.clip(data, 0, None).astype(np.int16)


SEED_AFFINE = np.array([[-1.2, 0.05, 0, 7.0], [0, 1.1, 0.1, -12.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]])


@lru_cache(maxsize=64)  # seeds are made once: bytes are immutable
def nifti_bytes(version: int = 1, four_d: bool = False, dtype=np.int16, mask: bool = False) -> bytes:
    """A complete single-file NIfTI image (``version`` 1 or 2) on the seed grid."""
    data = seed_array((12, 10, 8, 2) if four_d else (12, 10, 8))
    if mask:
        data = (data > 400).astype(np.uint8)
    klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    image = klass(data.astype(dtype), SEED_AFFINE)
    image.set_sform(SEED_AFFINE, code=1)
    image.set_qform(SEED_AFFINE, code=1)
    image.header["scl_slope"], image.header["scl_inter"] = 1.0, 0.0
    return image.to_bytes()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


@lru_cache(maxsize=1)
def seed_volume():
    """The scan every mask, notes, recovery and cache case belongs to (the NIfTI seed, loaded)."""
    from xnet_core.volume import load_volume  # noqa: PLC0415 - workers import the readers once

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / SCAN
        path.write_bytes(nifti_bytes())
        volume = load_volume(path)
    volume.path = Path(SCAN)  # the recovery key uses the path: the same in every case folder
    return volume


@lru_cache(maxsize=1)
def checkpoint_seed() -> tuple[dict, dict]:
    """(state dict, card) of a seeded X-Net at ``SMALL_WIDTHS``."""
    import torch

    from xnet_core.checkpoint import default_card
    from xnet_core.model import XNet

    torch.manual_seed(0)
    model = XNet(widths=SMALL_WIDTHS, keras_init=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, default_card(model)


def torch_bytes(payload: object) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def json_bytes(payload: object) -> bytes:
    return json.dumps(payload, allow_nan=True).encode()


def notes_payload() -> dict:
    return {"format": 1, "scan": "scan", "mask": MASK, "study": "old infarct, left MCA",
            "slices": {"3": "edge of the lesion", "4": "core"}, "version": "x"}


def recovery_files() -> dict[str, bytes]:
    return dict(_recovery_files())


@lru_cache(maxsize=1)
def _recovery_files() -> dict[str, bytes]:
    from app.reader import scan_key

    key = scan_key(seed_volume())
    meta = {"scan": SCAN, "shape": list(seed_volume().shape), "saved_path": "reader.nii.gz",
            "notes": notes_payload(), "saved_at": "2024-05-01 10:00:00"}
    return {f"recovery/{key}.nii.gz": gz(nifti_bytes(mask=True, dtype=np.uint8)),
            f"recovery/{key}.json": json_bytes(meta)}


def registration_cache_files() -> dict[str, bytes]:
    return dict(_registration_cache_files())


@lru_cache(maxsize=1)
def _registration_cache_files() -> dict[str, bytes]:
    from xnet_core import registration

    key = registration.scan_key(seed_volume())
    volume = seed_volume()
    bits = np.packbits((volume.data > 300).ravel())
    buffer = io.BytesIO()
    np.savez_compressed(buffer, brain_mask=bits)
    matrix = np.array([[1.1, 0.02, 0, 3], [0, 0.9, 0.05, -4], [0.01, 0, 1.0, 2], [0, 0, 0, 1]])
    meta = {"key": key, "template_to_native": matrix.tolist(), "similarity": 0.4, "method": registration.METHOD}
    folder = f"cache/xnet-viewer/registration/{key[:32]}"
    return {f"{folder}.json": json_bytes(meta), f"{folder}.npz": buffer.getvalue()}


EXPLAIN_KEY = "0" * 64


def explain_cache_files() -> dict[str, bytes]:
    return dict(_explain_cache_files())


@lru_cache(maxsize=1)
def _explain_cache_files() -> dict[str, bytes]:
    buffer = io.BytesIO()
    meta = {"status": "ok", "target_kind": "lesion", "target_area": 12, "params": {"layer": "x"}}
    np.savez_compressed(buffer, map=np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8),
                        meta=np.array(json.dumps(meta)))
    return {f"explain/{EXPLAIN_KEY}.npz": buffer.getvalue()}


# The viewer's settings as Qt writes them, with every key it reads at start-up.
SETTINGS_SEED = """[General]
brush_radius=3
colour_map=inferno
heatmap_opacity=0.5
mask_opacity=0.45
radiological=true
recent_files=/data/sub-01_T1w.nii.gz, /data/dicom/series3

[pacs]
called_aet=ORTHANC
calling_aet=XNET
host=pacs.example.org
port=104
receive_port=0
timeout_s=30
tls=false
tls_ca_file=
tls_cert_file=
tls_key_file=
"""


# -- targets ---------------------------------------------------------------------------------------
def _check_volume(volume, *, is_mask: bool = False) -> None:
    """What every caller of ``load_volume`` relies on."""
    data = volume.data
    if data.dtype != np.float32 or data.ndim != 3 or min(data.shape) < 1:
        raise ContractError(f"voxels {data.dtype} {data.shape}: not a float32 3D volume")
    if not np.isfinite(data).all():
        raise ContractError("NaN/Inf voxels left in a loaded volume")
    affine = np.asarray(volume.affine)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ContractError(f"unusable affine returned:\n{affine}")
    if not all(np.isfinite(v) and v > 0 for v in volume.voxel_sizes):
        raise ContractError(f"voxel sizes {volume.voxel_sizes}")
    if tuple(volume.source_shape) != tuple(int(s) for s in np.asarray(volume.to_source_order(data)).shape):
        raise ContractError("source_shape does not match the data")
    if not is_mask and float(data.max()) == float(data.min()):
        raise ContractError("a constant scan was accepted")


def _run_scan(folder: Path) -> None:
    from xnet_core.volume import load_volume

    names = [n for n in os.listdir(folder) if n.startswith("scan")]
    _check_volume(load_volume(folder / names[0]))


def _run_dicom(folder: Path) -> None:
    from xnet_core.volume import load_volume

    _check_volume(load_volume(folder / "series"))


def _run_mask(folder: Path) -> None:
    """The viewer's and ``--reader``'s path: a mask file (and its notes sidecar) on the seed scan."""
    from app.reader import ReaderRead

    read = ReaderRead.load(folder / MASK, seed_volume())
    if read.mask.shape != seed_volume().shape or read.mask.dtype != np.uint8:
        raise ContractError(f"reader mask {read.mask.dtype} {read.mask.shape} is not on the scan's grid")
    json.dumps(read.notes_payload())  # what the next save writes


def _run_notes(folder: Path) -> None:
    from app.reader import load_notes

    json.dumps(load_notes(folder / NOTES).as_dict())
    _run_mask(folder)


def _run_checkpoint(folder: Path) -> None:
    from xnet_core.cards import card_normalisation, read_sidecar_card
    from xnet_core.checkpoint import load_checkpoint

    card_normalisation(read_sidecar_card(folder / WEIGHTS))  # the viewer reads the card before the weights
    checkpoint = load_checkpoint(folder / WEIGHTS)
    json.dumps(checkpoint.provenance())
    checkpoint.build_model()


def _run_recovery(folder: Path) -> None:
    from app.reader import RecoveryStore

    store = RecoveryStore(folder / "recovery")
    found = store.find(seed_volume())
    if found is not None:
        found.saved_at  # noqa: B018 - the viewer shows it
        read = store.restore(found, seed_volume())
        if read.mask.shape != seed_volume().shape:
            raise ContractError("a recovered mask off the scan's grid")


def _run_transform(folder: Path) -> None:
    from xnet_core import registration

    os.environ["XDG_CACHE_HOME"] = str(folder / "cache")
    volume = seed_volume()
    cached = registration._load_cached(registration.scan_key(volume), volume)
    if cached is None:
        return
    matrix = cached["template_to_native"]
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
        raise ContractError(f"unusable cached transform returned:\n{matrix}")
    if cached["brain_mask"].shape != volume.shape:
        raise ContractError("cached brain mask off the scan's grid")


def _run_explain_cache(folder: Path) -> None:
    from explain.engine import DiskCache

    got = DiskCache(folder / "explain").get(EXPLAIN_KEY)
    if got is not None and not isinstance(got[1], dict):
        raise ContractError(f"cache entry metadata is a {type(got[1]).__name__}, not a dict")


_settings_files = itertools.count()


def _run_settings(folder: Path) -> None:
    """What the viewer reads from its settings at start-up (``app.settings``): every value usable."""
    from PySide6.QtCore import QSettings

    from app.controls import saved_view_state
    from app.drawing import COLOUR_MAPS
    from app.files import MAX_RECENT, recent_paths
    from app.pacs_settings import load_settings
    from app.reader_tools import MAX_BRUSH, saved_brush_radius

    # Qt keeps each settings file it has read, by name: every case reads a file of its own name.
    path = folder / f"settings-{os.getpid()}-{next(_settings_files)}.conf"
    shutil.copyfile(folder / SETTINGS, path)
    store = QSettings(str(path), QSettings.Format.IniFormat)
    state = saved_view_state(store)
    for name in ("opacity", "mask_opacity"):
        value = getattr(state, name)
        if not isinstance(value, float) or not 0.0 <= value <= 1.0:
            raise ContractError(f"{name} {value!r} read from the settings")
    if state.colour_map not in COLOUR_MAPS or not isinstance(state.radiological, bool):
        raise ContractError(f"colour map {state.colour_map!r}, radiological {state.radiological!r} read")
    radius = saved_brush_radius(store)
    if type(radius) is not int or not 1 <= radius <= MAX_BRUSH:
        raise ContractError(f"brush radius {radius!r} read from the settings")
    recent = recent_paths(store)
    if len(recent) > MAX_RECENT or not all(isinstance(p, str) and p for p in recent):
        raise ContractError(f"recent files {recent!r} read from the settings")
    pacs = load_settings(store)
    if pacs is not None:
        if not 1 <= pacs.port <= 65535 or not 0 < pacs.timeout_s <= 600:
            raise ContractError(f"PACS settings {pacs!r} read from the settings")
        json.dumps(pacs.as_dict())


TARGETS: dict[str, Callable[[Path], None]] = {
    "nifti": _run_scan, "dicom": _run_dicom, "mask": _run_mask, "notes": _run_notes,
    "checkpoint": _run_checkpoint, "recovery": _run_recovery, "transform": _run_transform,
    "explain_cache": _run_explain_cache, "settings": _run_settings,
}


def write_case(case: Case, folder: Path) -> None:
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def run_case(case: Case, folder: Path) -> str:
    """Write the case into ``folder`` (empty) and run its target: "ok", or the ``XNetError`` message.

    Any other exception propagates: that is a finding. An ``XNetError`` without a message is one too.
    """
    write_case(case, folder)
    try:
        TARGETS[case.target](folder)
    except XNetError as error:
        message = str(error).strip()
        if not message:
            raise ContractError(f"{type(error).__name__} without a message") from error
        return message
    return "ok"


@lru_cache(maxsize=1)
def seed_weights() -> bytes:
    return torch_bytes(checkpoint_seed()[0])


def seed_files() -> dict[str, bytes]:
    """Seed files a saved case names instead of storing (the 230 kB checkpoint)."""
    return {WEIGHTS: seed_weights()}


def load_corpus_case(folder: Path) -> Case:
    """A saved case (``tests/fuzz_corpus/<name>/``): ``case.json`` and the files under ``files/``;
    files listed in ``seed_files`` are the unmodified seeds, made again here."""
    meta = json.loads((folder / "case.json").read_text())
    patched = meta.get("seed_patches", {})
    files = {name: (folder / "files" / name).read_bytes() for name in meta["files"]
             if name not in meta.get("seed_files", []) and name not in patched}
    files.update({name: seed_files()[name] for name in meta.get("seed_files", [])})
    for name, patches in patched.items():
        data = bytearray(seed_files()[name])
        for offset, hex_bytes in patches:
            data[offset:offset + len(hex_bytes) // 2] = bytes.fromhex(hex_bytes)
        files[name] = bytes(data)
    return Case(meta["target"], files, meta.get("mutation", []))


def save_case(case: Case, folder: Path, compact: bool = False, **extra: object) -> None:
    """Write a case as ``load_corpus_case`` reads it; ``compact`` leaves out files equal to a seed."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = seed_files() if compact else {}
    unchanged = sorted(name for name, data in case.files.items() if seeds.get(name) == data)
    patches = {}
    for name, data in case.files.items():
        seed_data = seeds.get(name)
        if seed_data is not None and len(seed_data) == len(data) and data != seed_data:
            at = [i for i in range(len(data)) if data[i] != seed_data[i]]
            if len(at) <= 64:  # a few flipped bytes: stored as patches of the seed, not 200 kB
                patches[name] = [[i, data[i:i + 1].hex()] for i in at]
    kept = {n: d for n, d in case.files.items() if n not in unchanged and n not in patches}
    write_case(Case(case.target, kept), folder / "files")
    meta = {**case.to_json(), **({"seed_files": unchanged} if unchanged else {}),
            **({"seed_patches": patches} if patches else {}), **extra}
    (folder / "case.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
