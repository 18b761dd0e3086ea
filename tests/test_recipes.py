"""The opt-in recipes: schedules against their formulas, padcrop/cutout, soft targets, flip TTA,
and `--recipe strong` end to end through the real CLI."""
import json
import math
import os
import random
import subprocess
import sys

import mxnet as mx
import numpy as onp
import pandas as pd
import pytest
from scipy import stats
from mxnet import autograd, gluon, np
from mxnet.gluon import nn

from conftest import make_kaggle_dir
from gluon_cifar import predict, train
from gluon_cifar.training import recipes
from gluon_cifar.settings import RunConfig
from gluon_cifar.training.loop import fit
from gluon_cifar.errors import InputError
from gluon_cifar.deploy.export import export_model, load_exported
from gluon_cifar.model import get_net
from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import ReflectPad, make_train_transform
from gluon_cifar.deploy.predict import predict_logits
from gluon_cifar.images import CIFAR10_MEAN, CIFAR10_STD, list_images, read_image

LR, EPOCHS, BATCHES = 0.2, 4, 5
TOTAL = EPOCHS * BATCHES  # 20 updates; warm-up 0.3 -> 6 updates
ALPHA = 1e-3  # the chance that a correct transform fails one distribution check


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
    scheduler = recipes.make_scheduler(name, LR, EPOCHS, BATCHES, lr_period=2, lr_decay=0.5,
                                       warmup_frac=warmup_frac)
    got = [scheduler(t) for t in range(1, TOTAL + 1)]
    assert got == pytest.approx([expected_lr(name, t, warmup) for t in range(1, TOTAL + 1)], abs=1e-12)
    if name != "step":  # the peak is reached where the warm-up ends; the last update is at 0
        assert max(got) == pytest.approx(LR if warmup else expected_lr(name, 1, 0)) and got[-1] == pytest.approx(0)


def test_trainer_steps_with_the_schedule_it_was_handed():
    """gluon.Trainer counts updates from 1 and, without its own learning_rate, follows the schedule."""
    net = nn.Dense(2)
    net.initialize()
    scheduler = recipes.make_scheduler("onecycle", LR, EPOCHS, BATCHES, 2, 0.5, 0.3)
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
    scheduler = recipes.make_scheduler("step", 0.02, 20, 3, lr_period=4, lr_decay=0.9)
    assert isinstance(scheduler, mx.lr_scheduler.FactorScheduler)
    assert [scheduler(t) for t in (1, 12, 13, 24, 25)] == pytest.approx([0.02, 0.02, 0.018, 0.018, 0.0162])


def random_image(seed=0):
    return onp.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=onp.uint8)


def to_pixels(tensor):
    """Undo ToTensor + Normalize: CHW floats back to HWC 0-255 values."""
    chw = tensor.asnumpy() * onp.array(CIFAR10_STD)[:, None, None] + onp.array(CIFAR10_MEAN)[:, None, None]
    return onp.rint(chw.transpose(1, 2, 0) * 255)


def test_reflect_pad_mirrors_without_repeating_the_edge():
    img = random_image()
    padded = ReflectPad(4)(np.array(img)).asnumpy()
    assert (padded == onp.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")).all()
    assert (padded[4, 3] == img[0, 1]).all()


def padcrop_windows(n):
    """(top, left, mirrored) of `n` padcrop outputs, each found among the 9 x 9 x 2 unresampled windows
    of the reflect-padded image and their mirrors (a KeyError if one is not such a window)."""
    img = random_image()
    padded = onp.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    windows = {}
    for dy in range(9):
        for dx in range(9):
            window = padded[dy:dy + 32, dx:dx + 32]
            windows[window.tobytes()], windows[window[:, ::-1].tobytes()] = (dy, dx, 0), (dy, dx, 1)
    transform = make_train_transform("padcrop")
    return [windows[to_pixels(transform(np.array(img))).astype(onp.uint8).tobytes()] for _ in range(n)]


def cutout_corners(n, size=8):
    """Top-left corners of the mean-pixel squares `n` padcrop + cutout outputs of a white image hold."""
    white, corners = np.array(onp.full((32, 32, 3), 255, dtype=onp.uint8)), []
    transform = make_train_transform("padcrop", cutout=size)
    for _ in range(n):
        ys, xs = onp.nonzero((to_pixels(transform(white)) != 255).any(axis=2))
        assert len(ys) == size * size
        corners.append((ys.min(), xs.min()))
    return corners


def uniform(values, count):
    """p-value of a chi-square goodness of fit of integer `values` to the uniform distribution on 0 .. count-1."""
    return stats.chisquare(onp.bincount(values, minlength=count)).pvalue


def test_padcrop_draws_every_unresampled_window_and_mirror_uniformly():
    """Offsets and flips as GluonCV's RandomCrop + MXNet's flip draw them: uniform, on 900 draws."""
    random.seed(0)
    mx.random.seed(0)
    draws = padcrop_windows(900)
    for k, count in ((0, 9), (1, 9), (2, 2)):
        assert uniform([draw[k] for draw in draws], count) > ALPHA


def test_cutout_square_lies_anywhere_inside_the_image_uniformly():
    random.seed(0)
    corners = cutout_corners(500)
    for k in (0, 1):
        assert uniform([corner[k] for corner in corners], 32 - 8 + 1) > ALPHA


def test_cutout_fills_one_square_with_the_mean_pixel():
    white = onp.full((32, 32, 3), 255, dtype=onp.uint8)
    pixels = to_pixels(make_train_transform("padcrop", cutout=8)(np.array(white)))
    ys, xs = onp.nonzero((pixels != 255).any(axis=2))
    assert len(ys) == 64 and ys.max() - ys.min() == 7 and xs.max() - xs.min() == 7
    assert (pixels[ys[0], xs[0]] == [int(255 * m) for m in CIFAR10_MEAN]).all()


@pytest.mark.parametrize("augment,cutout", [("chapter", 8), ("padcrop", 32), ("padcrop", -1)])
def test_cutout_out_of_range_or_without_padcrop_is_an_input_error(augment, cutout):
    with pytest.raises(InputError):
        make_train_transform(augment, cutout)


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
    history = fit(net, loaders["train"], loaders["valid"], config, num_classes=3)
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["lr"] == pytest.approx(0) and all(math.isfinite(h["train_loss"]) for h in history)


@pytest.fixture(scope="module")
def net():
    mx.random.seed(0)
    net = get_net([mx.cpu()], num_classes=3)
    net.hybridize()
    return net


def test_flip_tta_is_the_mean_of_the_image_and_mirror_logits(net):
    X = np.array(onp.random.default_rng(2).normal(size=(3, 3, 32, 32)).astype("float32"))
    by_hand = (net(X) + net(np.array(X.asnumpy()[:, :, :, ::-1].copy()))) / 2
    tta = predict_logits(net, X, "flip")
    assert tta.asnumpy() == pytest.approx(by_hand.asnumpy(), abs=1e-5)
    assert not onp.allclose(tta.asnumpy(), net(X).asnumpy(), atol=1e-5)


def test_flip_tta_on_a_mirror_symmetric_image_is_plain_prediction(net):
    half = onp.random.default_rng(3).normal(size=(2, 3, 32, 16)).astype("float32")
    X = np.array(onp.concatenate([half, half[:, :, :, ::-1]], axis=3))
    assert predict_logits(net, X, "flip").asnumpy() == pytest.approx(net(X).asnumpy(), abs=1e-5)


def test_predict_cli_flip_tta_on_the_exported_model(kaggle_dir, tmp_path):
    """A linear model on raw pixels is far from mirror-invariant, so flip TTA changes some predictions."""
    images = os.path.join(kaggle_dir, "test")
    mx.random.seed(1)
    net = nn.HybridSequential()
    net.add(nn.Dense(3))
    net.initialize()
    net.hybridize()
    net(np.zeros((1, 3, 32, 32)))
    export_model(net, str(tmp_path / "model"), ["airplane", "automobile", "bird"])
    out = tmp_path / "tta.csv"
    predict.main(["--model", str(tmp_path / "model"), "--images", images, "--output", str(out), "--tta", "flip"])
    exported, classes = load_exported(str(tmp_path / "model"), mx.cpu())
    X = np.stack([data_transforms.test_transform()(read_image(path)) for _, path in list_images(images)])
    mirror = np.array(X.asnumpy()[:, :, :, ::-1].copy())
    expected = ((exported(X) + exported(mirror)) / 2).argmax(axis=1).asnumpy().astype(int)
    assert pd.read_csv(out)["label"].tolist() == [classes[i] for i in expected]
    assert (exported(X).argmax(axis=1).asnumpy().astype(int) != expected).any()


def test_recipe_presets_and_explicit_flags_override_them():
    strong = train.parse_config(["--recipe", "strong"])
    assert (strong.augment, strong.lr_schedule, strong.lr, strong.label_smoothing, strong.epochs, strong.tta,
            strong.warmup_frac) == ("padcrop", "onecycle", 0.2, 0.1, 30, "flip", 0.3)
    mine = train.parse_config(["--recipe", "strong", "--lr", "0.05", "--label-smoothing", "0", "--tta", "none"])
    assert (mine.lr, mine.label_smoothing, mine.tta, mine.augment) == (0.05, 0.0, "none", "padcrop")
    chapter = train.parse_config([])
    assert (chapter.augment, chapter.lr_schedule, chapter.lr, chapter.label_smoothing, chapter.mixup_alpha,
            chapter.tta, chapter.warmup_frac, chapter.epochs) == ("chapter", "step", 0.1, 0.0, 0.0, "none", 0.0, 5)


@pytest.mark.parametrize("flags,message", [(["--label-smoothing", "1"], "--label-smoothing"),
                                           (["--warmup-frac", "-0.1"], "--warmup-frac"),
                                           (["--mixup-alpha", "-1"], "--mixup-alpha"),
                                           (["--cutout", "8"], "padcrop"),
                                           (["--augment", "padcrop", "--cutout", "32"], "cutout")])
def test_bad_recipe_values_are_one_line_errors_before_any_work(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data-dir", str(tmp_path), *flags, "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "out")


STANDIN_TORCH = os.path.join(os.path.dirname(__file__), "foreign")  # torch/__init__.py reporting 2.11.0


@pytest.mark.slow
def test_strong_recipe_with_cutout_end_to_end_through_the_cli_beside_pytorch_2(tmp_path):
    """Where PyTorch 2 is installed (a stand-in here), as in most environments that still run MXNet."""
    kaggle = make_kaggle_dir(tmp_path / "kaggle", 6)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([STANDIN_TORCH, os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], env=env,
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "2.11.0", probe.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gluon_cifar.train", "--recipe", "strong", "--cutout", "8", "--data-dir", kaggle,
         "--epochs", "1", "--batch-size", "3", "--valid-ratio", "0.5", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    submission = pd.read_csv(out / "submission.csv")
    assert submission["id"].tolist() == list(range(1, 8))
    assert set(submission["label"]) <= {"airplane", "automobile", "bird"}
    # training's submission (the fused graph on CPU, with flip TTA) is the plain `predict --tta flip`'s
    predict.main(["--model", str(out / "model"), "--images", os.path.join(kaggle, "test"),
                  "--output", str(tmp_path / "plain.csv"), "--tta", "flip"])
    assert submission.equals(pd.read_csv(tmp_path / "plain.csv"))
    with open(out / "config.json") as f:
        config = json.load(f)
    assert {k: config[k] for k in ("recipe", "augment", "lr_schedule", "lr", "warmup_frac", "label_smoothing",
                                   "mixup_alpha", "tta", "epochs", "cutout")} == {
        "recipe": "strong", "augment": "padcrop", "lr_schedule": "onecycle", "lr": 0.2, "warmup_frac": 0.3,
        "label_smoothing": 0.1, "mixup_alpha": 0.0, "tta": "flip", "epochs": 1, "cutout": 8}
    with open(out / "metrics.json") as f:
        assert json.load(f)[-1]["lr"] == pytest.approx(0)
