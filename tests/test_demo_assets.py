"""The shipped demo model and demo case load through the normal paths."""

from __future__ import annotations

import hashlib
import inspect
import json

import numpy as np
import pytest

from xnet_core.assets import DEMO_LESION, assets_dir, demo_scan_path, demo_weights_path
from xnet_core.inference import Segmenter
from xnet_core.training.backgrounds import VALIDATION_PEOPLE, person_of
from xnet_core.training.release import release_status
from xnet_core.volume import load_volume


def test_demo_weights_and_card(demo_checkpoint) -> None:
    card = demo_checkpoint.card
    assert card["sha256"] == hashlib.sha256(demo_weights_path().read_bytes()).hexdigest()
    assert card["architecture"]["parameters"] == 15_072_332
    assert card["weights_dtype"].startswith("float16")
    assert "not for clinical use" in card["intended_use"]
    assert "synthetic" in card["training_data"]
    metrics = card["heldout_metrics"]
    assert metrics["figures"]["n"] == 20 and "xnet evaluate" in metrics["command"]
    assert set(metrics["figures"]["by_size"]) == {"<1ml", "1-10ml", ">10ml"}
    assert isinstance(metrics["figures"]["precision"], float)  # the metric, not the arithmetic
    # measured as users run it: the Segmenter's default test-time mirroring
    assert metrics["figures"]["mirror"] is inspect.signature(Segmenter).parameters["mirror"].default
    real = card["real_anatomy_validation"]["figures"]  # the status comes from real anatomy and names each miss
    assert real["checkpoint_sha256"] == card["sha256"] and card["status"] == release_status(real)
    assert real["template_dice"] == pytest.approx(metrics["figures"]["dice"], abs=1e-4)
    people = [{person_of(e["file"]) for e in card["backgrounds"][side]} for side in ("training", "validation")]
    assert people[0] and people[1] and not people[0] & people[1] and people[1] <= VALIDATION_PEOPLE
    assert demo_weights_path().stat().st_size < 35e6  # fp16


def test_demo_case_is_the_default_scan() -> None:
    scan = load_volume(demo_scan_path())
    truth = load_volume(assets_dir() / DEMO_LESION)
    assert demo_scan_path().name == "demo_T1w.nii.gz"
    assert scan.shape == truth.shape == (197, 233, 189)
    info = json.loads((assets_dir() / "demo" / "demo_case.json").read_text())
    assert info["seed"] >= 1_000_000, "the demo case comes from the held-out seed range"
    assert truth.data.sum() / 1000 == pytest.approx(info["lesion_volume_ml"], rel=1e-3)


def test_demo_model_runs_on_demo_slices(demo_checkpoint) -> None:
    scan = load_volume(demo_scan_path())
    truth = load_volume(assets_dir() / DEMO_LESION).data
    z = int(np.argmax(truth.sum(axis=(0, 1))))
    segmenter = Segmenter(demo_checkpoint.build_model(), device="cpu", normalisation=demo_checkpoint.normalisation)
    result = segmenter.segment(scan, slices=[z - 1, z])
    assert result.computed_slices == [z - 1, z]
    assert np.isfinite(result.probabilities).all() and result.probabilities.max() <= 1
