"""The radiologist's own read, as plain arrays (no Qt): a lesion mask painted or loaded, with undo,
notes per slice and for the study, atomic saving, and a recovery copy that survives a crash.

The viewer's brush, eraser and buttons call these methods; the tests call them the same way.
Sections are addressed like the viewer's panels: a plane (axial / coronal / sagittal), the index
along its fixed axis, and section coordinates (RAS x, y on an axial section).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xnet_core import DISCLAIMER, __version__
from xnet_core.atomic import write_json_atomic
from xnet_core.errors import VolumeError
from xnet_core.image import Volume
from xnet_core.nifti import file_stem
from xnet_core.reader_mask import load_reader_mask
from xnet_core.volume import save_like

UNDO_LIMIT = 200  # strokes; a section snapshot is ~45 kB on the template grid, so at most ~9 MB each way
PLANE_FIXED_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
NOTES_FORMAT = 1


def notes_path_for(mask_path: str | os.PathLike) -> Path:
    """The notes sidecar next to a reader mask: ``<stem>_notes.json``."""
    path = Path(mask_path)
    return path.with_name(f"{file_stem(path)}_notes.json")


@dataclass
class Notes:
    """Free text for the study and for axial slices ``z`` (docs/design.md's slice numbers)."""

    study: str = ""
    slices: dict[int, str] = field(default_factory=dict)

    def set_slice(self, z: int, text: str) -> None:
        if text.strip():
            self.slices[int(z)] = text
        else:
            self.slices.pop(int(z), None)

    def as_dict(self) -> dict:
        return {"study": self.study, "slices": {str(z): self.slices[z] for z in sorted(self.slices)}}

    @classmethod
    def from_dict(cls, payload: dict) -> "Notes":
        try:
            slices = {int(z): str(text) for z, text in dict(payload.get("slices", {})).items()}
            return cls(str(payload.get("study", "")), slices)
        except (TypeError, ValueError, AttributeError):
            raise VolumeError("the notes file is not in X-Net Viewer's format ({'study': ..., 'slices': "
                              "{'z': ...}}); fix or remove it.") from None


def load_notes(path: str | os.PathLike) -> Notes:
    """Notes from a sidecar (``xnet report --notes`` reads the same file)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise VolumeError(f"{path}: cannot read the notes ({exc.strerror or exc}).") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # Recursion: nested beyond the stack
        raise VolumeError(f"{path}: the notes file is not valid JSON; fix or remove it.") from None
    if not isinstance(payload, dict):
        raise VolumeError(f"{path}: the notes file holds no object; fix or remove it.")
    return Notes.from_dict(payload)


@dataclass
class _Edit:
    """One undoable change: a section before and after (a stroke, a fill, a clear)."""

    plane: str
    index: int
    before: np.ndarray
    after: np.ndarray


class ReaderRead:
    """The reader's mask (uint8 [x, y, z] on the scan's RAS grid) and notes, with undo/redo.

    ``revision`` counts changes; ``saved_revision`` is the one on disk, so ``dirty`` says whether a
    save (or the recovery copy) is due.
    """

    def __init__(self, volume: Volume, mask: np.ndarray | None = None, path: Path | None = None,
                 notes: Notes | None = None, messages: list[str] | None = None) -> None:
        self.volume = volume
        self.mask = np.zeros(volume.shape, np.uint8) if mask is None else mask.astype(np.uint8)
        self.path = path
        self.notes = notes or Notes()
        self.messages = messages or []  # e.g. "resampled with nearest neighbour"
        self.revision = self.saved_revision = 0
        self._undo: list[_Edit] = []
        self._redo: list[_Edit] = []
        self._stroke: tuple[str, int, np.ndarray] | None = None

    # -- loading and saving ------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, volume: Volume) -> "ReaderRead":
        """A mask file (see ``xnet_core.reader_mask``) and its notes sidecar when there is one."""
        loaded = load_reader_mask(path, volume)
        sidecar = notes_path_for(path)
        notes = load_notes(sidecar) if sidecar.exists() else Notes()
        # A resampled mask is not on the scan's grid: saving must not overwrite the original file.
        return cls(volume, loaded.mask, None if loaded.resampled else Path(path), notes, loaded.notes)

    @property
    def dirty(self) -> bool:
        return self.revision != self.saved_revision

    def notes_changed(self) -> None:
        self.revision += 1

    def save(self, path: str | os.PathLike, descrip: str = "xnet reader mask") -> Path:
        """uint8 NIfTI on the scan's own grid and affine, then the notes sidecar; both atomic."""
        path = Path(path)
        if not path.name.lower().endswith((".nii", ".nii.gz")):
            path = path.with_name(path.name + ".nii.gz")
        revision = self.revision
        save_like(self.mask, self.volume, path, descrip, np.uint8)
        write_json_atomic(notes_path_for(path), self.notes_payload())
        self.path, self.saved_revision = path, revision
        return path

    def notes_payload(self) -> dict:
        return {"format": NOTES_FORMAT, "scan": self.volume.name, "mask": self.path.name if self.path else None,
                **self.notes.as_dict(), "slice_numbering": "0-based axial index z of the RAS-canonical scan",
                "disclaimer": DISCLAIMER, "version": __version__}

    # -- editing -----------------------------------------------------------------------------
    def section(self, plane: str, index: int) -> np.ndarray:
        """A writable view of one section: [x, y] axial, [x, z] coronal, [y, z] sagittal."""
        return self.mask[_section_index(plane, index)]

    @property
    def in_stroke(self) -> bool:
        return self._stroke is not None

    def begin_stroke(self, plane: str, index: int) -> None:
        self._stroke = (plane, index, self.section(plane, index).copy())

    def paint(self, xy: tuple[float, float], radius: float, value: int,
              previous: tuple[float, float] | None = None) -> tuple[slice, slice] | None:
        """A disc of ``radius`` voxels (1 = one voxel) at section point ``xy``, swept from ``previous``
        so a fast drag leaves no gaps; ``value`` 1 paints, 0 erases. Returns the box changed."""
        if self._stroke is None:
            raise RuntimeError("paint() outside a stroke: call begin_stroke() first")
        plane, index, _ = self._stroke
        section = self.section(plane, index)
        box = _disc_box(section.shape, xy, previous, radius)
        if box is None:
            return None
        columns, rows = np.ogrid[box[0], box[1]]
        start = np.asarray(previous if previous is not None else xy, float)
        end = np.asarray(xy, float)
        inside = _distance_to_segment(columns, rows, start, end) <= max(radius - 0.5, 0.0) + 1e-9
        region = section[box]
        region[inside] = value
        self.revision += 1
        return box

    def end_stroke(self) -> bool:
        """Close the stroke; it becomes one undo step when it changed anything."""
        if self._stroke is None:
            return False
        plane, index, before = self._stroke
        self._stroke = None
        after = self.section(plane, index).copy()
        if np.array_equal(before, after):
            return False
        self._push(_Edit(plane, index, before, after))
        return True

    def fill_holes(self, plane: str, index: int) -> bool:
        """Fill enclosed holes of the section (e.g. a lesion drawn as a contour)."""
        from scipy import ndimage  # scipy.ndimage costs ~0.3 s to import: not on the viewer's path to its first frame

        return self._replace(plane, index, ndimage.binary_fill_holes(self.section(plane, index)))

    def clear_section(self, plane: str, index: int) -> bool:
        return self._replace(plane, index, np.zeros_like(self.section(plane, index)))

    def _replace(self, plane: str, index: int, new: np.ndarray) -> bool:
        section = self.section(plane, index)
        before, after = section.copy(), new.astype(np.uint8)
        if np.array_equal(before, after):
            return False
        section[...] = after
        self.revision += 1
        self._push(_Edit(plane, index, before, after))
        return True

    def _push(self, edit: _Edit) -> None:
        self._undo.append(edit)
        del self._undo[:-UNDO_LIMIT]
        self._redo.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> tuple[str, int] | None:
        """Undo the last edit; returns its (plane, index) so the viewer can show it."""
        return self._move_edit(self._undo, self._redo, "before")

    def redo(self) -> tuple[str, int] | None:
        return self._move_edit(self._redo, self._undo, "after")

    def _move_edit(self, source: list[_Edit], target: list[_Edit], state: str) -> tuple[str, int] | None:
        if not source:
            return None
        edit = source.pop()
        self.section(edit.plane, edit.index)[...] = getattr(edit, state)
        target.append(edit)
        self.revision += 1
        return edit.plane, edit.index


def _section_index(plane: str, index: int) -> tuple:
    where: list = [slice(None)] * 3
    where[PLANE_FIXED_AXIS[plane]] = int(index)
    return tuple(where)


def _disc_box(shape: tuple[int, int], xy, previous, radius: float) -> tuple[slice, slice] | None:
    """The section box a swept disc can touch, clipped to the section; None when outside."""
    points = np.array([xy] if previous is None else [xy, previous], float)
    reach = max(radius - 0.5, 0.0) + 1
    low = np.floor(points.min(axis=0) - reach).astype(int)
    high = np.ceil(points.max(axis=0) + reach).astype(int) + 1
    low, high = np.maximum(low, 0), np.minimum(high, shape)
    if np.any(high <= low):
        return None
    return slice(low[0], high[0]), slice(low[1], high[1])


def _distance_to_segment(columns: np.ndarray, rows: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance of each voxel centre (integer indices) to the segment start-end, in voxels."""
    direction = end - start
    length2 = float(direction @ direction)
    if length2 == 0:
        t = np.zeros(np.broadcast(columns, rows).shape)
    else:
        t = np.clip(((columns - start[0]) * direction[0] + (rows - start[1]) * direction[1]) / length2, 0, 1)
    return np.hypot(columns - (start[0] + t * direction[0]), rows - (start[1] + t * direction[1]))


# -- recovery ------------------------------------------------------------------------------
@dataclass
class Recovery:
    """An autosaved read found at start-up."""

    mask_path: Path
    meta: dict

    @property
    def saved_at(self) -> str:
        return str(self.meta.get("saved_at", "?"))


def scan_key(volume: Volume) -> str:
    """Names a scan's recovery files: its path (or name) and shape; content hashing would cost ~0.1 s."""
    identity = f"{volume.path or volume.name}|{volume.shape}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class RecoveryStore:
    """Autosaved copies of unsaved reads, one per scan, in the application's data folder.

    Each snapshot's mask goes to a new file, then the JSON that names it replaces the previous JSON,
    then older masks are removed: a crash or a full disk at any moment leaves the previous complete
    copy (mask and notes together) or the new one, never the new mask with the old notes.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def _paths(self, volume: Volume) -> tuple[Path, Path]:
        """The mask of the first format (one name per scan, still read) and the JSON."""
        key = scan_key(volume)
        return self.directory / f"{key}.nii.gz", self.directory / f"{key}.json"

    def _masks(self, volume: Volume) -> list[Path]:
        return sorted(self.directory.glob(f"{scan_key(volume)}*.nii.gz"))

    def write(self, volume: Volume, mask: np.ndarray, notes: dict, saved_path: Path | None) -> None:
        """Write a snapshot (call from a background thread with copies of the arrays)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _, meta_path = self._paths(volume)
        mask_path = self.directory / f"{scan_key(volume)}-{time.time_ns():x}.nii.gz"
        save_like(mask, volume, mask_path, "xnet reader mask (recovery copy)", np.uint8)
        try:
            write_json_atomic(meta_path, {"scan": str(volume.path or volume.name), "shape": list(volume.shape),
                                          "saved_path": str(saved_path) if saved_path else None,
                                          "notes": notes, "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                          "mask_file": mask_path.name})
        except OSError:
            mask_path.unlink(missing_ok=True)  # the previous JSON still names the previous mask
            raise
        for old in self._masks(volume):
            if old != mask_path:
                old.unlink(missing_ok=True)

    def find(self, volume: Volume) -> Recovery | None:
        legacy_mask, meta_path = self._paths(volume)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # a damaged copy is no copy
            return None
        if not isinstance(meta, dict) or meta.get("shape") != list(volume.shape):
            return None
        name = meta.get("mask_file")
        own_file = isinstance(name, str) and name == Path(name).name and name.startswith(scan_key(volume))
        mask_path = self.directory / name if own_file else legacy_mask
        return Recovery(mask_path, meta) if mask_path.exists() else None

    def restore(self, recovery: Recovery, volume: Volume) -> ReaderRead:
        """The recovered read, marked unsaved (it is not in the user's file yet)."""
        loaded = load_reader_mask(recovery.mask_path, volume)
        saved = recovery.meta.get("saved_path")
        read = ReaderRead(volume, loaded.mask, Path(saved) if isinstance(saved, str) and saved else None,
                          Notes.from_dict(recovery.meta.get("notes") or {}),
                          [f"restored the unsaved read autosaved at {recovery.saved_at}"])
        read.revision = 1  # unsaved until the user saves
        return read

    def discard(self, volume: Volume) -> None:
        self._paths(volume)[1].unlink(missing_ok=True)
        for path in self._masks(volume):
            path.unlink(missing_ok=True)
