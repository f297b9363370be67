"""Weights + model card: safe loading, clear refusals (xnet_core.checkpoint)."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path

import pytest
import torch

from xnet_core.checkpoint import Checkpoint, card_path_for, load_checkpoint
from xnet_core.errors import CheckpointError
from xnet_core.model import XNet


def test_round_trip_keeps_weights_card_and_hash(random_checkpoint: Checkpoint) -> None:
    loaded = load_checkpoint(random_checkpoint.path)
    assert loaded.sha256 == hashlib.sha256(random_checkpoint.path.read_bytes()).hexdigest()
    assert loaded.card["sha256"] == loaded.sha256
    assert loaded.card["architecture"]["parameters"] == 15_072_332
    assert loaded.normalisation == "robust"
    for name, value in loaded.state_dict.items():
        if value.is_floating_point():
            assert value.dtype == (torch.float32 if "running_" in name else torch.float16), name
    model = loaded.build_model()
    assert not model.training
    source = XNet(keras_init=False)
    source.load_state_dict({k: v.float() for k, v in random_checkpoint.state_dict.items()})
    for (name, a), b in zip(model.state_dict().items(), source.state_dict().values()):
        assert torch.equal(a, b), name
    provenance = loaded.provenance()
    assert provenance["checkpoint_sha256"] == loaded.sha256 and provenance["checkpoint"].endswith(".pt")


def test_large_batchnorm_statistics_survive_fp16_saving(tmp_path: Path) -> None:
    from xnet_core.checkpoint import save_checkpoint

    model = XNet()
    model.fsm.expand[1].running_var.fill_(1e6)  # beyond fp16's 65504, as in a trained FSM
    saved = save_checkpoint(model, tmp_path / "big.pt", {})
    loaded = load_checkpoint(saved.path)
    assert torch.equal(loaded.state_dict["fsm.expand.1.running_var"], model.fsm.expand[1].running_var)


def test_training_format_with_embedded_card(tmp_path: Path, random_checkpoint: Checkpoint) -> None:
    path = tmp_path / "best.pt"
    torch.save({"state_dict": random_checkpoint.state_dict, "card": {"training_data": "blobs"}}, path)
    assert load_checkpoint(path).card["training_data"] == "blobs"


def test_missing_card_still_loads_with_a_warning(tmp_path: Path, random_checkpoint: Checkpoint,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bare.pt"
    path.write_bytes(random_checkpoint.path.read_bytes())
    with caplog.at_level(logging.WARNING):
        loaded = load_checkpoint(path)
    assert "no model card" in caplog.text
    assert loaded.provenance()["training_data"].startswith("unknown")


def test_card_of_another_file_is_reported(tmp_path: Path, random_checkpoint: Checkpoint,
                                          caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "other.pt"
    path.write_bytes(random_checkpoint.path.read_bytes())
    card_path_for(path).write_text(json.dumps({"sha256": "0" * 64}))
    with caplog.at_level(logging.WARNING):
        load_checkpoint(path)
    assert "describes a different file" in caplog.text


def _expect(path: Path, pattern: str) -> None:
    with pytest.raises(CheckpointError, match=pattern) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    _expect(tmp_path / "none.pt", "no such weights file")


def test_truncated_file(tmp_path: Path, random_checkpoint: Checkpoint) -> None:
    path = tmp_path / "cut.pt"
    path.write_bytes(random_checkpoint.path.read_bytes()[:1_000_000])
    _expect(path, "truncated or not a PyTorch weights file")


def test_foreign_pickle_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists(), "loading must never run code from the file"


def test_foreign_torch_pickle(tmp_path: Path) -> None:
    path = tmp_path / "object.pt"
    torch.save({"optimizer": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)}, path)
    _expect(path, "Python objects|not an X-Net checkpoint|truncated")


def test_wrong_architecture(tmp_path: Path) -> None:
    path = tmp_path / "unet.pt"
    torch.save(torch.nn.Conv2d(1, 2, 3).state_dict(), path)
    _expect(path, "do not fit the X-Net architecture: .*missing .*unexpected")


def test_wrong_shapes(tmp_path: Path, random_checkpoint: Checkpoint) -> None:
    state = dict(random_checkpoint.state_dict)
    state["head.weight"] = torch.zeros(2, 64, 1, 1)
    path = tmp_path / "two_class.pt"
    torch.save(state, path)
    _expect(path, r"wrong shape \(e.g. head.weight: \(2, 64, 1, 1\) instead of \(1, 64, 1, 1\)\)")


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    _expect(path, "does not hold a state dict")


def test_nan_weights(tmp_path: Path, random_checkpoint: Checkpoint) -> None:
    state = dict(random_checkpoint.state_dict)
    state["head.bias"] = torch.tensor([float("nan")], dtype=torch.float16)
    path = tmp_path / "diverged.pt"
    torch.save(state, path)
    _expect(path, "NaN/Inf")
