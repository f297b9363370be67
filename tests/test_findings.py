"""Findings, not specks (issue 26): lesion records with volume, probabilities and slices; the minimum
finding size decides what the table and the report list, never the saved mask or the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.cli import main
from tests.conftest import BrightIsLesion, write_nifti
from xnet_core import DEFAULT_MIN_LESION_ML
from xnet_core.errors import XNetError
from xnet_core.metrics import Lesion, lesion_mask, lesions, sort_lesions, split_findings


def _three_lesions() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((30, 30, 12), np.uint8)
    mask[2:10, 2:10, 2:6] = 1  # 256 voxels, slices 2-5
    mask[20:22, 20:22, 8:10] = 1  # 8 voxels
    mask[15, 25, 11] = 1  # 1 voxel, the surest
    probabilities = np.where(mask > 0, 0.6, 0.1).astype(np.float32)
    probabilities[15, 25, 11] = 0.99
    probabilities[20, 20, 8] = 0.9
    return mask, probabilities


def test_each_lesion_has_volume_probabilities_and_slices() -> None:
    mask, probabilities = _three_lesions()
    found = lesions(mask, 0.001, probabilities)
    assert [lesion.n_voxels for lesion in found] == [256, 8, 1]
    big = found[0].as_dict()
    assert big["volume_ml"] == pytest.approx(0.256) and big["slices"] == [2, 3, 4, 5]
    assert big["mean_probability"] == pytest.approx(0.6) and big["max_probability"] == pytest.approx(0.6)
    assert found[1].mean_probability == pytest.approx((0.9 + 7 * 0.6) / 8) and found[1].max_probability == pytest.approx(0.9)
    assert "mean_probability" not in lesions(mask, 0.001)[0].as_dict()  # no probabilities, no claim
    assert [lesion.n_voxels for lesion in sort_lesions(found, "probability")] == [1, 8, 256]
    assert sort_lesions(sort_lesions(found, "probability"), "size") == found


def test_minimum_finding_size_splits_the_table() -> None:
    mask, probabilities = _three_lesions()
    found = lesions(mask, 0.001, probabilities)
    findings = split_findings(found, 0.005)
    assert [lesion.n_voxels for lesion in findings.findings] == [256, 8]
    assert findings.smaller_line() == "+ 1 smaller component, 0.00 ml in all"
    assert split_findings(found).findings == [found[0]] and DEFAULT_MIN_LESION_ML == 0.1
    assert split_findings(found, 0.0).smaller == [] and split_findings(found, 0.0).smaller_line() == ""
    rows = [{"volume_ml": lesion.volume_ml} for lesion in found]  # the viewer's table rows split alike
    assert split_findings(rows, 0.2).smaller_line() == "+ 2 smaller components, 0.01 ml in all"
    with pytest.raises(XNetError):
        split_findings(found, -1)


def test_lesion_k_counts_from_the_largest() -> None:
    mask, _ = _three_lesions()
    own, lesion = lesion_mask(mask, 2)
    assert isinstance(lesion, Lesion) and own.sum() == 8 and own[20, 20, 8] == 1
    with pytest.raises(XNetError, match="no lesion 4: the model found 3"):
        lesion_mask(mask, 4)


def test_min_lesion_ml_changes_the_listing_not_the_mask(tmp_path: Path, random_checkpoint, monkeypatch,
                                                        capsys) -> None:
    from xnet_core.inference import Segmenter

    segmenter = Segmenter(BrightIsLesion(), device="cpu", fp32=True, mirror=False)
    monkeypatch.setattr("app.cli.segment.load_model", lambda args: (random_checkpoint, segmenter))
    data = np.zeros((40, 40, 6), np.float32)
    data[2:38, 2:38, 1:5] = np.random.default_rng(0).uniform(40, 60, (36, 36, 4))  # 'brain'
    data[5:15, 5:15, 1:5] = 100.0  # 400 voxels of 'lesion' at 1 mm: 0.4 ml
    data[30, 30, 3] = 100.0  # a one-voxel speck
    scan = write_nifti(tmp_path / "scan.nii.gz", data, np.eye(4))
    runs = {}
    for limit in ("0.1", "1"):
        out = tmp_path / limit
        out.mkdir()
        args = ["segment", str(scan), "-o", str(out / "mask.nii.gz"), "--json", str(out / "s.json"),
                "--min-lesion-ml", limit]
        assert main(args) == 0
        runs[limit] = (json.loads((out / "s.json").read_text()), np.asarray(nib.load(out / "mask.nii.gz").dataobj),
                       capsys.readouterr().out)
    (loose, loose_mask, loose_out), (strict, strict_mask, _) = runs["0.1"], runs["1"]
    np.testing.assert_array_equal(loose_mask, strict_mask)  # the saved mask keeps every component
    assert loose["n_lesions"] == strict["n_lesions"] == 2 and loose["lesion_volume_ml"] == strict["lesion_volume_ml"]
    strip = lambda records: [{k: v for k, v in r.items() if k != "finding"} for r in records]  # noqa: E731
    assert strip(loose["lesions"]) == strip(strict["lesions"])
    assert [r["finding"] for r in loose["lesions"]] == [True, False]
    assert [r["finding"] for r in strict["lesions"]] == [False, False]
    big = loose["lesions"][0]
    assert big["volume_ml"] == pytest.approx(0.4) and big["slices"] == [1, 2, 3, 4]
    assert 0.5 <= big["mean_probability"] <= big["max_probability"] <= 1
    assert loose["n_findings"] == 1 and loose["smaller_components"] == {"count": 1, "volume_ml": 0.001}
    assert strict["min_lesion_ml"] == 1.0 and strict["smaller_components"]["count"] == 2
    assert "1 finding(s) of at least 0.1 ml (+ 1 smaller component, 0.00 ml in all)" in loose_out
    assert main(["segment", str(scan), "-o", str(tmp_path / "m.nii.gz"), "--min-lesion-ml", "-2"]) == 2
    assert "--min-lesion-ml" in capsys.readouterr().err


def test_the_viewer_table_lists_findings_sorted_and_the_rest_on_request() -> None:
    from app.navigator import listed_rows

    rows = [{"number": 1, "volume_ml": 2.0, "mean_probability": 0.6}, {"number": 2, "volume_ml": 0.5,
             "mean_probability": 0.9}, {"number": 3, "volume_ml": 0.02, "mean_probability": 0.99}]
    shown, line = listed_rows(rows, 0.1)
    assert [r["number"] for r in shown] == [1, 2] and line == "+ 1 smaller component, 0.02 ml in all"
    assert [r["number"] for r in listed_rows(rows, 0.1, "probability")[0]] == [2, 1]
    assert [r["number"] for r in listed_rows(rows, 0.1, "size", show_smaller=True)[0]] == [1, 2, 3]
    assert listed_rows(rows, 0.0) == (rows, "")


def test_a_map_is_drawn_inside_the_brain_only_and_says_what_lies_outside() -> None:
    from app.drawing import inside_brain

    brain = np.zeros((10, 10), bool)
    brain[2:8, 2:8] = True
    values = np.ones((10, 10), np.float32)  # 36 of 100 inside
    drawn, outside = inside_brain(values, brain)
    assert drawn[~brain].max() == 0 and drawn[brain].min() == 1 and outside == pytest.approx(0.64)
    assert inside_brain(np.zeros((10, 10), np.float32), brain)[1] == 0.0
