"""``xnet segment`` end to end, on small scans made in the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.cli import main
from tests.conftest import write_nifti
from xnet_core.checkpoint import Checkpoint
from xnet_core.slices import parse_slices
from xnet_core.errors import XNetError

LPS = np.array([[-1.0, 0, 0, 30], [0, -1.0, 0, 40], [0, 0, 1.0, -3], [0, 0, 0, 1]])


def _scan(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = np.zeros((48, 56, 5), np.float32)
    data[6:42, 8:50, :] = rng.uniform(40, 80, (36, 42, 5))
    data[10:20, 12:22, 1:4] = 5.0  # an off-centre dark region, so flips would show
    return data


@pytest.fixture(scope="module")
def scan_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """The same scan stored RAS and LPS (file voxel order reversed in x and y)."""
    folder = tmp_path_factory.mktemp("scans")
    data = _scan()
    ras_affine = LPS @ np.diag([1, 1, 1, 1])
    ras_affine = np.array([[1.0, 0, 0, 30 - 47], [0, 1.0, 0, 40 - 55], [0, 0, 1.0, -3], [0, 0, 0, 1]])
    ras = write_nifti(folder / "scan_ras.nii.gz", data[::-1, ::-1, :], ras_affine)
    lps = write_nifti(folder / "scan_lps.nii.gz", data, LPS)
    return ras, lps, data


def _run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_segment_writes_mask_probabilities_and_summary(tmp_path: Path, scan_pair, random_checkpoint: Checkpoint,
                                                       capsys: pytest.CaptureFixture) -> None:
    ras, _, _ = scan_pair
    mask, prob, summary = tmp_path / "mask.nii.gz", tmp_path / "prob.nii.gz", tmp_path / "s.json"
    code, out, err = _run(["segment", str(ras), "-o", str(mask), "--prob", str(prob), "--json", str(summary),
                           "--weights", str(random_checkpoint.path), "--device", "cpu"], capsys)
    assert code == 0, err
    assert "research" in out.lower()
    report = json.loads(summary.read_text())
    for key in ("lesion_volume_ml", "n_lesions", "lesion_slices", "threshold", "device", "precision",
                "disclaimer", "checkpoint", "checkpoint_sha256", "version"):
        assert key in report
    assert set(report["timings_s"]) >= {"load", "preprocess", "inference", "write"}
    assert report["checkpoint_sha256"] == random_checkpoint.sha256
    assert report["device"] == "cpu" and report["slices_computed"] == 5
    assert report["mirror"] is True
    assert any("not on the 197x233x189" in w for w in report["warnings"])
    written = nib.load(mask)
    assert written.get_data_dtype() == np.uint8
    assert written.header["descrip"].tobytes().decode().startswith(f"xnet {random_checkpoint.sha256[:12]} research")
    probabilities = np.asarray(nib.load(prob).dataobj)
    assert probabilities.dtype == np.float32 and 0 <= probabilities.min() and probabilities.max() <= 1
    assert np.array_equal(np.asarray(written.dataobj), (probabilities >= 0.5).astype(np.uint8))
    assert report["lesion_volume_ml"] == pytest.approx(float((probabilities >= 0.5).sum()) / 1000, abs=1e-3)


def test_no_mirror_scores_each_slice_once(tmp_path: Path, scan_pair, random_checkpoint: Checkpoint,
                                         capsys: pytest.CaptureFixture) -> None:
    ras, _, _ = scan_pair
    probabilities = {}
    for flags in ([], ["--no-mirror"]):
        prob, summary = tmp_path / f"prob{len(flags)}.nii.gz", tmp_path / f"s{len(flags)}.json"
        code, _, err = _run(["segment", str(ras), "-o", str(tmp_path / f"mask{len(flags)}.nii.gz"), "--prob",
                             str(prob), "--json", str(summary), "--weights", str(random_checkpoint.path),
                             "--device", "cpu", "--slices", "2", *flags], capsys)
        assert code == 0, err
        assert json.loads(summary.read_text())["mirror"] is (not flags)
        probabilities[bool(flags)] = np.asarray(nib.load(prob).dataobj)
    assert np.abs(probabilities[True] - probabilities[False]).max() > 1e-3  # a random X-Net is not symmetric


def test_lps_input_gets_a_mask_aligned_with_it(tmp_path: Path, scan_pair, random_checkpoint: Checkpoint,
                                               capsys: pytest.CaptureFixture) -> None:
    ras, lps, _ = scan_pair
    masks = {}
    for name, source in (("ras", ras), ("lps", lps)):
        out = tmp_path / f"{name}_mask.nii.gz"
        code, _, err = _run(["segment", str(source), "-o", str(out), "--weights", str(random_checkpoint.path),
                             "--device", "cpu", "--fp32", "--threshold", "0.6"], capsys)
        assert code == 0, err
        image = nib.load(out)
        assert np.allclose(image.affine, nib.load(source).affine)
        masks[name] = np.asarray(image.dataobj)
    assert 0 < masks["ras"].sum() < masks["ras"].size, "the check needs a non-trivial mask"
    # Same anatomy, opposite storage order: the LPS mask is the RAS one reversed in x and y.
    assert np.array_equal(masks["lps"], masks["ras"][::-1, ::-1, :])


def test_slices_option_limits_the_work(tmp_path: Path, scan_pair, random_checkpoint: Checkpoint,
                                       capsys: pytest.CaptureFixture) -> None:
    ras, _, _ = scan_pair
    summary = tmp_path / "s.json"
    code, _, err = _run(["segment", str(ras), "-o", str(tmp_path / "m.nii.gz"), "--json", str(summary),
                         "--weights", str(random_checkpoint.path), "--slices", "2:3"], capsys)
    assert code == 0, err
    report = json.loads(summary.read_text())
    assert report["slices_computed"] == 2
    assert set(report["lesion_slices"]) <= {2, 3}


def test_parse_slices() -> None:
    assert parse_slices("all", 4) == [0, 1, 2, 3]
    assert parse_slices("1:3", 10) == [1, 2, 3]
    assert parse_slices("5,1,5", 10) == [1, 5]
    assert parse_slices("lesion", 10) == "lesion"
    for bad in ("3:1", "a:b", "12", "", "-1"):
        with pytest.raises(XNetError):
            parse_slices(bad, 10)


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, ck: ["segment", str(d / "missing.nii.gz"), "-o", str(d / "m.nii.gz")], "no such file"),
        (lambda d, ck: ["segment", str(d / "scan.nii.gz"), "-o", str(d / "m.nii.gz"), "--weights",
                        str(d / "cut.pt")], "truncated or not a PyTorch weights file"),
        (lambda d, ck: ["segment", str(d / "scan.nii.gz"), "-o", str(d / "scan.nii.gz"), "--weights", ck],
         "input files are never overwritten"),
        (lambda d, ck: ["segment", str(d / "scan.nii.gz"), "-o", str(d / "no" / "m.nii.gz"), "--weights", ck],
         "does not exist"),
        (lambda d, ck: ["segment", str(d / "scan.nii.gz"), "-o", str(d / "m.nii.gz"), "--weights", ck,
                        "--slices", "40:50"], "--slices: slice 40 is outside 0..4"),
        (lambda d, ck: ["segment", str(d / "scan.nii.gz"), "-o", str(d / "m.nii.gz"), "--weights", ck,
                        "--threshold", "1.5"], "--threshold: the threshold 1.5 must lie strictly between 0 and 1"),
        (lambda d, ck: ["segment", str(d / "scan.nii.gz"), "-o", str(d / "m.nii.gz"), "--weights", ck,
                        "--volume", "3"], "--volume: {d}/scan.nii.gz: is a 3D volume; there is no volume 3"),
        (lambda d, ck: ["segment", str(d / "scan.nii.gz"), "-o", str(d / "m.nii.gz"), "--weights",
                        str(d / "none.pt")], "--weights: {d}/none.pt: no such weights file"),
    ],
    ids=["missing-scan", "truncated-weights", "overwrite-input", "missing-folder", "bad-slices",
         "bad-threshold", "bad-volume", "missing-weights"],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, random_checkpoint: Checkpoint, capsys, make_args,
                                         message: str) -> None:
    write_nifti(tmp_path / "scan.nii.gz", _scan())
    (tmp_path / "cut.pt").write_bytes(random_checkpoint.path.read_bytes()[:5000])
    before = (tmp_path / "scan.nii.gz").read_bytes()
    code, _, err = _run(make_args(tmp_path, str(random_checkpoint.path)), capsys)
    lines = [line for line in err.splitlines() if line.strip() and "segmenting" not in line]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("xnet segment: error: "), err
    assert message.format(d=tmp_path) in lines[0], err
    assert "Traceback" not in err
    assert (tmp_path / "scan.nii.gz").read_bytes() == before


def test_segment_never_loads_qt(tmp_path: Path) -> None:
    code = (
        "import sys; from app.cli import main; "
        f"rc = main(['segment', {str(tmp_path / 'none.nii.gz')!r}, '-o', {str(tmp_path / 'm.nii.gz')!r}]); "
        "assert rc == 2, rc; "
        "assert not [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph'))], 'Qt was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_parser_loads_neither_torch_nor_qt() -> None:
    # Every command module is imported to build the parser, so each must import its heavy modules lazily.
    code = (
        "import sys; from app.cli import COMMANDS, build_parser; build_parser(); "
        "assert len(COMMANDS) >= 8, COMMANDS; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'PySide6', 'pyqtgraph')]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_library_errors_get_the_flag_of_their_parameter() -> None:
    from app.cli import build_parser
    from app.cli._common import error_line

    segment = build_parser().parse_args(["segment", "scan.nii.gz", "-o", "m.nii.gz"])
    train = build_parser().parse_args(["train", "--out", "run"])
    slices = XNetError("slice 40 is outside 0..4 of this scan.", parameter="slices")
    assert error_line(slices, segment) == "--slices: slice 40 is outside 0..4 of this scan."
    assert error_line(slices, train) == "slice 40 is outside 0..4 of this scan."  # train has no --slices
    assert error_line(XNetError("plain"), segment) == "plain"
    transform = XNetError("x.txt: a transform is saved as .json or .tfm.", parameter="transform")
    assert error_line(transform, segment).startswith("--save-transform: x.txt")


def test_compare_figures_match_the_segment_output(tmp_path: Path, scan_pair, random_checkpoint: Checkpoint,
                                                  capsys: pytest.CaptureFixture) -> None:
    from xnet_core import metrics

    _, lps, data = scan_pair
    reader = np.zeros(data.shape, np.uint8)
    reader[10:20, 12:22, 1:4] = 1  # the dark region, in the LPS file's own voxel order
    reader_path = write_nifti(tmp_path / "reader.nii.gz", reader, LPS, np.uint8)
    weights = ["--weights", str(random_checkpoint.path), "--device", "cpu", "--threshold", "0.3"]
    assert _run(["segment", str(lps), "-o", str(tmp_path / "model.nii.gz"), *weights], capsys)[0] == 0
    model = np.asarray(nib.load(tmp_path / "model.nii.gz").dataobj)
    out = tmp_path / "compare.json"
    code, printed, err = _run(["compare", str(lps), "--reader", str(reader_path), "--json", str(out),
                               "--methods", "gradcam", "--no-cache", *weights], capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert list(report)[:11] == ["dice", "iou", "precision", "recall", "lesion_f1", "model_volume_ml",
                                 "reader_volume_ml", "both_empty", "model_only_lesions", "reader_only_lesions",
                                 "attention"]
    assert list(report).index("slices") > list(report).index("attention")
    assert report["dice"] == pytest.approx(metrics.dice(model, reader), abs=1e-4)
    assert report["lesion_f1"] == pytest.approx(metrics.lesion_f1(model, reader), abs=1e-4)
    assert report["reader_volume_ml"] == pytest.approx(reader.sum() / 1000, abs=1e-4)
    assert len(report["reader_only_lesions"]) == len(metrics.unmatched_lesions(reader, model, 0.001))
    assert set(report["attention"]) == {"gradcam"}
    assert set(report["attention"]["gradcam"]) == {"energy_in_mask", "pointing_hit", "otsu_iou"}
    reader_slices = {1, 2, 3}  # --slices lesion: where the model or the reader marks a lesion
    assert reader_slices <= {record["z"] for record in report["slices"]}
    assert {"disclaimer", "checkpoint_sha256", "version"} <= set(report) and "Dice" in printed


def test_compare_bad_input_exits_2(tmp_path: Path, scan_pair, random_checkpoint: Checkpoint,
                                   capsys: pytest.CaptureFixture) -> None:
    _, lps, data = scan_pair
    far = LPS.copy()
    far[0, 3] += 400
    elsewhere = write_nifti(tmp_path / "far.nii.gz", np.ones(data.shape), far, np.uint8)
    code, _, err = _run(["compare", str(lps), "--reader", str(elsewhere), "--json", str(tmp_path / "c.json"),
                         "--weights", str(random_checkpoint.path)], capsys)
    assert code == 2 and "overlaps" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:  # --json is required here
        main(["compare", str(lps), "--reader", str(elsewhere)])
    assert exit_info.value.code == 2


def test_report_to_an_unwritable_place_exits_2(tmp_path: Path, scan_pair, capsys: pytest.CaptureFixture) -> None:
    ras, _, _ = scan_pair
    code, _, err = _run(["report", str(ras), "--pdf", str(tmp_path / "no" / "such" / "report.pdf")], capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["report", str(ras), "--pdf", str(ras)], capsys)
    assert code == 2 and "never overwritten" in err
