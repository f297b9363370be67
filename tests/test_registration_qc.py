"""The registration QC separates a well-registered made-up scan from its broken variants.

The made-up scan is the template moved by a known motion onto an oblique whole-head grid
(``native_case``); its brain mask is the template's moved the same way, standing in for deepbet's, and
its transform is the known one, so no registration runs here. The broken variants perturb that
transform or the scan, as ``benchmarks/bench_qc.py`` does with real scans.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from xnet_core.preprocess import template_brain_mask
from xnet_core.registration import Registration, template_image
from xnet_core.registration_qc import LIMITS, RegistrationQC, assess, registration_badge, registration_sentence
from xnet_core.training.native_cases import native_case, rotation


@pytest.fixture(scope="module")
def made_up() -> Registration:
    """The known registration of the moved template, with the template's brain mask (grown by 2 mm, as
    deepbet's is) on the native grid; ``native`` holds the scan."""
    template, _ = template_image()
    case = native_case(np.asarray(template, np.float32), np.zeros(template.shape, np.uint8), seed=2)
    registration = Registration(case.template_to_native, case.image.shape, case.affine,
                                np.zeros(case.image.shape, np.uint8), 0.0, 0.0)
    brain = registration.to_native(template_brain_mask().astype(np.float32), order=1) >= 0.5
    registration.brain_mask = ndimage.binary_dilation(brain, iterations=2).astype(np.uint8)
    registration.native = case.image  # type: ignore[attr-defined]
    return registration


def _centre() -> np.ndarray:
    _, affine = template_image()
    return (affine @ np.r_[np.argwhere(template_brain_mask()).mean(axis=0), 1.0])[:3]


def _about_centre(matrix: np.ndarray) -> np.ndarray:
    out, centre = np.eye(4), _centre()
    out[:3, :3] = matrix[:3, :3]
    out[:3, 3] = centre - matrix[:3, :3] @ centre
    return out


def _qc(made_up: Registration, motion: np.ndarray | None = None, native: np.ndarray | None = None,
        brain: np.ndarray | None = None) -> RegistrationQC:
    transform = made_up.template_to_native @ (np.eye(4) if motion is None else motion)
    return assess(transform, made_up.native_affine, made_up.native if native is None else native,  # type: ignore[attr-defined]
                  made_up.brain_mask if brain is None else brain)


def test_the_known_registration_passes(made_up: Registration) -> None:
    qc = made_up.check(made_up.native)  # type: ignore[attr-defined]
    assert qc.passed, qc.problems
    assert qc.template_brain_covered > 0.97 and qc.brain_outside_template < 0.15 and qc.score > 1
    assert qc.edge_alignment > LIMITS["edge_alignment"].limit + 0.05
    summary = made_up.summary()
    assert made_up.warning is None and summary["warning"] is None
    assert {"applied", "method", "similarity", "seconds", "warning", "qc"} <= set(summary)
    assert summary["qc"]["passed"] is True and summary["qc"]["problems"] == []
    assert {"brain_volume_ml", "template_brain_covered", "brain_outside_template", "edge_alignment",
            "outline_alignment", "score"} <= set(summary["qc"])


@pytest.mark.parametrize("name, motion, words", [
    ("shift 20 mm", np.array([[1, 0, 0, 0], [0, 1, 0, 20.0], [0, 0, 1, 0], [0, 0, 0, 1]]), "do not line up"),
    ("rotation 30° about x", rotation((30.0, 0.0, 0.0)), "do not line up"),
    ("rotation 30° about z", rotation((0.0, 0.0, 30.0)), "do not line up"),
    ("flip front-back", np.diag([1.0, -1.0, 1.0, 1.0]), "flipped front-to-back"),
    ("swap x-y", np.eye(4)[[1, 0, 2, 3]], "left-right and front-back axes swapped"),
])
def test_a_moved_or_reoriented_brain_is_flagged(made_up: Registration, name: str, motion: np.ndarray,
                                                words: str) -> None:
    qc = _qc(made_up, motion if name.startswith("shift") else _about_centre(motion))
    assert not qc.passed and qc.score < 0, name
    assert any(words in problem for problem in qc.problems), qc.problems
    assert "not to be trusted" in qc.warning


def test_half_the_brain_missing_is_flagged(made_up: Registration) -> None:
    native = made_up.native  # type: ignore[attr-defined]
    points = np.indices(native.shape, dtype=np.float32).reshape(3, -1)
    to_template = np.linalg.solve(made_up.template_to_native, made_up.native_affine)
    right = ((to_template[0, :3] @ points + to_template[0, 3]) >= _centre()[0]).reshape(native.shape)
    qc = _qc(made_up, native=native * right, brain=made_up.brain_mask * right)
    assert not qc.passed
    assert any("covers only" in p and "part of the brain is missing" in p for p in qc.problems), qc.problems
    assert 0.4 < qc.template_brain_covered < 0.6


def test_something_that_is_not_a_brain_is_flagged(made_up: Registration) -> None:
    rng = np.random.default_rng(0)
    shape = made_up.native.shape  # type: ignore[attr-defined]
    # a smooth ellipsoid the size and place of a brain (70 x 85 x 65 mm semi-axes), and as its brain mask
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    to_template = np.linalg.solve(made_up.template_to_native, made_up.native_affine)
    world = (to_template[:3, :3] @ grid + to_template[:3, 3:4]).T - _centre()
    radius = np.sqrt(((world / [70.0, 85.0, 65.0]) ** 2).sum(axis=1)).reshape(shape)
    blob = 400 * np.exp(-2 * radius ** 2) + ndimage.gaussian_filter(rng.normal(0, 40, shape), 4)
    qc = _qc(made_up, native=blob.astype(np.float32), brain=(radius < 1).astype(np.uint8))
    assert not qc.passed and any("do not line up" in p for p in qc.problems), qc.problems
    # noise, where a brain extraction finds a speck
    speck = np.zeros(shape, np.uint8)
    speck[80:90, 100:110, 90:100] = 1
    qc = _qc(made_up, native=rng.normal(100, 30, shape).astype(np.float32), brain=speck)
    assert not qc.passed and any("holds only" in p and "not a brain" in p for p in qc.problems), qc.problems


def test_a_left_right_flip_is_invisible_against_the_symmetric_template(made_up: Registration) -> None:
    """Documents the limit stated in registration_qc: only the header can tell left from right."""
    flipped = _qc(made_up, _about_centre(np.diag([-1.0, 1.0, 1.0])))
    assert flipped.measures() == pytest.approx(_qc(made_up).measures(), abs=0.02)


def test_the_viewer_and_report_words(made_up: Registration) -> None:
    made_up.check(made_up.native)  # type: ignore[attr-defined]
    summary = made_up.summary()
    label, tooltip = registration_badge(summary)
    assert label == "registered · QC passed" and "edge alignment" in tooltip and "similarity" in tooltip
    assert registration_sentence(summary).startswith("registration QC passed: the scan's brain covers")
    broken = {**summary, "qc": _qc(made_up, _about_centre(np.diag([1.0, 1.0, -1.0]))).summary()}
    label, tooltip = registration_badge(broken)
    assert "FAILED" in label and "if the scan were flipped top-to-bottom" in tooltip
    assert "QC FAILED" in registration_sentence(broken)
    old = {k: v for k, v in summary.items() if k != "qc"}  # a JSON written before the QC existed
    assert registration_badge(old)[0].startswith("registered · similarity")
