"""gluon_cifar.training.checkpoint: complete-or-absent checkpoints, data-only optimizer state, damaged
checkpoint files named."""
import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon

from gluon_cifar import fs
from gluon_cifar import train as train_command
from gluon_cifar.deploy.export import exported_files
from gluon_cifar.fs import RUN_MARKER
from gluon_cifar.model import get_net
from gluon_cifar.training.checkpoint import load_checkpoint, save_checkpoint
from gluon_cifar.training.outputs import OUTPUT_FILES, VALIDATION_OUTPUTS

from clitools import snapshot, truncate, write_bytes
from conftest import refused, train_argv

KILLED_SAVE = """
import os, signal, sys
from gluon_cifar import fs
staging = fs.staging_dir(os.path.join(sys.argv[1], "epoch-0002"), marker=False)
with open(os.path.join(sys.argv[1], "epoch-0001", "net.params"), "rb") as f:
    half = f.read()[:100]
with open(os.path.join(staging, "net.params"), "wb") as f:
    f.write(half)
fs.Manifest(staging).record(os.path.join(staging, "net.params"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_checkpoint_is_complete_or_absent(tmp_path):
    """A save cut short leaves only a hidden staging folder: never loaded, removed by the next save."""
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(2))
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
    with autograd.record():
        loss = (net(mx.np.ones((4, 3))) ** 2).sum()
    loss.backward()
    trainer.step(4)
    folder = str(tmp_path / "checkpoint")
    save_checkpoint(folder, net, trainer, [{"epoch": 1}])
    saved = net[0].weight.data().asnumpy()
    # a save of epoch 2 killed half way, by the package's own calls in a process that then died
    subprocess.run([sys.executable, "-c", KILLED_SAVE, folder])
    assert len([name for name in os.listdir(folder) if name.startswith(".epoch-0002.")]) == 1
    net[0].weight.set_data(mx.np.zeros_like(net[0].weight.data()))

    assert load_checkpoint(folder, net, trainer) == [{"epoch": 1}]
    onp.testing.assert_array_equal(net[0].weight.data().asnumpy(), saved)
    save_checkpoint(folder, net, trainer, [{"epoch": 1}, {"epoch": 2}])
    assert os.listdir(folder) == ["epoch-0002"]


def test_resume_of_a_finished_run_redoes_nothing(run_copy, run_data_dir, capsys):
    before = snapshot(run_copy)
    train_command.main(train_argv(run_data_dir, run_copy, "--resume"))
    err = capsys.readouterr().out
    assert [line for line in err.splitlines() if line.strip()] == [
        f"{run_copy}: this run is finished (1 epoch(s), every output written): nothing to do"]
    assert snapshot(run_copy) == before


def param_values(prefix):
    """The exported parameters in the net's order (their names' numbers differ between models built in one
    process)."""
    return [value.asnumpy() for value in mx.nd.load(exported_files(prefix)["params"]).values()]


@pytest.mark.parametrize("lost", [["submission.csv"], ["model-0000.params", "submission.csv"], ["top_losses.png"],
                                  list(OUTPUT_FILES + VALIDATION_OUTPUTS)])
def test_resume_after_the_last_checkpoint_completes_the_outputs(run_copy, finished, run_data_dir, lost):
    marker = json.loads((run_copy / RUN_MARKER).read_text())
    marker["written"] = [name for name in marker["written"] if name not in lost]
    fs.write_json(str(run_copy / RUN_MARKER), marker)  # as a stop before these were written leaves it
    for name in lost:
        os.remove(run_copy / name)
    train_command.main(train_argv(run_data_dir, run_copy, "--resume"))
    for name in ("submission.csv", "metrics.json", "model-classes.json", "curves.png", "per_class.csv"):
        assert (run_copy / name).read_bytes() == (finished / name).read_bytes(), name
    for got, expected in zip(param_values(str(run_copy / "model")), param_values(str(finished / "model"))):
        onp.testing.assert_array_equal(got, expected)
    assert json.loads((run_copy / RUN_MARKER).read_text())["written"] == list(OUTPUT_FILES + VALIDATION_OUTPUTS)


def other_checkpoint_file(tmp_path, name):
    """`name` (net.params, optimizer.params or optimizer.json) as a 5-class model's checkpoint holds it."""
    from mxnet import autograd

    from gluon_cifar.training.checkpoint import save_checkpoint
    from gluon_cifar.training.loop import make_trainer
    net = get_net([mx.cpu()], num_classes=5)
    trainer = make_trainer(net, None, 0.0)
    with autograd.record():
        loss = net(mx.np.zeros((2, 3, 32, 32))).sum()
    loss.backward()
    trainer.step(2)
    save_checkpoint(str(tmp_path / "other"), net, trainer, [{"epoch": 1}])
    return tmp_path / "other" / "epoch-0001" / name


CHECKPOINT_DAMAGE = {
    "truncated net.params": ("net.params", truncate, "not an MXNet parameter file"),
    "truncated optimizer.params": ("optimizer.params", truncate, "not the optimizer state of this model"),
    "garbage optimizer.json": ("optimizer.json", lambda p: write_bytes(p, b"\x00garbage"),
                               "not the optimizer state of this model"),
    "optimizer.json a list": ("optimizer.json", lambda p: write_bytes(p, b"[1]"),
                              "not the optimizer state of this model"),
    "garbage history.json": ("history.json", lambda p: write_bytes(p, b"\x00garbage"), "not valid JSON"),
    "history.json of another length": ("history.json", lambda p: write_bytes(p, b'[{"epoch": 1}, {"epoch": 2}]'),
                                       "not the history of 1 epoch(s)"),
    "history.json a dict": ("history.json", lambda p: write_bytes(p, b'{"epoch": 1}'), "not the history"),
    "missing net.params": ("net.params", os.remove, "missing from the checkpoint"),
    "missing optimizer.params": ("optimizer.params", os.remove, "missing from the checkpoint"),
    "missing optimizer.json": ("optimizer.json", os.remove, "missing from the checkpoint"),
    "missing history.json": ("history.json", os.remove, "missing from the checkpoint"),
    "another model's net.params": ("net.params", "other", "does not fit this model"),
    "another model's optimizer.params": ("optimizer.params", "other", "another model's checkpoint"),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_DAMAGE))
def test_resume_names_a_damaged_checkpoint_file(run_copy, run_data_dir, tmp_path, capsys, name):
    (run_copy / "submission.csv").unlink()  # so that the run is not finished
    file, damage, fragment = CHECKPOINT_DAMAGE[name]
    path = run_copy / "checkpoint" / "epoch-0001" / file
    if damage == "other":
        shutil.copyfile(other_checkpoint_file(tmp_path, file), path)
    else:
        damage(path)
    before = snapshot(run_copy)
    refused(train_command.main, train_argv(run_data_dir, run_copy, "--resume"), capsys, str(path), fragment)
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("content", [None, b"{not json"])
def test_resume_refuses_a_missing_or_damaged_config(run_copy, run_data_dir, capsys, content):
    path = run_copy / "config.json"
    path.unlink() if content is None else write_bytes(path, content)
    refused(train_command.main, train_argv(run_data_dir, run_copy, "--resume"), capsys, str(path), "--resume cannot check")
