"""The synthetic-case generator: deterministic, ATLAS-like sizes, R2.0 layout."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from xnet_core.training.datasets import find_scans, load_lesion_mask
from xnet_core.training.shapes import load_shape_bank
from xnet_core.training.synthetic import (
    KIND_SHARES,
    VOLUME_QUANTILES_ML,
    make_case,
    sample_kind,
    sample_total_volume_ml,
    template_tissues,
    write_case,
)
from xnet_core.volume import load_volume


@pytest.fixture(scope="module")
def case():
    return make_case(1_000_007)


def test_a_case_is_a_pure_function_of_its_seed(case) -> None:
    again = make_case(1_000_007)
    assert np.array_equal(case.image, again.image) and np.array_equal(case.mask, again.mask)
    assert case.meta == again.meta
    other = make_case(1_000_008, augment=False)
    assert not np.array_equal(other.mask, case.mask)


def test_case_contents(case) -> None:
    assert case.image.shape == case.mask.shape == (197, 233, 189)
    assert case.image.dtype == np.float32 and case.mask.dtype == np.uint8
    assert case.mask.any() and np.isfinite(case.image).all()
    lesion, brain = case.image[case.mask > 0], case.image[template_tissues().wm > 0.9]
    assert np.median(lesion) < np.median(brain), "chronic lesions are hypointense on T1"
    assert set(case.meta) >= {"seed", "kind", "side", "shape", "target_volume_ml"}


def test_lesions_stay_out_of_the_ventricles() -> None:
    tissues = template_tissues()
    for seed in (3, 11):
        unwarped = make_case(seed, augment=False)
        assert not (unwarped.mask.astype(bool) & tissues.ventricles).any()
        # Total volume follows the target within the losses of shaping (ventricles, brain edge, rim).
        target = unwarped.meta["target_volume_ml"]
        assert 0.4 * target <= unwarped.lesion_volume_ml <= 1.6 * target + 0.05


def test_total_volumes_follow_the_atlas_quantiles() -> None:
    rng = np.random.default_rng(0)
    volumes = np.array([sample_total_volume_ml(rng) for _ in range(20_000)])
    for quantile, value in VOLUME_QUANTILES_ML[1:-1]:
        assert np.quantile(volumes, quantile) == pytest.approx(value, rel=0.08)
    assert volumes.min() >= VOLUME_QUANTILES_ML[0][1] and volumes.max() <= VOLUME_QUANTILES_ML[-1][1]


def test_case_mix_follows_the_reference_proportions() -> None:
    rng = np.random.default_rng(1)
    kinds = Counter(sample_kind(rng, sample_total_volume_ml(rng)) for _ in range(20_000))
    shares = {k: kinds[k] / 20_000 for k in KIND_SHARES}
    assert shares["deep"] == pytest.approx(0.45, abs=0.08)
    assert shares["mca"] == pytest.approx(0.40, abs=0.08)
    for small in ("pca", "aca", "posterior_fossa"):
        assert shares[small] == pytest.approx(KIND_SHARES[small], abs=0.03)


def test_shape_bank_holds_real_lesions_on_the_template_grid() -> None:
    bank = load_shape_bank()
    assert len(bank) == 491 and Counter(s.source for s in bank)["lesymap"] == 131
    brain = template_tissues().brain
    inside = []
    for shape in bank[:40]:
        box = tuple(slice(o, o + n) for o, n in zip(shape.offset, shape.box.shape))
        inside.append(brain[box][shape.box].mean())
    assert np.median(inside) > 0.95


def test_written_cases_use_the_r20_layout(tmp_path: Path, case) -> None:
    image_path, mask_path = write_case(case, tmp_path, 7)
    assert image_path.name == "sub-r001s007_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"
    assert "ATLAS_2/Training/R001/sub-r001s007/ses-1/anat" in str(image_path)
    scans = find_scans(tmp_path)
    assert len(scans) == 1
    volume = load_volume(scans[0].t1)
    assert np.array_equal(load_lesion_mask(scans[0], volume), case.mask)
    assert np.allclose(nib.load(image_path).affine[:3, 3], (-98, -134, -72))


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from app.cli import main

    assert main(["synth", "--n", "1", "--seed", "1000000", "--out", str(tmp_path)]) == 0
    listing = json.loads((tmp_path / "synthetic_cases.json").read_text())
    assert listing["cases"][0]["seed"] == 1_000_000 and "disclaimer" in listing
    assert len(find_scans(tmp_path)) == 1
    assert main(["synth", "--n", "0", "--out", str(tmp_path)]) == 2
    assert "at least one case" in capsys.readouterr().err
