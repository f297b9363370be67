"""Mask-vs-mask figures and lesion components against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from xnet_core.metrics import dice, iou, lesions, precision, recall


def test_hand_computed_overlap() -> None:
    pred = np.zeros((4, 4, 4), np.uint8)
    truth = np.zeros_like(pred)
    pred[0, 0, :3] = 1  # 3 voxels
    truth[0, 0, 1:] = 1  # 3 voxels, 2 shared
    assert dice(pred, truth) == pytest.approx(2 * 2 / 6)
    assert iou(pred, truth) == pytest.approx(2 / 4)
    assert precision(pred, truth) == pytest.approx(2 / 3)
    assert recall(pred, truth) == pytest.approx(2 / 3)


def test_empty_masks_give_zero_as_in_the_paper() -> None:
    empty = np.zeros((3, 3, 3), np.uint8)
    full = np.ones_like(empty)
    assert dice(empty, empty) == 0 and iou(empty, empty) == 0
    assert precision(empty, full) == 0 and recall(full, empty) == 0


def test_six_connectivity_and_volumes() -> None:
    mask = np.zeros((6, 6, 6), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 1] = 1  # diagonal neighbours: two lesions under 6-connectivity
    mask[4, 4, 2:5] = 1  # a 3-voxel column
    found = lesions(mask, voxel_volume_ml=0.002)
    assert [lesion.n_voxels for lesion in found] == [3, 1, 1]
    assert found[0].volume_ml == pytest.approx(0.006)
    assert found[0].z_range == (2, 4) and found[0].centroid == (4.0, 4.0, 3.0)
    assert lesions(np.zeros_like(mask), 1.0) == []


def test_challenge_figures_by_hand() -> None:
    from xnet_core.metrics import lesion_count_difference, lesion_f1, volume_difference

    truth = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(truth)
    truth[1:3, 1:3, 1:3] = 1  # lesion A (8 voxels), detected
    truth[6, 6, 6] = 1  # lesion B (1 voxel), missed
    pred[2, 2, 2] = 1  # touches A
    pred[8:10, 0, 0] = 1  # a false positive (2 voxels)
    assert lesion_f1(pred, truth) == pytest.approx(1 / (1 + (1 + 1) / 2))
    assert volume_difference(pred, truth) == 9 - 3
    assert lesion_count_difference(pred, truth) == 0
    empty = np.zeros_like(truth)
    assert lesion_f1(empty, empty) == 1.0
    assert lesion_f1(pred, empty) == 0.0 and lesion_f1(empty, truth) == 0.0
    assert volume_difference(empty, empty) == 0 and lesion_count_difference(empty, truth) == 2
