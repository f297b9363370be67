"""Native scans: registration to the template and back, the CLI on a native scan, the T1 warning.

One module-scoped native case (the demo case moved by a known motion onto an oblique grid, with a head)
is registered once; the registration cache lives in a temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from app.cli import main
from xnet_core.assets import DEMO_LESION, DEMO_SCAN, TEMPLATE_T1, asset_path
from xnet_core.image import Volume
from xnet_core.inference import Segmenter
from xnet_core.metrics import dice
from xnet_core.native import PlacedScan, place, segment
from xnet_core.registration import LPS, Registration, register, template_image
from xnet_core.training.native_cases import native_case
from xnet_core.volume import load_volume


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory, cache_home: Path):
    """The demo case (37 ml lesion) moved onto a 1.1 x 1.0 x 1.2 mm oblique grid, registered once."""
    image = nib.load(asset_path(DEMO_SCAN)).get_fdata(dtype=np.float32)
    mask = (np.asarray(nib.load(asset_path(DEMO_LESION)).dataobj) > 0).astype(np.uint8)
    case = native_case(image, mask)
    path = tmp_path_factory.mktemp("native") / "native_T1w.nii.gz"
    nib.save(nib.Nifti1Image(case.image, case.affine), path)
    volume = load_volume(path)
    return path, case, volume, place(volume)


def _brain_points() -> np.ndarray:
    template, affine = template_image()
    voxels = np.argwhere(template > 0)[::997]
    return affine @ np.c_[voxels, np.ones(len(voxels))].T


def test_the_template_moved_by_a_known_motion_is_registered_back(cache_home: Path) -> None:
    template, _ = template_image()
    case = native_case(np.asarray(template, np.float32), np.zeros(template.shape, np.uint8), seed=1)
    volume = Volume(case.image, case.affine, nib.Nifti1Header(), case.affine, case.image.shape, "moved template")
    registration = register(volume)
    points = _brain_points()
    error_mm = np.linalg.norm((registration.template_to_native @ points - case.template_to_native @ points)[:3],
                              axis=0)
    assert error_mm.mean() < 1.0 and error_mm.max() < 2.0, (error_mm.mean(), error_mm.max())
    assert registration.similarity > 0.9 and registration.warning is None
    again = register(volume)  # the transform and brain mask come from the cache
    assert again.from_cache and not registration.from_cache
    np.testing.assert_allclose(again.template_to_native, registration.template_to_native)
    assert again.timings_s["brain_extraction"] < registration.timings_s["brain_extraction"]


def test_mapped_back_mask_keeps_the_unmoved_dice(native, demo_checkpoint) -> None:
    _, case, volume, scan = native
    assert scan.registration is not None and scan.registration.qc.passed, scan.registration.warning
    segmenter = Segmenter(demo_checkpoint.build_model(), device="cpu")
    truth = np.asarray(nib.as_closest_canonical(nib.load(asset_path(DEMO_LESION))).dataobj) > 0
    lesion_z = np.flatnonzero(truth.any(axis=(0, 1)))
    unmoved = segmenter.segment(load_volume(asset_path(DEMO_SCAN)), slices=range(lesion_z[0], lesion_z[-1] + 1))
    native_z = np.flatnonzero(case.mask.any(axis=(0, 1)))
    result, on_template = segment(segmenter, scan, slices=range(native_z[0], native_z[-1] + 1))
    assert result.mask.shape == volume.shape and on_template.mask.shape == template_image()[0].shape
    unmoved_dice, native_dice = dice(unmoved.mask, truth), dice(result.mask, case.mask)
    assert unmoved_dice > 0.5
    assert native_dice >= 0.9 * unmoved_dice, (native_dice, unmoved_dice)
    # millilitres on the native grid: the moved truth's volume, within the model's error
    assert abs(result.lesion_volume_ml - case.mask.sum() * volume.voxel_volume_ml) < 0.3 * result.lesion_volume_ml


def test_segment_cli_on_a_native_scan(native, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, case, volume, _ = native
    out, summary, transform = tmp_path / "mask.nii.gz", tmp_path / "s.json", tmp_path / "t.tfm"
    code = main(["segment", str(path), "-o", str(out), "--json", str(summary), "--slices", "100:101",
                 "--save-transform", str(transform), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    written = nib.load(out)
    assert written.shape == volume.shape and np.allclose(written.affine, case.affine, atol=1e-4)
    report = json.loads(summary.read_text())["registration"]
    assert report["applied"] and report["from_cache"] and report["warning"] is None
    assert {"applied", "method", "similarity", "seconds", "warning"} <= set(report)
    # the ITK file maps template points (LPS) to the scan's points, as ANTs and Slicer expect
    itk = sitk.ReadTransform(str(transform))
    point = np.array([10.0, -20.0, 30.0, 1.0])
    expected = LPS @ np.array(report["template_to_native_ras"]) @ LPS @ point
    np.testing.assert_allclose(itk.TransformPoint(point[:3].tolist()), expected[:3], atol=1e-3)


def test_template_grid_and_small_scans_are_not_registered(tmp_path: Path) -> None:
    demo = load_volume(asset_path(DEMO_SCAN))
    assert place(demo).registration is None and place(demo).registration_summary()["applied"] is False
    shifted = Volume(demo.data, demo.affine.copy(), demo.source_header, demo.source_affine, demo.shape, "shifted")
    shifted.affine[0, 3] += 3.0  # 3 mm off the template's origin: must be registered, not taken as is
    from xnet_core.preprocess import is_template_grid
    assert is_template_grid(demo) and not is_template_grid(shifted)
    slab = Volume(demo.data[:, :, 80:90].copy(), demo.affine, demo.source_header, demo.affine, (197, 233, 10), "slab")
    placed = place(slab)
    assert placed.registration is None and "too small" in placed.registration_summary()["warning"]
    assert any("too small" in w for w in placed.warnings())


def test_a_failed_qc_warns_in_the_summary() -> None:
    registration = Registration(np.eye(4), (10, 10, 10), np.eye(4), np.zeros((10, 10, 10), np.uint8), 0.31, 12.0)
    assert registration.warning is None and registration.summary()["qc"] is None  # built by hand: no QC run
    registration.check(np.zeros((10, 10, 10), np.float32))  # a 1 cm cube with no brain in it
    summary = registration.summary()
    assert summary["applied"] and summary["similarity"] == 0.31 and "not to be trusted" in summary["warning"]
    assert summary["qc"]["passed"] is False and summary["qc"]["problems"]
    assert "holds only 0 ml" in summary["warning"]


def test_the_registration_entry_has_the_same_keys_registered_or_not() -> None:
    """docs/design.md's contract: a scan the model read as it is has no transform and no QC (null)."""
    registered = Registration(np.eye(4), (10, 10, 10), np.eye(4), np.zeros((10, 10, 10), np.uint8), 0.31, 12.0)
    for why in (None, "the field of view is too small"):
        summary = PlacedScan(load_volume(asset_path(DEMO_SCAN)), None, why).registration_summary()
        assert set(summary) == set(registered.summary())
        assert summary["qc"] is None and summary["template_to_native_ras"] is None and summary["applied"] is False


def test_sequences_that_are_not_t1_are_named() -> None:
    template = load_volume(asset_path(TEMPLATE_T1))
    flair = Volume(template.data, template.affine, template.source_header, template.affine, template.shape,
                   "study_s7", sequence="FLAIR", description="t2_tirm_tra_dark-fluid FLAIR")
    assert any("FLAIR" in w and "T1-weighted" in w for w in PlacedScan(flair, None).warnings())
    inverted = Volume(template.data.max() - template.data, template.affine, template.source_header,
                      template.affine, template.shape, "inverted")
    assert any("white matter is not brighter" in w for w in PlacedScan(inverted, None).warnings())
    assert not PlacedScan(template, None).warnings()


def test_explain_maps_of_a_native_slice_come_from_the_template_slices_it_crosses(native, demo_checkpoint) -> None:
    from explain.engine import ExplainParams, ExplanationEngine
    from explain.native import explain_slices

    _, case, volume, scan = native
    engine = ExplanationEngine(demo_checkpoint, device="cpu", use_cache=False)
    z = int(np.argmax(case.mask.sum(axis=(0, 1))))
    native_seg, on_template = segment(engine.segmenter, scan, slices=[z])
    context = engine.context(scan.model_volume, on_template)
    (result,) = explain_slices(engine, scan, context, [z], ["gradcam"], ExplainParams())
    assert result.ok and result.map.shape == volume.shape[:2]
    assert result.params["template_slices"] and set(result.params["template_slices"]) <= set(
        scan.template_slices([z]))
    assert np.isfinite(result.map).all() and result.map.max() > 0


def test_a_stop_during_n4_ends_the_registration_at_once(native) -> None:
    from xnet_core.errors import Cancelled

    _, _, volume, _ = native
    calls = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) > 1  # not after brain extraction; from N4's first iteration on

    with pytest.raises(Cancelled, match="after N4"):
        register(volume, use_cache=False, should_cancel=should_cancel)
    assert len(calls) < 80  # ITK's N4 honours Abort within its first fitting level here, not after all 130
