"""The Segmenter: batched, device-aware, viewport-first, cancellable slice-by-slice inference.

Speed comes from four things, each measured on the 2-core AVX-512-BF16 development CPU
(benchmarks/bench_inference.py): BatchNorm folded into the preceding convolutions, bf16 weights
and activations where the hardware has bf16 (fp16/bf16 on CUDA), channels-last memory format,
and skipping slices with no brain in the model window. Batch 1 beat batch 8 on that CPU
(0.37 s vs 1.02 s per slice in fp32), so CPUs use batch 1; GPUs use large batches and halve
them on out-of-memory, then fall back to the CPU with a warning.

Reduced precision only changes the network's arithmetic: probabilities are computed from fp32
logits and the tests check that bf16 and fp32 masks agree (Dice >= 0.99).

Test-time mirroring (on by default, ``mirror=False`` / ``--no-mirror`` turns it off): each slice's
probability is the mean of the network's answer on the slice and on its left-right mirror image,
flipped back, as nnU-Net does. The network was trained with left-right flips, so both answers are
in its training distribution; where they disagree (mostly small false-positive specks) the mean falls
below the threshold (what it did for the demo model, and why one mirrored pass and not more shifted
ones: docs/model.md, "What it scores"). Both images go through the network as one batch.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from xnet_core import DEVICES  # ("auto", "cuda", "mps", "cpu"): defined without torch, for parsers
from xnet_core.errors import Cancelled, DeviceError, XNetError
from xnet_core.image import Volume
from xnet_core.metrics import Lesion, lesions
from xnet_core.preprocess import MODEL_HEIGHT, MODEL_WIDTH, ModelInput, prepare

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]
SliceCallback = Callable[[int, np.ndarray], None]

# Chosen by measurement (see the module docstring); CUDA's is a starting point that halves on OOM.
DEFAULT_BATCH = {"cpu": 1, "cuda": 64, "mps": 8}


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512-BF16 or AMX), where bf16 pays off."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device must exist."""
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}.", parameter="device")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise DeviceError("no CUDA GPU is available here; choose the device auto or cpu.", parameter="device")
    if name == "mps" and not mps:
        raise DeviceError("Apple's MPS backend is not available here; choose the device auto or cpu.",
                          parameter="device")
    return torch.device(name)


def choose_precision(device: torch.device, fp32: bool = False) -> str:
    """``fp32``, ``bf16`` or ``fp16``: the fastest precision the device runs well."""
    if fp32:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every Conv2d -> BatchNorm2d pair of an eval-mode model into one conv (in place)."""
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
    return model


def inference_copy(model: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """An eval-mode copy for inference: BN folded, cast, channels-last, on ``device``."""
    fast = fold_batchnorm(copy.deepcopy(model).float().eval())
    fast = fast.to(device=device, dtype=_DTYPES[precision])
    return fast.to(memory_format=torch.channels_last)


@dataclass
class Segmentation:
    """The Segmenter's result on the volume's own RAS grid."""

    probabilities: np.ndarray  # float32 [x, y, z], 0 where not computed
    mask: np.ndarray  # uint8 [x, y, z]
    threshold: float
    lesions: list[Lesion]  # every component, largest first, with the model's mean and maximum probability
    slice_area_mm2: np.ndarray  # float [z]: lesion area of each axial slice
    computed_slices: list[int]  # slices the model ran on (brain inside the window)
    requested_slices: list[int]
    device: str
    precision: str
    batch_size: int
    mirror: bool  # test-time mirroring (module docstring)
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def lesion_volume_ml(self) -> float:
        return float(sum(lesion.volume_ml for lesion in self.lesions))

    @property
    def n_lesions(self) -> int:
        return len(self.lesions)

    @property
    def lesion_slices(self) -> list[int]:
        return [int(z) for z in np.flatnonzero(self.slice_area_mm2 > 0)]


class Segmenter:
    """Runs X-Net on the axial slices of a volume.

    ``segment`` reports each slice as soon as it is ready (``on_slice``), computes the ``first``
    slices before the rest (the slice on screen), and honours ``on_progress`` / ``should_cancel``.
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "auto",
        fp32: bool = False,
        batch_size: int | None = None,
        normalisation: str = "robust",
        threshold: float = 0.5,
        precision: str | None = None,
        mirror: bool = True,
    ) -> None:
        """``precision`` overrides the automatic choice (benchmarks and tests); ``fp32`` forces fp32;
        ``mirror`` averages each slice with its left-right mirror image (module docstring)."""
        if not 0.0 < threshold < 1.0:
            raise XNetError(f"the threshold {threshold} must lie strictly between 0 and 1.", parameter="threshold")
        if precision is not None and precision not in _DTYPES:
            raise XNetError(f"unknown precision {precision!r}; choose one of {', '.join(_DTYPES)}.")
        self.device = device if isinstance(device, torch.device) else choose_device(device)
        self.precision = "fp32" if fp32 else precision or choose_precision(self.device)
        self.batch_size = batch_size or DEFAULT_BATCH.get(self.device.type, 1)
        self.normalisation = normalisation
        self.threshold = threshold
        self.mirror = mirror
        self._source_model = model
        self._model = inference_copy(model, self.device, self.precision)

    # -- low level: arrays of model slices -------------------------------------------------
    def predict(self, slices: np.ndarray, mirror: bool | None = None) -> np.ndarray:
        """Probabilities for model slices ``[n, H, W]`` (H, W divisible by 16), in batches;
        ``mirror`` overrides the segmenter's own setting (the explanations score the single pass)."""
        mirror = self.mirror if mirror is None else mirror
        out = np.empty(slices.shape, dtype=np.float32)
        start = 0
        while start < len(slices):
            stop = min(start + self.batch_size, len(slices))
            out[start:stop] = self._predict_batch(slices[start:stop], mirror)
            start = stop
        return out

    def _predict_batch(self, batch: np.ndarray, mirror: bool) -> np.ndarray:
        """One batch, with the out-of-memory fallback: halve the batch, then move to the CPU."""
        try:
            return self._forward(batch, mirror)
        except torch.OutOfMemoryError:
            if self.device.type == "cpu":
                raise XNetError("out of memory on the CPU; close other programs or use fewer slices.") from None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) > 1:
                self.batch_size = max(1, len(batch) // 2)
                log.warning("GPU out of memory; retrying with batch size %d.", self.batch_size)
                return self.predict(batch, mirror)
            log.warning("GPU out of memory even at batch 1; continuing on the CPU (slower).")
            self._move_to(torch.device("cpu"))
            return self.predict(batch, mirror)

    def _move_to(self, device: torch.device) -> None:
        self.device = device
        self.precision = choose_precision(device, self.precision == "fp32")
        self.batch_size = DEFAULT_BATCH[device.type]
        self._model = inference_copy(self._source_model, device, self.precision)

    def _forward(self, batch: np.ndarray, mirror: bool) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None]
        tensor = tensor.to(self.device, dtype=_DTYPES[self.precision], non_blocking=True)
        if mirror:  # model column w is volume x: flipping the last axis mirrors left and right
            tensor = torch.cat([tensor, tensor.flip(-1)])
        tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits = self._model(tensor)
            probabilities = torch.sigmoid(logits.float())[:, 0]
            if mirror:
                n = len(batch)
                probabilities = (probabilities[:n] + probabilities[n:].flip(-1)) / 2
        return probabilities.cpu().numpy()

    def warm_up(self) -> float:
        """Run one dummy batch so that the first real slice pays no start-up cost; seconds taken."""
        started = time.perf_counter()
        self.predict(np.zeros((min(self.batch_size, 2), MODEL_HEIGHT, MODEL_WIDTH), dtype=np.float32))
        return time.perf_counter() - started

    # -- volumes ---------------------------------------------------------------------------
    def segment(
        self,
        volume: Volume,
        slices: Iterable[int] | None = None,
        first: Sequence[int] = (),
        on_slice: SliceCallback | None = None,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCallback | None = None,
        prepared: ModelInput | None = None,
    ) -> Segmentation:
        """Segment ``slices`` (default: all) of ``volume``; see the class docstring for callbacks."""
        started = time.perf_counter()
        model_input = prepared or prepare(volume, self.normalisation)
        preprocess_s = time.perf_counter() - started
        n_z = model_input.n_slices
        requested = sorted(set(range(n_z) if slices is None else slices))
        if any(not 0 <= z < n_z for z in requested):
            raise XNetError(f"slices must lie in 0..{n_z - 1} for {volume.name}.")
        brain = model_input.brain_slices
        priority = [z for z in dict.fromkeys(first) if z in set(requested)]
        groups = (priority, [z for z in requested if z not in set(priority)])
        to_compute = [z for group in groups for z in group if brain[z]]

        model_probs = np.zeros(model_input.slices.shape, dtype=np.float32)
        geometry = model_input.geometry
        done = 0
        started = time.perf_counter()
        for group in groups:  # the slices asked for first, then the rest
            if on_slice is not None:  # slices with no brain: an immediate, empty answer
                for z in (z for z in group if not brain[z]):
                    on_slice(z, np.zeros(geometry.plane_shape, dtype=np.float32))
            computed = [z for z in group if brain[z]]
            for start in range(0, len(computed), self.batch_size):
                if should_cancel is not None and should_cancel():
                    raise Cancelled(f"segmentation of {volume.name} cancelled after {done} slices.")
                batch = computed[start:start + self.batch_size]
                model_probs[batch] = self._predict_batch(model_input.slices[batch], self.mirror)
                done += len(batch)
                if on_slice is not None:
                    for z in batch:
                        on_slice(z, geometry.from_model(model_probs[z]))
                if on_progress is not None:
                    on_progress(done, len(to_compute))
        inference_s = time.perf_counter() - started
        return self._result(volume, model_input, model_probs, requested, to_compute,
                            {"preprocess": preprocess_s, "inference": inference_s})

    def _result(
        self,
        volume: Volume,
        model_input: ModelInput,
        model_probs: np.ndarray,
        requested: list[int],
        computed: list[int],
        timings: dict[str, float],
    ) -> Segmentation:
        return self.from_probabilities(volume, model_input.geometry.from_model(model_probs), requested, computed,
                                       timings, list(model_input.warnings))

    def from_probabilities(
        self,
        volume: Volume,
        probabilities: np.ndarray,
        requested: list[int],
        computed: list[int],
        timings: dict[str, float],
        warnings: list[str],
    ) -> Segmentation:
        """A Segmentation of ``volume`` from probabilities on its grid (also those mapped back from the
        template for a registered scan): the mask, lesions and areas at this segmenter's threshold."""
        mask = (probabilities >= self.threshold).astype(np.uint8)
        vx, vy, _ = volume.voxel_sizes
        return Segmentation(
            probabilities=probabilities,
            mask=mask,
            threshold=self.threshold,
            lesions=lesions(mask, volume.voxel_volume_ml, probabilities),
            slice_area_mm2=mask.sum(axis=(0, 1)).astype(np.float64) * vx * vy,
            computed_slices=sorted(computed),
            requested_slices=requested,
            device=str(self.device),
            precision=self.precision,
            batch_size=self.batch_size,
            mirror=self.mirror,
            timings_s=timings,
            warnings=warnings,
        )
