"""Evaluation through the Segmenter, on a small R2.0-layout tree made in the test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from tests.conftest import BrightIsLesion, write_nifti
from xnet_core.checkpoint import Checkpoint
from xnet_core.training.datasets import find_scans
from xnet_core.training.evaluate import (evaluate, score_subject, summarise, summarise_negatives, summary_table,
                                          write_csv)
from xnet_core.inference import Segmenter

STEM = "_ses-1_space-MNI152NLin2009aSym"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two subjects: bright 'lesions' of 32 voxels at 1 mm (0.032 ml) and 75 voxels at 2 mm (0.6 ml)."""
    root = tmp_path_factory.mktemp("atlas")
    rng = np.random.default_rng(0)
    for index, (voxel_mm, spot) in enumerate(((1.0, (slice(8, 12), slice(8, 12), slice(1, 3))),
                                              (2.0, (slice(5, 10), slice(5, 10), slice(1, 4))))):
        subject = f"sub-r001s00{index + 1}"
        anat = root / "ATLAS_2" / "Training" / "R001" / subject / "ses-1" / "anat"
        anat.mkdir(parents=True)
        data = np.zeros((30, 32, 5), np.float32)
        data[3:27, 3:29, :] = rng.uniform(40, 60, (24, 26, 5))
        data[spot] = 100.0
        mask = np.zeros(data.shape, np.uint8)
        mask[spot] = 1
        affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
        write_nifti(anat / f"{subject}{STEM}_T1w.nii.gz", data, affine)
        write_nifti(anat / f"{subject}{STEM}_label-L_desc-T1lesion_mask.nii.gz", mask, affine, dtype=np.uint8)
    return root


def test_perfect_model_scores_one(tree: Path, tmp_path: Path) -> None:
    segmenter = Segmenter(BrightIsLesion(), device="cpu", fp32=True)
    progress = []
    scores = evaluate(find_scans(tree), segmenter, on_progress=lambda d, t: progress.append((d, t)))
    assert progress[-1] == (2, 2)
    for score in scores:
        assert score.dice == score.iou == score.precision == score.recall == score.lesion_f1 == 1.0
        assert score.volume_difference == 0 and score.lesion_count_difference == 0
    assert scores[0].true_volume_ml == pytest.approx(0.032)
    assert scores[1].true_volume_ml == pytest.approx(75 * 8 / 1000)  # native voxels: 2 mm -> 8 ul
    summary = summarise(scores)
    assert summary["n"] == 2 and summary["dice"] == 1.0
    assert summary["by_size"]["<1ml"]["n"] == 2 and summary["by_size"][">10ml"]["n"] == 0
    assert summary["by_size"][">10ml"]["dice"] is None
    assert "all" in summary_table(summary)
    write_csv(scores, tmp_path / "scores.csv")
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert [r["scan_id"] for r in rows] == ["sub-r001s001_ses-1", "sub-r001s002_ses-1"]


def test_cli_evaluate_reports_the_issue_keys(tree: Path, tmp_path: Path, random_checkpoint: Checkpoint,
                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--data", str(tree), "--weights", str(random_checkpoint.path), "--json", str(out),
                 "--csv", str(tmp_path / "e.csv"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    for key in ("dice", "iou", "precision", "recall", "lesion_f1", "volume_difference", "volume_difference_ml",
                "lesion_count_difference", "n", "by_size", "checkpoint_sha256", "disclaimer"):
        assert key in report
    assert report["n"] == 2 and set(report["by_size"]) == {"<1ml", "1-10ml", ">10ml"}
    # the metric, not the arithmetic (a "bf16" once overwrote it in the JSON and in the demo card)
    assert isinstance(report["precision"], float) and report["compute_precision"] in ("fp32", "bf16", "fp16")
    assert "dice" in captured.out


def test_cli_evaluate_without_scans_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--data", str(tmp_path)]) == 2
    assert "no ATLAS scan found" in capsys.readouterr().err


def _healthy(folder: Path, spots: list[tuple[slice, slice, slice]], name: str) -> Path:
    """A lesion-free scan: an even 'brain' with bright spots the brightness model calls lesion."""
    data = np.zeros((30, 32, 5), np.float32)
    data[3:27, 3:29, :] = 50.0
    for spot in spots:
        data[spot] = 100.0
    path = folder / f"{name}.nii.gz"
    write_nifti(path, data, np.eye(4))
    return path


def test_lesion_free_scans_count_as_negatives(tree: Path, tmp_path: Path) -> None:
    """Known false positives: two spots (8 and 12 voxels at 1 mm) in one healthy scan, none in another."""
    from xnet_core.training.evaluate import evaluate_negatives

    spots = [(slice(5, 7), slice(5, 7), slice(1, 3)), (slice(15, 18), slice(15, 17), slice(1, 3))]
    paths = [_healthy(tmp_path, spots, "healthy_a"), _healthy(tmp_path, [], "healthy_b")]
    segmenter = Segmenter(BrightIsLesion(), device="cpu", fp32=True)
    negatives = evaluate_negatives(paths, segmenter)
    assert [s.predicted_components for s in negatives] == [2, 0]
    assert negatives[0].predicted_volume_ml == pytest.approx(0.020) and negatives[1].predicted_volume_ml == 0
    assert negatives[0].largest_components[0]["ml"] == pytest.approx(0.012)
    summary = summarise(evaluate(find_scans(tree), segmenter) + negatives)
    assert summary["n"] == 2 and summary["dice"] == 1.0, "negatives never enter the lesion means"
    figures = summarise_negatives(negatives)
    assert figures["n"] == 2 and figures["false_positive_ml"]["max"] == pytest.approx(0.020)
    assert figures["false_positive_ml"]["median"] == pytest.approx(0.010)
    assert figures["components"] == {"median": 1.0, "max": 2}
    assert figures["findings"]["max"] == 0, "8 and 12 voxels are under the lesion table's 0.1 ml"
    assert summary["predicted_components"]["healthy_a"] == 2
    assert "lesion-free scans: 2" in summary_table(summary)


def test_an_empty_mask_makes_a_negative(tmp_path: Path) -> None:
    predicted = np.zeros((10, 10, 10), np.uint8)
    predicted[2:4, 2:4, 2:4] = 1
    score = score_subject("healthy", predicted, np.zeros_like(predicted), 0.001)
    assert score.lesion_free and score.predicted_components == 1 and score.predicted_volume_ml == pytest.approx(0.008)
    predicted[5:10, 5:10, 5:9] = 1  # 100 voxels: 0.1 ml, a finding the lesion table lists
    score = score_subject("healthy", predicted, np.zeros_like(predicted), 0.001)
    assert (score.predicted_components, score.predicted_findings) == (2, 1)
    assert summarise([score])["negatives"]["n"] == 1 and summarise([score])["n"] == 0


def test_scans_that_fail_the_registration_qc_are_listed_apart() -> None:
    def negative(name: str, voxels: int, passed: bool | None):
        predicted = np.zeros((10, 10, 10), np.uint8)
        predicted.flat[:voxels] = 1
        score = score_subject(name, predicted, np.zeros_like(predicted), 0.001)
        score.registration_qc_passed = passed
        return score

    figures = summarise_negatives([negative("good", 100, True), negative("misplaced", 900, False),
                                   negative("on-grid", 300, None)])
    assert figures["n"] == 2 and figures["false_positive_ml"]["max"] == pytest.approx(0.3)
    assert figures["n_registration_qc_failed"] == 1 and figures["registration_qc_failed"] == ["misplaced"]
    assert [row["registration_qc_passed"] for row in figures["scans"]] == [True, False, None]
    table = summary_table({**summarise([]), "negatives": figures})
    assert "registration QC failed: 1 (misplaced)" in table and "0.900 ml" in table


def test_cli_evaluate_negatives_folder(tmp_path: Path, random_checkpoint: Checkpoint,
                                       capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "healthy"
    folder.mkdir()
    _healthy(folder, [], "healthy_a")
    out = tmp_path / "neg.json"
    code = main(["evaluate", "--negatives", str(folder), "--weights", str(random_checkpoint.path), "--json",
                 str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    assert report["negatives"]["n"] == 1 and report["n"] == 0
    assert set(report["negatives"]["false_positive_ml"]) == {"median", "max", "mean"}
    assert "lesion-free scans: 1" in captured.out
