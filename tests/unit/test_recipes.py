"""gluon_cifar.training.recipes: schedules against their formulas at every update, soft targets, a run with
every recipe piece."""
import math

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, np
from mxnet.gluon import nn

from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import make_train_transform
from gluon_cifar.settings import Run, RunConfig
from gluon_cifar.training import recipes
from gluon_cifar.training.loop import fit

LR, EPOCHS, BATCHES = 0.2, 4, 5


TOTAL = EPOCHS * BATCHES  # 20 updates; warm-up 0.3 -> 6 updates


def expected_lr(name, t, warmup):
    """The schedules' formulas at update t = 1..TOTAL, written out independently of MXNet."""
    if name == "step":  # lr_period 2, lr_decay 0.5: halved at the first update of epochs 3, 5, ...
        return LR * 0.5 ** ((t - 1) // (2 * BATCHES))
    if t < warmup:
        return LR * t / warmup
    progress = (t - warmup) / (TOTAL - warmup)
    return LR * (1 + math.cos(math.pi * progress)) / 2 if name == "cosine" else LR * (1 - progress)


@pytest.mark.parametrize("name,warmup_frac,warmup", [
    ("step", 0.0, 0), ("cosine", 0.0, 0), ("cosine", 0.3, 6), ("onecycle", 0.3, 6), ("onecycle", 0.1, 2)])
def test_schedule_matches_its_formula_at_every_update(name, warmup_frac, warmup):
    scheduler = recipes.make_scheduler(RunConfig(lr_schedule=name, lr=LR, epochs=EPOCHS, lr_period=2, lr_decay=0.5,
                                                 warmup_frac=warmup_frac), BATCHES)
    got = [scheduler(t) for t in range(1, TOTAL + 1)]
    assert got == pytest.approx([expected_lr(name, t, warmup) for t in range(1, TOTAL + 1)], abs=1e-12)
    if name != "step":  # the peak is reached where the warm-up ends; the last update is at 0
        assert max(got) == pytest.approx(LR if warmup else expected_lr(name, 1, 0)) and got[-1] == pytest.approx(0)


def test_trainer_steps_with_the_schedule_it_was_handed():
    """gluon.Trainer counts updates from 1 and, without its own learning_rate, follows the schedule."""
    net = nn.Dense(2)
    net.initialize()
    scheduler = recipes.make_scheduler(RunConfig(lr_schedule="onecycle", lr=LR, epochs=EPOCHS, warmup_frac=0.3),
                                       BATCHES)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"momentum": 0.9, "lr_scheduler": scheduler})
    seen = []
    for _ in range(TOTAL):
        with autograd.record():
            loss = net(np.ones((1, 3))).sum()
        loss.backward()
        trainer.step(1)
        seen.append(trainer.learning_rate)
    assert seen == pytest.approx([expected_lr("onecycle", t, 6) for t in range(1, TOTAL + 1)], abs=1e-12)


def test_the_chapter_schedule_is_still_the_default():
    scheduler = recipes.make_scheduler(RunConfig(lr=0.02, epochs=20, lr_period=4, lr_decay=0.9), 3)
    assert isinstance(scheduler, mx.lr_scheduler.FactorScheduler)
    assert [scheduler(t) for t in (1, 12, 13, 24, 25)] == pytest.approx([0.02, 0.02, 0.018, 0.018, 0.0162])


def test_label_smoothing_and_mixup_make_the_gluoncv_targets():
    X = np.array(onp.random.default_rng(1).normal(size=(4, 3, 2, 2)).astype("float32"))
    y = np.array([0, 2, 1, 2], dtype="int32")
    X_same, smoothed = recipes.SoftTargets(3, label_smoothing=0.3)(X, y)
    assert X_same is X
    assert smoothed.asnumpy() == pytest.approx(onp.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8],
                                                          [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]))
    onp.random.seed(5)
    X_mixed, mixed = recipes.SoftTargets(3, mixup_alpha=0.4)(X, y)
    onp.random.seed(5)
    lam = onp.random.beta(0.4, 0.4)
    assert X_mixed.asnumpy() == pytest.approx(lam * X.asnumpy() + (1 - lam) * X.asnumpy()[::-1], abs=1e-6)
    one_hot = onp.eye(3)[[0, 2, 1, 2]]
    assert mixed.asnumpy() == pytest.approx(lam * one_hot + (1 - lam) * one_hot[::-1], abs=1e-6)


def test_train_runs_with_mixup_smoothing_and_onecycle(kaggle_dir, tmp_path):
    """The real train() loop on real PNGs (a small net keeps it quick): dense targets, schedule ends at 0."""
    reorg = reorg_cifar10_data(kaggle_dir, 0.25, str(tmp_path / "reorg"))
    loaders = make_loaders(load_datasets(reorg), 4, make_train_transform("padcrop"))
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3), nn.GlobalAvgPool2D(), nn.Dense(3))
    net.initialize(mx.init.Xavier())
    config = RunConfig(epochs=2, lr=0.1, batch_size=4, lr_schedule="onecycle", warmup_frac=0.3,
                       label_smoothing=0.1, mixup_alpha=0.2, devices="cpu")
    history = fit(net, loaders["train"], loaders["valid"], Run(config), num_classes=3)
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["lr"] == pytest.approx(0) and all(math.isfinite(h["train_loss"]) for h in history)


def test_a_schedule_to_zero_over_few_updates_warns_once_and_the_chapters_step_schedule_never():
    from gluon_cifar.training.report import SHORT_SCHEDULE_UPDATES, short_schedule_note
    strong = RunConfig(lr_schedule="onecycle", epochs=1, lr=0.2, warmup_frac=0.3)
    note = short_schedule_note(strong, 35)
    assert note.startswith("warning: the onecycle schedule spans only 35 updates (1 epochs)")
    assert "near chance" in note and "running statistics" in note
    assert short_schedule_note(strong, SHORT_SCHEDULE_UPDATES) is None
    assert short_schedule_note(RunConfig(lr_schedule="cosine", epochs=2), 10) is not None
    assert short_schedule_note(RunConfig(epochs=1), 35) is None  # the chapter's step schedule
