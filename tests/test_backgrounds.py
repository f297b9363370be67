"""Real-brain backgrounds: the fixed split by person, tissue classes, skipping bad scans, and cases pasted
into a small made-up background (deterministic per seed)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from xnet_core.training.backgrounds import (VALIDATION_PEOPLE, BackgroundError, classify, person_of,
                                            prepare_backgrounds, split_backgrounds)
from xnet_core.training.cases import CaseRecipe
from xnet_core.training.synthetic import SHAPE, derive_tissues, make_case, template_tissues

# Names as the healthy-T1 collection spells them (one per group), plus other spellings of the same people.
COLLECTION = [
    "chris_t1_niivue", "ds2748_ctrl_sub52_32M", "ds2748_ctrl_sub53_44F", "ds2748_depr_sub09_52F",
    "fsformats_subject1_brain", "ixi2mm_IXI072_68M", "ixi2mm_IXI161_65F", "niimath_bitmap_T1_brain",
    "openfmri_ds011_sub01_35M", "openfmri_ds011_sub02_34F", "openneuro_ds114_sub009_brain_2mm",
    "studyforrest_sub02_T1w",
]


def test_person_of_reads_the_data_set_and_subject():
    assert person_of("ixi2mm_IXI072_68M") == person_of("IXI072-Guys-0828-T1") == "IXI072"
    assert person_of("ds2748_ctrl_sub53_44F") == "ds002748-sub53"
    assert person_of("ds2748_depr_sub09_52F") != person_of("ds2748_ctrl_sub09_30F")
    assert person_of("openfmri_ds011_sub02_34F") == "ds011-sub02"
    assert person_of("something_else") == "something_else"


def test_split_never_shares_a_person(tmp_path):
    names = COLLECTION + ["ixi_IXI072_T1_second_scan", "ixi2mm_IXI161_65F_rescan"]
    paths = [tmp_path / f"{name}.nii.gz" for name in names]
    training, validation = split_backgrounds(paths)
    assert sorted(training + validation) == sorted(paths)
    people_t = {person_of(p.name[:-7]) for p in training}
    people_v = {person_of(p.name[:-7]) for p in validation}
    assert not people_t & people_v
    assert {"IXI072", "ds002748-sub53", "ds002748-depr-sub09", "ds011-sub02", "niivue-chris"} <= people_v
    assert tmp_path / "ixi_IXI072_T1_second_scan.nii.gz" in validation  # a second scan follows its person
    assert tmp_path / "ixi2mm_IXI161_65F_rescan.nii.gz" in training


def test_validation_people_are_about_a_quarter_of_the_collection():
    assert len(VALIDATION_PEOPLE) == 18  # of 78 people: about 60 train and 18 validate


def test_classify_recovers_three_tissue_levels():
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=(40, 40, 40), p=[0.2, 0.45, 0.35])
    image = np.array([60.0, 150.0, 210.0])[labels] + rng.normal(0, 6, labels.shape)
    brain = np.ones(labels.shape, bool)
    gm, wm, levels = classify(image.astype(np.float32), brain)
    assert np.allclose(levels, (60, 150, 210), atol=3)
    assert np.mean((wm > 0.5) == (labels == 2)) > 0.97 and np.mean((gm > 0.5) == (labels == 1)) > 0.97


def test_classify_refuses_a_non_t1():
    with pytest.raises(BackgroundError):
        classify(np.ones((8, 8, 8), np.float32), np.ones((8, 8, 8), bool))


def test_a_background_that_fails_to_load_is_skipped_with_a_warning(tmp_path, caplog):
    broken = tmp_path / "broken_scan.nii.gz"
    broken.write_bytes(b"not a nifti file")
    lines: list[str] = []
    with caplog.at_level(logging.WARNING):
        prepared = prepare_backgrounds([broken], tmp_path / "cache", on_log=lines.append)
    assert prepared == []
    assert any("broken_scan.nii.gz" in line and "skipping" in line for line in lines)
    with caplog.at_level(logging.WARNING):
        assert prepare_backgrounds([broken], tmp_path / "cache") == []  # no on_log: the log says it, once
    assert caplog.text.count("skipping background") == 1 and "broken_scan.nii.gz" in caplog.text


def test_a_background_whose_registration_fails_the_qc_is_skipped(tmp_path, monkeypatch):
    import nibabel as nib
    from types import SimpleNamespace

    import xnet_core.native

    scan = tmp_path / "pitched_scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((12, 12, 12)).astype(np.float32), np.eye(4)), scan)
    misregistered = SimpleNamespace(registration=SimpleNamespace(warning="the brain is rotated"), not_registered=None)
    monkeypatch.setattr(xnet_core.native, "place", lambda volume, device="cpu": misregistered)
    lines: list[str] = []
    assert prepare_backgrounds([scan], tmp_path / "cache", on_log=lines.append) == []
    assert any("pitched_scan.nii.gz" in line and "failed the QC" in line and "rotated" in line for line in lines)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_recipe_draws_are_deterministic_and_respect_the_shares():
    plain = CaseRecipe()
    assert plain.key() == "" and plain.draw(5) == (None, False)
    mixed = CaseRecipe(("a.npz", "b.npz"), template_share=0.25, negative_share=0.1, variety=True)
    draws = [mixed.draw(seed) for seed in range(400)]
    assert draws == [mixed.draw(seed) for seed in range(400)]
    on_template = np.mean([background is None for background, _ in draws])
    negatives = np.mean([negative for _, negative in draws])
    assert 0.17 < on_template < 0.33 and 0.05 < negatives < 0.16
    assert {b for b, _ in draws} == {None, "a.npz", "b.npz"}
    assert mixed.key() != CaseRecipe(("a.npz",), 0.25, 0.1, True).key()


@pytest.fixture(scope="module")
def made_up_background():
    """An ellipsoid 'brain' on the template grid: white matter inside grey matter, CSF ventricles and
    sulci, at levels unlike the template's (a darker scanner)."""
    i, j, k = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r = ((i - 98) / 70.0) ** 2 + ((j - 116) / 85.0) ** 2 + ((k - 90) / 60.0) ** 2
    brain = r < 1.0
    wm = ((r < 0.7) & brain).astype(np.float32)
    ventricles = (((i - 98) / 12.0) ** 2 + ((j - 120) / 30.0) ** 2 + ((k - 95) / 12.0) ** 2) < 1
    sulci = brain & (np.abs(np.sin(j / 4.0)) < 0.15) & (r > 0.8)
    wm[ventricles] = 0
    gm = (brain & ~ventricles & ~sulci & (wm == 0)).astype(np.float32)
    image = np.where(wm > 0, 222.0, np.where(gm > 0, 140.0, 40.0)) * brain
    support = template_tissues().brain
    return derive_tissues(image.astype(np.float32), brain, gm, wm, name="made-up", csf_level=40.0,
                          gm_level=140.0, support=support)


def test_a_case_pasted_into_a_background_is_deterministic_per_seed(made_up_background):
    first = make_case(3, augment=False, background=made_up_background, variety=True)
    again = make_case(3, augment=False, background=made_up_background, variety=True)
    other = make_case(4, augment=False, background=made_up_background, variety=True)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.mask, again.mask)
    assert not np.array_equal(first.mask, other.mask)
    assert first.meta["background"] == "made-up" and first.mask.any()
    lesion = first.mask > 0
    assert (made_up_background.brain | ~lesion).all(), "lesions lie inside the background's brain"
    assert not (first.image[~made_up_background.shown] != 0).any(), "nothing shown outside the model's mask"


def test_a_lesion_free_case_has_no_label(made_up_background):
    case = make_case(8, augment=False, background=made_up_background, lesion_free=True)
    assert not case.mask.any() and case.meta["kind"] == "none"


def test_lesion_cores_take_the_backgrounds_own_levels(made_up_background):
    """Pasted intensities sit at the same place between CSF and grey matter as on the template, on the
    background's own scale (the identity on the template)."""
    template = template_tissues()
    assert template.level(100.0) == pytest.approx(100.0)
    assert made_up_background.level(69.0) == pytest.approx(40.0)
    assert made_up_background.level(166.0) == pytest.approx(140.0)
    cores = [make_case(seed, augment=False, background=made_up_background).meta["core_intensity"] for seed in (3, 5)]
    assert all(made_up_background.level(45) - 0.1 <= c <= made_up_background.level(140) + 0.1 for c in cores)
