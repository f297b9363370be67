"""LIME's settings live in one place (``explain.lime_seg``), and each map says how far it can be trusted."""

import re
from pathlib import Path

import numpy as np

from explain import lime_seg
from explain.engine import ExplainParams
from explain.lime_quality import STEADY_SPLIT_HALF, quality_sentence, split_half_agreement

ROOT = Path(__file__).resolve().parent.parent
LITERAL_SETTING = re.compile(r"\b(lime_samples|num_samples|lime_kernel|kernel_size)\s*=\s*\d")


def test_the_viewer_the_cli_and_the_report_take_lime_settings_from_lime_seg() -> None:
    from app.cli import build_parser
    from app.cli.explain import _params

    params = ExplainParams()
    assert (params.lime_samples, params.lime_kernel) == (lime_seg.DEFAULT_SAMPLES, lime_seg.KERNEL_SIZE)
    assert _params(build_parser().parse_args(["explain", "scan.nii.gz", "--out-dir", "maps"])) == params  # xnet explain without flags
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for folder in ("app", "explain", "xnet_core") for path in (ROOT / folder).rglob("*.py")
                 if path.name != "lime_seg.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1) if LITERAL_SETTING.search(line)]
    assert offenders == []  # the viewer's worker and xnet report build ExplainParams() and nothing else


def _samples(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    segments = np.repeat(np.arange(13), 40).reshape(20, 26)  # segment 0 plays the outside of the brain
    rows = rng.integers(0, 2, (600, 13))
    rows[0] = 1
    effects = np.linspace(-0.2, 0.4, 13)
    scores = rows @ effects * 0.1 + rng.normal(0, noise, 600)
    return rows, scores, segments


def test_split_half_agreement_tells_a_steady_map_from_noise() -> None:
    steady = split_half_agreement(*_samples(noise=0.002))
    noise_only = split_half_agreement(_samples(0.0)[0], np.random.default_rng(1).normal(0, 1, 600), _samples(0.0)[2])
    assert steady > 0.95 and steady > STEADY_SPLIT_HALF
    assert abs(noise_only) < 0.6 and noise_only < STEADY_SPLIT_HALF


def test_the_quality_sentence_says_fit_and_agreement() -> None:
    assert quality_sentence({}) == ""
    said = quality_sentence({"lime_fit_r2": 0.623, "split_half": 0.91})
    assert "R² 0.62" in said and "0.91 (steady)" in said
    assert "unsteady" in quality_sentence({"split_half": STEADY_SPLIT_HALF - 0.2})


def test_weights_the_samples_cannot_tell_from_zero_are_drawn_as_none() -> None:
    from explain.lime_quality import significant, weighted_fit

    rows, scores, _ = _samples(noise=0.002)
    scores = scores + rows[:, 3] * 0.0  # segment 3 carries no effect beyond the linspace one
    coefficients, errors = weighted_fit(rows, scores)
    assert np.allclose(coefficients[1:], np.linspace(-0.2, 0.4, 13)[1:] * 0.1, atol=5 * errors.max())
    np.testing.assert_array_equal(significant(np.array([0.5, 0.001, -0.3]), np.array([0.01, 0.01, 0.2])),
                                  np.array([0.5, 0.0, 0.0], np.float32))
