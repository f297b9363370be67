"""Training: the paper's loss, a short CPU run, resume, checkpoints and DDP with gloo."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import blob_batch
from xnet_core.checkpoint import load_checkpoint
from xnet_core.model import XNet
from xnet_core.training.loss import xnet_loss
from xnet_core.training.sampling import SlicePool, VolumeSlices
from xnet_core.training.trainer import TrainConfig, Trainer

REPO = Path(__file__).resolve().parent.parent


def tiny_cases(n: int = 2, size: int = 48, depth: int = 4) -> list[VolumeSlices]:
    """Small 'volumes' of dark-disc slices: enough for the training machinery."""
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(n):
        images, masks = blob_batch(rng, depth, size, size)
        cases.append(VolumeSlices(images.astype(np.float16), masks.astype(np.uint8), np.ones(depth, bool)))
    return cases


def test_loss_is_the_papers() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.7).float()
    p = torch.sigmoid(logits).clamp(1e-7, 1 - 1e-7)
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    soft_dice = 2 * (target * torch.sigmoid(logits)).sum() / (target.sum() + torch.sigmoid(logits).sum())
    assert float(xnet_loss(logits, target)) == pytest.approx(float(bce + 1 - soft_dice), rel=1e-5)
    model = XNet()
    with_l2 = float(xnet_loss(logits, target, model).detach())
    assert with_l2 == pytest.approx(float(bce + 1 - soft_dice) + float(model.l2_penalty().detach()), rel=1e-5)


def test_slice_dice_term_weighs_each_lesion_slice_alike() -> None:
    # Slice 0: a 2-voxel lesion, half found; slice 1: a 32-voxel lesion, all found; slice 2: no lesion.
    target = torch.zeros(3, 1, 8, 8)
    target[0, 0, 0, :2] = 1
    target[1, 0, 2:6, 0:8] = 1
    probs = target.clone()
    probs[0, 0, 0, 1] = 0
    probs[2, 0, 7, 7] = 1  # a false positive on the empty slice: BCE's business, not this term's
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
    base = float(xnet_loss(logits, target))
    per_slice = (2 * 1 / (2 + 1) + 1.0) / 2  # slice Dice 2/3 and 1; the empty slice does not count
    weighted = float(xnet_loss(logits, target, slice_dice_weight=2.0))
    assert weighted - base == pytest.approx(2.0 * (1 - per_slice), abs=1e-4)
    # The batch Dice alone hardly sees the small lesion's miss (33/34); the slice term sees it over 5 times more.
    assert 1 - per_slice > 5 * (1 - 2 * 33 / (34 + 34))
    empty = torch.zeros(2, 1, 8, 8)
    assert float(xnet_loss(logits[:2] * 0 - 5, empty, slice_dice_weight=1.0)) == pytest.approx(
        float(xnet_loss(logits[:2] * 0 - 5, empty)))


def test_size_balance_draws_small_lesion_cases_more_often() -> None:
    def case(lesion_voxels: int) -> VolumeSlices:
        masks = np.zeros((4, 16, 16), np.uint8)
        masks[1].flat[:lesion_voxels] = 1
        return VolumeSlices(np.zeros((4, 16, 16), np.float16), masks, np.ones(4, bool))

    def share_of_first(pool: SlicePool) -> float:
        return sum(pool._case(rng) is cases[0] for _ in range(4000)) / 4000

    cases = [case(25), case(100), case(0)]  # the lesion-free case counts as a typical (median) one
    rng = np.random.default_rng(0)
    assert abs(share_of_first(SlicePool(cases)) - 1 / 3) < 0.03, "0: every case alike"
    balanced = SlicePool(cases, size_balance=1.0)
    share = share_of_first(balanced)  # weights 1/25, 1/100 and 1/62.5
    assert share == pytest.approx((1 / 25) / (1 / 25 + 1 / 100 + 1 / 62.5), abs=0.03)
    cases.append(case(25))  # a growing (streamed) pool is picked up
    assert len(balanced._weights) == 3 and balanced._case(rng) is not None and len(balanced._weights) == 4


def _config(tmp_path: Path, **overrides) -> TrainConfig:
    values = dict(out_dir=tmp_path / "out", state_dir=tmp_path / "state", steps_per_epoch=3, max_epochs=1,
                  batch_size=2, crop=(32, 32), save_every_s=3600)
    values.update(overrides)
    return TrainConfig(**values)


def test_loss_goes_down_when_overfitting_one_batch(tmp_path: Path) -> None:
    trainer = Trainer(_config(tmp_path), SlicePool(tiny_cases(1), crop=(32, 32)), tiny_cases(1), torch.device("cpu"))
    batch = trainer.train_source.batch(np.random.default_rng(0), 4)

    class OneBatch:
        def batch(self, rng, size):
            return batch

    trainer.train_source = OneBatch()
    losses = [trainer._step() for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0]


def test_two_steps_save_state_and_resume(tmp_path: Path) -> None:
    config = _config(tmp_path, steps_per_epoch=4)
    config.extra_card["initialised_from"] = "start.pt (sha256 abc)"
    trainer = Trainer(config, SlicePool(tiny_cases(), crop=(32, 32)), tiny_cases(1), torch.device("cpu"))
    state = trainer.run(max_steps=2)
    assert state.step == 2 and (tmp_path / "state" / "train_state.pt").is_file()
    fresh_config = _config(tmp_path, steps_per_epoch=4)  # as a new `xnet train --resume` builds it
    resumed = Trainer(fresh_config, SlicePool(tiny_cases(), crop=(32, 32)), tiny_cases(1), torch.device("cpu"))
    assert resumed.resume() and resumed.state.step == 2
    for a, b in zip(trainer.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    final = resumed.run()
    assert final.epoch == 1 and final.step == 4
    assert len(final.history) == 1 and {"val_loss", "val_dice", "lr"} <= set(final.history[0])
    card = load_checkpoint(tmp_path / "out" / "last.pt").card
    assert card["initialised_from"] == "start.pt (sha256 abc)", "provenance survives the resume"
    assert "CPU threads" in card["hardware"] and card["hardware"].endswith(", cpu")


def test_epoch_end_writes_checkpoints_that_load(tmp_path: Path) -> None:
    trainer = Trainer(_config(tmp_path), SlicePool(tiny_cases(), crop=(32, 32)), tiny_cases(1), torch.device("cpu"))
    trainer.run()
    for name in ("best.pt", "last.pt"):
        checkpoint = load_checkpoint(tmp_path / "out" / name)
        assert checkpoint.card["recipe"]["batch_size"] == 2 and checkpoint.card["steps"] == 3
        assert checkpoint.build_model() is not None


def test_early_stopping_after_five_epochs_without_improvement(tmp_path: Path, monkeypatch) -> None:
    import xnet_core.training.trainer as train

    monkeypatch.setattr(train, "validate", lambda *a, **k: {"val_loss": 1.0, "val_dice": 0.0})
    monkeypatch.setattr(train.Trainer, "save_weights", lambda self, name: None)
    monkeypatch.setattr(train.Trainer, "save_state", lambda self: None)
    monkeypatch.setattr(train.Trainer, "_step", lambda self: torch.tensor(1.0))  # the epoch logic is what is tested
    trainer = Trainer(_config(tmp_path, steps_per_epoch=1, max_epochs=50), SlicePool(tiny_cases(), crop=(32, 32)),
                      tiny_cases(1), torch.device("cpu"))
    state = trainer.run()
    assert state.epoch == 6  # epoch 1 sets the best; 5 epochs without strict improvement stop it
    # ReduceLROnPlateau(patience=2): cut after 3 bad epochs (Keras patience 3), at epoch 4.
    assert [h["lr"] for h in state.history][:5] == pytest.approx([1e-3, 1e-3, 1e-3, 2e-4, 2e-4])


def test_starting_weights_are_validated_and_stay_best_until_beaten(tmp_path: Path, monkeypatch) -> None:
    import xnet_core.training.trainer as train

    figures = iter([{"val_loss": 0.5, "val_dice": 0.7}, {"val_loss": 0.6, "val_dice": 0.72}])
    monkeypatch.setattr(train, "validate", lambda *a, **k: next(figures))
    trainer = Trainer(_config(tmp_path), SlicePool(tiny_cases(), crop=(32, 32)), tiny_cases(1), torch.device("cpu"))
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.validate_start()["val_loss"] == 0.5
    state = trainer.run()
    assert [h["epoch"] for h in state.history] == [0, 1] and state.history[0]["train_loss"] is None
    assert state.bad_epochs == 1, "epoch 1 did not beat the starting weights"
    best = load_checkpoint(tmp_path / "out" / "best.pt")
    assert best.card["epochs"] == 0 and best.card["steps"] == 0
    for name, value in best.state_dict.items():
        assert torch.equal(value, start[name]), f"best.pt holds the starting weights ({name})"
    assert load_checkpoint(tmp_path / "out" / "last.pt").card["steps"] == 3


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from pathlib import Path
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    from test_train import tiny_cases, _config
    from xnet_core.training.sampling import SlicePool
    from xnet_core.training.trainer import Trainer
    dist.init_process_group("gloo")
    out = Path({tmp!r})
    trainer = Trainer(_config(out, steps_per_epoch=2), SlicePool(tiny_cases(), crop=(32, 32)), tiny_cases(1),
                      torch.device("cpu"))
    trainer.run(max_steps=2)
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert all(torch.equal(gathered[0], g) for g in gathered), "replicas diverged"
    print("rank", dist.get_rank(), "ok")
    dist.destroy_process_group()
""")


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), tmp=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ok") == 2


def test_batchnorm_recalibration_matches_batch_statistics() -> None:
    from xnet_core.training.swa import recalibrate_batchnorm

    torch.manual_seed(0)
    model = XNet()
    pool = SlicePool(tiny_cases(1), crop=None, flip=False)
    images = torch.from_numpy(pool.batch(np.random.default_rng(1), 4)[0])
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen: dict[int, torch.Tensor] = {}
    hooks = [n.register_forward_pre_hook(lambda mod, inp, i=i: seen.setdefault(i, inp[0].detach().clone()))
             for i, n in enumerate(norms)]
    model.train()
    with torch.no_grad():
        model(images)  # train mode: every BN normalises with these batch statistics
    for hook in hooks:
        hook.remove()
    recalibrate_batchnorm(model, pool, np.random.default_rng(1), batches=1, batch_size=4, device=torch.device("cpu"))
    for i, norm in enumerate(norms):
        x = seen[i].double()
        assert torch.allclose(norm.running_mean.double(), x.mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-3)
        assert torch.allclose(norm.running_var.double(), x.var(dim=(0, 2, 3), unbiased=True), atol=1e-4, rtol=1e-3)
        assert norm.momentum == 0.01


def test_synthetic_pool_cache_round_trip(tmp_path: Path, monkeypatch) -> None:
    import xnet_core.training.cases as train

    made = []

    def fake_case(seed, normalisation="robust", augment=True):
        made.append(seed)
        return tiny_cases(1)[0]

    monkeypatch.setattr(train, "synthetic_volume_slices", fake_case)
    first = train.synthetic_pool([5, 6], cache_dir=tmp_path)
    second = train.synthetic_pool([5, 6], cache_dir=tmp_path)
    assert made == [5, 6], "the second pool comes from the cache"
    assert all(np.array_equal(a.slices, b.slices) and np.array_equal(a.masks, b.masks) for a, b in zip(first, second))


def test_cli_train_starts_from_given_weights(tmp_path: Path, monkeypatch, random_checkpoint, capsys) -> None:
    import json

    import xnet_core.training.cases as train
    from app.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(train, "synthetic_pool", lambda seeds, workers=1, augment=True, cache_dir=None, recipe=None:
                        tiny_cases(len(seeds)))
    code = main(["train", "--out", str(tmp_path / "run"), "--init", str(random_checkpoint.path),
                 "--train-cases", "1", "--val-cases", "1", "--steps-per-epoch", "1", "--epochs", "1",
                 "--crop", "32x32", "--batch", "2", "--lr", "2e-4", "--slice-dice", "0.5",
                 "--size-balance", "0.25"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "run" / "last.card.json").read_text())
    assert "1 synthetic chronic-stroke cases (seeds 0..0) pasted into the MNI152 2009a template" in card["training_data"]
    assert random_checkpoint.sha256 in card["initialised_from"]
    assert card["recipe"]["lr"] == 2e-4 and card["recipe"]["optimiser"].startswith("Adam lr 0.0002 ")
    assert [h["epoch"] for h in card["history"]] == [0, 1], "the --init weights are validated first"
    assert card["history"][1]["lr"] == 2e-4, "the optimiser ran with the asked learning rate"
    assert card["recipe"]["slice_dice_weight"] == 0.5 and card["recipe"]["size_balance"] == 0.25
    assert "+ 0.5 (1 - mean soft Dice of lesion slices)" in card["recipe"]["loss"]
    assert main(["train", "--out", str(tmp_path / "run"), "--crop", "30x30"]) == 2
    assert main(["train", "--out", str(tmp_path / "run"), "--slice-dice", "-1"]) == 2
    assert main(["train", "--out", str(tmp_path / "run"), "--size-balance", "-0.5"]) == 2
    assert main(["train", "--out", str(tmp_path / "run"), "--negative-share", "1.5"]) == 2
    assert main(["train", "--out", str(tmp_path / "run"), "--backgrounds", str(tmp_path / "missing")]) == 2


def test_case_stream_grows_in_seed_order_and_stops_when_closed(monkeypatch) -> None:
    import threading

    import xnet_core.training.cases as train

    gate = threading.Event()

    def slow_case(seed, normalisation="robust", augment=True):
        if seed >= 3:
            gate.wait(0.5)  # cases 3.. are "still being prepared" until the gate opens (or 0.5 s pass)
        case = tiny_cases(1)[0]
        case.slices[:] = seed
        return case

    monkeypatch.setattr(train, "synthetic_volume_slices", slow_case)
    stream = train.CaseStream([0, 1, 2, 3, 4, 5])
    ready = stream.wait_for(2)
    assert len(ready) >= 2 and not stream.done
    gate.set()
    assert stream.wait_for(100) is ready, "asking for more than all waits for all, in the same list"
    assert [float(c.slices.flat[0]) for c in ready] == [0, 1, 2, 3, 4, 5] and stream.done
    stream.close()

    gate.clear()
    stopped = train.CaseStream([0, 1, 2, 3, 4, 5])
    stopped.wait_for(3)
    stopped.close()  # while case 3 is being prepared: it is kept, cases 4 and 5 are never made
    assert [float(c.slices.flat[0]) for c in stopped.cases] == [0, 1, 2, 3]


def test_case_stream_worker_processes_read_the_cache_and_report_errors(tmp_path: Path, monkeypatch) -> None:
    import xnet_core.training.cases as train

    for seed in (7, 8, 9):
        case = tiny_cases(1)[0]
        case.slices[:] = seed
        np.savez(tmp_path / f"case-{seed}.npz", slices=case.slices, masks=case.masks, brain=case.brain)
    stream = train.CaseStream([7, 8, 9], workers=2, cache_dir=tmp_path)
    cases = stream.wait_for(3)
    stream.close()
    assert [float(c.slices.flat[0]) for c in cases] == [7, 8, 9]

    def broken(seed, normalisation="robust", augment=True):
        raise ValueError(f"seed {seed} broke")

    monkeypatch.setattr(train, "synthetic_volume_slices", broken)
    failing = train.CaseStream([1, 2])
    with pytest.raises(ValueError, match="seed 1 broke"):
        failing.wait_for(1)
    failing.close()


def test_cli_train_can_start_before_all_cases_are_ready(tmp_path: Path, monkeypatch, capsys) -> None:
    import xnet_core.training.cases as train
    from app.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(train, "synthetic_volume_slices",
                        lambda seed, normalisation="robust", augment=True: tiny_cases(1)[0])
    code = main(["train", "--out", str(tmp_path / "run"), "--train-cases", "3", "--val-cases", "1",
                 "--start-after", "1", "--steps-per-epoch", "1", "--epochs", "1", "--crop", "32x32",
                 "--batch", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "3 of 3 training cases were in the pool at the end" in err
    assert (tmp_path / "run" / "best.pt").is_file()
    assert main(["train", "--out", str(tmp_path / "run"), "--start-after", "-1"]) == 2


def test_synthetic_case_cache_changes_with_the_code_that_makes_cases(tmp_path: Path, monkeypatch) -> None:
    import xnet_core.training.cases as train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = train.synthetic_case_cache()
    assert first == train.synthetic_case_cache() and first.parent.name == "synthetic-cases"
    assert str(first).startswith(str(tmp_path / "cache"))
    generator = tmp_path / "generator.py"  # an absolute name replaces the module folder in the join
    generator.write_text("x = 1\n")
    monkeypatch.setattr(train, "CASE_CODE", (*train.CASE_CODE, str(generator)))
    before = train.synthetic_case_cache()
    generator.write_text("x = 2\n")
    assert train.synthetic_case_cache() not in (before, first), "an edited generator gets a fresh cache"


def test_average_weights_is_the_mean_and_refuses_other_architectures() -> None:
    from xnet_core.training.swa import average_weights

    first = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    second = {"w": torch.tensor([3.0, 6.0]).half(), "n": torch.tensor(5)}
    mean = average_weights([first, second])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and mean["w"].dtype == torch.float32
    assert int(mean["n"]) == 5, "integer buffers come from the last checkpoint"
    with pytest.raises(ValueError, match="different architectures"):
        average_weights([first, {"w": torch.zeros(3), "n": torch.tensor(1)}])


def test_keep_epochs_and_xnet_average(tmp_path: Path, monkeypatch, capsys) -> None:
    import json

    import xnet_core.training.cases as train
    from app.cli import main

    config = _config(tmp_path, max_epochs=2, keep_epochs=True)
    Trainer(config, SlicePool(tiny_cases(), crop=(32, 32)), tiny_cases(1), torch.device("cpu")).run()
    epochs = [tmp_path / "out" / f"epoch-{n}.pt" for n in (1, 2)]
    assert all(p.is_file() for p in epochs) and load_checkpoint(epochs[1]).card["steps"] == 6

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(train, "synthetic_pool", lambda seeds, workers=1, augment=True, cache_dir=None, recipe=None:
                        tiny_cases(len(seeds)))
    out = tmp_path / "swa.pt"
    assert main(["average", *map(str, epochs), "--out", str(out), "--precise-bn", "2", "--batch", "2",
                 "--train-cases", "2", "--device", "cpu"]) == 0, capsys.readouterr().err
    averaged, members = load_checkpoint(out), [load_checkpoint(p) for p in epochs]
    for name, value in averaged.state_dict.items():
        if "running_" in name or "num_batches" in name:
            continue  # re-estimated
        assert torch.allclose(value, (members[0].state_dict[name] + members[1].state_dict[name]) / 2), name
    assert any(not torch.equal(averaged.state_dict[n], members[1].state_dict[n])
               for n in averaged.state_dict if "running_mean" in n), "BatchNorm statistics were re-estimated"
    card = json.loads((tmp_path / "swa.card.json").read_text())
    assert [m.sha256 in line for m, line in zip(members, card["averaged_from"])] == [True, True]
    assert card["steps"] == 6 and "2 checkpoints" in card["weight_averaging"]
    assert main(["average", str(epochs[0]), "--out", str(out)]) == 2
    assert "two or more checkpoints" in capsys.readouterr().err
    assert main(["average", str(epochs[0]), str(out), "--out", str(out)]) == 2
    assert "is one of the checkpoints" in capsys.readouterr().err
