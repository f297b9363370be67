"""Shared, session-scoped fixtures: models are built or trained once per test run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from xnet_core.assets import demo_weights_path
from xnet_core.checkpoint import Checkpoint, default_card, load_checkpoint, save_checkpoint
from xnet_core.model import XNet


def blob_batch(rng: np.random.Generator, n: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark discs (the 'lesions') on a noisy grey background, with their masks."""
    yy, xx = np.mgrid[:height, :width]
    images = np.empty((n, height, width), np.float32)
    masks = np.empty((n, height, width), np.float32)
    for i in range(n):
        image = 0.5 + 0.05 * rng.standard_normal((height, width))
        cy, cx = rng.integers(12, height - 12), rng.integers(12, width - 12)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(4, 9) ** 2
        image[blob] = 0.1
        images[i], masks[i] = image, blob
    return images, masks


@pytest.fixture(scope="session")
def blob_model() -> XNet:
    """The real X-Net over-fitted (seeded, ~10 s on 2 cores) to find dark discs: a model whose
    output is non-trivial, for precision and orientation checks until demo weights exist."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = XNet()
    for module in model.modules():  # cumulative BN statistics: usable after a few steps
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    for _ in range(30):
        images, masks = (torch.from_numpy(a)[:, None] for a in blob_batch(rng, 4, 48, 48))
        probs = torch.sigmoid(model(images))
        loss = torch.nn.functional.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), masks)
        loss = loss + 1 - 2 * (probs * masks).sum() / (probs.sum() + masks.sum())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():  # re-estimate BN statistics with the final weights
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
        for _ in range(4):
            model(torch.from_numpy(blob_batch(rng, 8, 48, 48)[0])[:, None])
    return model.eval()


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """A seeded, Keras-initialised X-Net saved through the normal checkpoint path."""
    torch.manual_seed(1)
    model = XNet()
    path = tmp_path_factory.mktemp("weights") / "xnet-random.pt"
    card = default_card(model, training_data="none (random initialisation, for tests)")
    return save_checkpoint(model, path, card)


class BrightIsLesion(torch.nn.Module):
    """A transparent stand-in for X-Net: normalised intensity above 0.7 is 'lesion'."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x - 0.7)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, dtype=np.float32) -> Path:
    """A small NIfTI file for tests (1 mm RAS unless an affine is given)."""
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.eye(4) if affine is None else affine)
    image.set_sform(image.affine, code=1)
    image.set_qform(image.affine, code=1)
    nib.save(image, path)
    return path


@pytest.fixture(scope="session")
def demo_checkpoint() -> Checkpoint:
    """The shipped demo model, loaded once per test run."""
    return load_checkpoint(demo_weights_path())


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process without the interpreter's final garbage collection once Qt was used.

    With dozens of viewer windows created by the tests, that final collection made PySide6 abort the
    process ("bool_dealloc: deallocating True or False", exit status 134) after every test had
    passed, depending on which tests ran; pyqtgraph documents the same class of exit crashes and
    ships ``pyqtgraph.exit()`` for it. Reports are written by now; the exit status is kept.
    """
    if "PySide6.QtWidgets" not in sys.modules or not _exit_status:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status[-1])
