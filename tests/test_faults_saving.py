"""Faults while saving (issue 29, item 4): a full disk, a read-only folder, a file replaced during the
write and a process killed in the middle of saves, against every file X-Net Viewer writes for the user
(reader mask, its notes, the autosaved recovery copy, NIfTI export, the PDF report) and its caches
(explanations, registrations, prepared training cases).

For the user's files: a clear message (``SaveError``, an ``XNetError`` naming the file, and an
``OSError``), the previous file intact, no temporary file left, and the recovery copy still complete.
For caches: no error at all (a cache that cannot be written costs time, not results) and no damaged
entry. A real small tmpfs is used where this process may mount one (root); the same faults are also
injected by replacing ``open`` so that the tests run everywhere.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.reader import Notes, ReaderRead, RecoveryStore, notes_path_for
from explain.engine import DiskCache
from app.report import write_report
from tests.conftest import write_nifti
from tests.test_report import _inputs, study  # noqa: F401 - the report test's Study fixture
from xnet_core import registration
from xnet_core.errors import SaveError, XNetError
from xnet_core.volume import load_volume, save_like

SHAPE = (40, 36, 12)


@pytest.fixture
def volume(tmp_path_factory):
    data = np.random.default_rng(0).uniform(10, 100, SHAPE).astype(np.float32)
    return load_volume(write_nifti(tmp_path_factory.mktemp("scan") / "scan.nii.gz", data))


def _mask(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(SHAPE) > 0.7).astype(np.uint8)


class Saves:
    """Every writer under test, pointed at one folder; ``first()`` writes version 1 of each file,
    ``again()`` tries version 2, ``check_first()`` says version 1 is still there, whole."""

    def __init__(self, folder: Path, volume) -> None:
        self.folder, self.volume = folder, volume
        self.read = ReaderRead(volume, _mask(1), notes=Notes("first read", {3: "first"}))
        self.recovery = RecoveryStore(folder / "recovery")
        self.explain = DiskCache(folder / "explain")
        self.export = folder / "scan_prob.nii.gz"

    def first(self) -> None:
        self.read.save(self.folder / "reader.nii.gz")
        self.recovery.write(self.volume, _mask(1), Notes("first read").as_dict(), None)
        self.explain.put("k1", np.ones((4, 4), np.float32), {"v": 1})
        save_like(np.full(SHAPE, 0.25, np.float32), self.volume, self.export, "first", np.float32)
        self.files = {p: p.read_bytes() for p in self.folder.rglob("*") if p.is_file() and "explain" not in p.parts}

    def again(self) -> list[Exception]:
        """Version 2 of each user file: the errors raised. Caches must raise none."""
        errors = []
        self.read.mask[:] = _mask(2)
        self.read.notes.study = "second read"
        for save in (lambda: self.read.save(self.folder / "reader.nii.gz"),
                     lambda: self.recovery.write(self.volume, _mask(2), Notes("second read").as_dict(), None),
                     lambda: save_like(_mask(3).astype(np.float32), self.volume, self.export, "2", np.float32)):
            with pytest.raises(SaveError) as caught:
                save()
            errors.append(caught.value)
        self.explain.put("k2", np.ones((4, 4), np.float32), {"v": 2})
        return errors

    def check_first(self, errors: list[Exception]) -> None:
        for error in errors:
            assert isinstance(error, XNetError) and isinstance(error, OSError)
            message = str(error)
            assert "could not be saved" in message and str(self.folder) in message and ".tmp" not in message
        left = {p: p.read_bytes() for p in self.folder.rglob("*") if p.is_file() and not {"cache", "explain"} & set(p.parts)}
        assert left == self.files, "a previous file changed, or a temporary file was left behind"
        assert ReaderRead.load(self.folder / "reader.nii.gz", self.volume).mask.tolist() == _mask(1).tolist()
        found = self.recovery.find(self.volume)
        restored = self.recovery.restore(found, self.volume)
        assert restored.notes.study == "first read" and np.array_equal(restored.mask, _mask(1))
        assert self.explain.get("k1")[1] == {"v": 1}
        second = self.explain.get("k2")
        assert second is None or second[1] == {"v": 2}  # a cache entry is written whole or not at all


# -- a real full disk, then a read-only one ---------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MB tmpfs here ({(mounted.stderr or 'not root').strip()}); the injected "
                    "full-disk and read-only faults below still run")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_full_then_read_only_disk_keeps_every_previous_file(small_disk, volume, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(small_disk / "cache"))
    saves = Saves(small_disk, volume)
    saves.first()
    filler = _fill(small_disk)
    saves.files[filler] = filler.read_bytes()
    saves.check_first(saves.again())
    assert all(e.errno == errno.ENOSPC for e in saves.again())
    _store_registration(volume)  # a cache: written or not, never an error
    filler.unlink()
    del saves.files[filler]
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    saves.check_first(saves.again())
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    saves.read.save(small_disk / "reader.nii.gz")  # space again: saving works again
    assert ReaderRead.load(small_disk / "reader.nii.gz", volume).notes.study == "second read"


def _store_registration(volume) -> None:
    """Store a registration in the cache: no error whatever the disk, and the entry read back is the
    one stored or none, never a damaged one."""
    brain = np.ones(volume.shape, np.uint8)
    done = registration.Registration(np.eye(4), volume.shape, volume.affine, brain, 0.5, 0.0)
    key = registration.scan_key(volume)
    registration._store_cached(key, done)
    cached = registration._load_cached(key, volume)
    assert cached is None or (np.array_equal(cached["template_to_native"], np.eye(4))
                              and cached["brain_mask"].all())


# -- the same faults, injected ---------------------------------------------------------------------
class _FailingFile(io.RawIOBase):
    """A file whose writes fail with ``code`` once ``budget`` bytes are written."""

    def __init__(self, handle, budget: int, code: int) -> None:
        self.handle, self.budget, self.code = handle, budget, code

    def write(self, data) -> int:
        data = data if isinstance(data, str) else bytes(data)
        if len(data) > self.budget:
            self.handle.write(data[: self.budget])  # part of it lands, as on a real disk
            self.budget = 0
            raise OSError(self.code, os.strerror(self.code))
        self.budget -= len(data)
        return self.handle.write(data)

    def writable(self) -> bool:
        return True

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def close(self) -> None:
        self.handle.close()
        super().close()


def inject(monkeypatch, folder: Path, code: int, budget: int = 0) -> None:
    """Writes under ``folder`` fail with ``code``: at open (EROFS, EACCES) or after ``budget`` bytes."""
    real_open = builtins.open

    def faulty_open(file, mode="r", *args, **kwargs):
        writing = isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+")
        if writing and Path(file).resolve().is_relative_to(folder.resolve()):
            if code in (errno.EROFS, errno.EACCES):
                raise OSError(code, os.strerror(code), str(file))
            return _FailingFile(real_open(file, mode, *args, **kwargs), budget, code)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", faulty_open)
    monkeypatch.setattr(io, "open", faulty_open)


@pytest.mark.parametrize("code, budget", [(errno.ENOSPC, 0), (errno.ENOSPC, 600), (errno.EROFS, 0),
                                          (errno.EACCES, 0)], ids=["full-at-once", "full-midway", "read-only",
                                                                   "permission"])
def test_injected_write_faults_keep_every_previous_file(tmp_path, volume, monkeypatch, code, budget) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    saves = Saves(tmp_path, volume)
    saves.first()
    inject(monkeypatch, tmp_path, code, budget)
    errors = saves.again()
    assert {e.errno for e in errors} == {code}
    _store_registration(volume)
    saves.check_first(errors)


def test_recovery_copy_stays_whole_when_its_description_cannot_be_written(tmp_path, volume, monkeypatch) -> None:
    """The mask of the recovery copy written, its JSON not (the disk filled between the two): the copy
    found is the previous one, mask and notes together, not the new mask with the old notes."""
    store = RecoveryStore(tmp_path)
    store.write(volume, _mask(1), Notes("first read").as_dict(), None)
    real_dump = json.dump

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, "dump", full_disk)
    with pytest.raises(SaveError):
        store.write(volume, _mask(2), Notes("second read").as_dict(), None)
    monkeypatch.setattr(json, "dump", real_dump)
    restored = store.restore(store.find(volume), volume)
    assert restored.notes.study == "first read" and np.array_equal(restored.mask, _mask(1))


# -- a file replaced while the save is under way ---------------------------------------------------
def test_file_replaced_during_the_write(tmp_path, volume, monkeypatch) -> None:
    """Another program replaces the user's file while the save writes: the save's complete file wins
    (never a mix of both). The save's own temporary file removed under it: a clear error, and the
    other program's file stays."""
    target = tmp_path / "reader.nii.gz"
    other = write_nifti(tmp_path / "other.nii.gz", np.ones(SHAPE, np.uint8), dtype=np.uint8)
    read = ReaderRead(volume, _mask(1), notes=Notes("mine"))
    read.save(target)
    real_open = builtins.open
    hits = []

    def replace_target_on_first_write(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and Path(file).name.startswith(".reader") and not hits:
            hits.append(file)
            os.replace(other, target) if other.exists() else None  # the other program's rename
        return handle

    monkeypatch.setattr(builtins, "open", replace_target_on_first_write)
    read.mask[:] = _mask(2)
    read.save(target)
    monkeypatch.setattr(builtins, "open", real_open)
    assert hits and np.array_equal(ReaderRead.load(target, volume).mask, _mask(2))

    competitor = np.asanyarray(nib.load(write_nifti(tmp_path / "third.nii.gz", np.ones(SHAPE, np.uint8),
                                                    dtype=np.uint8)).dataobj).copy()
    real_replace = os.replace

    def temporary_removed(source, destination):
        Path(source).unlink()  # a clean-up tool removed the save's temporary file
        real_replace(tmp_path / "third.nii.gz", destination)  # and another program saved its own
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", temporary_removed)
    read.mask[:] = _mask(3)
    with pytest.raises(SaveError, match="reader.nii.gz: could not be saved"):
        read.save(target)
    monkeypatch.setattr(os, "replace", real_replace)
    assert np.array_equal(np.asanyarray(nib.load(target).dataobj), competitor)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


# -- killed at random points of repeated saves -----------------------------------------------------
def test_saves_killed_at_random_points_never_leave_a_damaged_file(tmp_path, volume) -> None:
    """A forked process saves the reader's mask, notes and recovery copy in a loop; it is killed at a
    random moment, eight times. Each time every file under the user's name (and the recovery copy)
    is a complete earlier version, whatever the moment."""
    big = np.random.default_rng(5).uniform(10, 100, (96, 96, 48)).astype(np.float32)
    scan = load_volume(write_nifti(tmp_path / "big.nii.gz", big))
    versions = [(np.random.default_rng(v).random(scan.shape) > 0.5).astype(np.uint8) for v in range(2)]
    target, store = tmp_path / "reader.nii.gz", RecoveryStore(tmp_path / "recovery")
    rng = np.random.default_rng(29)
    for attempt in range(8):
        pid = os.fork()
        if pid == 0:  # the child saves until it is killed
            try:
                for n in range(10_000):
                    read = ReaderRead(scan, versions[n % 2], notes=Notes(f"version {n % 2}"))
                    read.save(target)
                    store.write(scan, versions[n % 2], read.notes.as_dict(), target)
            finally:
                os._exit(0)
        time.sleep(float(rng.uniform(0.05, 0.6)))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if target.exists():
            mask = ReaderRead.load(target, scan).mask
            assert any(np.array_equal(mask, v) for v in versions), f"attempt {attempt}: damaged mask"
            json.loads(notes_path_for(target).read_text()) if notes_path_for(target).exists() else None
        found = store.find(scan)
        if found is not None:
            restored = store.restore(found, scan)
            assert np.array_equal(restored.mask, versions[int(restored.notes.study[-1])]), "mixed recovery copy"
    assert target.exists(), "no save finished in 8 tries: the kills came too early to test anything"


def test_report_on_a_full_disk_keeps_the_previous_report(small_disk, study, qapp) -> None:  # noqa: F811 (fixture)
    """Qt writes the PDF itself (no Python ``open`` to inject into), so only the real full disk tests it."""
    path = small_disk / "report.pdf"
    write_report(_inputs(study, [4]), path)
    previous = path.read_bytes()
    _fill(small_disk)
    with pytest.raises(XNetError, match="report.pdf"):
        write_report(_inputs(study, [4, 5, 6]), path)
    assert path.read_bytes() == previous
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "report.pdf"]


# -- the prepared training-case cache --------------------------------------------------------------
@pytest.fixture
def tiny_cases(monkeypatch):
    """Synthetic cases take seconds on the template grid; the cache only needs something to store."""
    from xnet_core.training import cases
    from xnet_core.training.sampling import VolumeSlices

    made = []

    def tiny(seed, augment=True, **_):
        made.append(seed)
        rng = np.random.default_rng(seed)
        return VolumeSlices(rng.random((4, 16, 16)).astype(np.float16), np.zeros((4, 16, 16), np.uint8),
                            np.ones(4, bool))

    monkeypatch.setattr(cases, "synthetic_volume_slices", tiny)
    return cases, made


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_training_cases_are_made_whatever_the_cache_disk(tmp_path, monkeypatch, tiny_cases, code) -> None:
    cases, made = tiny_cases
    first = cases._cached_case(1, False, tmp_path)
    inject(monkeypatch, tmp_path, code, budget=100)
    second = cases._cached_case(2, False, tmp_path)  # not cached: no error, the case itself
    assert made == [1, 2] and second.slices.shape == (4, 16, 16)
    assert np.array_equal(cases._cached_case(1, False, tmp_path).slices, first.slices) and made == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case-1-plain.npz"]


def test_a_damaged_training_case_is_made_again(tmp_path, tiny_cases) -> None:
    cases, made = tiny_cases
    good = cases._cached_case(3, False, tmp_path)
    entry = tmp_path / "case-3-plain.npz"
    entry.write_bytes(entry.read_bytes()[:200])  # what a disk error or a foreign tool could leave
    again = cases._cached_case(3, False, tmp_path)
    assert made == [3, 3] and np.array_equal(again.slices, good.slices)
    assert cases._read_cached_case(entry) is not None  # and the entry is whole again
