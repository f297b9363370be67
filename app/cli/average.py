"""``xnet average``: stochastic weight averaging after the fact (the mean of checkpoints of one
training run, BatchNorm re-estimated), written with its card."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from app.cli._common import add_device
from app.cli.train import _atlas_cases

HELP = "average checkpoints of one training run (SWA) and re-estimate BatchNorm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="two or more checkpoints, e.g. epoch-*.pt")
    parser.add_argument("--out", required=True, metavar="OUT.pt", help="the averaged checkpoint (with its card)")
    parser.add_argument("--precise-bn", type=int, default=50, metavar="BATCHES",
                        help="whole-slice batches that re-estimate the BatchNorm statistics (default 50)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--data", metavar="DIR", help="an ATLAS copy: its training fold re-estimates BatchNorm")
    parser.add_argument("--fold", type=int, default=0, help="validation fold of --data (0-4)")
    parser.add_argument("--split", choices=("paper", "patient"), default="paper")
    parser.add_argument("--train-cases", type=int, default=60, help="synthetic cases for BatchNorm (without --data)")
    parser.add_argument("--lesion-fraction", type=float, default=0.6, help="share of lesion slices sampled")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU")
    parser.add_argument("--seed", type=int, default=0)
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    """Stochastic weight averaging after the fact: the mean of CKPT..., BatchNorm re-estimated, with a card."""
    import numpy as np
    import torch

    from xnet_core.checkpoint import load_checkpoint, save_checkpoint
    from xnet_core.errors import XNetError
    from xnet_core.inference import choose_device
    from xnet_core.model import XNet
    from xnet_core.training.cases import synthetic_case_cache, synthetic_pool
    from xnet_core.training.sampling import SlicePool
    from xnet_core.training.swa import average_weights, recalibrate_batchnorm

    if len(args.checkpoints) < 2:
        raise XNetError("xnet average needs two or more checkpoints of one training run (e.g. its epoch-*.pt).")
    if args.precise_bn < 1:
        raise XNetError(f"--precise-bn {args.precise_bn}: the average needs its own BatchNorm statistics; "
                        "give a number of batches >= 1 (default 50).")
    out = Path(args.out)
    checkpoints = [load_checkpoint(path) for path in args.checkpoints]
    if any(c.path.resolve() == out.resolve() for c in checkpoints):
        raise XNetError(f"--out {out} is one of the checkpoints being averaged; choose another file.")
    try:
        weights = average_weights([c.state_dict for c in checkpoints])
    except ValueError as error:
        raise XNetError(f"{error}: give checkpoints of one X-Net training run.") from error
    device = choose_device(args.device)
    model = XNet()
    model.load_state_dict(weights)
    model.to(device, memory_format=torch.channels_last)
    if args.data:
        cases, description = _atlas_cases(args)[0], f"training fold of {args.data}"
    else:
        seeds = list(range(args.seed, args.seed + args.train_cases))
        cases = synthetic_pool(seeds, cache_dir=synthetic_case_cache())
        description = f"synthetic training seeds {seeds[0]}..{seeds[-1]}"
    started = time.perf_counter()
    recalibrate_batchnorm(model, SlicePool(cases, lesion_fraction=args.lesion_fraction), np.random.default_rng(args.seed),
                          args.precise_bn, args.batch, device, args.bf16)
    last = checkpoints[-1].card  # recipe, history and provenance of the run the checkpoints come from
    card = {k: v for k, v in last.items() if k not in ("sha256", "weights_file", "weights_dtype")}
    card.update({
        "checkpoint": out.name,
        "averaged_from": [f"{c.path.name} (sha256 {c.sha256}, step {c.card.get('steps', '?')})" for c in checkpoints],
        "weight_averaging": (f"uniform mean of {len(checkpoints)} checkpoints (stochastic weight averaging); "
                             f"BatchNorm re-estimated on {args.precise_bn} batches of {args.batch} whole slices "
                             f"({description}) in {time.perf_counter() - started:.0f} s"),
    })
    save_checkpoint(model.cpu(), out, card, half=False)
    print(f"averaged {len(checkpoints)} checkpoints into {out}")
    return 0
