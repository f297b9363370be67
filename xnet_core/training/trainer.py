"""X-Net training: the paper's recipe by default (docs/design.md, References: X-Net), CPU- and GPU-friendly.

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
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from xnet_core import metrics
from xnet_core.atomic import atomic_path
from xnet_core.checkpoint import default_card, save_checkpoint
from xnet_core.model import XNet
from xnet_core.training.augment import SliceAugmentation
from xnet_core.training.loss import loss_description, xnet_loss
from xnet_core.training.sampling import SlicePool, SliceSource, VolumeSlices
from xnet_core.training.swa import recalibrate_batchnorm

log = logging.getLogger(__name__)


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
                                    "loss": loss_description(self.config.slice_dice_weight),
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



def default_state_dir(name: str) -> Path:
    """Resumable state lives in the user's cache folder, never in the repository."""
    from xnet_core.assets import user_cache_dir

    return user_cache_dir("train", name)


