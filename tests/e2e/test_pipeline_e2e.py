"""The whole path through the real commands: train -> export -> submission, and predict from the export."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as onp
import pandas as pd

from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import chapter_train_transform
from gluon_cifar.model import get_net
from gluon_cifar.training.loop import train

from conftest import CLASSES


def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600)


def test_cli_end_to_end_on_the_tiny_set_and_predict_reproduces_it(tiny_copy, tmp_path):
    out = tmp_path / "out"
    result = run("gluon_cifar.train", "--data-dir", tiny_copy, "--epochs", "1", "--batch-size", "32",
                 "--output-dir", str(out), "--devices", "cpu:2")
    assert result.returncode == 0, result.stderr
    for name in ("submission.csv", "model-symbol.json", "model-0000.params", "model-classes.json",
                 "metrics.json", "curves.png", "config.json"):
        assert (out / name).is_file(), name
    submission = pd.read_csv(out / "submission.csv")
    assert list(submission.columns) == ["id", "label"]
    assert submission["id"].tolist() == [1, 2, 3, 4, 5]
    assert set(submission["label"]) <= set(CLASSES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1] and 0 <= metrics[0]["valid_acc"] <= 1
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    predicted = tmp_path / "predicted.csv"
    result = run("gluon_cifar.predict", "--model", str(out / "model"), "--images",
                 os.path.join(tiny_copy, "test"), "--output", str(predicted))
    assert result.returncode == 0, result.stderr
    assert predicted.read_text() == (out / "submission.csv").read_text()


def test_training_on_two_cpu_contexts(kaggle_dir):
    devices = [mx.cpu(0), mx.cpu(1)]
    datasets = load_datasets(reorg_cifar10_data(kaggle_dir, 0.3))
    loaders = make_loaders(datasets, 4, chapter_train_transform())
    net = get_net(devices, num_classes=3)
    net.hybridize()
    history = train(net, loaders["train"], loaders["valid"], 2, 0.02, 5e-4, devices, 1, 0.5)
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["lr"] for h in history] == [0.02, 0.01]  # decayed at the start of epoch 2
    assert all(onp.isfinite(h["train_loss"]) for h in history)
    for param in net.collect_params().values():  # one model, whichever device holds it
        first, second = (d.asnumpy() for d in param.list_data())
        onp.testing.assert_allclose(first, second, rtol=1e-6, atol=1e-7, err_msg=param.name)
