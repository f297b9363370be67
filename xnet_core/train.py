"""X-Net training: the paper's recipe by default (reference xnet.md §2.4-2.5), CPU- and GPU-friendly.

Recipe: loss = mean BCE (probabilities clipped to [1e-7, 1-1e-7]) + (1 - batch-global soft Dice)
+ 1e-5 * sum of squared kernels (73, head excluded); Adam(lr 1e-3, eps 1e-7), batch 8;
``ReduceLROnPlateau(factor=0.2, patience=2, threshold=1e-3, threshold_mode='abs')`` on the
validation loss (= Keras patience 3); early stopping after 5 epochs without strict improvement;
at most 100 epochs. With the endless synthetic source an epoch is a fixed number of steps and
validation uses fixed cases from the validation seed range.

Options for small machines: random crops (sides divisible by 16), lesion-slice oversampling,
bf16 autocast on CPUs, mixed precision on GPUs. ``best.pt`` / ``last.pt`` (+ cards) go to the
output folder; the resumable state (optimiser, scheduler, counters) goes to a cache folder
outside the repository. Under ``torchrun`` training runs with DistributedDataParallel.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from xnet_core import metrics
from xnet_core.atomic import atomic_path
from xnet_core.augment import SliceAugmentation
from xnet_core.checkpoint import default_card, save_checkpoint
from xnet_core.model import XNet
from xnet_core.synthetic import VOLUME_QUANTILES_ML, sample_total_volume_ml

log = logging.getLogger(__name__)


def xnet_loss(logits: torch.Tensor, target: torch.Tensor, model: XNet | None = None,
              slice_dice_weight: float = 0.0) -> torch.Tensor:
    """The official loss: BCE + (1 - batch soft Dice) [+ L2 on the 73 kernels when ``model``].

    ``slice_dice_weight`` > 0 adds that many times (1 - mean soft Dice of the slices that hold lesion).
    Batch Dice pools every voxel of the batch, so a 30-voxel lesion next to a 3,000-voxel one gets 1 %
    of the Dice gradient; per slice it counts as much as the large one (the idea of Kofler et al.'s
    blob loss, 2022, at slice rather than lesion level). Not in the paper; 0 keeps its recipe. Where a
    slice's lesion is missed, its gradient raises the probability inside the lesion and hardly lowers it
    outside (that pull scales with the overlap): at weight 1 a fine-tune of the demo model fired on
    look-alikes (README).
    """
    probs = torch.sigmoid(logits.float())
    bce = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target)
    soft_dice = 2 * (target * probs).sum() / (target.sum() + probs.sum())
    loss = bce + (1 - soft_dice)
    if slice_dice_weight > 0:
        loss = loss + slice_dice_weight * (1 - _lesion_slice_dice(probs, target))
    return loss + model.l2_penalty() if model is not None else loss


def _lesion_slice_dice(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean soft Dice over the slices of a batch that hold lesion (1 when none does: nothing to weigh).

    Masked rather than indexed, so that no step waits for the device to say whether any slice holds lesion.
    """
    dims = tuple(range(1, target.dim()))
    truth = target.sum(dim=dims)
    lesion = (truth > 0).float()
    dice = 2 * (target * probs).sum(dim=dims) / (truth + probs.sum(dim=dims)).clamp_min(1e-7)
    count = lesion.sum()
    mean = (dice * lesion).sum() / count.clamp_min(1)
    return torch.where(count > 0, mean, torch.ones_like(mean))


def _loss_description(slice_dice_weight: float) -> str:
    extra = f" + {slice_dice_weight:g} (1 - mean soft Dice of lesion slices)" if slice_dice_weight > 0 else ""
    return f"BCE + (1 - batch soft Dice){extra} + 1e-5 L2 (73 kernels)"


class SliceSource(Protocol):
    """What training reads: batches of normalised model slices and masks."""

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class VolumeSlices:
    """One prepared case: normalised model slices, masks and which slices hold brain / lesion."""

    slices: np.ndarray  # float16 [z, 224, 192]
    masks: np.ndarray  # uint8 [z, 224, 192]
    brain: np.ndarray  # bool [z]

    @cached_property
    def lesion(self) -> np.ndarray:
        # Cached: recomputing it scanned the whole 8 MB mask volume on every sampled slice (16 times a
        # step), enough to starve a GPU.
        return self.masks.reshape(len(self.masks), -1).any(axis=1)

    @cached_property
    def lesion_voxels(self) -> int:
        return int(np.count_nonzero(self.masks))


@dataclass
class SlicePool:
    """Slices sampled from prepared cases, with lesion oversampling, crops and left-right flips."""

    cases: list[VolumeSlices]
    lesion_fraction: float = 0.5  # None of the paper's code oversamples; small runs need it
    crop: tuple[int, int] | None = None
    flip: bool = True
    # > 0: draw a case with probability proportional to (its lesion voxels)^-size_balance, so that small
    # lesions make up more of a batch; there, batch Dice weighs their misses and their false positives
    # alike (unlike xnet_loss's per-slice term). 0: every case alike, as the paper's code.
    size_balance: float = 0.0
    augment: SliceAugmentation | None = None  # a fresh geometry and contrast for every slice drawn
    _weights: np.ndarray | None = field(default=None, init=False, repr=False)

    def _case(self, rng: np.random.Generator) -> VolumeSlices:
        if self.size_balance <= 0:
            return self.cases[rng.integers(len(self.cases))]
        if self._weights is None or len(self._weights) != len(self.cases):  # a CaseStream list grows
            snapshot = self.cases[:]  # the list may grow while this runs
            voxels = np.array([case.lesion_voxels for case in snapshot], float)
            lesion = voxels > 0  # a case without lesion counts as a typical one, not as the smallest
            voxels[~lesion] = np.median(voxels[lesion]) if lesion.any() else 1.0
            weights = np.maximum(voxels, 20.0) ** -self.size_balance
            self._weights = weights / weights.sum()
        return self.cases[rng.choice(len(self._weights), p=self._weights)]

    def _pick(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        case = self._case(rng)
        lesion = np.flatnonzero(case.lesion)
        pool = lesion if len(lesion) and rng.random() < self.lesion_fraction else np.flatnonzero(case.brain)
        z = int(pool[rng.integers(len(pool))]) if len(pool) else int(rng.integers(len(case.slices)))
        image, mask = case.slices[z].astype(np.float32), case.masks[z].astype(np.float32)
        if self.augment is not None:
            image, mask = self.augment(image, mask, rng)
        if self.crop is not None:
            image, mask = self._crop(rng, image, mask)
        if self.flip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return image, mask

    def _crop(self, rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.crop  # type: ignore[misc]
        # Lesion in view half of the time; the other half shows sulci, ventricles and edges, the
        # look-alikes an early model confuses with lesions (measured: CSF-space false positives).
        if mask.any() and rng.random() < 0.5:
            cy, cx = np.argwhere(mask > 0)[rng.integers(int(mask.sum()))]
            top = int(np.clip(cy - rng.integers(height), 0, image.shape[0] - height))
            left = int(np.clip(cx - rng.integers(width), 0, image.shape[1] - width))
        else:
            top = int(rng.integers(image.shape[0] - height + 1))
            left = int(rng.integers(image.shape[1] - width + 1))
        window = (slice(top, top + height), slice(left, left + width))
        return image[window], mask[window]

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self._pick(rng) for _ in range(size)]
        return (np.stack([p[0] for p in pairs])[:, None].copy(), np.stack([p[1] for p in pairs])[:, None].copy())


@dataclass
class TrainConfig:
    out_dir: Path
    state_dir: Path
    steps_per_epoch: int = 500
    max_epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    crop: tuple[int, int] | None = None
    lesion_fraction: float = 0.5
    bf16_cpu: bool = False
    seed: int = 0
    max_minutes: float | None = None  # stop (resumably) after this wall time
    save_every_s: float = 300.0
    precise_bn_batches: int = 0  # > 0: recalibrate BN on whole slices before each validation
    keep_epochs: bool = False  # also write epoch-N.pt after each epoch (to choose or average later)
    slice_dice_weight: float = 0.0  # > 0: adds the per-slice Dice term of xnet_loss (small lesions)
    size_balance: float = 0.0  # > 0: SlicePool draws cases by (lesion voxels)^-size_balance
    augment: SliceAugmentation | None = None  # what SlicePool draws for every slice (None: flips only)
    data_description: str = "synthetic"
    extra_card: dict = field(default_factory=dict)


@dataclass
class TrainState:
    epoch: int = 0
    step: int = 0
    best_val: float = math.inf
    bad_epochs: int = 0  # early-stopping counter (strict improvement)
    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0


def _hardware(device: torch.device) -> str:
    """Where the run trained, for the card: CPU architecture and thread count, plus the GPU's name on CUDA."""
    where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads"
    if device.type == "cuda":
        where += f", {torch.cuda.get_device_name(device)}"
    return f"{where}, {device}"


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def recalibrate_batchnorm(model: XNet, source: SliceSource, rng: np.random.Generator, batches: int,
                          batch_size: int, device: torch.device, bf16_cpu: bool = False) -> None:
    """Re-estimate BN running statistics as plain averages over ``batches`` full-size batches.

    Keras' momentum 0.99 makes the running statistics lag far behind fast-changing early weights
    (measured here: eval-mode output 0.05 where train-mode output was 0.76 after 250 steps), and
    crops give other statistics than whole slices. Averaging over whole slices fixes both; the
    recipe's own momentum applies again afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_cpu and device.type == "cpu")
    with torch.no_grad(), autocast:
        for _ in range(batches):
            images, _ = source.batch(rng, batch_size)
            model(torch.from_numpy(images).to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def average_weights(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform mean of same-architecture weights: stochastic weight averaging (Izmailov et al. 2018).

    Checkpoints saved along one constant-learning-rate run lie around a flat region of the loss; their
    mean sits nearer its centre and often generalises better than any one of them (measured here: the mean of
    a fine-tune's five epochs took the validation Dice on 20 cases from 0.653 to 0.677, the model
    shipped as demo stage 6). Floating tensors are averaged in float32;
    integer buffers (BatchNorm's batch counters) come from the last. The BatchNorm running statistics of
    a mean do not belong to its weights: re-estimate them (``recalibrate_batchnorm``) before use.
    """
    if not state_dicts:
        raise ValueError("average_weights needs at least one state dict")
    keys = state_dicts[0].keys()
    for other in state_dicts[1:]:
        if other.keys() != keys or any(other[k].shape != state_dicts[0][k].shape for k in keys):
            raise ValueError("checkpoints of different architectures cannot be averaged")
    return {k: (torch.stack([sd[k].float() for sd in state_dicts]).mean(0) if state_dicts[0][k].is_floating_point()
                else state_dicts[-1][k].clone()) for k in keys}


def validate(model: XNet, cases: list[VolumeSlices], device: torch.device, batch: int = 9,
             bf16_cpu: bool = False) -> dict:
    """Validation loss (with L2, batch-weighted mean, BN in inference mode) and per-case 3D Dice."""
    model.eval()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_cpu and device.type == "cpu")
    losses, weights, dices = [], [], []
    with torch.no_grad():
        for case in cases:
            z = np.flatnonzero(case.brain)
            probs = np.zeros(case.masks.shape, np.float32)
            for start in range(0, len(z), batch):
                idx = z[start:start + batch]
                x = torch.from_numpy(case.slices[idx].astype(np.float32))[:, None].to(device)
                y = torch.from_numpy(case.masks[idx].astype(np.float32))[:, None].to(device)
                with autocast:
                    logits = model(x)
                losses.append(float(xnet_loss(logits, y, model)))
                weights.append(len(idx))
                probs[idx] = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
            dices.append(metrics.dice(probs >= 0.5, case.masks))
    model.train()
    return {"val_loss": float(np.average(losses, weights=weights)), "val_dice": float(np.mean(dices))}


class Trainer:
    """One training run; ``run`` returns the final state. Rank 0 writes files."""

    def __init__(self, config: TrainConfig, train: SliceSource, val_cases: list[VolumeSlices],
                 device: torch.device, on_log: Callable[[str], None] | None = None) -> None:
        self.config, self.train_source, self.val_cases, self.device = config, train, val_cases, device
        self.rank, self.world = _distributed()
        torch.manual_seed(config.seed)
        # channels_last: oneDNN's and cuDNN's fast convolution layout (25 % faster steps on this CPU)
        self.model = XNet().to(device, memory_format=torch.channels_last)
        self.net = DistributedDataParallel(self.model) if self.world > 1 else self.model
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-7)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimiser, mode="min", factor=0.2, patience=2, threshold=1e-3, threshold_mode="abs")
        self.state = TrainState()
        self.rng = np.random.default_rng(config.seed + 7919 * self.rank)
        self.on_log = on_log or (lambda line: log.info(line))
        # Mixed precision: bf16 where the GPU has it (no loss scaling, so no per-step host sync),
        # fp16 with a GradScaler on older GPUs, bf16 on CPUs only when asked (--bf16).
        self.amp_dtype = torch.bfloat16
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            self.amp_dtype = torch.float16
        self.amp = config.bf16_cpu if device.type == "cpu" else device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and self.amp_dtype == torch.float16 else None
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels

    # -- persistence ---------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.config.state_dir / "train_state.pt"

    def save_state(self) -> None:
        if self.rank:
            return
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        payload = {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
                   "scheduler": self.scheduler.state_dict(), "state": json.dumps(asdict(self.state)),
                   "rng": json.dumps(self.rng.bit_generator.state),
                   "extra_card": json.dumps(self.config.extra_card)}
        with atomic_path(self.state_path) as tmp:
            torch.save(payload, tmp)

    def resume(self) -> bool:
        if not self.state_path.is_file():
            return False
        payload = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(payload["model"])
        self.optimiser.load_state_dict(payload["optimiser"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.state = TrainState(**json.loads(payload["state"]))
        self.rng.bit_generator.state = json.loads(payload["rng"])
        # Provenance given at the start (e.g. initialised_from) must survive a resume.
        self.config.extra_card = {**json.loads(payload.get("extra_card", "{}")), **self.config.extra_card}
        self.on_log(f"resumed at epoch {self.state.epoch}, step {self.state.step}")
        return True

    def _card(self, kind: str) -> dict:
        return default_card(self.model, training_data=self.config.data_description, checkpoint=kind,
                            recipe={**{k: (str(v) if isinstance(v, Path) else v)
                                       for k, v in asdict(self.config).items() if k not in ("extra_card", "augment")},
                                    "loss": _loss_description(self.config.slice_dice_weight),
                                    "augmentation": (asdict(self.config.augment) if self.config.augment
                                                     else "left-right flips only"),
                                    "optimiser": f"Adam lr {self.config.lr:g} eps 1e-7",
                                    "schedule": "ReduceLROnPlateau(0.2, patience 2, abs 1e-3), early stop 5"},
                            steps=self.state.step, epochs=self.state.epoch,
                            wall_time_s=round(self.state.wall_s, 1), history=self.state.history[-50:],
                            hardware=_hardware(self.device),
                            **self.config.extra_card)

    def save_weights(self, name: str) -> None:
        if self.rank:
            return
        self.config.out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.model, self.config.out_dir / name, self._card(name), half=False)

    # -- the loop ------------------------------------------------------------------------------
    def _step(self) -> torch.Tensor:
        """One optimiser step; returns the loss as a device tensor (read it lazily: reading syncs)."""
        images, masks = self.train_source.batch(self.rng, self.config.batch_size)
        x = torch.from_numpy(images).to(self.device).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(masks).to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.net(x)
        loss = xnet_loss(logits, y, self.model, self.config.slice_dice_weight)
        self.optimiser.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimiser)
            self.scaler.update()
        else:
            loss.backward()
            self.optimiser.step()
        return loss.detach()

    def run(self, max_steps: int | None = None) -> TrainState:
        config, state = self.config, self.state
        started = time.perf_counter() - state.wall_s
        last_save = time.perf_counter()
        self.model.train()
        while state.epoch < config.max_epochs:
            losses = []
            epoch_started = time.perf_counter()
            for _ in range(state.step % config.steps_per_epoch, config.steps_per_epoch):
                losses.append(self._step())
                state.step += 1
                state.wall_s = time.perf_counter() - started
                if state.step % 25 == 0:
                    rate = len(losses) / (time.perf_counter() - epoch_started)
                    eta = (config.steps_per_epoch - state.step % config.steps_per_epoch) / max(rate, 1e-9)
                    recent = float(torch.stack(losses[-25:]).mean())
                    self.on_log(f"epoch {state.epoch + 1} step {state.step} loss {recent:.4f} "
                                f"({rate:.2f} steps/s, epoch ETA {eta / 60:.1f} min)")
                if time.perf_counter() - last_save > config.save_every_s:
                    self.save_state()
                    last_save = time.perf_counter()
                if max_steps is not None and state.step >= max_steps:
                    self.save_state()
                    return state
                if config.max_minutes and state.wall_s > config.max_minutes * 60:
                    self.on_log("time budget reached; state saved, continue with --resume")
                    self.save_state()
                    return state
            if self._end_epoch(float(torch.stack(losses).mean()) if losses else math.nan):
                break
        return state

    def validate_start(self) -> dict:
        """Validate the starting weights (--init) as epoch 0, so that best.pt stays them until an epoch beats them.

        Without this a fine-tune that only makes the model worse still writes a best.pt, and the
        starting point's figures on these validation cases needed a separate run to compare with.
        BN statistics are used as given: these are the weights as they were shipped.
        """
        state = self.state
        figures = validate(self.model, self.val_cases, self.device, bf16_cpu=self.config.bf16_cpu)
        self.scheduler.step(figures["val_loss"])  # the plateau schedule counts from the starting point too
        self._record(0, None, figures)
        self.on_log(f"epoch 0 (starting weights): val loss {figures['val_loss']:.4f}, "
                    f"val Dice {figures['val_dice']:.4f}")
        state.best_val = figures["val_loss"]
        self.save_weights("best.pt")
        self.save_state()
        return figures

    def _record(self, epoch: int, train_loss: float | None, figures: dict) -> None:
        """One line of the history the cards carry: the epoch's figures and the learning rate it ends with."""
        self.state.history.append({"epoch": epoch, "step": self.state.step,
                                   "train_loss": None if train_loss is None else round(train_loss, 5),
                                   **{k: round(v, 5) for k, v in figures.items()},
                                   "lr": self.optimiser.param_groups[0]["lr"]})

    def _end_epoch(self, train_loss: float) -> bool:
        """Validate, step the schedule, save best/last; True when early stopping fires."""
        state = self.state
        state.epoch += 1
        if self.config.precise_bn_batches and isinstance(self.train_source, SlicePool):
            whole_slices = SlicePool(self.train_source.cases, self.train_source.lesion_fraction, crop=None)
            recalibrate_batchnorm(self.model, whole_slices, self.rng, self.config.precise_bn_batches,
                                  self.config.batch_size, self.device, self.config.bf16_cpu)
        figures = validate(self.model, self.val_cases, self.device, bf16_cpu=self.config.bf16_cpu)
        self.scheduler.step(figures["val_loss"])
        lr = self.optimiser.param_groups[0]["lr"]
        self._record(state.epoch, train_loss, figures)
        self.on_log(f"epoch {state.epoch}: train loss {train_loss:.4f}, val loss {figures['val_loss']:.4f}, "
                    f"val Dice {figures['val_dice']:.4f}, lr {lr:.2e}")
        if figures["val_loss"] < state.best_val:
            state.best_val, state.bad_epochs = figures["val_loss"], 0
            self.save_weights("best.pt")
        else:
            state.bad_epochs += 1
        self.save_weights("last.pt")
        if self.config.keep_epochs:
            self.save_weights(f"epoch-{state.epoch}.pt")
        self.save_state()
        if state.bad_epochs >= 5:
            self.on_log(f"early stopping: no improvement for 5 epochs (best val loss {state.best_val:.4f})")
            return True
        return False


def synthetic_volume_slices(seed: int, normalisation: str = "robust", augment: bool = True) -> VolumeSlices:
    """A synthetic case, prepared exactly as inference prepares a scan on the template grid."""
    from xnet_core.preprocess import TEMPLATE_X0, TEMPLATE_Y0, SliceGeometry, normalise, template_brain_mask
    from xnet_core.synthetic import SHAPE, make_case

    case = make_case(seed, augment=augment)
    mask = template_brain_mask()
    geometry = SliceGeometry(TEMPLATE_X0, TEMPLATE_Y0, SHAPE[:2])
    slices = geometry.to_model(normalise(case.image, mask, normalisation))
    brain = geometry.to_model(mask).reshape(len(slices), -1).any(axis=1)
    return VolumeSlices(slices.astype(np.float16), geometry.to_model(case.mask).astype(np.uint8), brain)


def atlas_volume_slices(scan, normalisation: str = "robust") -> VolumeSlices:
    """An ATLAS scan and its mask union, prepared exactly as inference prepares it."""
    from xnet_core.datasets import load_lesion_mask
    from xnet_core.preprocess import prepare
    from xnet_core.volume import load_volume

    volume = load_volume(scan.t1)
    prepared = prepare(volume, normalisation)
    masks = prepared.geometry.to_model(load_lesion_mask(scan, volume))
    return VolumeSlices(prepared.slices.astype(np.float16), masks.astype(np.uint8), prepared.brain_slices)


# A quarter of ATLAS R2.0 subjects have less lesion than this (the generator's lower quartile): the
# size the demo model finds least often.
SMALL_LESION_ML = dict(VOLUME_QUANTILES_ML)[0.25]


def small_lesion_seeds(start: int, n: int, below_ml: float = SMALL_LESION_ML) -> list[int]:
    """The first ``n`` synthetic seeds from ``start`` whose cases draw under ``below_ml`` of lesion.

    A choice of training seeds, not a change to the generator: validation and held-out cases stay
    what they were. The total volume is make_case's first draw, so no case is made to choose.
    """
    seeds, seed = [], start
    while len(seeds) < n:
        if sample_total_volume_ml(np.random.default_rng(seed)) < below_ml:
            seeds.append(seed)
        seed += 1
    return seeds


def _cached_case(seed: int, augment: bool, cache_dir: Path | None) -> VolumeSlices:
    """A prepared synthetic case, read from / written to ``cache_dir`` (cases are pure functions of seeds)."""
    path = cache_dir / f"case-{seed}{'' if augment else '-plain'}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as saved:
            return VolumeSlices(saved["slices"], saved["masks"], saved["brain"])
    case = synthetic_volume_slices(seed, augment=augment)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".npz") as tmp:  # the suffix stops numpy appending its own
            np.savez(tmp, slices=case.slices, masks=case.masks, brain=case.brain)
    return case


def synthetic_pool(seeds: list[int], workers: int = 1, augment: bool = True,
                   cache_dir: Path | None = None) -> list[VolumeSlices]:
    """Prepare synthetic cases, in parallel processes when ``workers`` > 1, cached when asked."""
    stream = CaseStream(seeds, workers, augment, cache_dir)
    try:
        return stream.wait_for(len(seeds))
    finally:
        stream.close()


class CaseStream:
    """Synthetic cases prepared in the background, so that training can start before all are ready.

    On a lent GPU, preparing 200 cases took 163 s of a 900 s budget while the GPU idled. ``cases``
    grows in seed order as cases are finished (a SlicePool can hold the same list: appending is
    atomic and the pool only ever reads ``len`` then one element). Which cases a step can draw from
    then depends on timing, so a streamed run is not reproducible step for step.
    """

    def __init__(self, seeds: list[int], workers: int = 1, augment: bool = True,
                 cache_dir: Path | None = None) -> None:
        import threading

        self.cases: list[VolumeSlices] = []
        self.total = len(seeds)
        self.error: BaseException | None = None
        self._finished = False  # set (under the condition) when the thread stops, for whatever reason
        self._seeds, self._workers, self._augment, self._cache_dir = seeds, workers, augment, cache_dir
        self._stop = threading.Event()
        self._grown = threading.Condition()
        self._thread = threading.Thread(target=self._prepare, name="case-stream", daemon=True)
        self._thread.start()

    def _prepare(self) -> None:
        try:
            if self._workers <= 1:
                for seed in self._seeds:
                    if self._stop.is_set():
                        return
                    self._add(_cached_case(seed, self._augment, self._cache_dir))
                return
            import multiprocessing as mp
            from functools import partial

            with mp.get_context("spawn").Pool(self._workers) as pool:
                results = pool.imap(partial(_cached_case, augment=self._augment, cache_dir=self._cache_dir),
                                    self._seeds)
                while len(self.cases) < self.total and not self._stop.is_set():
                    try:
                        self._add(results.next(timeout=0.5))
                    except mp.TimeoutError:
                        continue
        except BaseException as error:  # handed to the waiting thread, which reports it
            self.error = error
        finally:
            with self._grown:
                self._finished = True
                self._grown.notify_all()

    def _add(self, case: VolumeSlices) -> None:
        with self._grown:
            self.cases.append(case)
            self._grown.notify_all()

    def wait_for(self, count: int) -> list[VolumeSlices]:
        """Block until ``count`` cases (at most all) are ready; re-raises a preparation error."""
        count = min(count, self.total)
        with self._grown:
            self._grown.wait_for(lambda: len(self.cases) >= count or self._finished)
        if self.error is not None:
            raise self.error
        return self.cases

    @property
    def done(self) -> bool:
        return len(self.cases) >= self.total

    def close(self) -> None:
        """Stop preparing: a case being made in this process is finished and kept; cases being made in
        worker processes are dropped and the workers end."""
        self._stop.set()
        self._thread.join()


def default_state_dir(name: str) -> Path:
    """Resumable state lives in the user's cache folder, never in the repository."""
    from xnet_core.assets import user_cache_dir

    return user_cache_dir("train", name)


# What a prepared synthetic case depends on besides its seed: the generator and its shape bank, the
# preprocessing (code), the template and the bank (data). synthetic_volume_slices is added by source.
CASE_CODE = ("synthetic.py", "shapes.py", "preprocess.py")


def synthetic_case_cache() -> Path:
    """The cache folder for prepared synthetic cases, one per version of what makes them.

    Keyed by seed alone, a cache filled before a change to the generator would silently mix old
    cases into a new run. Hashing the 7.5 MB of sources and assets takes a fraction of a second.
    """
    import hashlib
    import inspect

    from xnet_core.assets import TEMPLATE_GM, TEMPLATE_T1, TEMPLATE_WM, asset_path
    from xnet_core.shapes import SHAPE_BANK

    digest = hashlib.sha256(inspect.getsource(synthetic_volume_slices).encode())
    for path in [Path(__file__).parent / name for name in CASE_CODE] + \
            [asset_path(name) for name in (TEMPLATE_T1, TEMPLATE_GM, TEMPLATE_WM, SHAPE_BANK)]:
        digest.update(Path(path).read_bytes())
    return default_state_dir("synthetic-cases") / f"v-{digest.hexdigest()[:12]}"
