"""Weights + model card (docs/design.md, Contracts: Weights): load safely, save reproducibly.

A checkpoint file is either a plain state dict or ``{"state_dict": ..., "card": ...}`` (what
training writes), loaded with ``weights_only=True`` so that nothing in the file is executed. The
card lives next to it as ``<name>.card.json``; its ``sha256`` is the hash ``sha256sum`` prints for
the weights file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xnet_core import __version__
from xnet_core.cards import card_normalisation, card_path_for  # noqa: F401  (card_path_for: public here too)
from xnet_core.atomic import atomic_path
from xnet_core.errors import CheckpointError
from xnet_core.model import DEFAULT_WIDTHS, XNet, count_parameters
from xnet_core.preprocess import MODEL_HEIGHT, MODEL_WIDTH, NORMALISATIONS

log = logging.getLogger(__name__)

MAX_CHECKPOINT_BYTES = 2 * 1024**3
MAX_CHANNELS = 4096  # 4x the paper's widest layer; beyond it a card would make X-Net larger than any weights file


@dataclass
class Checkpoint:
    """A validated X-Net checkpoint: its weights, its card and where it came from."""

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def normalisation(self) -> str:
        return card_normalisation(self.card)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def nifti_descrip(self) -> str:
        """The ``descrip`` of every NIfTI written from this model's output (docs/design.md: provenance)."""
        return f"xnet {self.short_hash} research use only"

    def build_model(self) -> XNet:
        """A fresh fp32 X-Net with these weights, in eval mode."""
        model = _model_for(self.card)
        model.load_state_dict({k: v.float() for k, v in self.state_dict.items()})
        return model.eval()

    def provenance(self) -> dict[str, Any]:
        """The provenance keys every JSON output carries (docs/design.md)."""
        return {
            "checkpoint": str(self.path),
            "checkpoint_sha256": self.sha256,
            "training_data": self.card.get("training_data", "unknown (no model card)"),
        }


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_for(card: dict[str, Any]) -> XNet:
    in_channels, widths, out_channels = card_architecture(card)
    return XNet(in_channels=in_channels, widths=widths, out_channels=out_channels, keras_init=False)


def card_architecture(card: dict[str, Any], path: Path | None = None) -> tuple[int, tuple[int, ...], int]:
    """(in_channels, widths, out_channels) a card names (the paper's X-Net where it names none).

    ``CheckpointError`` when they are not counts X-Net can be built with: 5 widths, the deepest at
    least 16 (the feature-similarity module divides it by 16)."""
    arch = card.get("architecture", {})
    where = f"{card_path_for(path)}: " if path is not None else "the model card: "
    if not isinstance(arch, dict):
        raise CheckpointError(f"{where}'architecture' is not an object; fix or remove the card.")
    values = (arch.get("in_channels", 1), arch.get("widths", DEFAULT_WIDTHS), arch.get("out_channels", 1))
    widths = values[1] if isinstance(values[1], (list, tuple)) else [values[1]]
    counts = [values[0], *widths, values[2]]
    if len(widths) != len(DEFAULT_WIDTHS) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_CHANNELS for v in counts
    ) or widths[-1] < 16:
        raise CheckpointError(
            f"{where}the architecture {values} is not one X-Net can have (5 widths of 1 to {MAX_CHANNELS} "
            "channels, the deepest at least 16); fix or remove the card.")
    return values[0], tuple(widths), values[2]


def _read_weights(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: holds Python objects, not plain weights; it is not an X-Net checkpoint "
            "(loading refuses to run code from a file)."
        ) from exc
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError, ValueError, IndexError, KeyError) as exc:
        # IndexError, KeyError: torch's weights-only unpickler on a damaged data.pkl (an empty stack, a memo
        # or storage key that is not there)
        raise CheckpointError(f"{path}: truncated or not a PyTorch weights file ({exc}); copy it again.") from exc


def _state_dict_of(path: Path, payload: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    embedded_card: dict[str, Any] = {}
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        embedded_card = payload.get("card") if isinstance(payload.get("card"), dict) else {}
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()
    ):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors; it is not an X-Net checkpoint.")
    return payload, embedded_card


def _check_architecture(path: Path, state_dict: dict[str, torch.Tensor], card: dict[str, Any]) -> None:
    card_architecture(card, path)
    with torch.device("meta"):  # shapes only: a damaged card asking for gigabytes of layers allocates nothing
        expected = _model_for(card).state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            k = wrong_shape[0]
            details.append(
                f"{len(wrong_shape)} with the wrong shape (e.g. {k}: {tuple(state_dict[k].shape)} "
                f"instead of {tuple(expected[k].shape)})"
            )
        raise CheckpointError(
            f"{path}: weights do not fit the X-Net architecture: {'; '.join(details)} tensors. "
            "Use weights trained with `xnet train`."
        )
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensors hold NaN/Inf (e.g. {bad[0]}); the training diverged.")


def _read_card(path: Path, sha256: str, embedded: dict[str, Any]) -> dict[str, Any]:
    sidecar = card_path_for(path)
    card = dict(embedded)
    if sidecar.is_file():
        try:
            card = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8; Recursion: nesting
            raise CheckpointError(f"{sidecar}: the model card is not valid JSON ({exc}); fix or remove it.") from exc
        if not isinstance(card, dict):
            raise CheckpointError(f"{sidecar}: the model card holds no JSON object; fix or remove it.")
    elif not card:
        log.warning("%s: no model card (%s); provenance will say 'unknown'.", path, sidecar.name)
    if card.get("sha256") and card["sha256"] != sha256:
        log.warning("%s: the model card describes a different file (card sha256 %s…, file %s…).",
                    path, str(card["sha256"])[:12], sha256[:12])
    recipe = card_normalisation(card)
    if recipe not in NORMALISATIONS:
        raise CheckpointError(f"{sidecar}: unknown normalisation recipe {recipe!r}; expected one of {NORMALISATIONS}.")
    return card


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate an X-Net checkpoint; ``CheckpointError`` says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file; check the path.", parameter="weights")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path}: {size / 1024**3:.1f} GiB is far larger than X-Net weights (60 MB); wrong file?")
    sha256 = file_sha256(path)
    state_dict, embedded_card = _state_dict_of(path, _read_weights(path))
    card = _read_card(path, sha256, embedded_card)
    _check_architecture(path, state_dict, card)
    return Checkpoint(path=path, sha256=sha256, state_dict=state_dict, card=card)


def default_card(model: XNet, normalisation: str = "robust", **fields: Any) -> dict[str, Any]:
    """The architecture and input part of a model card; callers add training data, metrics, use."""
    widths = [enc.shortcut[0].out_channels for enc in model.encoders]
    return {
        "model": "X-Net (Qi et al., MICCAI 2019), PyTorch port of the official Keras code",
        "architecture": {
            "in_channels": model.encoders[0].shortcut[0].in_channels,
            "widths": widths,
            "out_channels": model.head.out_channels,
            "parameters": count_parameters(model),
        },
        "input": {
            "height": MODEL_HEIGHT,
            "width": MODEL_WIDTH,
            "slices": "axial; rows along RAS y, columns along RAS x; template grid 197x233x189 cropped [2:194, 5:229]",
        },
        "normalisation": {"recipe": normalisation},
        "software_version": __version__,
        **fields,
    }


FP16_MAX = 65504.0


def _to_half(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """fp16 for weights; BN statistics and anything beyond fp16's range stay fp32 (45 k values).

    Measured: a trained FSM's running variance exceeded 65504 and became inf in fp16.
    """
    if not tensor.is_floating_point() or "running_" in name or float(tensor.abs().max()) >= FP16_MAX:
        return tensor
    return tensor.half()


def save_checkpoint(
    model: XNet, path: str | os.PathLike, card: dict[str, Any], half: bool = True
) -> Checkpoint:
    """Write weights (fp16 by default, BN statistics fp32) and ``<name>.card.json`` with the file's
    SHA-256, atomically."""
    path = Path(path)
    state = {k: (_to_half(k, v) if half else v).detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    sha256 = file_sha256(path)
    card = {**card, "weights_file": path.name, "sha256": sha256,
            "weights_dtype": "float16 (BatchNorm statistics float32)" if half else "float32"}
    sidecar = card_path_for(path)
    with atomic_path(sidecar) as tmp_card:
        tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    return Checkpoint(path=path, sha256=sha256, state_dict=state, card=card)
