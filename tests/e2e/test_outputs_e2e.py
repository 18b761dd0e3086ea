"""Output folders across whole runs: killed writes cleaned, two runs on one folder, SIGKILL in the outputs
stage then --resume."""
import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from gluon_cifar import fs
from gluon_cifar import train as train_command
from gluon_cifar.fs import RUN_MARKER
from gluon_cifar.training.outputs import OUTPUT_FILES

from clitools import assert_one_error_line, command, run
from conftest import KILLED_WRITE, killed, train_argv, user_files

TIMINGS = ("seconds", "wall_seconds", "examples")  # history keys that differ between two runs of one computation


METRICS = ("metrics.json", "metrics.csv")  # the same but for TIMINGS


# A real export, SIGKILLed the moment MXNet has written the staged files, before they are renamed.
KILLED_EXPORT = """
import os, signal, sys
import gluon_cifar  # before MXNet: its NumPy 2 compatibility
import mxnet as mx
from mxnet import npx
npx.set_np()
from gluon_cifar.deploy.export import export_model
from gluon_cifar.model import get_net
net = get_net([mx.cpu()], num_classes=3)
net.hybridize()
write = net.export
def export_and_die(path, *args, **kwargs):
    write(path, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
net.export = export_and_die
export_model(net, sys.argv[1], ["airplane", "automobile", "bird"])
"""


def test_the_next_run_removes_what_killed_writes_left_and_nothing_else(run_copy, run_data_dir):
    marker = json.loads((run_copy / RUN_MARKER).read_text())
    fs.write_json(str(run_copy / RUN_MARKER), {**marker, "written": []})  # stopped in its outputs stage
    killed(KILLED_EXPORT, run_copy / "model")
    left = killed(KILLED_WRITE, run_copy / "submission.csv")
    assert [name.split(".")[1] for name in left] == ["model", "submission"]
    live = f".submission.csv.{os.getpid()}.abcdefgh.tmp"  # a writer that still runs: this process
    (run_copy / live).write_text("being written")
    mine = user_files(run_copy)
    busy = f".model.{os.getpid()}.abcdefgh.tmp"  # staging folder of a running export
    os.makedirs(run_copy / busy)
    train_command.main(train_argv(run_data_dir, run_copy, "--resume"))
    remaining = set(os.listdir(run_copy))
    assert not remaining & set(left)
    assert {live, busy} <= remaining
    for name in mine:
        assert (run_copy / name).read_text() == "mine", name


def wait_then_kill(proc, first, then):
    """Wait (polling) for `first()`, then SIGKILL `proc` the moment `then()` holds (a tight loop: the stage
    it catches lasts milliseconds). Both waits are bounded."""
    for condition, pause in ((first, 0.02), (then, 0)):
        end = time.monotonic() + 600
        while not condition():
            assert proc.poll() is None, "the run ended before the stage was reached"
            assert time.monotonic() < end, "the stage was not reached within 600 s"
            time.sleep(pause)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL


@pytest.fixture(scope="module")
def straight(run_data_dir, tmp_path_factory):
    """An uninterrupted run through the command."""
    out = tmp_path_factory.mktemp("straight") / "out"
    result = run("train", *train_argv(run_data_dir, out))
    assert result.returncode == 0, result.stderr
    return out


STAGES = {
    "export": lambda out: any(name.startswith(".model.") for name in os.listdir(out)),
    "submission": lambda out: os.path.exists(out / "model-classes.json"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_in_the_outputs_stage_then_resume_gives_the_uninterrupted_outputs(straight, run_data_dir, tmp_path,
                                                                                stage):
    out = tmp_path / "out"
    proc = subprocess.Popen(command("train", *train_argv(run_data_dir, out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_then_kill(proc, lambda: os.path.exists(out / "checkpoint" / "epoch-0001"), lambda: STAGES[stage](out))
    assert not (out / "submission.csv").exists()

    resumed = run("train", *train_argv(run_data_dir, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert_same_outputs(out, straight)
    assert not [name for name in os.listdir(out) if name.startswith((".export.", ".submission.csv."))]

    again = run("train", *train_argv(run_data_dir, out, "--resume"))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr


def assert_same_outputs(out, straight):
    """`out` holds the outputs of the run in `straight`, byte for byte but for the timings in the metrics."""
    for name in OUTPUT_FILES:
        if name not in METRICS:
            assert (out / name).read_bytes() == (straight / name).read_bytes(), name
    for history, expected in ((json.loads((out / "metrics.json").read_text()),
                               json.loads((straight / "metrics.json").read_text())),
                              (pd.read_csv(out / "metrics.csv").to_dict("records"),
                               pd.read_csv(straight / "metrics.csv").to_dict("records"))):
        assert [{k: v for k, v in h.items() if k not in TIMINGS} for h in history] == \
            [{k: v for k, v in h.items() if k not in TIMINGS} for h in expected]


def test_two_runs_on_one_output_folder_never_both_succeed(straight, run_data_dir, tmp_path):
    out = tmp_path / "out"
    procs = [subprocess.Popen(command("train", *train_argv(run_data_dir, out)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [subprocess.CompletedProcess(p.args, p.wait(timeout=900), *p.communicate()) for p in procs]
    assert sorted(r.returncode for r in results) == [0, 2], [r.stderr for r in results]
    loser = next(r for r in results if r.returncode == 2)
    line = assert_one_error_line(loser, str(out), after_progress=True)
    assert "in use by another run" in line or "already holds a run" in line, line
    assert_same_outputs(out, straight)
