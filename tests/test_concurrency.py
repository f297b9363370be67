"""Concurrent use (issue 29, item 2): several processes on the same scan with the same caches.

Two real ``xnet explain`` processes and a viewer process run at once on one small scan with one cache
folder, beside a run that uses no cache: none crashes, every map (the viewer's too) equals the uncached
run's, and every cache entry left is whole.
Then forked writers race on the explanation cache (with a small size cap), the registration cache and
the prepared training-case cache: a reader never gets a half-written or foreign entry, and the
explanation cache ends within its cap. (A real registration takes minutes, so its cache is raced
through the functions ``register`` calls; a tiny model and scan keep the ``xnet`` runs to seconds.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from explain.engine import DiskCache
from tests.conftest import write_nifti
from xnet_core import registration
from xnet_core.checkpoint import default_card, save_checkpoint
from xnet_core.model import XNet
from xnet_core.volume import load_volume

ROOT = Path(__file__).resolve().parent.parent
SMALL_WIDTHS = (2, 4, 8, 16, 32)


@pytest.fixture(scope="module")
def scan_and_weights(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("shared")
    data = np.random.default_rng(0).uniform(20, 100, (48, 56, 6)).astype(np.float32)
    scan = write_nifti(folder / "case_T1w.nii.gz", data)
    torch.manual_seed(0)
    model = XNet(widths=SMALL_WIDTHS)
    with torch.no_grad():
        model.head.bias.fill_(4.0)  # 'lesion' everywhere, so every slice has a target to explain
    weights = folder / "tiny.pt"
    save_checkpoint(model, weights, default_card(model, training_data="none (concurrency test)"), half=False)
    return scan, weights


def _explain(scan: Path, weights: Path, out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen"}
    command = [sys.executable, "-m", "app.cli", "explain", str(scan), "--weights", str(weights), "--out-dir",
               str(out), "--slices", "2,3", "--methods", "gradcam,hirescam", "--device", "cpu", "--fp32",
               "--no-mirror", "--json", str(out / "explain.json"), *extra]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# The viewer, as a user runs it, on the same scan and cache: it segments the scan and explains the slices
# it is scrolled to while the ``xnet`` runs work, then saves slices 2 and 3 of its Grad-CAM and HiResCAM
# maps and closes.
VIEWER = """
import sys
from pathlib import Path
import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from app.window import ViewerWindow
from explain.engine import ExplanationEngine
from xnet_core.checkpoint import load_checkpoint
from xnet_core.volume import load_volume

scan, weights, cache, out = map(Path, sys.argv[1:5])
application = QApplication([])
checkpoint = load_checkpoint(weights)
engine = ExplanationEngine(checkpoint, device="cpu", fp32=True, mirror=False, cache_dir=cache / "xnet-viewer" / "explain")
window = ViewerWindow(load_volume(scan), checkpoint, device="cpu", engine=engine, mirror=False)
window.show()
window.set_slice(2)
wanted = [(m, z) for m in ("gradcam", "hirescam") for z in (2, 3)]

def check():  # scrolls to slice 3 once slice 2 is explained, as a reader would
    todo = [z for m, z in wanted if window.study.status(m, z) is None]
    if todo and window.state.slice != todo[0]:
        window.set_slice(todo[0])
    if not todo:
        np.savez(out, **{f"{m}_{z}": window.study.maps[m][:, :, z] for m, z in wanted},
                 statuses=np.array([window.study.status(m, z) for m, z in wanted]))
        window.close()
        application.quit()

timer = QTimer()
timer.timeout.connect(check)
timer.start(100)
QTimer.singleShot(240_000, lambda: application.exit(3))
sys.exit(application.exec())
"""


def _viewer(scan: Path, weights: Path, out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen"}
    command = [sys.executable, "-c", VIEWER, str(scan), str(weights), str(cache), str(out)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _maps(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asanyarray(nib.load(p).dataobj) for p in sorted(folder.glob("*_gradcam*.nii.gz"))
            + sorted(folder.glob("*_hirescam*.nii.gz"))}


def _values(tree, key: str):
    """Every value stored under ``key`` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        for name, value in tree.items():
            yield from ([value] if name == key else _values(value, key))
    elif isinstance(tree, list):
        for value in tree:
            yield from _values(value, key)


def test_xnet_processes_at_once_share_the_explanation_cache(scan_and_weights, tmp_path) -> None:
    scan, weights = scan_and_weights
    cache = tmp_path / "cache"
    runs = [_explain(scan, weights, tmp_path / f"run{k}", cache) for k in range(2)]
    runs.append(_viewer(scan, weights, tmp_path / "viewer.npz", cache))
    runs.append(_explain(scan, weights, tmp_path / "alone", tmp_path / "unused-cache", "--no-cache"))
    for process in runs:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    alone = _maps(tmp_path / "alone")
    assert len(alone) == 2
    viewer = np.load(tmp_path / "viewer.npz")
    assert set(viewer["statuses"]) == {"ok"}
    for method in ("gradcam", "hirescam"):
        volume = alone[f"case_T1w_{method}.nii.gz"]
        for z in (2, 3):
            np.testing.assert_allclose(viewer[f"{method}_{z}"], volume[:, :, z], rtol=1e-5, atol=1e-6,
                                       err_msg=f"viewer {method} z{z}")
    for k in range(2):
        maps = _maps(tmp_path / f"run{k}")
        assert maps.keys() == alone.keys()
        for name, array in maps.items():
            np.testing.assert_allclose(array, alone[name], rtol=1e-5, atol=1e-6, err_msg=f"run{k} {name}")
        sources = set(_values(json.loads((tmp_path / f"run{k}" / "explain.json").read_text()), "source"))
        assert sources and sources <= {"computed", "disk", "memory"}, sources
    entries = sorted((cache / "xnet-viewer" / "explain").iterdir())
    assert entries and not [p for p in entries if p.name.startswith(".")], "a temporary file was left"
    disk = DiskCache(cache / "xnet-viewer" / "explain")
    assert all(disk.get(p.stem) is not None for p in entries), "a damaged entry was left in the cache"


# -- writers racing on each cache ------------------------------------------------------------------
def _race(work, n_processes: int = 3) -> None:
    """Run ``work(k)`` in ``n_processes`` forked processes at once; any exception fails the test."""
    children = []
    for k in range(n_processes):
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                work(k)
            except BaseException:  # noqa: BLE001 - report whatever it was to the parent, then exit
                traceback.print_exc()
                status = 1
            finally:
                os._exit(status)
        children.append(pid)
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    assert statuses == [0] * n_processes, f"a racing process failed (wait statuses {statuses})"


def _entry(key: int) -> np.ndarray:
    return np.random.default_rng(key).random((32, 32)).astype(np.float32)  # 4 kB, incompressible


def test_explanation_cache_writers_race_within_the_cap(tmp_path) -> None:
    cap = 40 * 1024

    def work(k: int) -> None:
        disk = DiskCache(tmp_path, cap_bytes=cap)
        rng = np.random.default_rng(k)
        for _ in range(60):
            key = int(rng.integers(0, 25))
            disk.put(f"k{key}", _entry(key), {"key": key})
            got = disk.get(f"k{int(rng.integers(0, 25))}")
            if got is not None:
                assert np.array_equal(got[0], _entry(got[1]["key"])), "a map read back differs from the one written"

    _race(work)
    left = list(tmp_path.iterdir())
    assert not [p for p in left if p.name.startswith(".")], "a temporary file was left"
    assert sum(p.stat().st_size for p in left) <= cap
    disk = DiskCache(tmp_path, cap_bytes=cap)
    assert all(np.array_equal(disk.get(p.stem)[0], _entry(int(p.stem[1:]))) for p in left)


def test_registration_cache_writers_race(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = np.random.default_rng(1).uniform(0, 100, (24, 20, 10)).astype(np.float32)
    volume = load_volume(write_nifti(tmp_path / "scan.nii.gz", data))
    key = registration.scan_key(volume)
    brain = (volume.data > 50).astype(np.uint8)

    def work(k: int) -> None:
        for n in range(40):
            matrix = np.eye(4)
            matrix[0, 3] = k  # each writer its own (whole) entry: a reader must get one of them whole
            done = registration.Registration(matrix, volume.shape, volume.affine, brain, 0.5, 0.0)
            registration._store_cached(key, done)
            cached = registration._load_cached(key, volume)
            if cached is not None:
                assert np.array_equal(cached["brain_mask"], brain)
                offset = cached["template_to_native"][0, 3]
                assert offset in (0, 1, 2) and np.array_equal(cached["template_to_native"][:3, :3], np.eye(3))

    _race(work)
    assert registration._load_cached(key, volume) is not None


def test_training_case_cache_writers_race(tmp_path, monkeypatch) -> None:
    from xnet_core.training import cases
    from xnet_core.training.sampling import VolumeSlices

    def tiny(seed, augment=True, **_):
        rng = np.random.default_rng(seed)
        return VolumeSlices(rng.random((6, 16, 16)).astype(np.float16), np.zeros((6, 16, 16), np.uint8),
                            np.ones(6, bool))

    monkeypatch.setattr(cases, "synthetic_volume_slices", tiny)

    def work(k: int) -> None:
        for n in range(30):
            seed = (n + k) % 5
            case = cases._cached_case(seed, False, tmp_path)
            assert np.array_equal(case.slices, tiny(seed).slices), "a cached case differs from its seed's"

    _race(work)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"case-{s}-plain.npz" for s in range(5)]
