"""The training command as a user meets it: runs with its defaults, says what it does while it runs, writes its
history every epoch, keeps and exports the best epoch, continues and reuses runs; predict writes probabilities.

In-process (`main([...])`, output through capsys: stderr is not a terminal there, as in a log file).
"""
import argparse
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import mxnet as mx
import numpy as onp
import pandas as pd
import pytest

from conftest import CLASSES, make_kaggle_dir
from gluon_cifar import predict, train
from gluon_cifar.settings import RunConfig
from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import chapter_train_transform
from gluon_cifar.deploy.export import load_weights
from gluon_cifar.launch import build_parser as launch_parser
from gluon_cifar.training.loop import fit
from gluon_cifar.model import get_net
from gluon_cifar.predict import build_parser as predict_parser
from gluon_cifar.training.report import EpochReport


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """3 classes of 20 images: 54 training and 6 validation images, 13 batches of the chapter's demo size 4."""
    return make_kaggle_dir(tmp_path_factory.mktemp("ux") / "kaggle", 20)


@pytest.fixture(scope="module")
def flat_data_dir(tmp_path_factory):
    """Every image the same: the net predicts one class for all 6 validation images, so validation accuracy
    is 1/3 at every epoch, and the best epoch (the first of the highest) is epoch 1 whatever training does."""
    root = make_kaggle_dir(tmp_path_factory.mktemp("flat") / "kaggle", 4, num_test=3)
    png = open(os.path.join(root, "train", "1.png"), "rb").read()
    for folder in ("train", "test"):
        for name in os.listdir(os.path.join(root, folder)):
            with open(os.path.join(root, folder, name), "wb") as f:
                f.write(png)
    return root


def train_main(capsys, *args):
    train.main([str(a) for a in args])
    return capsys.readouterr().out  # the run's log: stderr is for errors


def weights(source):
    """The parameters of `source` (an export prefix or a checkpoint) as NumPy arrays, in the model's order."""
    net = get_net([mx.cpu()], num_classes=3)
    load_weights(net, str(source), list(CLASSES[:3]))
    return [p.data().asnumpy() for p in net.collect_params().values()]


def test_defaults_run_says_what_it_does_and_exports_the_best_epoch(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default --output-dir, out, is relative
    err = train_main(capsys, "--data-dir", data_dir, "--epochs", 1)

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {k: config[k] for k in ("lr", "wd", "lr_period", "lr_decay", "batch_size", "export")} == {
        "lr": 0.1, "wd": 0.0005, "lr_period": 50, "lr_decay": 0.1, "batch_size": 4, "export": "best"}
    for line in ("data: 54 train, 6 valid images in 3 classes, 7 test images", "batches: 13 per epoch of 4 images",
                 "devices: cpu(0)", "recipe chapter: 1 epochs, lr 0.1 (x0.1 every 50 epochs), wd 0.0005",
                 "output: out", "reorganising 60 training and 7 test images"):
        assert line in err, line
    epoch_line = next(line for line in err.splitlines() if line.startswith("epoch 1/1 ("))
    for part in (" s): train loss ", "| valid loss ", "| lr 0.1 |", "img/s"):
        assert part in epoch_line, part
    assert "model of epoch 1 (best, valid acc" in err and "out/model-symbol.json" in err
    for name in ("model-symbol.json", "model-0000.params", "model-classes.json", "submission.csv",
                 "metrics.csv", "metrics.json", "curves.png", "checkpoint/best/net.params"):
        assert (tmp_path / "out" / name).is_file(), name


@pytest.mark.slow
def test_metrics_csv_gains_a_row_as_each_epoch_ends(data_dir, tmp_path):
    reorg = reorg_cifar10_data(data_dir, 0.1, str(tmp_path / "reorg"))
    loaders = make_loaders(load_datasets(reorg), 6, chapter_train_transform())
    config = RunConfig(data_dir=data_dir, epochs=2, batch_size=6, devices="cpu")
    report, rows = EpochReport(str(tmp_path)), []

    def on_epoch_end(history):
        report(history)
        rows.append(pd.read_csv(tmp_path / "metrics.csv"))

    fit(get_net([mx.cpu()], 3), loaders["train"], loaders["valid"], config, 3, on_epoch_end=on_epoch_end)
    assert [len(table) for table in rows] == [1, 2]
    assert list(rows[-1].columns[:6]) == ["epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr"]
    assert rows[-1]["epoch"].tolist() == [1, 2] and rows[-1]["lr"].tolist() == [0.1, 0.1]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_resume_with_more_epochs_extends_a_step_run_to_the_straight_result(data_dir, tmp_path, capsys):
    common = ["--data-dir", data_dir, "--seed", 3, "--devices", "cpu", "--log-every", 5]
    train_main(capsys, *common, "--epochs", 2, "--output-dir", tmp_path / "straight")
    first = train_main(capsys, *common, "--epochs", 1, "--output-dir", tmp_path / "run")
    assert "epoch 1/1, batch 5/13: loss " in first and "batch 10/13" in first  # progress within the epoch
    assert len(pd.read_csv(tmp_path / "run" / "metrics.csv")) == 1

    more = train_main(capsys, *common, "--epochs", 2, "--output-dir", tmp_path / "run", "--resume")
    assert "1 epoch(s) done" in more and "epoch 2/2 (" in more and "epoch 1/2 (" not in more
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["epoch"].tolist() == [1, 2]
    for got, expected in zip(weights(tmp_path / "run" / "checkpoint" / "epoch-0002"),
                             weights(tmp_path / "straight" / "checkpoint" / "epoch-0002")):
        onp.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_resume_refuses_more_epochs_of_a_one_cycle_run_with_the_reason(data_dir, tmp_path, capsys):
    args = ["--data-dir", data_dir, "--lr-schedule", "onecycle", "--batch-size", 6, "--output-dir", tmp_path / "out"]
    train_main(capsys, *args, "--epochs", 1)
    with pytest.raises(SystemExit) as stop:
        train_main(capsys, *args, "--epochs", 2, "--resume")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "--epochs was 1 and is now 2: the onecycle schedule was laid out over 1 epochs" in err
    assert "--init-from" in err


def test_patience_stops_early_and_the_best_epoch_is_exported(flat_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    err = train_main(capsys, "--data-dir", flat_data_dir, "--epochs", 4, "--patience", 1, "--batch-size", 3,
                     "--output-dir", out)
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2] and metrics["valid_acc"].tolist() == [1 / 3, 1 / 3]
    assert "early stop: no better validation accuracy in the 1 epochs since epoch 1" in err
    assert "model of epoch 1 (best" in err
    exported, best, last = (weights(source) for source in (
        out / "model", out / "checkpoint" / "best", out / "checkpoint" / "epoch-0002"))
    for got, expected in zip(exported, best):
        onp.testing.assert_array_equal(got, expected)
    assert any(not onp.array_equal(a, b) for a, b in zip(exported, last))


@pytest.mark.slow
def test_init_from_starts_from_an_export_and_predict_writes_probabilities(data_dir, tmp_path, capsys):
    first = tmp_path / "first"
    train_main(capsys, "--data-dir", data_dir, "--epochs", 1, "--output-dir", first)
    # A rate too small to move the weights: the second run ends where the first one's export starts it.
    err = train_main(capsys, "--data-dir", data_dir, "--epochs", 1, "--lr", 1e-12, "--wd", 0,
                     "--output-dir", tmp_path / "second", "--init-from", first / "model")
    assert "starting from " + str(first / "model") in err
    for got, expected, param in zip(weights(tmp_path / "second" / "model"), weights(first / "model"),
                                    get_net([mx.cpu()], 3).collect_params().values()):
        if "running" not in param.name:  # BatchNorm's running statistics move without the learning rate
            onp.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=param.name)

    probabilities, submission = tmp_path / "probs.csv", tmp_path / "submission.csv"
    predict.main(["--model", str(first / "model"), "--images", os.path.join(data_dir, "test"),
                  "--output", str(submission), "--probabilities", str(probabilities)])
    table = pd.read_csv(probabilities)
    assert list(table.columns) == ["id", "label", *CLASSES[:3]]
    onp.testing.assert_allclose(table[list(CLASSES[:3])].sum(axis=1), 1, atol=1e-5)
    assert table["label"].tolist() == table[list(CLASSES[:3])].idxmax(axis=1).tolist()
    assert table[["id", "label"]].equals(pd.read_csv(submission))
    predict.main(["--model", str(first / "model"), "--images", os.path.join(data_dir, "test"),
                  "--output", str(submission), "--probabilities", str(probabilities), "--topk", "2"])
    top = pd.read_csv(probabilities)
    assert list(top.columns) == ["id", "label", "top1", "p1", "top2", "p2"]
    assert (top["top1"] == table["label"]).all() and (top["p1"] >= top["p2"]).all()

    other = make_kaggle_dir(tmp_path / "other", 4, classes=CLASSES[3:6])
    with pytest.raises(SystemExit):
        train_main(capsys, "--data-dir", other, "--batch-size", 3, "--output-dir", tmp_path / "third",
                   "--init-from", first / "model")
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error: --init-from") and "trained on the classes airplane, automobile, bird" in last


@pytest.mark.parametrize("parser", [train.build_parser, predict_parser, launch_parser],
                         ids=["train", "predict", "launch"])
def test_help_shows_a_default_for_every_option_that_has_one(parser):
    parser = parser()
    for action in parser._actions:
        if action.required or action.default is False or isinstance(action, argparse._HelpAction):
            continue  # nothing to show: required, an off switch, --help
        help_text = parser._get_formatter()._expand_help(action)
        assert "default" in help_text, action.option_strings


@pytest.mark.slow
def test_tensorboard_logs_each_epoch(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    train_main(capsys, "--data-dir", data_dir, "--epochs", 2, "--batch-size", 6, "--output-dir", out,
               "--tensorboard")
    steps = tensorboard_steps(out / "tensorboard")
    assert {tag: steps[tag] for tag in ("train/loss", "valid/acc", "lr")} == {
        "train/loss": [1, 2], "valid/acc": [1, 2], "lr": [1, 2]}


def tensorboard_steps(folder):
    """{tag: [step, ...]} of the scalars in the TensorBoard event files of `folder` (TFRecord framing:
    8-byte length, 4-byte CRC, an Event message, 4-byte CRC)."""
    from tensorboardX.proto.event_pb2 import Event
    steps = {}
    for name in os.listdir(folder):
        data, pos = (folder / name).read_bytes(), 0
        while pos < len(data):
            length = struct.unpack("<Q", data[pos:pos + 8])[0]
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def test_tensorboard_without_tensorboardx_is_one_line(data_dir, tmp_path):
    script = ("import sys; sys.modules['tensorboardX'] = None; from gluon_cifar.train import main; "
              f"main(['--data-dir', {data_dir!r}, '--output-dir', {str(tmp_path / 'out')!r}, '--tensorboard'])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.startswith("error: --tensorboard needs the tensorboardX")
    assert result.stderr.count("\n") == 1 and not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_a_terminal_shows_a_progress_bar_with_running_loss_and_accuracy(data_dir, tmp_path):
    """The one subprocess here: only a real terminal (a pseudo-terminal, 120 columns) gets the bar."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "gluon_cifar.train", "--data-dir", data_dir, "--epochs", "1",
                             "--batch-size", "6", "--output-dir", str(tmp_path / "out")],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    while True:  # read until the process closes the terminal
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: no writer left
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert proc.wait(timeout=600) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "epoch 1/1: " in text and "/9 [" in text and "loss=" in text and "acc=" in text, text
    assert "batch 5/9" not in text  # the log-file progress lines are for files, not terminals
