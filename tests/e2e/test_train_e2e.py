"""Whole training commands: a full disk, the offline demo, progress and metrics, resume and --init-from, the
strong recipe beside PyTorch 2."""
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

from gluon_cifar import predict
from gluon_cifar.data.loaders import load_datasets, make_loaders
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.data.transforms import chapter_train_transform
from gluon_cifar.model import get_net
from gluon_cifar.settings import Run, RunConfig
from gluon_cifar.training.loop import fit
from gluon_cifar.training.report import EpochReport

from clitools import assert_one_error_line, command, run_with_file_size_limit, snapshot, wait_for
from conftest import (CLASSES, PREVIOUS_RUN, REPO, UNREACHABLE, make_kaggle_dir, placed, previous_run, refusal_argv,
                      refuse, sample_ids, train_main, weights)


def test_train_on_a_full_disk_keeps_the_previous_run(kaggle_dir):
    """--overwrite of a finished run whose first checkpoint cannot be written: the old outputs stay."""
    out = os.path.join(kaggle_dir, "out")
    previous_run(out)
    before = snapshot(out)
    result = run_with_file_size_limit(1 << 20, "gluon_cifar.train", *refusal_argv(kaggle_dir, ["--overwrite"]))
    assert_one_error_line(result, "cannot write", os.path.join("out", "checkpoint"))  # the best epoch's, or the epoch's
    after = snapshot(out)
    outputs = [name for name in PREVIOUS_RUN if name != "config.json"]  # the new run's settings replace it
    assert {name: after[name] for name in outputs} == {name: before[name] for name in outputs}
    assert [n for n in os.listdir(os.path.join(out, "checkpoint")) if "epoch" in n] == []  # no half checkpoint


def test_offline_training_falls_back_on_the_bundled_sample(offline, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "gluon_cifar.train", "--cache-dir", str(tmp_path / "cache"), "--epochs", "1",
         "--batch-size", "32", "--output-dir", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if "bundled" in line]
    assert len(said) == 1 and UNREACHABLE in said[0] and "--data-dir /path" in said[0], result.stderr
    sample = tmp_path / "cache" / "demo_sample"
    assert pd.read_csv(out / "submission.csv")["id"].tolist() == sample_ids(sample / "test")


def test_metrics_csv_gains_a_row_as_each_epoch_ends(ux_data_dir, tmp_path):
    reorg = reorg_cifar10_data(ux_data_dir, 0.1, str(tmp_path / "reorg"))
    loaders = make_loaders(load_datasets(reorg), 6, chapter_train_transform())
    config = RunConfig(data_dir=ux_data_dir, epochs=2, batch_size=6, devices="cpu")
    report, rows = EpochReport(str(tmp_path)), []

    def on_epoch_end(history):
        report(history)
        rows.append(pd.read_csv(tmp_path / "metrics.csv"))

    fit(get_net([mx.cpu()], 3), loaders["train"], loaders["valid"], Run(config), 3, on_epoch_end=on_epoch_end)
    assert [len(table) for table in rows] == [1, 2]
    assert list(rows[-1].columns[:6]) == ["epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr"]
    assert rows[-1]["epoch"].tolist() == [1, 2] and rows[-1]["lr"].tolist() == [0.1, 0.1]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_with_more_epochs_extends_a_step_run_to_the_straight_result(ux_data_dir, tmp_path, capsys):
    common = ["--data-dir", ux_data_dir, "--seed", 3, "--devices", "cpu", "--log-every", 5]
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


def test_resume_refuses_more_epochs_of_a_one_cycle_run_with_the_reason(ux_data_dir, tmp_path, capsys):
    args = ["--data-dir", ux_data_dir, "--lr-schedule", "onecycle", "--batch-size", 6, "--output-dir", tmp_path / "out"]
    train_main(capsys, *args, "--epochs", 1)
    with pytest.raises(SystemExit) as stop:
        train_main(capsys, *args, "--epochs", 2, "--resume")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "--epochs was 1 and is now 2: the onecycle schedule was laid out over 1 epochs" in err
    assert "--init-from" in err


def test_init_from_starts_from_an_export_and_predict_writes_probabilities(ux_data_dir, tmp_path, capsys):
    first = tmp_path / "first"
    train_main(capsys, "--data-dir", ux_data_dir, "--epochs", 1, "--output-dir", first)
    # A rate too small to move the weights: the second run ends where the first one's export starts it.
    err = train_main(capsys, "--data-dir", ux_data_dir, "--epochs", 1, "--lr", 1e-12, "--wd", 0,
                     "--output-dir", tmp_path / "second", "--init-from", first / "model")
    assert "starting from " + str(first / "model") in err
    for got, expected, param in zip(weights(tmp_path / "second" / "model"), weights(first / "model"),
                                    get_net([mx.cpu()], 3).collect_params().values()):
        if "running" not in param.name:  # BatchNorm's running statistics move without the learning rate
            onp.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=param.name)

    probabilities, submission = tmp_path / "probs.csv", tmp_path / "submission.csv"
    predict.main(["--model", str(first / "model"), "--images", os.path.join(ux_data_dir, "test"),
                  "--output", str(submission), "--probabilities", str(probabilities)])
    table = pd.read_csv(probabilities)
    assert list(table.columns) == ["id", "label", *CLASSES[:3]]
    onp.testing.assert_allclose(table[list(CLASSES[:3])].sum(axis=1), 1, atol=1e-5)
    assert table["label"].tolist() == table[list(CLASSES[:3])].idxmax(axis=1).tolist()
    assert table[["id", "label"]].equals(pd.read_csv(submission))
    predict.main(["--model", str(first / "model"), "--images", os.path.join(ux_data_dir, "test"),
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


def test_tensorboard_logs_each_epoch(ux_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    train_main(capsys, "--data-dir", ux_data_dir, "--epochs", 2, "--batch-size", 6, "--output-dir", out,
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


def test_a_terminal_shows_a_progress_bar_with_running_loss_and_accuracy(ux_data_dir, tmp_path):
    """The one subprocess here: only a real terminal (a pseudo-terminal, 120 columns) gets the bar."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "gluon_cifar.train", "--data-dir", ux_data_dir, "--epochs", "1",
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


def test_a_training_command_keeps_its_split_in_use_until_it_ends(capfd, root, tmp_path_factory):
    out = tmp_path_factory.mktemp("running") / "out"
    training = subprocess.Popen(command("train", "--data-dir", root, "--epochs", "500", "--batch-size", "2",
                                        "--valid-ratio", "0.25", "--devices", "cpu", "--output-dir", out),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out / "checkpoint" / "epoch-0001", training)
        assert "is in use by a run training on it" in refuse(capfd, root, "--valid-ratio", "0.5")
    finally:
        training.terminate()
        _, err = training.communicate(timeout=600)
    assert training.returncode == 143 and err.startswith("terminated: stopped"), err
    reorg = reorg_cifar10_data(root, 0.5)  # the run has ended: rebuilt
    assert len(placed(reorg, "valid")) == 3 * 4


STANDIN_TORCH = os.path.join(REPO, "tests", "foreign")  # torch/__init__.py reporting 2.11.0


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
    assert "warning: the onecycle schedule spans only 3 updates (1 epochs)" in result.stdout  # 9 images, batch 3
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
