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
    Adversarial,
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


def test_ema_weights_match_an_independent_average_and_resume_exactly(tmp_path):
    """The averaged weights equal a float64 re-computation from the raw weights after every step."""
    seen: list[list[torch.Tensor]] = []

    def recording_loss(model, batch):
        if model.training and torch.is_grad_enabled():  # a training step on the raw weights
            seen.append([p.detach().double().clone() for p in model.parameters()])
        return mse_loss(model, batch)

    decay = 0.9
    with torch.random.fork_rng(devices=[]):
        res = fit(
            Net(0), TRAIN, VAL, loss_fn=recording_loss, epochs=3, batch_size=8, lr=1e-2, seed=0,
            progress=False, keep="last", ema_decay=decay, checkpoint_dir=tmp_path / "a",
        )  # fmt: skip
    raw = Net()
    load_checkpoint(tmp_path / "a", raw, which="last")
    after = seen[1:] + [[p.detach().double() for p in raw.parameters()]]  # raw weights after each step
    assert len(after) == res.history[-1]["step"] == 3 * math.ceil(37 / 8)
    ref = [p.clone() for p in after[0]]  # the first update copies
    for n, params in enumerate(after[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        ref = [d * e + (1 - d) * p for e, p in zip(ref, params)]
    for got, want in zip(res.model.parameters(), ref):
        assert torch.allclose(got.double(), want, atol=1e-6)
    assert not torch.allclose(res.model.body[0].weight.double(), after[-1][0], atol=1e-4)  # not the raw weights
    assert_same_state(dict(res.model.named_buffers()), dict(raw.named_buffers()))  # buffers from the trained model
    # validation scored the averaged weights
    with torch.no_grad():
        full = (res.model(VAL.x) - VAL.y).pow(2).mean().item()
    assert res.history[-1]["val_loss"] == pytest.approx(full, rel=1e-5)
    ema = Net()
    load_checkpoint(tmp_path / "a", ema, which="ema")
    assert_same_state(ema, res.model)
    # an interrupted run resumes to the same averaged weights; settings are recorded and enforced
    run(2, keep="last", ema_decay=decay, checkpoint_dir=tmp_path / "b")
    resumed = run(3, keep="last", ema_decay=decay, model_seed=5, checkpoint_dir=tmp_path / "b")
    plain = run(3, keep="last", ema_decay=decay)
    assert_same_state(resumed.model, plain.model)
    assert resumed.history == plain.history
    with pytest.raises(ValueError, match="other settings"):
        run(3, keep="last", checkpoint_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="no averaged weights"):
        run(1, checkpoint_dir=tmp_path / "c")
        load_checkpoint(tmp_path / "c", Net(), which="ema")
    with pytest.raises(ValueError, match="ema_decay"):
        run(1, ema_decay=1.0)


# ----------------------------------------------------------------------------------- adversarial
class Samples(torch.utils.data.Dataset):
    """Real 1-D samples from N(3, 0.5^2) (fixed by ``seed``)."""

    def __init__(self, n: int, seed: int):
        self.x = 3.0 + 0.5 * torch.randn(n, 1, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


class ToyGAN(nn.Module):
    """G(z) = a z + b, D(x) = MLP(x); the discriminator is a submodule, as fit(adversarial=) expects."""

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = nn.Linear(1, 1)
            self.discriminator = nn.Sequential(nn.Linear(1, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))

    def fake(self, n: int) -> torch.Tensor:
        return self.generator(torch.randn(n, 1))


class Counter:
    """Counts its calls (to check the alternating-step bookkeeping)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, model, batch):
        self.calls += 1
        return self.fn(model, batch)


def lsgan_d(model, batch):
    real = model.discriminator(batch["x"])
    with torch.no_grad():
        fake = model.fake(len(batch["x"]))
    d_fake = model.discriminator(fake)
    loss = 0.5 * ((real - 1).pow(2).mean() + d_fake.pow(2).mean())
    return loss, {"real": real.mean(), "fake": d_fake.mean()}


def lsgan_g(model, batch):
    return 0.5 * (model.discriminator(model.fake(len(batch["x"]))) - 1).pow(2).mean(), {}


def moment_loss(model, batch):
    """A non-adversarial generator term (matches the mean only)."""
    return (model.fake(len(batch["x"])).mean() - batch["x"].mean()).pow(2), {}


def gan_run(epochs, *, adversarial=None, model_seed=0, **kw):
    kw.setdefault("progress", False)
    adv = adversarial or Adversarial(d_loss_fn=lsgan_d, lr=2e-2, betas=(0.5, 0.999))
    return fit(
        ToyGAN(model_seed),
        Samples(64, 1),
        None,
        loss_fn=lsgan_g,
        epochs=epochs,
        batch_size=16,
        lr=2e-2,
        betas=(0.5, 0.999),
        keep="last",
        adversarial=adv,
        **kw,
    )


def test_adversarial_fit_moves_the_generator_to_the_data():
    """An LSGAN on 1-D data: the generator's offset moves from ~0 to the real mean (3)."""
    res = gan_run(40)
    b = res.model.generator.bias.detach().item()
    assert abs(b - 3.0) < 0.6, b
    h = res.history[-1]
    assert {"train/d_loss", "train/d/real", "train/d/fake"} <= set(h)
    assert math.isnan(h["val_loss"])


def test_alternating_steps_warmup_and_two_optimisers():
    d_count, g_count = Counter(lsgan_d), Counter(lsgan_g)
    adv = Adversarial(d_loss_fn=d_count, g_loss_fn=g_count, weight=0.5, warmup_steps=6, d_steps=2, lr=1e-2)
    model = ToyGAN(0)
    d0 = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    g0 = {k: v.clone() for k, v in model.generator.state_dict().items()}
    # warm-up only (4 steps per epoch, 6 warm-up steps: 1 epoch leaves the discriminator untouched)
    res = fit(
        model,
        Samples(64, 1),
        None,
        loss_fn=moment_loss,
        epochs=1,
        batch_size=16,
        lr=1e-2,
        keep="last",
        adversarial=adv,
        progress=False,
    )
    assert d_count.calls == 0 and g_count.calls == 0
    assert_same_state(model.discriminator.state_dict(), d0)
    assert not torch.equal(model.generator.weight, g0["weight"]) or not torch.equal(model.generator.bias, g0["bias"])
    assert "train/d_loss" not in res.history[0] and "train/adv" not in res.history[0]
    # three epochs = 12 generator steps: 6 warm-up, then 6 with 2 discriminator steps each
    d_count.calls = g_count.calls = 0
    res = fit(
        ToyGAN(0),
        Samples(64, 1),
        None,
        loss_fn=moment_loss,
        epochs=3,
        batch_size=16,
        lr=1e-2,
        keep="last",
        adversarial=adv,
        progress=False,
    )
    assert [r["step"] for r in res.history] == [4, 8, 12]
    assert d_count.calls == 12 and g_count.calls == 6
    # epoch 2 mixes 2 warm-up and 2 adversarial steps: the adversarial logs average over the latter only
    assert "train/adv" in res.history[1] and "train/d_loss" in res.history[1]
    assert "train/adv" not in res.history[0]


def test_each_optimiser_only_moves_its_own_parameters():
    frozen_g = Adversarial(d_loss_fn=lsgan_d, lr=1e-2)
    model = ToyGAN(0)
    g0 = {k: v.clone() for k, v in model.generator.state_dict().items()}

    def zero_g(model, batch):  # a generator loss without gradient w.r.t. the generator
        return (model.discriminator(batch["x"]) * 0).sum() + model.generator.bias.detach().sum() * 0, {}

    with pytest.raises(RuntimeError):  # nothing to differentiate for the generator
        fit(model, Samples(32, 1), None, loss_fn=zero_g, epochs=1, batch_size=16, adversarial=frozen_g, progress=False)
    # the discriminator step ran before the generator's failed: it moved D only
    assert_same_state(model.generator.state_dict(), g0)


def test_adversarial_resume_is_exact_and_checkpoints_the_discriminator_optimiser(tmp_path):
    full = gan_run(3, checkpoint_dir=tmp_path / "a")
    gan_run(2, checkpoint_dir=tmp_path / "b")
    resumed = gan_run(3, model_seed=5, checkpoint_dir=tmp_path / "b")
    assert_same_state(full.model, resumed.model)
    no_val = [[{k: v for k, v in h.items() if k != "val_loss"} for h in r.history] for r in (resumed, full)]
    assert no_val[0] == no_val[1]
    ck = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)
    assert {"d_optimizer", "d_scaler"} <= set(ck)
    assert ck["settings"]["adversarial"]["d_steps"] == 1 and ck["settings"]["adversarial"]["betas"] == [0.5, 0.999]
    other = Adversarial(d_loss_fn=lsgan_d, lr=1e-3, betas=(0.5, 0.999))
    with pytest.raises(ValueError, match="other settings"):
        gan_run(4, adversarial=other, checkpoint_dir=tmp_path / "a")


def test_plain_fit_checkpoints_are_unchanged_by_the_adversarial_option(tmp_path):
    run(1, checkpoint_dir=tmp_path)
    ck = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert "d_optimizer" not in ck and "adversarial" not in ck["settings"]


def test_adversarial_arguments_are_checked():
    with pytest.raises(ValueError, match="no submodule 'critic'"):
        gan_run(1, adversarial=Adversarial(d_loss_fn=lsgan_d, discriminator="critic"))
    with pytest.raises(ValueError, match="d_steps"):
        Adversarial(d_loss_fn=lsgan_d, d_steps=0)
    with pytest.raises(ValueError, match="betas"):
        Adversarial(d_loss_fn=lsgan_d, betas=(0.5, 1.0))
    with pytest.raises(ValueError, match="cmrkit.train.Adversarial"):
        fit(ToyGAN(), Samples(8, 1), None, loss_fn=lsgan_g, epochs=1, batch_size=4, adversarial={"d": 1})

    def nan_d(model, batch):
        return model.discriminator(batch["x"]).mean() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="discriminator loss"):
        gan_run(1, adversarial=Adversarial(d_loss_fn=nan_d))


def test_ema_decay_setting_reads_null_or_a_decay_and_names_the_setting():
    from cmrkit.train import ema_decay_setting

    assert ema_decay_setting(None, "ch5.diffusion_ema") is None
    assert ema_decay_setting(0.999, "ch5.diffusion_ema") == 0.999 and isinstance(ema_decay_setting(0.5, "x"), float)
    for bad in (0, 1, 1.5, True, "0.9"):
        with pytest.raises(ValueError, match=r"ch6.diffusion_ema must be a decay in \(0, 1\) or null"):
            ema_decay_setting(bad, "ch6.diffusion_ema")
