"""Model geometry and normalisation (xnet_core.preprocess)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_nifti
from xnet_core.assets import TEMPLATE_T1, asset_path
from xnet_core.preprocess import (
    MODEL_HEIGHT,
    MODEL_WIDTH,
    SliceGeometry,
    normalise,
    prepare,
    template_brain_mask,
)
from xnet_core.volume import load_volume


@pytest.fixture(scope="module")
def template_volume():
    return load_volume(asset_path(TEMPLATE_T1))


def test_template_grid_uses_the_papers_crop(template_volume) -> None:
    prepared = prepare(template_volume)
    assert prepared.on_template_grid and not prepared.warnings
    assert prepared.slices.shape == (189, MODEL_HEIGHT, MODEL_WIDTH)
    # The official code: vol.transpose(2, 1, 0)[z][5:229, 2:194], here on the normalised volume.
    normalised = normalise(template_volume.data, prepared.brain_mask)
    paper = normalised.transpose(2, 1, 0)[:, 5:229, 2:194]
    assert np.array_equal(prepared.slices, paper)


def test_template_brain_mask_is_the_skull_stripped_support(template_volume) -> None:
    mask = template_brain_mask()
    assert mask.shape == (197, 233, 189)
    assert int(mask.sum()) == 1_886_539  # measured on the nilearn 0.14.1 template file
    assert np.array_equal(mask > 0, template_volume.data > 0)


def test_brain_slices_skip_empty_planes(template_volume) -> None:
    prepared = prepare(template_volume)
    assert prepared.brain_slices[0] and not prepared.brain_slices[-1]  # brain stem reaches z=0
    assert prepared.brain_slices[90]
    assert 100 < prepared.brain_slices.sum() < 189


def test_geometry_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    for x0, y0, plane in [(2, 5, (197, 233)), (-20, -30, (150, 160)), (10, 40, (300, 300))]:
        geometry = SliceGeometry(x0, y0, plane)
        volume = rng.random((*plane, 3)).astype(np.float32)
        model = geometry.to_model(volume)
        assert model.shape == (3, MODEL_HEIGHT, MODEL_WIDTH)
        back = geometry.from_model(model)
        window = np.zeros(plane, bool)
        window[max(x0, 0):x0 + MODEL_WIDTH, max(y0, 0):y0 + MODEL_HEIGHT] = True
        assert np.array_equal(back[window], volume[window])
        assert not back[~window].any()
        assert np.array_equal(geometry.from_model(geometry.to_model(volume[..., 0])), back[..., 0])


def test_model_slice_orientation() -> None:
    """slice[h, w] = volume[x0 + w, y0 + h]: rows follow y, columns follow x."""
    geometry = SliceGeometry(2, 5, (197, 233))
    volume = np.zeros((197, 233, 1), np.float32)
    volume[12, 30, 0] = 1
    assert geometry.to_model(volume)[0, 30 - 5, 12 - 2] == 1


def test_robust_normalisation() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(100, 10, (20, 20, 20)).astype(np.float32)
    mask = np.zeros(data.shape, np.uint8)
    mask[5:15, 5:15, 5:15] = 1
    data[mask == 0] = 1000  # outside the brain must not influence the scaling
    out = normalise(data, mask)
    inside = out[mask > 0]
    assert out.dtype == np.float32 and inside.min() == 0 and inside.max() == 1
    assert not out[mask == 0].any()
    lo, hi = np.percentile(data[mask > 0], [0.5, 99.5])
    assert np.mean((inside > 0) & (inside < 1)) > 0.98
    value = float(data[10, 10, 10])
    assert out[10, 10, 10] == pytest.approx(np.clip((value - lo) / (hi - lo), 0, 1), abs=1e-6)


def test_div100_is_the_papers_recipe() -> None:
    data = np.full((4, 4, 4), 55.0, np.float32)
    assert np.allclose(normalise(data, np.ones_like(data, np.uint8), "div100"), 0.55)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(data, np.ones_like(data, np.uint8), "zscore")


def test_off_grid_scan_is_centred_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = np.zeros((120, 140, 6), np.float32)
    data[30:90, 40:120, :] = np.random.default_rng(2).uniform(50, 100, (60, 80, 6))
    volume = load_volume(write_nifti(tmp_path / "native.nii.gz", data))
    with caplog.at_level(logging.WARNING):
        prepared = prepare(volume)
    assert not prepared.on_template_grid
    assert "not on the 197x233x189" in caplog.text and "unreliable until" in caplog.text
    # The brain (x 30..89, y 40..119) sits in the middle of the 192x224 window.
    assert prepared.geometry.x0 == (30 + 90) // 2 - MODEL_WIDTH // 2
    assert prepared.geometry.y0 == (40 + 120) // 2 - MODEL_HEIGHT // 2
    assert prepared.brain_slices.all()
    back = prepared.geometry.from_model(prepared.slices)
    assert not back[prepared.brain_mask == 0].any(), 'normalised image is zero outside the brain mask'
