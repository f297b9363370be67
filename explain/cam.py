"""Grad-CAM, Grad-CAM++ and HiResCAM for X-Net's slice segmentation, all from one forward and one
backward pass.

pytorch-grad-cam's ``GradCAM``, ``GradCAMPlusPlus`` and ``HiResCAM`` each run their own forward and
backward pass, back-propagate into every weight of the network, and min-max normalise every slice on
its own (so a weak slice looks as hot as the lesion slice). Here:

* the arithmetic comes from the library itself (``GradCAM.get_cam_weights``,
  ``GradCAMPlusPlus.get_cam_weights``, ``HiResCAM.get_cam_image``), so the maps are the library's maps;
* HiResCAM multiplies gradient and activation element by element before summing over channels,
  where Grad-CAM first averages the gradient over the slice: for a target that is a sum of logits
  the sum of its map is the first-order change of the score, so it cannot light a region the
  score does not depend on (Draelos & Carin, arXiv:2011.08891);
* one forward and one backward per batch serve all three methods: the graph starts at the target layer
  (weights need no gradients), so the backward runs only through the layers after it;
* BatchNorm is folded into the convolutions (the same arithmetic in eval mode), fp32 throughout;
* raw maps are kept: ReLU of the weighted activation sum, upsampled bilinearly to the slice, never
  min-max normalised (docs/design.md: one colour scale per method across slices).

Target layers (names of ``XNet`` modules): ``fsm`` (1/16 resolution, 14x12 cells on a 224x192
slice), ``decoders.0`` (1/8), ``decoders.1`` (1/4), ``decoders.2`` (1/2), ``decoders.3`` (full).
The default is ``decoders.1``: a 4-voxel grid resolves lacunes that vanish in the FSM's 16-voxel
cells, while two decoder stages still lie after it, so the map shows which features the decoder
used rather than copying the prediction (the last decoder's map mostly repeats the mask; see the
docs/design.md, References: Explanations). ``fsm`` gives the coarse, most class-level view.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM
from torch import nn

from explain.methods import CAM_METHODS
from explain.targets import Target
from xnet_core.errors import XNetError
from xnet_core.inference import fold_batchnorm

LAYERS = ("fsm", "decoders.0", "decoders.1", "decoders.2", "decoders.3")
DEFAULT_LAYER = "decoders.1"



def _channel_weighted(rule):
    """A CAM from a per-channel weight rule: the activations summed over channels with those weights."""
    def cam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        weights = rule(None, None, None, None, activations, gradients)
        return (weights[:, :, None, None] * activations).sum(axis=1)
    return cam


def _hirescam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    return HiResCAM.get_cam_image(None, None, None, None, activations, gradients, False)


# The library's rules, called unbound: they read only their array arguments. Each gives the map
# before its ReLU, [B, h, w] at the layer's resolution.
_CAM_RULES = {"gradcam": _channel_weighted(GradCAM.get_cam_weights),
              "gradcampp": _channel_weighted(GradCAMPlusPlus.get_cam_weights),
              "hirescam": _hirescam}


def check_layer(layer: str) -> str:
    if layer not in LAYERS:
        raise XNetError(f"unknown target layer {layer!r}; choose one of {', '.join(LAYERS)}.", parameter="layer")
    return layer


def explanation_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """An fp32, eval-mode, BN-folded copy whose weights need no gradients."""
    fast = fold_batchnorm(copy.deepcopy(model).float().eval()).to(device)
    for parameter in fast.parameters():
        parameter.requires_grad_(False)
    return fast


@dataclass
class CamMaps:
    """Raw maps of one batch: ``maps[method]`` [B, H, W] on the model window, ``layer_maps[method]``
    [B, h, w] at the layer's resolution (before upsampling), and the target scores."""

    maps: dict[str, np.ndarray]
    layer_maps: dict[str, np.ndarray]
    scores: np.ndarray


class CamExplainer:
    """Grad-CAM, Grad-CAM++ and HiResCAM of ``model`` at ``layer`` for batches of model slices."""

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", layer: str = DEFAULT_LAYER,
                 prepared: bool = False) -> None:
        """``prepared``: ``model`` already comes from ``explanation_copy`` (share one copy)."""
        self.device = torch.device(device)
        self.layer = check_layer(layer)
        self.model = model if prepared else explanation_copy(model, self.device)
        self._module = self.model.get_submodule(layer)

    def __call__(self, slices: np.ndarray, targets: list[Target],
                 methods: tuple[str, ...] = CAM_METHODS) -> CamMaps:
        """``slices`` [B, H, W] normalised model slices, one frozen target each."""
        if len(slices) != len(targets):
            raise ValueError("one target per slice")
        activations, gradients, scores = self._activations_and_gradients(slices, targets)
        height, width = slices.shape[-2:]
        maps, layer_maps = {}, {}
        # float64: Grad-CAM++'s grads**3 * sum(activations) overflows float32 on randomised models
        activations, gradients = activations.astype(np.float64), gradients.astype(np.float64)
        for method in methods:
            cam = np.maximum(_CAM_RULES[method](activations, gradients), 0)
            # float32's range: inf, and finite float64 values beyond it, become its largest value
            fmax = np.finfo(np.float32).max
            cam = np.minimum(np.nan_to_num(cam, posinf=fmax), fmax).astype(np.float32)
            layer_maps[method] = cam
            maps[method] = upsample(cam, (height, width))
        return CamMaps(maps, layer_maps, scores)

    def _activations_and_gradients(self, slices: np.ndarray, targets: list[Target]):
        tapped: list[torch.Tensor] = []

        def tap(_module, _inputs, output):
            # The graph starts here: nothing before the target layer is recorded or back-propagated.
            output = output.detach().requires_grad_(True)
            tapped.append(output)
            return output

        handle = self._module.register_forward_hook(tap)
        try:
            x = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None].to(self.device)
            with torch.enable_grad():
                logits = self.model(x)
                scores = torch.stack([t.score(logits[i:i + 1])[0] for i, t in enumerate(targets)])
                (gradient,) = torch.autograd.grad(scores.sum(), tapped[0])
        finally:
            handle.remove()
        as_numpy = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
        return as_numpy(tapped[0]), as_numpy(gradient), as_numpy(scores)


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, half-pixel centres (the same rule as the library's ``cv2.resize``), ``[B, h, w]``."""
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    if tuple(tensor.shape[-2:]) == tuple(size):
        return maps.astype(np.float32)
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def library_view(layer_maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What pytorch-grad-cam would return for these raw layer maps ``[B, h, w]``: its ReLU, per-image
    min-max, ``cv2.resize`` to ``size`` (H, W), and the second per-image min-max of its one-layer
    aggregation. Only for comparisons with the library; the product keeps raw maps."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    per_layer = scale_cam_image(np.maximum(layer_maps, 0), (size[1], size[0]))
    return scale_cam_image(np.maximum(per_layer, 0))
