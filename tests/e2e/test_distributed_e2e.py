"""Real dist_sync jobs on 127.0.0.1 through `gluon_cifar.launch`: equivalence with one process, checkpoints,
resume, a dead worker."""
import json
import os
import re
import signal
import subprocess
import sys

import mxnet as mx
import numpy as onp
import pytest

from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.training import launcher
from gluon_cifar.training.launcher import free_port

from clitools import assert_one_error_line, command, snapshot
from conftest import REPO, make_kaggle_dir
from distfit import fit_plainly

JOB_TIMEOUT = 240  # seconds; a healthy job here takes well under a minute


def test_two_workers_learn_as_one_process_with_two_devices(tmp_path):
    """2 workers x batch 3 (dist_sync, a thread each) against one process with cpu:2 x batch 6: from the same
    initialisation and the same examples, 8 updates end with the same parameters and BatchNorm statistics."""
    reorg = reorg_cifar10_data(make_kaggle_dir(tmp_path / "kaggle", 8), 0.1, str(tmp_path / "reorg"))
    one = fit_plainly(reorg, "cpu:2", 6)
    one.save_parameters(str(tmp_path / "one.params"))

    worker = [sys.executable, os.path.join(REPO, "tests", "distfit.py"), reorg,
              str(tmp_path / "checkpoint"), "3"]
    layout = [(name, host, {**env, "OMP_NUM_THREADS": "1"}, worker if name.startswith("worker") else argv)
              for name, host, env, argv in launcher.plan(2, 1, None, "127.0.0.1", free_port(), [],
                                                        sys.executable)]
    assert launcher.run_job(layout, timeout=JOB_TIMEOUT) is None

    expected = mx.npx.load(str(tmp_path / "one.params"))
    got = mx.npx.load(str(tmp_path / "checkpoint" / "epoch-0002" / "net.params"))
    assert expected.keys() == got.keys()
    for name in expected:
        onp.testing.assert_allclose(got[name].asnumpy(), expected[name].asnumpy(), rtol=1e-4, atol=1e-6,
                                    err_msg=name)
    assert any("running_mean" in name and float(abs(v).sum()) > 0 for name, v in got.items())


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    """60 training images (3 classes) and 7 test images: with --final and batch 3, 10 steps per worker
    and epoch; and the outputs of an uninterrupted 2-epoch job on them (`out`)."""
    root = tmp_path_factory.mktemp("dist")
    make_kaggle_dir(root / "kaggle", 20)
    result = subprocess.run(launch_command("-s", 2, train_args=["--epochs", 2, "--output-dir", "out"]),
                            cwd=root, capture_output=True, text=True, timeout=JOB_TIMEOUT + 60)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


def read_until(proc, pattern):
    """The job's output up to the first line matching `pattern`, and that match (None if the output ended
    first: at the latest when the launcher's --timeout stops the job)."""
    output = ""
    for line in proc.stdout:
        output += line
        found = re.match(pattern, line)
        if found:
            return output, found
    return output, None


def launch_command(*args, train_args):
    return command("launch", "-n", 2, *args, "--timeout", JOB_TIMEOUT, "--grace", 10, "--",
                   "--data-dir", "kaggle", "--cache-dir", "cache", "--final", "--batch-size", 3, "--lr", 0.01,
                   "--devices", "cpu", *train_args)


def pids(output):
    return {name: int(pid) for name, pid in re.findall(r"started (\w+ ?\d*) \(pid (\d+)\)", output)}


def assert_ended(pids):
    for name, pid in pids.items():
        assert not os.path.exists(f"/proc/{pid}"), f"{name} (pid {pid}) still exists"


def test_dist_sync_job_rank0_checkpoints_and_writes_once(job_dir):
    root, result = job_dir
    assert "all 2 worker(s) finished" in result.stdout
    started = pids(result.stdout)
    assert sorted(started) == ["scheduler", "server 0", "server 1", "worker 0", "worker 1"]
    assert_ended(started)

    mx.npx.set_np()
    checkpoint = mx.npx.load(str(root / "out" / "checkpoint" / "epoch-0002" / "net.params"))
    exported = mx.npx.load(str(root / "out" / "model-0000.params"))
    running = [v for k, v in checkpoint.items() if "running" in k]
    aux = [v for k, v in exported.items() if k.startswith("aux:")]
    assert len(running) == len(aux) > 0
    for ours, theirs in zip(running, aux):  # the job's statistics, averaged over the workers
        onp.testing.assert_array_equal(ours.asnumpy(), theirs.asnumpy())

    with open(root / "out" / "metrics.json") as f:
        history = json.load(f)
    assert [h["examples"] for h in history] == [60, 60]  # the job's, not one worker's
    written = [os.path.relpath(os.path.join(folder, name), root)
               for folder, _, names in os.walk(root) for name in names]
    assert sum(name.endswith("submission.csv") for name in written) == 1
    assert sum(name.endswith("metrics.json") for name in written) == 1
    assert sorted(os.listdir(root)) == ["cache", "kaggle", "out"]  # no rank 1 outputs


def test_a_job_whose_worker_is_killed_mid_epoch_resumes_to_the_same_parameters(job_dir):
    root, _ = job_dir
    proc = subprocess.Popen(launch_command("-s", 2, train_args=["--epochs", 2, "--output-dir", "out-killed"]),
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        output, saved = read_until(proc, r"\[(worker \d)\] \[rank \d\] epoch 1: checkpoint saved")
        started = pids(output)
        other = "worker 1" if saved.group(1) == "worker 0" else "worker 0"  # not rank 0: it is training
        os.kill(started[other], signal.SIGKILL)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, output + rest + err
    assert_one_error_line(subprocess.CompletedProcess(proc.args, 1, output + rest, err),
                          f"{other} (pid {started[other]}) was killed by signal SIGKILL",
                          "stopping the other 4 process(es)", "--resume", code=1)
    assert_ended(started)
    assert os.listdir(root / "out-killed" / "checkpoint") == ["epoch-0001"]  # killed in epoch 2

    resumed = subprocess.run(launch_command("-s", 2, train_args=["--epochs", 2, "--output-dir", "out-killed",
                                                                 "--resume"]),
                             cwd=root, capture_output=True, text=True, timeout=JOB_TIMEOUT + 60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from" in resumed.stdout
    for name in ("checkpoint/epoch-0002/net.params", "model-0000.params"):
        expected, got = (mx.npx.load(str(root / out / name)) for out in ("out", "out-killed"))
        assert expected.keys() == got.keys()
        for key in expected:
            onp.testing.assert_array_equal(got[key].asnumpy(), expected[key].asnumpy(), err_msg=key)
    assert (root / "out-killed" / "submission.csv").read_text() == (root / "out" / "submission.csv").read_text()


def test_a_finished_job_resumed_has_nothing_to_do(job_dir):
    """Before, rank 0 returned at once while rank 1 initialised the servers' keys it reads: SIGABRT."""
    root, _ = job_dir
    before = snapshot(root / "out")
    resumed = subprocess.run(launch_command("-s", 2, train_args=["--epochs", 2, "--output-dir", "out", "--resume"]),
                             cwd=root, capture_output=True, text=True, timeout=JOB_TIMEOUT + 60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "every output written): nothing to do" in resumed.stdout
    assert snapshot(root / "out") == before


STAND_IN_SSH = """#!/bin/sh
# ssh for one machine: drop the options and the host name, run the remote command here
while [ "$1" = "-tt" ] || [ "$1" = "-o" ]; do
    if [ "$1" = "-o" ]; then shift; fi
    shift
done
shift
exec sh -c "$1"
"""


def test_host_file_job_through_ssh_commands_with_dist_device_sync(job_dir, tmp_path):
    """The host-file path with a stand-in for ssh that runs the remote command on this machine."""
    root, _ = job_dir
    ssh = tmp_path / "ssh"
    ssh.write_text(STAND_IN_SSH)
    ssh.chmod(0o755)
    (tmp_path / "hosts").write_text("# two names for this machine\nlocalhost\n127.0.0.1\n")
    result = subprocess.run(
        launch_command("-s", 1, "--hostfile", tmp_path / "hosts", "--ssh", ssh, "--scheduler-host", "127.0.0.1",
                       train_args=["--epochs", 1, "--output-dir", "out-hosts", "--kvstore", "dist_device_sync",
                                   "--devices", "cpu:2"]),
        cwd=root, capture_output=True, text=True, timeout=JOB_TIMEOUT + 60,
        env={**os.environ, "DMLC_INTERFACE": "lo", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr  # the workers' replicas agreed (fit checks)
    started = pids(result.stdout)
    for name, host in (("server 0", "localhost"), ("worker 0", "localhost"), ("worker 1", "127.0.0.1")):
        assert f"started {name} (pid {started[name]}) on {host}" in result.stdout  # round-robin
    assert_ended(started)
    assert os.path.isfile(root / "out-hosts" / "submission.csv")


def test_a_dead_worker_stops_the_job_with_a_clear_message(job_dir):
    root, _ = job_dir
    proc = subprocess.Popen(launch_command("-s", 1, train_args=["--epochs", 1000, "--output-dir", "out-dead"]),
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        output, _ = read_until(proc, r"\[worker 0\] \[rank \d\] epoch 1/")  # its first epoch is done
        started = pids(output)
        os.kill(started["worker 1"], signal.SIGKILL)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, output + rest + err
    assert_one_error_line(subprocess.CompletedProcess(proc.args, 1, output + rest, err),
                          f"worker 1 (pid {started['worker 1']}) was killed by signal SIGKILL",
                          "stopping the other 3 process(es)", code=1)
    assert_ended(started)
