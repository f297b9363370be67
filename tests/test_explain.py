"""The explanation engine on a few lesion slices of the demo case (model and scan loaded once)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

from app.cli import main
from explain import agreement
from explain.cam import DEFAULT_LAYER, CamExplainer, library_view
from explain.engine import DiskCache, ExplainParams, ExplanationEngine
from explain.faithfulness import rank_correlation
from explain.lime_seg import explain_slice
from explain.native import lesion_target
from explain.targets import EMPTY_ROI, LESION_ABSENT, NO_LESION, TargetSpec, resolve
from tests.conftest import write_nifti
from xnet_core.assets import DEMO_LESION, asset_path, demo_scan_path
from xnet_core.errors import Cancelled, VolumeError, XNetError
from xnet_core.metrics import label_lesions, lesions
from xnet_core.native import PlacedScan
from xnet_core.reader_mask import load_reader_mask
from xnet_core.volume import load_volume

LIME_SAMPLES = 40  # enough for determinism and faithfulness checks; the default is for users


@pytest.fixture(scope="module")
def demo_volume():
    return load_volume(demo_scan_path())


@pytest.fixture(scope="module")
def engine(demo_checkpoint, tmp_path_factory):
    return ExplanationEngine(demo_checkpoint, device="cpu", cache_dir=tmp_path_factory.mktemp("explain-cache"))


@pytest.fixture(scope="module")
def context(engine, demo_volume):
    """Segmentation of a band of slices through the ground-truth lesion (not the whole volume)."""
    truth = load_volume(asset_path(DEMO_LESION)).data
    centre = int(np.argmax(truth.sum(axis=(0, 1))))
    band = list(range(centre - 6, centre + 7, 3)) + [5]  # slice 5: brain-free, nothing predicted
    return engine.context(demo_volume, engine.segmenter.segment(demo_volume, slices=band))


@pytest.fixture(scope="module")
def lesion_slice(context) -> int:
    area = context.segmentation.slice_area_mm2
    assert area.max() > 50, "the demo model predicts no lesion near the ground truth"
    return int(np.argmax(area))


@pytest.fixture(scope="module")
def explained(engine, context, lesion_slice):
    params = ExplainParams(lime_samples=LIME_SAMPLES)
    return {e.method: e for e in engine.explain(context, [lesion_slice], params=params)}


def test_cam_equals_pytorch_grad_cam(demo_checkpoint, context, lesion_slice) -> None:
    model = demo_checkpoint.build_model()
    image = context.model_input.slices[lesion_slice:lesion_slice + 1]
    target = resolve(TargetSpec(), context.model_input.geometry, context.segmentation.mask[:, :, lesion_slice])
    ours = CamExplainer(model, "cpu", DEFAULT_LAYER)(image, [target])
    layer = model.get_submodule(DEFAULT_LAYER)
    for method, library in (("gradcam", GradCAM), ("gradcampp", GradCAMPlusPlus), ("hirescam", HiResCAM)):
        with library(model, [layer]) as cam:
            theirs = cam(torch.from_numpy(image)[:, None], [SemanticSegmentationTarget(0, target.weights)])
        assert np.abs(library_view(ours.layer_maps[method], image.shape[-2:]) - theirs).max() <= 1e-4
        assert ours.maps[method].max() > 0 and ours.maps[method].max() != pytest.approx(1.0)  # raw, not min-maxed


def test_every_method_gives_a_map_on_the_lesion_slice(explained, lesion_slice, demo_volume) -> None:
    for method in ("gradcam", "gradcampp", "hirescam", "lime"):
        result = explained[method]
        assert result.ok and result.z == lesion_slice
        assert result.map.shape == demo_volume.shape[:2] and np.isfinite(result.map).all()
    lime = explained["lime"]
    # LIME's weights are drawn as fitted (not min-maxed), and only where the samples can tell them from
    # zero: with this test's few samples that leaves the lesion's own region or a few more, of either sign.
    assert lime.map.max() > 0 and lime.map.max() != pytest.approx(1.0)
    drawn = np.unique(lime.map[lime.map != 0])
    assert 1 <= lime.params["n_significant"] == len(drawn) < lime.params["n_segments"]
    assert lime.fit_score is not None


def test_slice_without_predicted_lesion(engine, context) -> None:
    results = engine.explain(context, [5], params=ExplainParams(lime_samples=LIME_SAMPLES))
    assert {r.method for r in results} == {"gradcam", "gradcampp", "hirescam", "lime"}
    assert all(r.status == NO_LESION and r.map is None for r in results)


def test_deletion_beats_a_random_map(engine, context, explained) -> None:
    for method, result in explained.items():
        figures = engine.faithfulness(context, result, steps=10)
        assert figures["deletion_auc"] < figures["random_deletion_auc"], method
        assert figures["deletion"]["scores"][0] == pytest.approx(figures["insertion"]["scores"][-1], abs=1e-6)


def test_randomisation_destroys_grad_cam(engine, context, lesion_slice) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. maps beyond float32's range cast to inf
        steps = engine.randomisation(context, lesion_slice)
    assert steps[-1]["randomised_down_to"] == "encoders.0"
    assert steps[-1]["spearman"]["gradcam"] < 0.5
    assert rank_correlation(np.arange(10.0), np.arange(10.0), np.ones(10)) == pytest.approx(1.0)


def test_lime_is_deterministic_for_a_seed(engine, context, lesion_slice) -> None:
    z = lesion_slice
    image = context.model_input.slices[z]
    brain = context.model_input.geometry.to_model(context.model_input.brain_mask[:, :, z]) > 0
    target = resolve(TargetSpec(), context.model_input.geometry, context.segmentation.mask[:, :, z])
    runs = [explain_slice(image, brain, target, engine.network_predict, num_samples=20, seed=seed)
            for seed in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0].weights, runs[1].weights)
    assert not np.array_equal(runs[0].raw_weights, runs[2].raw_weights)  # another seed, another fit
    assert runs[0].weights[~brain].max() == 0 == runs[0].weights[~brain].min()
    shown = runs[0].weights != 0  # the map draws lime's own weights where they are significant, else none
    np.testing.assert_array_equal(runs[0].weights[shown], runs[0].raw_weights[shown])
    assert runs[0].n_significant == len(np.unique(runs[0].segments[shown]))


def test_the_mask_is_mirrored_and_the_maps_explain_the_single_pass(engine, context, lesion_slice,
                                                                  monkeypatch) -> None:
    passes: list[bool] = []
    predict = engine.segmenter.predict

    def recording(slices: np.ndarray, mirror: bool | None = None) -> np.ndarray:
        passes.append(engine.segmenter.mirror if mirror is None else mirror)
        return predict(slices, mirror)

    monkeypatch.setattr(engine.segmenter, "predict", recording)
    params = ExplainParams(lime_samples=20, seed=11)  # a seed of its own: not served from the cache
    [lime] = engine.explain(context, [lesion_slice], methods=("lime",), params=params)
    curves = engine.faithfulness(context, lime, steps=4)
    assert lime.ok and "deletion_auc" in curves
    assert passes and not any(passes)  # LIME and the deletion/insertion curves: the network's single pass
    assert context.segmentation.mirror and engine.segmenter.mirror  # the mask they target: mirrored


def test_lime_progress_and_cancel(engine, context, lesion_slice) -> None:
    z = lesion_slice
    brain = context.model_input.geometry.to_model(context.model_input.brain_mask[:, :, z]) > 0
    target = resolve(TargetSpec(), context.model_input.geometry, context.segmentation.mask[:, :, z])
    seen = []
    with pytest.raises(Cancelled):
        explain_slice(context.model_input.slices[z], brain, target, engine.network_predict, num_samples=100,
                      batch_size=4, on_progress=lambda done, total: seen.append(done),
                      should_cancel=lambda: len(seen) >= 2)
    assert seen == [4, 8]


def test_memory_cache_serves_repeats(engine, context, lesion_slice, explained) -> None:
    again = engine.explain(context, [lesion_slice], params=ExplainParams(lime_samples=LIME_SAMPLES))
    assert {r.source for r in again} == {"memory"}
    for result in again:
        np.testing.assert_array_equal(result.map, explained[result.method].map)


def test_roi_and_pixel_targets(engine, context, lesion_slice) -> None:
    geometry, mask = context.model_input.geometry, context.segmentation.mask[:, :, lesion_slice]
    xs, ys = np.nonzero(mask)
    rect = resolve(TargetSpec("roi", rect=(xs.min(), ys.min(), xs.max(), ys.max())), geometry, mask)
    pixel = resolve(TargetSpec("pixel", point=(int(xs[0]), int(ys[0]))), geometry, mask)
    assert rect.area >= mask.sum() and pixel.area == 1 and rect.key != pixel.key
    assert resolve(TargetSpec("pixel", point=(0, 0)), geometry, mask) == EMPTY_ROI  # outside the window
    results = engine.explain(context, [lesion_slice], ["gradcam"], target=TargetSpec("pixel", point=(xs[0], ys[0])))
    assert results[0].ok and results[0].target_kind == "pixel"


@pytest.fixture(scope="module")
def two_lesions(context, lesion_slice):
    """The demo's predicted mask plus a second, made-up lesion on the lesion slice, away from the first
    (inside the brain, in the other hemisphere): a slice with two lesions, the larger one first."""
    mask = context.segmentation.mask.copy()
    brain = context.model_input.brain_mask[:, :, lesion_slice] > 0
    xs, ys = np.nonzero(mask[:, :, lesion_slice])
    x = int(mask.shape[0] - 1 - xs.mean())  # mirrored across the midline
    y = int(ys.mean())
    mask[x - 3:x + 4, y - 3:y + 4, lesion_slice - 1:lesion_slice + 2] = 1
    assert brain[x, y] and not context.segmentation.mask[x - 4:x + 5, y - 4:y + 5, lesion_slice].any()
    assert label_lesions(mask[:, :, lesion_slice - 1:lesion_slice + 2])[1] >= 2
    return mask


def _numbers_on(mask: np.ndarray, z: int) -> list[int]:
    """The lesion-table numbers (1 = largest) of the lesions that reach slice ``z``."""
    return [n for n, lesion in enumerate(lesions(mask, 0.001), start=1) if z in lesion.slices]


def test_a_lesion_target_holds_that_lesion_alone(engine, context, lesion_slice, two_lesions) -> None:
    scan, z, geometry = PlacedScan(context.volume, None), lesion_slice, context.model_input.geometry
    labels, _ = label_lesions(two_lesions)
    numbers = _numbers_on(two_lesions, z)
    assert len(numbers) >= 2
    targets = {}
    for number in numbers:
        spec, own, lesion = lesion_target(scan, two_lesions, number)
        assert set(np.unique(labels[own > 0])) == {lesion.label}  # one component, all of it
        assert (labels == lesion.label).sum() == own.sum() == lesion.n_voxels
        targets[number] = resolve(spec, geometry, two_lesions[:, :, z], z)
        np.testing.assert_array_equal(targets[number].weights, geometry.to_model(own[:, :, z]).astype(np.float32))
        assert resolve(spec, geometry, two_lesions[:, :, 5], 5) == LESION_ABSENT
    assert len({t.key for t in targets.values()}) == len(numbers)
    union = sum(t.weights for t in targets.values())
    np.testing.assert_array_equal(union, resolve(TargetSpec(), geometry, two_lesions[:, :, z], z).weights)
    with pytest.raises(XNetError, match="no lesion 999"):
        lesion_target(scan, two_lesions, 999)


def test_each_lesion_on_a_slice_has_its_own_map_cached(engine, context, lesion_slice, two_lesions) -> None:
    scan, z = PlacedScan(context.volume, None), lesion_slice
    maps, own = {}, {}
    for number in _numbers_on(two_lesions, z)[:2]:
        spec, mask, _ = lesion_target(scan, two_lesions, number)
        (result,) = engine.explain(context, [z], ["hirescam"], target=spec)
        assert result.ok and result.target_kind == "lesion" and result.source == "computed"
        maps[number], own[number] = result.map, mask[:, :, z] > 0
        (again,) = engine.explain(context, [z], ["hirescam"], target=spec)
        assert again.source == "memory"
        np.testing.assert_array_equal(again.map, result.map)
    first, second = maps
    assert not np.allclose(maps[first], maps[second])
    # each map puts a larger share of its energy on its own lesion than the other lesion's map does
    share = lambda n, m: maps[n][own[m]].sum() / maps[n].sum()  # noqa: E731
    assert share(first, first) > share(second, first) and share(second, second) > share(first, second)


def test_maps_line_up_after_an_lps_flip(engine, demo_volume, context, lesion_slice, explained, tmp_path) -> None:
    image = nib.load(demo_scan_path())
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(image.shape[:2]) - 1
    lps = write_nifti(tmp_path / "demo_lps.nii.gz", np.asarray(image.dataobj)[::-1, ::-1], image.affine @ flip)
    flipped = load_volume(lps)
    assert flipped.source_axcodes == ("L", "P", "S")
    ctx = engine.context(flipped, engine.segmenter.segment(flipped, slices=[lesion_slice]))
    (result,) = engine.explain(ctx, [lesion_slice], ["gradcam"])
    np.testing.assert_allclose(result.map, explained["gradcam"].map, atol=1e-5)


def test_agreement_hand_computed() -> None:
    saliency = np.array([[0.0, 1.0], [3.0, -2.0]])
    mask = np.array([[0, 1], [0, 1]])
    assert agreement.energy_inside(saliency, mask) == pytest.approx(0.25)  # 1 of 4, negatives ignored
    assert agreement.pointing_hit(saliency, mask) is False
    assert agreement.pointing_hit(saliency, np.array([[0, 0], [1, 0]])) is True
    assert agreement.energy_inside(saliency, np.zeros((2, 2))) is None
    assert agreement.energy_inside(np.zeros((2, 2)), mask) is None
    big = np.zeros((10, 10))
    big[2:6, 2:6] = 5.0
    big[0, 0] = 0.1
    truth = np.zeros((10, 10), np.uint8)
    truth[2:6, 2:8] = 1
    assert agreement.otsu_iou(big, truth) == pytest.approx(16 / 24)
    volume = np.stack([saliency, saliency], axis=-1)
    both = np.stack([mask, mask], axis=-1)
    assert agreement.per_volume(volume, both, [0]).energy_inside == pytest.approx(0.25)
    assert agreement.per_slice(volume, both, [1])[1].pointing_hit is False
    # A lesion on a slice never explained does not count against the map's Otsu IoU.
    stack = np.stack([big, np.zeros_like(big)], axis=-1)
    lesion_on_both = np.stack([truth, truth], axis=-1)
    assert agreement.per_volume(stack, lesion_on_both, [0]).otsu_iou == pytest.approx(16 / 24)
    assert agreement.per_volume(stack, lesion_on_both, []) == agreement.Agreement(None, None, None)


def test_disk_cache_evicts_least_recently_used(tmp_path) -> None:
    cache = DiskCache(tmp_path, cap_bytes=1)
    cache.put("a", np.ones((4, 4), np.float32), {"params": {}})
    assert cache.get("a") is None  # over the cap at once
    cache = DiskCache(tmp_path, cap_bytes=10**6)
    cache.put("b", np.full((4, 4), 2, np.float32), {"params": {"k": 1}})
    array, meta = cache.get("b")
    assert array[0, 0] == 2 and meta == {"params": {"k": 1}}
    (tmp_path / "c.npz").write_bytes(b"damaged")
    assert cache.get("c") is None


def test_reader_mask_other_grid_and_refusals(demo_volume, tmp_path) -> None:
    truth = load_volume(asset_path(DEMO_LESION))
    coarse = (truth.data[::2, ::2, ::2] > 0).astype(np.uint8)
    affine = truth.affine.copy()
    affine[:3, :3] *= 2
    path = write_nifti(tmp_path / "reader_2mm.nii.gz", coarse, affine, np.uint8)
    reader = load_reader_mask(path, demo_volume)
    assert reader.resampled and "nearest neighbour" in reader.notes[0]
    overlap = (reader.mask & (truth.data > 0)).sum() / (truth.data > 0).sum()
    assert overlap > 0.8 and reader.mask.shape == demo_volume.shape
    far = affine.copy()
    far[:3, 3] += 1000
    with pytest.raises(VolumeError, match="overlaps"):
        load_reader_mask(write_nifti(tmp_path / "far.nii.gz", coarse, far, np.uint8), demo_volume)
    with pytest.raises(VolumeError, match="3D"):
        load_reader_mask(write_nifti(tmp_path / "four.nii.gz", np.zeros((4, 4, 4, 2)), None, np.uint8), demo_volume)
    empty = load_reader_mask(write_nifti(tmp_path / "empty.nii.gz", np.zeros(demo_volume.shape), truth.affine,
                                         np.uint8), demo_volume)
    assert not empty.resampled and empty.mask.sum() == 0


def test_cli_explain_writes_maps_and_reuses_the_disk_cache(lesion_slice, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["explain", str(demo_scan_path()), "--out-dir", str(tmp_path / "out"), "--slices", str(lesion_slice),
            "--methods", "gradcam,gradcampp", "--reader", str(asset_path(DEMO_LESION)), "--device", "cpu"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "demo_T1w_explain.json").read_text())
    assert summary["slices_explained"] == {"gradcam": [lesion_slice], "gradcampp": [lesion_slice]}
    entry = summary["per_slice"][0]["methods"]["gradcam"]
    assert entry["source"] == "computed" and entry["layer"] == DEFAULT_LAYER and 0 <= entry["agreement"]["energy_inside"] <= 1
    assert {"disclaimer", "checkpoint_sha256", "version"} <= set(summary)
    written = load_volume(tmp_path / "out" / "demo_T1w_gradcam.nii.gz", is_mask=True)
    assert written.data[:, :, lesion_slice].max() > 0 and written.data[:, :, lesion_slice - 1].max() == 0
    assert b"research use only" in nib.load(tmp_path / "out" / "demo_T1w_gradcam.nii.gz").header["descrip"].tobytes()
    assert main(args) == 0  # a new process-like run: a fresh engine, so only the disk cache can serve it
    again = json.loads((tmp_path / "out" / "demo_T1w_explain.json").read_text())
    assert {m["source"] for m in again["per_slice"][0]["methods"].values()} == {"disk"}
    assert "2 from the cache" in capsys.readouterr().out


def test_cli_explain_bad_input(tmp_path, capsys) -> None:
    assert main(["explain", str(demo_scan_path()), "--out-dir", str(tmp_path), "--methods", "gradcam,shap"]) == 2
    assert "choose from" in capsys.readouterr().err
    assert main(["explain", str(demo_scan_path()), "--out-dir", str(tmp_path), "--layer", "encoders.9"]) == 2
    assert main(["explain", str(demo_scan_path()), "--out-dir", str(tmp_path), "--lesion", "0"]) == 2
