"""``xnet train``: train X-Net (the paper's recipe) on synthetic cases or an ATLAS copy; also under
``torchrun`` (DistributedDataParallel)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from app.cli._common import add_device

HELP = "train X-Net (paper recipe; synthetic cases unless --data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="where best.pt and last.pt go")
    parser.add_argument("--data", metavar="DIR", help="an ATLAS copy (default: synthetic cases)")
    parser.add_argument("--fold", type=int, default=0, help="validation fold of --data (0-4)")
    parser.add_argument("--split", choices=("paper", "patient"), default="paper")
    parser.add_argument("--train-cases", type=int, default=200, help="synthetic training cases in the pool")
    parser.add_argument("--val-cases", type=int, default=3, help="synthetic validation cases")
    parser.add_argument("--steps-per-epoch", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="Adam learning rate (the paper's 1e-3; lower it to fine-tune --init weights)")
    parser.add_argument("--crop", metavar="HxW", help="random crops, sides divisible by 16 (CPU-friendly)")
    parser.add_argument("--lesion-fraction", type=float, default=0.5, help="share of lesion slices sampled")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU")
    parser.add_argument("--size-balance", type=float, default=0.0, metavar="A",
                        help="draw training cases with probability proportional to (lesion voxels)^-A: "
                             "more small lesions per batch (default 0: every case alike)")
    parser.add_argument("--slice-dice", type=float, default=0.0, metavar="W",
                        help="add W x (1 - mean soft Dice of the lesion slices) to the paper's loss: small "
                             "lesions weigh as much as large ones (default 0: the paper's loss)")
    parser.add_argument("--augment", action="store_true",
                        help="draw a new rotation, scale, gamma, contrast, blur and noise for every training "
                             "slice (default: left-right flips only; the paper has none)")
    parser.add_argument("--backgrounds", metavar="DIR",
                        help="a folder of real lesion-free T1s to paste synthetic lesions into, besides the template; "
                             "its training people train, its validation people validate (the split is fixed in "
                             "xnet_core.training.backgrounds); each is registered once and cached")
    parser.add_argument("--template-share", type=float, default=0.25, metavar="P",
                        help="with --backgrounds: share of cases on the template (default 0.25)")
    parser.add_argument("--negative-share", type=float, default=0.0, metavar="P",
                        help="share of lesion-free training cases (default 0)")
    parser.add_argument("--variety", action="store_true",
                        help="unlabelled atrophy (wider sulci, larger ventricles) and a random tissue contrast "
                             "in every training case")
    parser.add_argument("--workers", type=int, default=1, help="processes preparing synthetic cases")
    parser.add_argument("--start-after", type=int, default=0, metavar="N",
                        help="start once N synthetic training cases are ready; the rest join the pool as "
                             "they are prepared (keeps a GPU busy; not reproducible step for step)")
    parser.add_argument("--max-minutes", type=float, help="stop resumably after this long")
    parser.add_argument("--resume", action="store_true", help="continue from the saved state")
    parser.add_argument("--init", metavar="CKPT", help="start from these weights (e.g. the shipped demo model)")
    parser.add_argument("--precise-bn", type=int, default=0, metavar="BATCHES",
                        help="re-estimate BatchNorm statistics on whole slices before each validation")
    parser.add_argument("--keep-epochs", action="store_true",
                        help="also write epoch-N.pt after each epoch (to choose among or average with xnet average)")
    parser.add_argument("--seed", type=int, default=0)
    add_device(parser)


def _parse_crop(text: str | None) -> tuple[int, int] | None:
    from xnet_core.errors import XNetError

    if not text:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise XNetError(f"--crop {text}: expected HxW, e.g. 128x128.") from None
    if height % 16 or width % 16 or not (16 <= height <= 224 and 16 <= width <= 192):
        raise XNetError(f"--crop {text}: sides must be multiples of 16 within 224x192.")
    return height, width


def _distributed_device(name: str):
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs)."""
    import torch
    import torch.distributed as dist

    from xnet_core.inference import choose_device

    device = choose_device(name)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def _share(flag: str, value: float) -> float:
    from xnet_core.errors import XNetError

    if not 0.0 <= value <= 1.0:
        raise XNetError(f"{flag} {value:g}: expected a share between 0 and 1.")
    return value


def case_recipes(args: argparse.Namespace):
    """(training recipe, validation recipe): which brains the synthetic cases are pasted into."""
    from xnet_core.assets import user_cache_dir
    from xnet_core.errors import XNetError
    from xnet_core.training.backgrounds import find_background_scans, prepare_backgrounds, split_backgrounds
    from xnet_core.training.cases import CaseRecipe

    negatives = _share("--negative-share", args.negative_share)
    if not args.backgrounds:
        return CaseRecipe(negative_share=negatives, variety=args.variety), CaseRecipe()
    if args.data:
        raise XNetError("--backgrounds makes synthetic cases; leave it out with --data.")
    template_share = _share("--template-share", args.template_share)
    training, validation = split_backgrounds(find_background_scans(args.backgrounds))
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    from xnet_core.inference import choose_device

    cache, device = user_cache_dir("backgrounds"), choose_device(args.device).type  # deepbet runs there too
    train_files = tuple(str(p) for p in prepare_backgrounds(training, cache, device, on_log=log))
    val_files = tuple(str(p) for p in prepare_backgrounds(validation, cache, device, on_log=log))
    if not train_files:
        raise XNetError(f"{args.backgrounds}: none of its training people could be prepared as a background.")
    return (CaseRecipe(train_files, template_share, negatives, args.variety),
            CaseRecipe(val_files, template_share) if val_files else CaseRecipe())


def _atlas_cases(args: argparse.Namespace) -> tuple[list, list, str]:
    """ATLAS scans of --data split by --split/--fold, prepared for training (held in memory)."""
    from xnet_core.training.datasets import find_scans, split
    from xnet_core.training.cases import atlas_volume_slices

    train_scans, val_scans = split(find_scans(args.data), args.fold, args.split)
    print(f"ATLAS: {len(train_scans)} training and {len(val_scans)} validation scans "
          f"(fold {args.fold}, split {args.split})", file=sys.stderr)
    prepared = [atlas_volume_slices(s) for s in train_scans], [atlas_volume_slices(s) for s in val_scans]
    releases = sorted({s.release for s in train_scans})
    return (*prepared, f"ATLAS {'/'.join(releases)} at {args.data}, {args.split} split, fold {args.fold}")


def run(args: argparse.Namespace) -> int:
    from xnet_core.training.augment import SliceAugmentation
    from xnet_core.errors import XNetError
    from xnet_core.training.synthetic import SEED_RANGES
    from xnet_core.training.cases import CaseStream, synthetic_case_cache, synthetic_pool
    from xnet_core.training.sampling import SlicePool
    from xnet_core.training.trainer import TrainConfig, default_state_dir

    train_recipe, val_recipe = case_recipes(args)
    train_seeds = list(range(args.seed, args.seed + args.train_cases))
    device = _distributed_device(args.device)
    out = Path(args.out)
    config = TrainConfig(
        out_dir=out, state_dir=default_state_dir(out.resolve().name), steps_per_epoch=args.steps_per_epoch,
        max_epochs=args.epochs, batch_size=args.batch, lr=args.lr, crop=_parse_crop(args.crop),
        lesion_fraction=args.lesion_fraction, bf16_cpu=args.bf16, seed=args.seed, max_minutes=args.max_minutes,
        precise_bn_batches=args.precise_bn,
        keep_epochs=args.keep_epochs, slice_dice_weight=args.slice_dice, size_balance=args.size_balance,
        augment=SliceAugmentation() if args.augment else None,
        data_description=(
            f"{args.train_cases} synthetic chronic-stroke cases (seeds {args.seed}..{args.seed + args.train_cases - 1})"
            + f" pasted into {train_recipe.describe()}; validation seeds {SEED_RANGES['validation']}..+{args.val_cases - 1}"
            + f" pasted into {val_recipe.describe()}"),
    )
    if args.start_after < 0:
        raise XNetError(f"--start-after {args.start_after}: expected a number of cases >= 0.")
    if args.size_balance < 0:
        raise XNetError(f"--size-balance {args.size_balance:g}: expected an exponent >= 0 (0: cases alike).")
    if args.slice_dice < 0:
        raise XNetError(f"--slice-dice {args.slice_dice:g}: expected a weight >= 0 (0 is the paper's loss).")
    started = time.perf_counter()
    stream = None
    try:
        if args.data:
            train_cases, val_cases, config.data_description = _atlas_cases(args)
        else:
            print(f"preparing {len(train_seeds)} training and {args.val_cases} validation cases "
                  f"with {args.workers} worker(s)...", file=sys.stderr)
            cache = synthetic_case_cache()  # cases are pure functions of their seeds (and the code)
            val_seeds = list(range(SEED_RANGES["validation"], SEED_RANGES["validation"] + args.val_cases))
            if args.start_after > 0:
                stream = CaseStream(train_seeds, args.workers, cache_dir=cache, recipe=train_recipe)
                val_cases = synthetic_pool(val_seeds, min(args.workers, len(val_seeds)), cache_dir=cache,
                                           recipe=val_recipe)
                train_cases = stream.wait_for(args.start_after)  # the list keeps growing during training
            else:
                train_cases = synthetic_pool(train_seeds, args.workers, cache_dir=cache, recipe=train_recipe)
                val_cases = synthetic_pool(val_seeds, args.workers, cache_dir=cache, recipe=val_recipe)
        if not train_cases or not val_cases:
            raise XNetError("training needs at least one training and one validation scan.")
        print(f"{len(train_cases)} training and {len(val_cases)} validation cases ready in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        pool = SlicePool(train_cases, lesion_fraction=args.lesion_fraction, crop=config.crop,
                         size_balance=config.size_balance, augment=config.augment)
        return _run_training(args, config, device, pool, val_cases)
    finally:
        if stream is not None:
            stream.close()
            print(f"{len(stream.cases)} of {stream.total} training cases were in the pool at the end",
                  file=sys.stderr)
            if stream.error is not None:
                print(f"xnet: warning: preparing a training case failed: {stream.error}", file=sys.stderr)


def _run_training(args: argparse.Namespace, config, device, pool, val_cases: list) -> int:
    """Train from --init or the saved state (--resume) and report where the weights went."""
    from xnet_core.training.trainer import Trainer

    out = config.out_dir
    trainer = Trainer(config, pool, val_cases, device, on_log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.resume and not trainer.resume():
        print(f"no saved state in {config.state_dir}; starting afresh", file=sys.stderr)
    elif args.init and not args.resume:
        from xnet_core.checkpoint import load_checkpoint

        initial = load_checkpoint(args.init)
        trainer.model.load_state_dict({k: v.float() for k, v in initial.state_dict.items()})
        config.extra_card["initialised_from"] = f"{initial.path.name} (sha256 {initial.sha256})"
        print(f"starting from the weights of {initial.path}; validating them first", file=sys.stderr)
        trainer.validate_start()
    state = trainer.run()
    print(f"stopped after {state.epoch} epochs, {state.step} steps, {state.wall_s / 60:.1f} min; "
          f"best val loss {state.best_val:.4f}; weights in {out}")
    return 0
