"""Interrupted commands: SIGKILL mid-epoch then --resume, Ctrl-C and SIGTERM, DataLoader workers ended."""
import json
import os
import shlex
import signal
import subprocess
import sys

import mxnet as mx
import numpy as onp
import psutil
import pytest

from gluon_cifar.training.checkpoint import latest_checkpoint

from clitools import assert_one_error_line, command, run, snapshot, wait_for
from conftest import make_kaggle_dir, write_png


@pytest.fixture(scope="module")
def odd_kaggle_dir(tmp_path_factory):
    """9 training images (3 classes), 3 test images; among them grayscale, RGBA, palette and 48x48 PNGs."""
    root = make_kaggle_dir(tmp_path_factory.mktemp("resume") / "kaggle", 3, num_test=3)
    rng = onp.random.default_rng(1)
    for name, size, mode in (("train/1.png", 32, "L"), ("train/2.png", 32, "RGBA"),
                             ("train/3.png", 32, "P"), ("train/4.png", 48, "RGB"),
                             ("test/1.png", 40, "L"), ("test/2.png", 32, "P")):
        write_png(os.path.join(root, name), rng, size, mode)
    return root


def train_args(data_dir, out, *extra):
    # 6 training images in 2 batches of 3, 3 validation images; a fixed seed, on one CPU context.
    return ["--data-dir", data_dir, "--epochs", "2", "--batch-size", "3", "--valid-ratio", "0.34",
            "--seed", "7", "--devices", "cpu", "--output-dir", str(out), *extra]


def load_params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(odd_kaggle_dir, tmp_path):
    straight = run("train", *train_args(odd_kaggle_dir, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(command("train", *train_args(odd_kaggle_dir, out)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(out / "checkpoint" / "epoch-0001", proc)
    proc.kill()  # SIGKILL: no handler runs, nothing is flushed or cleaned up
    assert proc.wait() == -signal.SIGKILL
    assert latest_checkpoint(str(out / "checkpoint")).endswith("epoch-0001")  # epoch 2 was under way
    assert not (out / "submission.csv").exists()

    resumed = run("train", *train_args(odd_kaggle_dir, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and "epoch 1/2 (" not in resumed.stdout and "epoch 2/2 (" in resumed.stdout
    expected, got = load_params(tmp_path / "straight" / "model-0000.params"), load_params(out / "model-0000.params")
    assert expected.keys() == got.keys()
    for name in expected:
        onp.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert (out / "submission.csv").read_text() == (tmp_path / "straight" / "submission.csv").read_text()
    keys = ("epoch", "lr", "train_loss", "train_acc", "valid_acc")  # not the timings
    history, expected_history = (json.loads((folder / "metrics.json").read_text())
                                 for folder in (out, tmp_path / "straight"))
    assert [[h[k] for k in keys] for h in history] == [[h[k] for k in keys] for h in expected_history]
    assert [h["epoch"] for h in history] == [1, 2]

    kept = snapshot(out)
    changed = run("train", *train_args(odd_kaggle_dir, out, "--resume", "--lr", "0.5"))
    assert_one_error_line(changed, "--resume continues the run as it was started", "--lr was 0.1 and is now 0.5")
    assert snapshot(out) == kept


def test_dataloader_workers_end_with_a_killed_command(tmp_path):
    """SIGKILL (or the out-of-memory killer) on the command alone leaves no worker behind."""
    script = ("import sys\n"
              "from gluon_cifar.cli import report_input_errors# first: MXNet on NumPy 2 needs its shim\n"
              "from mxnet import gluon, np\n"
              "def main(argv):\n"
              "    loader = gluon.data.DataLoader(gluon.data.ArrayDataset(np.zeros((8, 2))), 4, num_workers=2)\n"
              "    print('ready', flush=True)\n"
              "    sys.stdin.read()\n"
              "report_input_errors(main)()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline() == "ready\n"
    workers = psutil.Process(proc.pid).children()
    assert len(workers) == 2
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, alive


def stop_a_run(args, out, sig):
    """Start `train args` as a shell starts a foreground job (its own process group), signal the whole group
    with `sig` once the first checkpoint is saved, as Ctrl-C and schedulers do; return (exit status, stderr,
    the DataLoader workers it had)."""
    proc = subprocess.Popen(command("train", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    wait_for(out / "checkpoint" / "epoch-0001", proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "expected DataLoader worker processes"
    os.killpg(proc.pid, sig)
    _, stderr = proc.communicate(timeout=600)
    assert "Traceback" not in stderr, stderr
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, worker
    return proc.returncode, stderr


def test_ctrl_c_stops_cleanly_keeps_the_checkpoint_and_says_how_to_resume(odd_kaggle_dir, tmp_path):
    out = tmp_path / "out"
    args = train_args(odd_kaggle_dir, out, "--num-workers", "2")
    args[args.index("--epochs") + 1] = "3"
    status, stderr = stop_a_run(args, out, signal.SIGINT)

    assert status == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: stopped; the last complete checkpoint is kept"), stderr
    kept = latest_checkpoint(str(out / "checkpoint"))
    assert kept is not None and kept in last
    epochs_done = len(json.loads(open(os.path.join(kept, "history.json")).read()))

    resume_command = shlex.split(last.split("Resume with: ", 1)[1])
    assert resume_command[:3] == [sys.executable, "-m", "gluon_cifar.train"] and "--resume" in resume_command
    resumed = run("train", *resume_command[3:])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{epochs_done} epoch(s) done" in resumed.stdout
    assert [h["epoch"] for h in json.loads((out / "metrics.json").read_text())] == [1, 2, 3]
    assert (out / "submission.csv").is_file()


def test_sigterm_to_the_process_group_stops_like_ctrl_c(odd_kaggle_dir, tmp_path):
    """What `timeout` and schedulers send: before, the workers died holding their pool's queue lock and the
    run hung at exit after printing its message."""
    out = tmp_path / "out"
    # --lr 0.001: at 0.1, six images can diverge by epoch 14, before a slow machine sends the signal
    args = train_args(odd_kaggle_dir, out, "--num-workers", "2", "--lr", "0.001")
    args[args.index("--epochs") + 1] = "500"  # still running when the signal comes
    status, stderr = stop_a_run(args, out, signal.SIGTERM)

    assert status == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("terminated: stopped; the last complete checkpoint is kept"), stderr
    assert latest_checkpoint(str(out / "checkpoint")) in last and "--resume" in last
