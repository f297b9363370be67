"""The Segmenter: precision, ordering, callbacks, fallbacks and orientation (xnet_core.inference)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import BrightIsLesion, blob_batch, write_nifti
from xnet_core.errors import Cancelled, DeviceError
from xnet_core.inference import Segmenter, choose_device, fold_batchnorm
from xnet_core.metrics import dice
from xnet_core.model import XNet
from xnet_core.volume import load_volume, save_like


def _scan_with_spot(shape=(40, 36, 6)) -> np.ndarray:
    data = np.zeros(shape, np.float32)
    rng = np.random.default_rng(0)
    data[5:35, 4:32, 1:5] = rng.uniform(40, 60, (30, 28, 4))  # 'brain' on slices 1..4 only
    data[8:14, 20:26, 2:4] = 100.0  # a bright, asymmetric spot: 72 voxels, above p99.5
    return data


def test_bf16_and_fp32_masks_agree(blob_model: XNet) -> None:
    images, truth = blob_batch(np.random.default_rng(7), 6, 64, 64)
    fp32 = Segmenter(blob_model, device="cpu", fp32=True).predict(images)
    bf16 = Segmenter(blob_model, device="cpu", precision="bf16").predict(images)
    assert dice(fp32 >= 0.5, truth) > 0.9, "the over-fitted model must have non-trivial output"
    assert dice(bf16 >= 0.5, fp32 >= 0.5) >= 0.99


def test_batchnorm_folding_keeps_the_output(blob_model: XNet) -> None:
    import copy

    images = torch.from_numpy(blob_batch(np.random.default_rng(8), 2, 48, 48)[0])[:, None]
    with torch.no_grad():
        expected = blob_model(images)
        folded = fold_batchnorm(copy.deepcopy(blob_model))(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fold_batchnorm(copy.deepcopy(blob_model)).modules())
    assert torch.allclose(expected, folded, atol=1e-3 * float(expected.abs().max()))


def test_batch_size_does_not_change_results(blob_model: XNet) -> None:
    images = blob_batch(np.random.default_rng(9), 5, 48, 48)[0]
    one = Segmenter(blob_model, device="cpu", fp32=True, batch_size=1).predict(images)
    three = Segmenter(blob_model, device="cpu", fp32=True, batch_size=3).predict(images)
    assert np.allclose(one, three, atol=1e-4)


def test_mask_comes_back_aligned_with_an_lps_input(tmp_path: Path) -> None:
    lps = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    data = _scan_with_spot()
    source = write_nifti(tmp_path / "lps.nii.gz", data, lps)
    volume = load_volume(source)
    result = Segmenter(BrightIsLesion(), device="cpu", fp32=True).segment(volume)
    out = save_like(result.mask, volume, tmp_path / "mask.nii.gz", "xnet test research use only")
    written = nib.load(out)
    expected = (data > 70).astype(np.uint8)
    assert np.array_equal(np.asarray(written.dataobj), expected)
    assert np.allclose(written.affine, lps)
    assert result.n_lesions == 1 and result.lesion_slices == [2, 3]
    assert result.lesion_volume_ml == pytest.approx(6 * 6 * 2 / 1000)
    assert result.slice_area_mm2[2] == pytest.approx(36.0)


def test_empty_slices_are_skipped(tmp_path: Path) -> None:
    volume = load_volume(write_nifti(tmp_path / "scan.nii.gz", _scan_with_spot()))
    result = Segmenter(BrightIsLesion(), device="cpu", fp32=True).segment(volume)
    assert result.computed_slices == [1, 2, 3, 4]
    assert not result.probabilities[..., [0, 5]].any()


def test_requested_slices_first_and_each_as_soon_as_ready(tmp_path: Path) -> None:
    volume = load_volume(write_nifti(tmp_path / "scan.nii.gz", _scan_with_spot()))
    arrived: list[int] = []
    progress: list[tuple[int, int]] = []
    segmenter = Segmenter(BrightIsLesion(), device="cpu", fp32=True, batch_size=2)
    result = segmenter.segment(
        volume, first=[3], on_slice=lambda z, plane: arrived.append(z),
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert arrived[0] == 3
    assert sorted(arrived) == list(range(6))
    assert progress[0] == (1, 4) and progress[-1] == (4, 4)
    assert result.requested_slices == list(range(6))


def test_empty_slices_answer_at_once_and_priority_wins(tmp_path: Path) -> None:
    volume = load_volume(write_nifti(tmp_path / "scan.nii.gz", _scan_with_spot()))
    arrived: list[int] = []
    Segmenter(BrightIsLesion(), device="cpu", fp32=True).segment(
        volume, first=[5, 2], on_slice=lambda z, plane: arrived.append(z))
    # 5 has no brain (instant), 2 is computed next; then the other empty slice, then the rest.
    assert arrived == [5, 2, 0, 1, 3, 4]


def test_a_subset_of_slices(tmp_path: Path) -> None:
    volume = load_volume(write_nifti(tmp_path / "scan.nii.gz", _scan_with_spot()))
    result = Segmenter(BrightIsLesion(), device="cpu", fp32=True).segment(volume, slices=[3])
    assert result.computed_slices == [3] and result.lesion_slices == [3]


def test_cancel_stops_between_batches(tmp_path: Path) -> None:
    volume = load_volume(write_nifti(tmp_path / "scan.nii.gz", _scan_with_spot()))
    arrived: list[int] = []
    with pytest.raises(Cancelled, match="cancelled after 1 slices"):
        Segmenter(BrightIsLesion(), device="cpu", fp32=True).segment(
            volume, on_slice=lambda z, plane: arrived.append(z), should_cancel=lambda: 1 in arrived
        )
    assert arrived == [0, 5, 1]  # the empty slices answer at once; computing stops after slice 1


def test_gpu_out_of_memory_halves_the_batch_then_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    segmenter = Segmenter(BrightIsLesion(), device="cpu", fp32=True, batch_size=8)
    real_forward = segmenter._forward
    segmenter.device = torch.device("cuda")  # pretend; the fake forward below never touches a GPU
    sizes: list[int] = []

    def forward(batch: np.ndarray, mirror: bool) -> np.ndarray:
        sizes.append(len(batch))
        if segmenter.device.type == "cuda" and len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return np.full(batch.shape, 0.9, np.float32) if segmenter.device.type == "cuda" else real_forward(batch, mirror)

    segmenter._forward = forward  # type: ignore[method-assign]
    images = np.full((8, 32, 32), 0.9, np.float32)
    probs = segmenter.predict(images)
    assert sizes[:3] == [8, 4, 2] and segmenter.batch_size == 2
    assert probs.shape == (8, 32, 32) and (probs > 0.5).all()
    assert "retrying with batch size 4" in caplog.text

    def always_oom(batch: np.ndarray, mirror: bool) -> np.ndarray:
        if segmenter.device.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(batch, mirror)

    segmenter._forward = always_oom  # type: ignore[method-assign]
    probs = segmenter.predict(images[:1])
    assert segmenter.device.type == "cpu" and (probs > 0.5).all()
    assert "continuing on the CPU" in caplog.text


class RightLeaning(nn.Module):
    """Not left-right symmetric: the further right (larger model column) a voxel, the higher its score."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1.0, 1.0, x.shape[-1], dtype=x.dtype, device=x.device)
        return 8.0 * (x - 0.5) + 4.0 * ramp


def test_mirroring_averages_each_slice_with_its_mirror_image() -> None:
    model = RightLeaning()
    images = np.random.default_rng(3).uniform(0, 1, (3, 16, 24)).astype(np.float32)

    def single(x: np.ndarray) -> np.ndarray:
        return torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x))[:, None]))[:, 0].numpy()

    expected = (single(images) + single(images[:, :, ::-1])[:, :, ::-1]) / 2
    mirrored = Segmenter(model, device="cpu", fp32=True, batch_size=2).predict(images)  # batches of 2, then 1
    single_pass = Segmenter(model, device="cpu", fp32=True, mirror=False).predict(images)
    np.testing.assert_allclose(mirrored, expected, atol=1e-6)
    np.testing.assert_allclose(single_pass, single(images), atol=1e-6)
    assert np.abs(mirrored - single_pass).max() > 0.2  # the model leans right: mirroring must show
    overridden = Segmenter(model, device="cpu", fp32=True).predict(images, mirror=False)
    np.testing.assert_allclose(overridden, single_pass, atol=1e-6)


def test_the_segmentation_records_whether_it_was_mirrored(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "spot.nii.gz", _scan_with_spot())
    volume = load_volume(path)
    assert Segmenter(BrightIsLesion(), device="cpu", fp32=True).segment(volume).mirror is True
    assert Segmenter(BrightIsLesion(), device="cpu", fp32=True, mirror=False).segment(volume).mirror is False


def test_unavailable_or_unknown_devices_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        choose_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        choose_device("tpu")
    assert choose_device("cpu").type == "cpu"
