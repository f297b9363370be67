"""ATLAS layouts read from small fake trees, and the paper's splits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_nifti
from xnet_core.training.datasets import find_scans, kfold_blocks, load_lesion_mask, split
from xnet_core.errors import DatasetError
from xnet_core.volume import load_volume

SHAPE = (6, 7, 5)


def _t1(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nifti(path, np.random.default_rng(len(str(path))).uniform(1, 100, SHAPE))


def _mask(path: Path, voxel: tuple[int, int, int], shape=SHAPE) -> Path:
    data = np.zeros(shape, np.uint8)
    data[voxel] = 1
    return write_nifti(path, data, dtype=np.uint8)


def test_r20_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    anat = tmp_path / "ATLAS_2" / "Training" / "R009" / "sub-r009s001" / "ses-1" / "anat"
    stem = "sub-r009s001_ses-1_space-MNI152NLin2009aSym"
    _t1(anat / f"{stem}_T1w.nii.gz")
    _mask(anat / f"{stem}_label-L_desc-T1lesion_mask.nii.gz", (1, 2, 3))
    testing = tmp_path / "ATLAS_2" / "Testing" / "R005" / "sub-r005s002" / "ses-1" / "anat"
    _t1(testing / "sub-r005s002_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz")
    with caplog.at_level(logging.WARNING):
        scans = find_scans(tmp_path / "ATLAS_2" / "Training" / "..")  # any folder at or above the root
    assert [s.scan_id for s in scans] == ["sub-r009s001_ses-1"]
    assert scans[0].patient_id == "sub-r009s001" and scans[0].release == "R2.0"
    assert "no lesion mask" in caplog.text
    mask = load_lesion_mask(scans[0], load_volume(scans[0].t1))
    assert mask.dtype == np.uint8 and mask.sum() == 1 and mask[1, 2, 3] == 1


def test_r11_layout_ors_every_lesion_file_in_csv_order(tmp_path: Path) -> None:
    for site, subject, voxels in (("Site1", "031768", [(0, 0, 0)]), ("Site2", "031806", [(1, 1, 1), (4, 5, 3)])):
        folder = tmp_path / "ATLAS_R1.1" / site / subject / "t01"
        _t1(folder / f"{subject}_t1w_deface_stx.nii.gz")
        for k, voxel in enumerate(voxels):
            suffix = "" if k == 0 else f"_{k}"
            _mask(folder / f"{subject}_LesionSmooth{suffix}_stx.nii.gz", voxel)
    (tmp_path / "ATLAS_R1.1" / "ATLAS_Meta-Data_Release_1.1_standard_mni.csv").write_text(
        "INDI Site ID,INDI Subject ID,Session\nSite2,31806, t01\nSite1,31768, t01\n")
    scans = find_scans(tmp_path)
    assert [s.scan_id for s in scans] == ["031806", "031768"]  # the CSV's row order
    assert all(s.release == "R1.1" for s in scans) and len(scans[0].masks) == 2
    union = load_lesion_mask(scans[0], load_volume(scans[0].t1))
    assert union.sum() == 2 and union[1, 1, 1] and union[4, 5, 3]


def test_r12_layout(tmp_path: Path) -> None:
    folder = tmp_path / "standard_MNI" / "c0010" / "c0010s0022t02"
    _t1(folder / "c0010s0022t02_t1w_stx.nii.gz")
    _mask(folder / "c0010s0022t02_LesionSmooth_stx.nii.gz", (2, 2, 2))
    scans = find_scans(tmp_path)
    assert [(s.scan_id, s.patient_id, s.release) for s in scans] == [("c0010s0022t02", "c0010s0022", "R1.2")]


def test_no_known_layout(tmp_path: Path) -> None:
    _t1(tmp_path / "brain.nii.gz")
    with pytest.raises(DatasetError, match="no ATLAS scan found"):
        find_scans(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        find_scans(tmp_path / "brain.nii.gz")


def test_mask_on_another_grid_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "c0003" / "c0003s0001t01"
    _t1(folder / "c0003s0001t01_t1w_stx.nii.gz")
    _mask(folder / "c0003s0001t01_LesionSmooth_stx.nii.gz", (0, 0, 0), shape=(8, 8, 8))
    scan = find_scans(tmp_path)[0]
    with pytest.raises(DatasetError, match="does not match its scan"):
        load_lesion_mask(scan, load_volume(scan.t1))


def test_kfold_blocks_match_sklearn() -> None:
    from sklearn.model_selection import KFold

    for n in (229, 10, 7):
        ours = [list(block) for block in kfold_blocks(n)]
        theirs = [list(test) for _, test in KFold(n_splits=5, shuffle=False).split(np.zeros(n))]
        assert ours == theirs
    assert [len(b) for b in kfold_blocks(229)] == [46, 46, 46, 46, 45]  # the paper's folds


def test_patient_split_keeps_a_patients_scans_together(tmp_path: Path) -> None:
    from xnet_core.training.datasets import Scan

    scans = [Scan(f"p{p}t{t}", f"p{p}", tmp_path / f"{p}{t}", (tmp_path,), "R1.2") for p in range(5) for t in range(2)]
    train, val = split(scans, 1, "patient")
    assert {s.patient_id for s in val} == {"p1"} and len(val) == 2
    assert not {s.patient_id for s in train} & {s.patient_id for s in val}
    paper_train, paper_val = split(scans, 0, "paper")
    assert [s.scan_id for s in paper_val] == ["p0t0", "p0t1"] and len(paper_train) == 8
    with pytest.raises(DatasetError, match="fold 5 must be 0..4") as raised:
        split(scans, 5)
    assert raised.value.parameter == "fold", "the CLI names its --fold flag"
