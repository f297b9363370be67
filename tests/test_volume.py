"""Loading, validation and write-back of NIfTI scans (xnet_core.nifti, through xnet_core.volume)."""

from __future__ import annotations

import builtins
import gzip
import hashlib
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import write_nifti
from xnet_core.errors import VolumeError
from xnet_core.nifti import file_stem
from xnet_core.volume import load_volume, save_like

LPS = np.array([[-1.0, 0, 0, 20], [0, -1.0, 0, 30], [0, 0, 2.0, -10], [0, 0, 0, 1]])


def _scan(shape=(12, 10, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ras_file_loads_unchanged(tmp_path: Path) -> None:
    data = _scan()
    volume = load_volume(write_nifti(tmp_path / "sub-01_T1w.nii.gz", data))
    assert volume.data.dtype == np.float32
    assert np.array_equal(volume.data, data)
    assert volume.name == "sub-01_T1w" and volume.sequence == "T1w"
    assert volume.voxel_sizes == (1.0, 1.0, 1.0)


def test_lps_file_is_reoriented_to_ras(tmp_path: Path) -> None:
    data = _scan()
    volume = load_volume(write_nifti(tmp_path / "lps.nii", data, LPS))
    assert np.array_equal(volume.data, data[::-1, ::-1, :])
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert volume.voxel_sizes == (1.0, 1.0, 2.0)
    # The same voxel has the same world position in both orders.
    ras_index = (2, 3, 4)
    i, j, k = volume.source_index(ras_index)
    assert np.allclose(volume.affine @ [*ras_index, 1], LPS @ [i, j, k, 1])
    assert volume.data[ras_index] == data[i, j, k]


def test_save_like_writes_back_on_the_input_grid(tmp_path: Path) -> None:
    data = _scan()
    source = write_nifti(tmp_path / "lps.nii.gz", data, LPS)
    before = _sha(source)
    volume = load_volume(source)
    mask = (volume.data > 50).astype(np.uint8)
    out = save_like(mask, volume, tmp_path / "mask.nii.gz", "xnet 0123456789ab research use only")
    written = nib.load(out)
    assert np.allclose(written.affine, LPS)
    assert np.array_equal(np.asarray(written.dataobj), (data > 50).astype(np.uint8))
    assert written.header["descrip"].tobytes().startswith(b"xnet 0123456789ab research use only")
    assert _sha(source) == before, "input files are never modified"
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"


def test_four_d_uses_the_first_volume_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = np.stack([_scan(seed=s) for s in range(3)], axis=-1)
    path = write_nifti(tmp_path / "series.nii.gz", data)
    with caplog.at_level(logging.WARNING):
        first = load_volume(path)
    assert np.array_equal(first.data, data[..., 0])
    assert "3 volumes; using volume 0" in caplog.text
    assert np.array_equal(load_volume(path, volume_index=2).data, data[..., 2])
    with pytest.raises(VolumeError, match="volume 3 does not exist"):
        load_volume(path, volume_index=3)


def test_nan_and_inf_are_replaced_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _scan()
    data[0, 0, 0], data[1, 1, 1] = np.nan, np.inf
    with caplog.at_level(logging.WARNING):
        volume = load_volume(write_nifti(tmp_path / "nan.nii.gz", data))
    assert np.isfinite(volume.data).all()
    assert volume.data[0, 0, 0] == np.nanmin(data[np.isfinite(data)])
    assert "2 NaN/Inf voxels replaced" in caplog.text


def test_file_stem() -> None:
    assert file_stem("/a/b/scan.nii.gz") == "scan"
    assert file_stem("scan.NII") == "scan"
    assert file_stem("x.y.nii") == "x.y"


# --- bad input: every case gets a VolumeError naming the file and the problem --------------------


def _expect(path: Path, pattern: str) -> None:
    with pytest.raises(VolumeError, match=pattern) as caught:
        load_volume(path)
    assert str(path) in str(caught.value)


def test_missing_path(tmp_path: Path) -> None:
    _expect(tmp_path / "nope.nii.gz", "no such file")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "dicom.nii"
    folder.mkdir()
    _expect(folder, "is a folder")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_nifti(tmp_path / "locked.nii.gz", _scan())
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    _expect(path, "cannot be read .*Permission denied")


def test_not_a_nifti_name(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG\r\n")
    _expect(path, "not a NIfTI file name")


def test_not_a_nifti_content(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii"
    path.write_text("these are my notes, not an image\n" * 20)
    _expect(path, "not a readable NIfTI")


def test_gzip_name_without_gzip_content(tmp_path: Path) -> None:
    path = tmp_path / "plain.nii.gz"
    path.write_text("not compressed at all\n" * 20)
    _expect(path, "truncated or corrupt|not a readable NIfTI")


def test_truncated_gzip(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "cut.nii.gz", _scan((40, 40, 40)))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _expect(path, "truncated or corrupt")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "bad.nii.gz", _scan((40, 40, 40)))
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    _expect(path, "truncated or corrupt")


def test_truncated_uncompressed(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "cut.nii", _scan((40, 40, 40)))
    path.write_bytes(path.read_bytes()[:10_000])
    _expect(path, "truncated or unreadable")


@pytest.mark.parametrize("shape", [(50,), (20, 20), (4, 4, 4, 2, 2)], ids=["1d", "2d", "5d"])
def test_wrong_dimensions(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = write_nifti(tmp_path / "dims.nii.gz", np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    _expect(path, "dimensions")


def test_single_slice_is_not_a_volume(tmp_path: Path) -> None:
    _expect(write_nifti(tmp_path / "flat.nii.gz", _scan((20, 20, 1))), "single slice")


def test_zero_sized_axis(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((10, 0, 10))
    header.set_data_dtype(np.float32)
    path = tmp_path / "empty.nii"
    path.write_bytes(header.binaryblock + b"\x00" * 4)
    _expect(path, "empty axis")


def test_header_claiming_more_memory_than_exists(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    path = tmp_path / "huge.nii.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 1024)
    _expect(path, "claims .* more than the .* free memory")


def test_all_nan(tmp_path: Path) -> None:
    _expect(write_nifti(tmp_path / "nan.nii.gz", np.full((8, 8, 8), np.nan)), "NaN or infinite")


def test_constant(tmp_path: Path) -> None:
    _expect(write_nifti(tmp_path / "flat.nii.gz", np.full((8, 8, 8), 7.0)), "every voxel has the value 7")
