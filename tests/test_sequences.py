"""Sequences on different grids compared through world mm (xnet_core.sequences)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import write_nifti
from xnet_core.image import Volume
from xnet_core.sequences import SequenceSet, resample_to_grid, value_at_world, world_to_voxel

# Hessian of the quadratic part of ``_field`` (used for the interpolation-error bound).
HESSIAN = 2 * 0.002 * np.diag([1.0, 0.5, 0.3])


def _field(xyz: np.ndarray) -> np.ndarray:
    """A smooth analytic function of the WORLD coordinate (mm): linear plus a gentle quadratic."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return 3.0 + 0.5 * x - 0.3 * y + 0.2 * z + 0.002 * (x**2 + 0.5 * y**2 + 0.3 * z**2)


def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    a, b = np.radians(z_deg), np.radians(x_deg)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_x @ about_z


def _affine(linear: np.ndarray, shape: tuple[int, int, int], centre_mm: tuple[float, float, float]) -> np.ndarray:
    """An affine whose grid centre lands on ``centre_mm``."""
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = np.asarray(centre_mm) - linear @ ((np.asarray(shape) - 1) / 2)
    return affine


def _grid_world(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.float64)
    return index @ affine[:3, :3].T + affine[:3, 3]


def _volume(affine: np.ndarray, shape: tuple[int, int, int], sequence: str = "T1w", data=None) -> Volume:
    if data is None:
        data = _field(_grid_world(shape, affine)).astype(np.float32)
    return Volume(data, affine, nib.Nifti1Header(), affine, shape, f"{sequence}-test", sequence=sequence)


SHAPE_A = (40, 48, 36)
AFFINE_A = _affine(np.eye(3), SHAPE_A, (0.0, 0.0, 0.0))  # 1 mm, axis-aligned
SHAPE_B = (22, 26, 9)
# 2 x 2 x 4.5 mm, rotated 15 degrees about z and tilted 10 degrees about x, centre offset.
AFFINE_B = _affine(_rotation(15, 10) @ np.diag([2.0, 2.0, 4.5]), SHAPE_B, (1.3, -2.7, 2.1))


def _linear_error_bound(affine: np.ndarray) -> float:
    """Worst-case trilinear error for ``_field``: sum over voxel axes of (step' H step) / 8, plus float32 slack."""
    steps = affine[:3, :3].T  # one row per voxel axis: its world step
    return float(sum(step @ HESSIAN @ step for step in steps) / 8) + 1e-4


def _pair() -> SequenceSet:
    sequences = SequenceSet()
    sequences.add(_volume(AFFINE_A, SHAPE_A, "T1w"))
    sequences.add(_volume(AFFINE_B, SHAPE_B, "FLAIR"))
    return sequences


def test_resampled_sequence_matches_the_world_function_on_the_other_grid() -> None:
    sequences = _pair()
    b_on_a = sequences.resample("FLAIR", "T1w")
    assert b_on_a.shape == SHAPE_A and b_on_a.dtype == np.float32

    world_a = _grid_world(SHAPE_A, AFFINE_A)
    in_b = world_to_voxel(sequences["FLAIR"], world_a)
    inside = np.all((in_b >= 1e-6) & (in_b <= np.asarray(SHAPE_B) - 1 - 1e-6), axis=-1)
    far_outside = np.any((in_b < -1) | (in_b > np.asarray(SHAPE_B)), axis=-1)
    assert inside.sum() > 10_000 and far_outside.sum() > 1_000  # the grids overlap only in part

    error = np.abs(b_on_a[inside] - _field(world_a[inside]))
    assert error.max() <= _linear_error_bound(AFFINE_B)
    assert np.all(b_on_a[far_outside] == 0)


def test_same_world_point_reads_the_same_value_in_both_sequences() -> None:
    sequences = _pair()
    a, b = sequences["T1w"], sequences["FLAIR"]
    points = np.random.default_rng(3).uniform(-25, 25, size=(400, 3))
    in_a = world_to_voxel(a, points)
    in_b = world_to_voxel(b, points)
    both = np.all((in_a >= 0) & (in_a <= np.asarray(SHAPE_A) - 1), axis=1) & np.all(
        (in_b >= 0) & (in_b <= np.asarray(SHAPE_B) - 1), axis=1
    )
    assert both.sum() >= 50
    tol_a, tol_b = _linear_error_bound(AFFINE_A), _linear_error_bound(AFFINE_B)
    for point in points[both]:
        truth = float(_field(point))
        value_a, value_b = value_at_world(a, point), value_at_world(b, point)
        assert abs(value_a - truth) <= tol_a
        assert abs(value_b - truth) <= tol_b
        assert abs(value_a - value_b) <= tol_a + tol_b


def test_world_to_voxel_inverts_the_affine() -> None:
    volume = _volume(AFFINE_B, SHAPE_B)
    voxels = np.array([[0, 0, 0], [21, 25, 8], [3.5, 7.25, 2.0]])
    world = voxels @ AFFINE_B[:3, :3].T + AFFINE_B[:3, 3]
    assert np.allclose(world_to_voxel(volume, world), voxels)
    assert world_to_voxel(volume, world[2]).shape == (3,)


def test_point_outside_the_grid_reads_nan() -> None:
    volume = _volume(AFFINE_A, SHAPE_A)
    far = AFFINE_A[:3, 3] + np.array([-30.0, 0, 0])
    just_past_edge = AFFINE_A @ np.array([SHAPE_A[0] - 1 + 0.6, 10, 10, 1.0])
    assert np.isnan(value_at_world(volume, far))
    assert np.isnan(value_at_world(volume, just_past_edge[:3]))
    assert np.isfinite(value_at_world(volume, AFFINE_A[:3, 3]))  # the first voxel centre is inside


def test_mask_with_nearest_neighbour_stays_binary_and_keeps_its_dtype() -> None:
    world_b = _grid_world(SHAPE_B, AFFINE_B)
    mask = (np.linalg.norm(world_b - np.array([2.0, -1.0, 3.0]), axis=-1) < 9).astype(np.uint8)
    on_a = resample_to_grid(mask, AFFINE_B, SHAPE_A, AFFINE_A, order=0)
    assert on_a.dtype == np.uint8 and on_a.shape == SHAPE_A
    assert set(np.unique(on_a)) == {0, 1}

    as_bool = resample_to_grid(mask.astype(bool), AFFINE_B, SHAPE_A, AFFINE_A, order=0)
    assert as_bool.dtype == np.bool_ and np.array_equal(as_bool, on_a.astype(bool))

    sequences = _pair()
    sequences.add(_volume(AFFINE_B, SHAPE_B, "mask", data=mask.astype(np.float32)))
    mask_on_a = sequences.resample("mask", "T1w", order=0)
    assert mask_on_a.dtype == np.float32
    assert set(np.unique(mask_on_a)) == {0.0, 1.0}


def test_same_grid_returns_the_source_data_itself() -> None:
    sequences = _pair()
    nudged = AFFINE_A.copy()
    nudged[:3, 3] += 1e-5
    sequences.add(_volume(nudged, SHAPE_A, "DWI"))
    assert sequences.resample("T1w", "T1w") is sequences["T1w"].data
    assert sequences.resample("DWI", "T1w") is sequences["DWI"].data
    assert sequences.resample("DWI", "T1w", order=0) is sequences["DWI"].data


def test_cache_returns_the_same_array_and_forgets_a_removed_sequence() -> None:
    sequences = _pair()
    first = sequences.resample("FLAIR", "T1w")
    assert sequences.resample("FLAIR", "T1w") is first
    assert not first.flags.writeable  # a shared cached array must not be changed by one caller
    assert sequences.resample("FLAIR", "T1w", order=0) is not first

    sequences.remove("FLAIR")
    assert "FLAIR" not in sequences
    with pytest.raises(KeyError):
        sequences.resample("FLAIR", "T1w")
    replacement = _volume(AFFINE_B, SHAPE_B, "FLAIR", data=np.full(SHAPE_B, 7.0, np.float32))
    assert sequences.add(replacement) == "FLAIR"
    again = sequences.resample("FLAIR", "T1w")
    assert again is not first and np.nanmax(again) == pytest.approx(7.0)


def test_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    sequences = SequenceSet()
    for i in range(10):
        shift = np.eye(4)
        shift[0, 3] = 0.5 + i
        sequences.add(_volume(shift @ AFFINE_B, SHAPE_B, "DWI"))
    sequences.add(_volume(AFFINE_A, SHAPE_A, "T1w"))
    labels = [label for label in sequences.labels if label != "T1w"]
    results = [sequences.resample(label, "T1w") for label in labels[:8]]
    assert sequences.resample(labels[0], "T1w") is results[0]  # 8 entries: still cached, now most recent
    sequences.resample(labels[8], "T1w")  # a 9th entry evicts labels[1], not labels[0]
    assert sequences.resample(labels[0], "T1w") is results[0]
    recomputed = sequences.resample(labels[1], "T1w")
    assert recomputed is not results[1] and np.array_equal(recomputed, results[1])
    assert sequences.resample(labels[1], "T1w") is recomputed


def test_labels_are_unique_and_the_t1w_volume_feeds_the_model() -> None:
    sequences = SequenceSet()
    assert sequences.model_label is None
    with pytest.raises(LookupError):
        sequences.model_volume
    flair = _volume(AFFINE_B, SHAPE_B, "FLAIR")
    assert sequences.add(flair) == "FLAIR"
    assert sequences.model_label == "FLAIR"  # no T1w yet: the first added
    t1 = _volume(AFFINE_A, SHAPE_A, "T1w")
    assert sequences.add(t1) == "T1w"
    assert sequences.add(_volume(AFFINE_A, SHAPE_A, "T1w")) == "T1w 2"
    assert sequences.add(_volume(AFFINE_B, SHAPE_B, "FLAIR")) == "FLAIR 2"
    assert sequences.add(_volume(AFFINE_B, SHAPE_B, "DWI"), label="FLAIR") == "FLAIR 3"
    assert sequences.labels == ["FLAIR", "T1w", "T1w 2", "FLAIR 2", "FLAIR 3"]
    assert sequences.model_label == "T1w" and sequences.model_volume is t1

    sequences.model_label = "T1w 2"
    assert sequences.model_label == "T1w 2"
    with pytest.raises(KeyError):
        sequences.model_label = "T2w"
    sequences.remove("T1w 2")
    assert sequences.model_label == "T1w"  # back to the default
    sequences.remove("T1w")
    assert sequences.model_volume is flair
    with pytest.raises(KeyError):
        sequences.remove("T1w")


def test_load_reads_several_files_and_picks_a_volume_of_a_4d_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t1 = rng.uniform(0, 100, (8, 9, 7)).astype(np.float32)
    dwi = rng.uniform(0, 100, (5, 6, 4, 3)).astype(np.float32)
    paths = [
        write_nifti(tmp_path / "sub-01_dwi.nii.gz", dwi, affine=np.diag([2.0, 2.0, 2.0, 1.0])),
        write_nifti(tmp_path / "sub-01_T1w.nii.gz", t1),
    ]
    sequences = SequenceSet.load(paths, volume_indices=[2, None])
    assert sequences.labels == ["DWI", "T1w"] and sequences.model_label == "T1w"
    assert np.array_equal(sequences["DWI"].data, dwi[..., 2])
    assert sequences.resample("DWI", "T1w").shape == t1.shape
    with pytest.raises(ValueError):
        SequenceSet.load(paths, volume_indices=[0])
