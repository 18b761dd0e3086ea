"""Interrupted runs: SIGKILL mid-epoch then --resume, Ctrl-C, and a reorganisation killed half way.

Real subprocesses and real signals; the tests wait for files to appear by polling, with a deadline.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as onp
from mxnet import autograd, gluon
import psutil
import pytest

from clitools import assert_one_error_line, command, run, snapshot, wait_for
from conftest import make_kaggle_dir, write_png
from gluon_cifar import fs
from gluon_cifar.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.cli import report_input_errors


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


@pytest.mark.slow
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


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # 3.12+; as DataLoader does
def test_a_command_s_forked_workers_die_on_sigterm_and_stay_out_of_its_process_group():
    """The command turns SIGTERM into a clean stop. A process it forks (a DataLoader worker) takes the
    default action instead, in a process group of its own: a Python handler there may never run (the CI
    run that hung at exit), and a group signal that killed an idle worker holding its pool's queue lock
    would hang the parent's `Pool.terminate()` (`timeout`, `kill -TERM -PGID`)."""
    def main(argv):
        parent_handler = signal.getsignal(signal.SIGTERM)
        pid = os.fork()
        if pid == 0:
            alone = os.getpgrp() == os.getpid() != os.getpgid(os.getppid())
            default = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
            held = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
            os._exit(alone + 2 * default + 4 * (not held))
        return parent_handler, signal.pthread_sigmask(signal.SIG_BLOCK, []), os.waitpid(pid, 0)[1]

    before = signal.getsignal(signal.SIGTERM)
    parent_handler, parent_mask, child_status = report_input_errors(main)(None)
    assert parent_handler not in (signal.SIG_DFL, signal.SIG_IGN, before)
    assert signal.SIGTERM not in parent_mask
    assert os.waitstatus_to_exitcode(child_status) == 7, "own group (1), default SIGTERM (2), not blocked (4)"
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_like_ctrl_c(odd_kaggle_dir, tmp_path):
    """What `timeout` and schedulers send: before, the workers died holding their pool's queue lock and the
    run hung at exit after printing its message."""
    out = tmp_path / "out"
    args = train_args(odd_kaggle_dir, out, "--num-workers", "2")
    args[args.index("--epochs") + 1] = "500"  # still running when the signal comes
    status, stderr = stop_a_run(args, out, signal.SIGTERM)

    assert status == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("terminated: stopped; the last complete checkpoint is kept"), stderr
    assert latest_checkpoint(str(out / "checkpoint")) in last and "--resume" in last


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


def test_reorg_killed_half_way_completes_when_run_again(tmp_path):
    data = make_kaggle_dir(tmp_path / "k", 700, num_test=3)
    sources = snapshot(data)
    reorg = os.path.join(data, "train_valid_test")
    script = f"from gluon_cifar.data.reorg import reorg_cifar10_data; reorg_cifar10_data({data!r}, 0.1)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    # The first class folder appears with the first image; 2,100 images remain to be placed.
    wait_for(os.path.join(data, ".train_valid_test.lock"), proc)  # created before the staging folder
    while not (staging := [n for n in os.listdir(data) if n.startswith(f".train_valid_test.{proc.pid}.")]):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)  # polling for the folder to appear, as wait_for does
    wait_for(os.path.join(data, staging[0], "train_valid"), proc)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert not os.path.exists(reorg), "a partial reorganisation must never take the final name"

    assert reorg_cifar10_data(data, 0.1) == reorg
    assert_complete_reorg(data, reorg, per_class=700, valid_per_class=70)
    assert snapshot(data) == sources


@pytest.mark.parametrize("damage", ["a missing file", "a missing and a rewritten file"])
def test_reorg_after_a_killed_build_removes_its_staging_by_its_manifest(kaggle_dir, damage):
    """The staging folder a killed build (pid 99999999: no longer running) left goes, file by file as its
    manifest lists them; a file no manifest lists (rewritten since) keeps all of it where it is, with a
    warning. Either way the new build is complete."""
    sources = snapshot(kaggle_dir)
    reorg = reorg_cifar10_data(kaggle_dir, 0.2)
    partial = os.path.join(kaggle_dir, ".train_valid_test.99999999.abcdefgh.tmp")
    os.remove(os.path.join(reorg, ".complete.json"))
    os.rename(reorg, partial)  # as an interrupted run leaves it (its manifest names it: a rename keeps the inode)
    class_dir = os.path.join(partial, "train_valid", "airplane")
    half, missing = sorted(os.listdir(class_dir))[:2]
    os.remove(os.path.join(class_dir, missing))
    if "rewritten" in damage:
        data = open(os.path.join(class_dir, half), "rb").read()
        os.remove(os.path.join(class_dir, half))  # (not truncated in place: it is a hard link to the source)
        with open(os.path.join(class_dir, half), "wb") as f:
            f.write(data[:len(data) // 2])

    assert reorg_cifar10_data(kaggle_dir, 0.2) == reorg
    assert os.path.exists(partial) == ("rewritten" in damage)
    if "rewritten" in damage:  # checked first, then removed: nothing of it is removed
        assert half in os.listdir(class_dir) and os.path.isfile(os.path.join(partial, fs.MANIFEST))
    assert_complete_reorg(kaggle_dir, reorg, per_class=None, valid_per_class=1)
    assert snapshot(kaggle_dir) == sources


def assert_complete_reorg(data_dir, reorg, per_class, valid_per_class):
    """Every training image once in train_valid, as a link to its source; valid/train split them."""
    labels = dict(line.strip().split(",") for line in open(os.path.join(data_dir, "trainLabels.csv"))
                  if not line.startswith("id,"))
    placed = {}
    for label in os.listdir(os.path.join(reorg, "train_valid")):
        names = os.listdir(os.path.join(reorg, "train_valid", label))
        assert per_class is None or len(names) == per_class
        assert len(os.listdir(os.path.join(reorg, "valid", label))) == valid_per_class
        for name in names:
            placed[name[:-4]] = label
            assert os.path.samefile(os.path.join(reorg, "train_valid", label, name),
                                    os.path.join(data_dir, "train", name))
        assert sorted(os.listdir(os.path.join(reorg, "valid", label)) +
                      os.listdir(os.path.join(reorg, "train", label))) == sorted(names)
    assert placed == labels
    assert sorted(os.listdir(os.path.join(reorg, "test", "unknown"))) == sorted(
        os.listdir(os.path.join(data_dir, "test")))
