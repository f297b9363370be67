"""The reader's read without a display (app/reader.py, app/comparison.py): painting, undo, saving,
notes, the recovery copy, a save killed half-way, and the comparison figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.comparison import lesion_slices, slice_comparison, volume_comparison
from app.reader import Notes, ReaderRead, RecoveryStore, load_notes, notes_path_for
from tests.conftest import write_nifti
from xnet_core import metrics
from xnet_core.errors import VolumeError
from xnet_core.volume import load_volume

LPS = np.array([[-1.0, 0, 0, 40], [0, -1.5, 0, 50], [0, 0, 2.0, -20], [0, 0, 0, 1]])
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def volume(tmp_path):
    data = np.random.default_rng(0).uniform(10, 100, (40, 36, 12)).astype(np.float32)
    return load_volume(write_nifti(tmp_path / "scan.nii.gz", data, LPS))


def _disc_voxels(radius: float) -> int:
    """Voxel centres within radius - 0.5 of a voxel centre (radius 1 = one voxel)."""
    r = int(radius) + 1
    columns, rows = np.mgrid[-r:r + 1, -r:r + 1]
    return int((np.hypot(columns, rows) <= radius - 0.5 + 1e-9).sum())


def test_brush_paints_a_disc_and_a_stroke_without_gaps(volume) -> None:
    read = ReaderRead(volume)
    read.begin_stroke("axial", 5)
    read.paint((20, 18), radius=3, value=1)
    read.end_stroke()
    assert read.mask[:, :, 5].sum() == _disc_voxels(3) and read.mask.sum() == _disc_voxels(3)
    assert read.mask[20, 18, 5] == 1 and read.mask[20 + 3, 18, 5] == 0  # radius 3: two voxels each side
    read.begin_stroke("axial", 6)
    read.paint((5, 5), radius=1, value=1)
    read.paint((15, 5), radius=1, value=1, previous=(5, 5))  # a fast drag: 10 voxels in one event
    read.end_stroke()
    assert read.mask[5:16, 5, 6].all() and read.mask[:, :, 6].sum() == 11
    read.begin_stroke("coronal", 18)  # other planes address [x, z] sections
    read.paint((20, 2), radius=1, value=1)
    read.end_stroke()
    assert read.mask[20, 18, 2] == 1


def test_undo_redo_over_many_edits(volume) -> None:
    read = ReaderRead(volume)
    states = [read.mask.copy()]
    for step in range(12):
        read.begin_stroke("axial", step % 3)
        read.paint((5 + 2 * step, 10), radius=2, value=1)
        read.end_stroke()
        states.append(read.mask.copy())
    read.begin_stroke("axial", 0)
    read.paint((7, 10), radius=2, value=0)  # the eraser
    read.end_stroke()
    states.append(read.mask.copy())
    assert read.fill_holes("axial", 1) is False  # nothing enclosed: no undo step
    for expected in reversed(states[:-1]):
        assert read.undo() is not None
        np.testing.assert_array_equal(read.mask, expected)
    assert read.undo() is None and not read.can_undo
    for expected in states[1:]:
        read.redo()
        np.testing.assert_array_equal(read.mask, expected)
    read.undo()
    read.begin_stroke("axial", 4)
    read.paint((30, 30), radius=1, value=1)
    read.end_stroke()
    assert not read.can_redo  # a new edit forgets the undone branch


def test_fill_holes_and_clear_slice(volume) -> None:
    read = ReaderRead(volume)
    ring = np.zeros(volume.shape[:2], np.uint8)
    ring[10:20, 10:20] = 1
    ring[12:18, 12:18] = 0
    read.mask[:, :, 3] = ring
    assert read.fill_holes("axial", 3)
    assert read.mask[10:20, 10:20, 3].all() and read.mask[:, :, 3].sum() == 100
    assert read.clear_section("axial", 3) and read.mask.sum() == 0
    read.undo()
    assert read.mask.sum() == 100


def test_save_and_reload_bit_exact_with_notes(volume, tmp_path) -> None:
    read = ReaderRead(volume)
    read.begin_stroke("axial", 7)
    read.paint((11, 9), radius=4, value=1)
    read.end_stroke()
    read.notes = Notes("left MCA territory, chronic", {7: "cortical involvement", 8: "ünïcode ✓"})
    read.notes_changed()
    assert read.dirty
    saved = read.save(tmp_path / "reader")  # no suffix: .nii.gz is added
    assert saved.name == "reader.nii.gz" and not read.dirty
    image = nib.load(saved)
    assert image.get_data_dtype() == np.uint8 and np.allclose(image.affine, LPS)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), volume.to_source_order(read.mask))
    again = ReaderRead.load(saved, volume)
    np.testing.assert_array_equal(again.mask, read.mask)
    assert again.notes == read.notes and again.path == saved and not again.dirty
    sidecar = json.loads(notes_path_for(saved).read_text(encoding="utf-8"))
    assert sidecar["slices"] == {"7": "cortical involvement", "8": "ünïcode ✓"} and "disclaimer" in sidecar
    assert load_notes(notes_path_for(saved)) == read.notes


def test_bad_notes_file_is_refused_with_a_message(tmp_path) -> None:
    path = tmp_path / "bad_notes.json"
    path.write_text("{not json")
    with pytest.raises(VolumeError, match="not valid JSON"):
        load_notes(path)
    path.write_text(json.dumps({"study": "x", "slices": {"seven": "y"}}))
    with pytest.raises(VolumeError, match="format"):
        load_notes(path)


def test_recovery_copy_round_trip(volume, tmp_path) -> None:
    store = RecoveryStore(tmp_path / "recovery")
    assert store.find(volume) is None
    mask = np.zeros(volume.shape, np.uint8)
    mask[3:9, 4:7, 2:5] = 1
    store.write(volume, mask, Notes("study", {2: "slice two"}).as_dict(), None)
    found = store.find(volume)
    assert found is not None
    restored = store.restore(found, volume)
    np.testing.assert_array_equal(restored.mask, mask)
    assert restored.notes == Notes("study", {2: "slice two"}) and restored.dirty
    store.discard(volume)
    assert store.find(volume) is None


def test_a_save_killed_half_way_leaves_the_previous_file_intact(volume, tmp_path) -> None:
    """A real process writes a large mask over a saved one and is killed mid-write (SIGKILL): the
    file under the user's name is still the previous, complete mask."""
    target = tmp_path / "reader_mask.nii.gz"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        import nibabel as nib
        from app.reader import ReaderRead
        from xnet_core.volume import load_volume
        small = load_volume({str(volume.path)!r})
        read = ReaderRead(small)
        read.mask[2:6, 2:6, 2:6] = 1
        read.save({str(target)!r})
        # A big scan next, so the second save of the same name takes seconds of gzip.
        data = np.zeros((320, 320, 320), np.float32)
        data[0, 0, 0] = 1
        big = nib.Nifti1Image(data, np.eye(4))
        nib.save(big, {str(tmp_path / 'big.nii')!r})
        read = ReaderRead(load_volume({str(tmp_path / 'big.nii')!r}))
        read.mask[:] = np.random.default_rng(0).integers(0, 2, read.mask.shape, dtype=np.uint8)
        print("first save done", flush=True)
        read.save({str(target)!r})
        print("second save done", flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "first save done"
    first = np.asanyarray(nib.load(target).dataobj).copy()
    deadline = time.time() + 60
    temporary = []
    while not temporary and time.time() < deadline:  # wait until the second write is under way
        temporary = [p for p in tmp_path.iterdir() if p.name.startswith(".reader_mask") and p.stat().st_size > 0]
        time.sleep(0.01)
    assert temporary, "the second save never started"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    assert process.returncode == -signal.SIGKILL
    np.testing.assert_array_equal(np.asanyarray(nib.load(target).dataobj), first)
    assert first.shape == volume.source_shape and first.sum() == 64
    assert ReaderRead.load(target, volume).mask.sum() == 64


def test_comparison_figures_match_metrics(volume) -> None:
    model = np.zeros(volume.shape, np.uint8)
    reader = np.zeros(volume.shape, np.uint8)
    model[5:15, 5:15, 2:6] = 1  # found by both
    reader[8:18, 5:15, 3:7] = 1
    model[30:33, 30:33, 9:11] = 1  # only the model
    reader[25:28, 2:5, 0:2] = 1  # only the reader
    gradcam = np.zeros(volume.shape, np.float32)
    gradcam[10:16, 8:12, 4] = 2.0
    gradcam[0:3, 0:3, 4] = 1.0
    figures = volume_comparison(volume, model, reader, {"gradcam": gradcam}, {"gradcam": [4]})
    assert list(figures)[:7] == ["dice", "iou", "precision", "recall", "lesion_f1", "model_volume_ml",
                                 "reader_volume_ml"] and figures["both_empty"] is False
    assert figures["dice"] == pytest.approx(metrics.dice(model, reader), abs=1e-4)
    assert figures["lesion_f1"] == pytest.approx(metrics.lesion_f1(model, reader), abs=1e-4)
    assert figures["model_volume_ml"] == pytest.approx(model.sum() * volume.voxel_volume_ml, abs=1e-4)
    assert [r["slices"] for r in figures["model_only_lesions"]] == [[9, 10]]
    assert [r["slices"] for r in figures["reader_only_lesions"]] == [[0, 1]]
    assert figures["attention"]["gradcam"] == {"energy_in_mask": pytest.approx(48 / 57, abs=1e-4),
                                               "pointing_hit": True, "otsu_iou": figures["attention"]["gradcam"]["otsu_iou"]}
    record = slice_comparison(volume, 4, model[:, :, 4], reader[:, :, 4], {"gradcam": gradcam[:, :, 4]}, {"gradcam": "ok"})
    assert record["dice"] == pytest.approx(metrics.dice(model[:, :, 4], reader[:, :, 4]), abs=1e-4)
    assert "lesion_f1" not in record and record["attention"]["gradcam"]["pointing_hit"] is True
    empty = slice_comparison(volume, 11, model[:, :, 11], reader[:, :, 11], {"gradcam": gradcam[:, :, 11]},
                             {"gradcam": None})
    assert empty["both_empty"] and empty["attention"]["gradcam"] == {"status": "not computed"}
    assert lesion_slices(model, reader) == [0, 1, 2, 3, 4, 5, 6, 9, 10]
