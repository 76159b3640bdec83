"""Tests for cmrkit.train (the shared training loop)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cmrkit.train import (
    CHECKPOINT_NAME,
    _EpochSampler,
    fit,
    load_checkpoint,
    load_model,
    save_model,
)
from cmrkit.utils import REPO_ROOT


class Pairs(torch.utils.data.Dataset):
    """y = x @ W + noise, fixed by ``seed``."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 1.0], [2.0, 0.3]]) + 0.1 * torch.randn(
            n, 2, generator=g
        )

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Net(nn.Module):
    """Tiny net with BatchNorm (buffers) and dropout (consumes the RNG during training)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.body = nn.Sequential(
                nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2)
            )

    def forward(self, x):
        return self.body(x)


def mse_loss(model, batch):
    pred = model(batch["x"])
    loss = (pred - batch["y"]).pow(2).mean()
    return loss, {"mae": (pred - batch["y"]).abs().mean(), "const": 2.0}


TRAIN, VAL = Pairs(37, 1), Pairs(11, 2)  # 37: the last batch is short


def run(epochs, *, seed=0, model_seed=0, global_seed=None, **kw):
    """fit() on the toy data; ``global_seed`` sets the caller's global torch RNG first (inside a
    fork), to show the result does not depend on it (as in a fresh process)."""
    kw.setdefault("progress", False)
    with torch.random.fork_rng(devices=[]):
        if global_seed is not None:
            torch.manual_seed(global_seed)
        return fit(Net(model_seed), TRAIN, VAL, loss_fn=mse_loss, epochs=epochs, batch_size=8, lr=1e-2, seed=seed, **kw)


def assert_same_state(a: nn.Module | dict, b: nn.Module | dict):
    sa = a if isinstance(a, dict) else a.state_dict()
    sb = b if isinstance(b, dict) else b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_fit_learns_and_records_history():
    res = run(6)
    h = res.history
    assert [r["epoch"] for r in h] == list(range(1, 7))
    assert h[-1]["step"] == 6 * math.ceil(37 / 8)
    assert h[-1]["val_loss"] < 0.5 * h[0]["val_loss"]
    assert h[0]["train/const"] == pytest.approx(2.0) and "val/mae" in h[0]
    assert res.best_epoch == 1 + min(range(6), key=lambda i: h[i]["val_loss"])
    assert res.best_val == h[res.best_epoch - 1]["val_loss"]
    assert not res.model.training


def test_validation_loss_is_sample_weighted_mean():
    res = run(1)
    m = res.model  # best == only epoch, eval mode
    with torch.no_grad():
        full = (m(VAL.x) - VAL.y).pow(2).mean().item()
    # val batches are 8 + 3 samples: the weighted mean of batch means is the full mean
    assert res.history[0]["val_loss"] == pytest.approx(full, rel=1e-5)


def test_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = run(2, seed=3, global_seed=1), run(2, seed=3, global_seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert_same_state(a.model, b.model)
    assert a.history == b.history
    c = run(2, seed=4)
    assert not torch.equal(a.model.body[0].weight, c.model.body[0].weight)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    full = run(3, checkpoint_dir=tmp_path / "a", global_seed=1)
    part = run(2, checkpoint_dir=tmp_path / "b", global_seed=2)
    assert len(part.history) == 2
    # a fresh process would build the model anew: start from other weights to prove they are loaded
    resumed = run(3, model_seed=99, checkpoint_dir=tmp_path / "b", global_seed=3)
    assert_same_state(full.model, resumed.model)
    assert resumed.history == full.history
    assert (resumed.best_epoch, resumed.best_val) == (full.best_epoch, full.best_val)
    # last weights too (not only the selected ones)
    ma, mb = Net(), Net()
    load_checkpoint(tmp_path / "a", ma, which="last")
    load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME, mb, which="last")
    assert_same_state(ma, mb)
    # resuming a finished run trains nothing and returns the same selection
    again = run(3, model_seed=7, checkpoint_dir=tmp_path / "b")
    assert again.history == full.history
    assert_same_state(again.model, full.model)


def test_checkpoint_is_weights_only_atomic_and_holds_best(tmp_path):
    res = run(3, checkpoint_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [CHECKPOINT_NAME]  # no temporary leftovers
    ck = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ck["epoch"] == 3 and ck["best_epoch"] == res.best_epoch
    assert {"model", "optimizer", "scaler", "history", "best_model", "settings", "step"} <= set(ck)
    m = Net(5)
    meta = load_checkpoint(tmp_path, m)
    assert meta["best_epoch"] == res.best_epoch
    assert_same_state(m, res.model)


def test_resume_refuses_other_settings(tmp_path):
    run(1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        run(2, seed=1, checkpoint_dir=tmp_path)
    res = run(1, seed=1, checkpoint_dir=tmp_path, resume=False)  # start afresh instead
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["settings"]["seed"] == 1
    assert len(res.history) == 1


def test_max_steps_and_no_validation():
    res = fit(Net(), TRAIN, None, loss_fn=mse_loss, epochs=10, batch_size=8, max_steps=7, progress=False)
    assert [r["step"] for r in res.history] == [5, 7]
    assert math.isnan(res.history[0]["val_loss"])
    assert res.best_val == min(r["train_loss"] for r in res.history)


def test_bad_arguments_and_non_finite_loss():
    with pytest.raises(ValueError, match="epochs"):
        run(0)
    with pytest.raises(ValueError, match="empty"):
        fit(Net(), Pairs(0, 0), None, loss_fn=mse_loss, epochs=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="amp"):
        run(1, amp="int8")

    def bad(model, batch):
        return model(batch["x"]).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        fit(Net(), TRAIN, VAL, loss_fn=bad, epochs=1, batch_size=8, progress=False)


def test_bf16_autocast_runs_on_cpu():
    res = run(1, amp="bf16")
    assert math.isfinite(res.history[0]["train_loss"])


def test_epoch_sampler_shuffles_per_epoch_and_partitions_ranks():
    e0 = list(_EpochSampler(10, seed=0, epoch=0, rank=0, world=1, shuffle=True, pad=True))
    e1 = list(_EpochSampler(10, seed=0, epoch=1, rank=0, world=1, shuffle=True, pad=True))
    assert sorted(e0) == list(range(10)) and e0 != e1
    assert e0 == list(_EpochSampler(10, seed=0, epoch=0, rank=0, world=1, shuffle=True, pad=True))
    assert e1 != list(_EpochSampler(10, seed=1, epoch=0, rank=0, world=1, shuffle=True, pad=True))
    parts = [list(_EpochSampler(10, seed=0, epoch=0, rank=r, world=3, shuffle=True, pad=True)) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4]  # padded to equal length
    assert sorted(set(sum(parts, []))) == list(range(10))
    val = [list(_EpochSampler(10, seed=0, epoch=0, rank=r, world=3, shuffle=False, pad=False)) for r in range(3)]
    assert sorted(sum(val, [])) == list(range(10))  # no duplicates for validation


def test_save_and_load_model(tmp_path):
    net = Net(1).eval()
    with pytest.raises(ValueError, match="not allowed"):
        save_model(tmp_path / "x.pt", net, {"a": torch.ones(1)})
    p = save_model(tmp_path / "m.pt", net, {"seed": 1}, extra={"scale_factor": torch.tensor(0.18), "note": "x"})
    with pytest.raises(ValueError, match="outside cmrkit"):
        load_model(p)  # the test class is not in the cmrkit package
    loaded = load_model(p, builder=lambda cfg: Net(cfg["seed"] + 1))
    assert_same_state(loaded.model, net)
    assert loaded.config == {"seed": 1} and loaded.extra["note"] == "x"
    assert loaded.extra["scale_factor"].item() == pytest.approx(0.18)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


@pytest.mark.slow
def test_ddp_two_processes_on_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "cmrkit.train",
        "--selftest",
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert_same_state(r0["state_dict"], r1["state_dict"])  # weights and BatchNorm buffers
    assert r0["history"] == r1["history"] and len(r0["history"]) == 2
    # 40 samples, 2 ranks x batch 4 -> 5 steps per epoch
    assert r0["history"][-1]["step"] == 10
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CHECKPOINT_NAME]
    ck = torch.load(tmp_path / "ckpt" / CHECKPOINT_NAME, weights_only=True)
    assert ck["settings"]["world_size"] == 2
    assert_same_state(ck["best_model"], r0["state_dict"])


def test_keep_last_returns_the_final_weights_and_resumes(tmp_path):
    res = run(4, keep="last", checkpoint_dir=tmp_path / "a")
    last = Net()
    load_checkpoint(tmp_path / "a", last, which="last")
    assert_same_state(res.model, last)
    assert res.best_epoch == 4 and res.best_val == res.history[-1]["val_loss"]
    # the default keeps the best epoch, which differs here from the last one's weights
    best = run(4)
    assert best.history == res.history
    if best.best_epoch != 4:
        assert not torch.equal(best.model.body[0].weight, res.model.body[0].weight)
    # an interrupted keep="last" run resumes to the same final weights
    run(2, keep="last", checkpoint_dir=tmp_path / "b")
    resumed = run(4, keep="last", model_seed=5, checkpoint_dir=tmp_path / "b")
    assert_same_state(resumed.model, res.model)
    with pytest.raises(ValueError, match="keep must be"):
        run(1, keep="first")


def test_adam_betas_are_used_and_recorded(tmp_path):
    a = run(2, betas=(0.9, 0.99), checkpoint_dir=tmp_path)
    b = run(2)
    assert not torch.equal(a.model.body[0].weight, b.model.body[0].weight)
    ck = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ck["settings"]["betas"] == [0.9, 0.99]
    with pytest.raises(ValueError, match="other settings"):
        run(3, checkpoint_dir=tmp_path)  # resuming with the default betas is refused
    with pytest.raises(ValueError, match="betas"):
        run(1, betas=(1.0, 0.9))
