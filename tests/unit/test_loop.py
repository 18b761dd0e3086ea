"""gluon_cifar.training.loop: a diverging run stops with one line and keeps the last good model."""
import json
import os

import numpy as onp

from gluon_cifar import train as train_command
from gluon_cifar.training.outputs import OUTPUT_FILES

from clitools import snapshot
from conftest import refused, train_argv


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_good_model(run_copy, run_data_dir, capsys):
    before = snapshot(run_copy)
    line = refused(train_command.main, train_argv(run_data_dir, run_copy, "--overwrite", "--lr", "1e6"), capsys,
                   "epoch 1", "diverged", "lower --lr")
    assert "batch" in line
    after = snapshot(run_copy)
    for name in OUTPUT_FILES:  # the previous run's model, submission and metrics, untouched
        assert after[name] == before[name], name
    assert not os.path.exists(run_copy / "checkpoint" / "epoch-0001")
    history = json.loads((run_copy / "metrics.json").read_text())
    assert all(onp.isfinite(value) for h in history for value in h.values() if isinstance(value, float))


def test_a_diverging_fresh_run_writes_no_outputs(run_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    refused(train_command.main, train_argv(run_data_dir, out, "--lr", "1e6"), capsys, "diverged", "lower --lr")
    assert not [name for name in OUTPUT_FILES if (out / name).exists()]
