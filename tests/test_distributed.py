"""Many devices and many machines: several CPU contexts against one, and real dist_sync jobs on 127.0.0.1.

The distributed tests run the launcher as a user does: a scheduler, parameter servers and two workers
as separate processes, each bounded by the launcher's --timeout and by the subprocess timeout here.
"""
import json
import os
import re
import signal
import subprocess
import sys

import mxnet as mx
import numpy as onp
import pytest
from mxnet import gluon, init
from mxnet.gluon import nn

from clitools import assert_one_error_line, command, run, snapshot
from conftest import make_kaggle_dir
from distfit import fit_plainly
from gluon_cifar import launch
from gluon_cifar.data.loaders import ShardSampler
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.training.distributed import trainer_options
from gluon_cifar.training.loop import train_one_epoch
from gluon_cifar.training.launcher import free_port

JOB_TIMEOUT = 240  # seconds; a healthy job here takes well under a minute


def small_net(devices):
    """A model without BatchNorm, whose update does not depend on how a batch is split."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, kernel_size=3, padding=1, activation="relu"), nn.GlobalAvgPool2D(), nn.Dense(3))
    net.initialize(init.Xavier(), ctx=devices)
    net.hybridize()
    return net


@pytest.mark.parametrize("kvstore", ["local", "device"])
def test_two_cpu_contexts_make_the_update_of_one(tmp_path, kvstore):
    X = mx.np.random.uniform(size=(16, 3, 8, 8))
    y = mx.np.array(onp.arange(16) % 3, dtype="int32")
    loader = gluon.data.DataLoader(gluon.data.ArrayDataset(X, y), batch_size=8)  # two batches: momentum too
    one, two = [mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]
    mx.random.seed(0)
    reference = small_net(one)
    reference(X[:1])
    reference.save_parameters(str(tmp_path / "start.params"))
    params = {}
    for devices in (one, two):
        net = small_net(devices)
        net.load_parameters(str(tmp_path / "start.params"), ctx=devices)
        trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.5, "momentum": 0.9, "wd": 5e-4},
                                **trainer_options(kvstore))
        train_one_epoch(net, loader, gluon.loss.SoftmaxCrossEntropyLoss(), trainer, devices)
        params[len(devices)] = [[d.asnumpy() for d in p.list_data()] for p in net.collect_params().values()]
    start = [p.data().asnumpy() for p in reference.collect_params().values()]
    for before, (single,), replicas in zip(start, params[1], params[2]):
        assert not onp.allclose(single, before)  # the steps changed it
        for replica in replicas:
            onp.testing.assert_allclose(replica, single, rtol=1e-4, atol=1e-6)


def test_workers_share_each_global_batch_of_one_process_in_its_order():
    """Worker r's batches are the r-th parts of one process's batches of workers x batch_size."""
    length, workers, batch = 40, 3, 4
    onp.random.seed(7)
    one = list(gluon.data.RandomSampler(length))[:(length // (workers * batch)) * workers * batch]
    parts = []
    for rank in range(workers):
        onp.random.seed(7)  # fit seeds every worker alike at the start of an epoch
        sampler = ShardSampler(length, workers, rank, batch)
        parts.append(list(sampler))
        assert len(sampler) == len(parts[-1]) == 3 * batch
    joined = [i for step in range(3) for part in parts for i in part[step * batch:(step + 1) * batch]]
    assert joined == one


@pytest.mark.parametrize("loaders, expected", [(0, [16, 15, 15, 15]), (2, [14, 13, 13, 13])])
def test_launcher_shares_the_cores_among_local_processes(monkeypatch, loaders, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    layout = launch.plan(4, 2, None, "127.0.0.1", 9000, ["--num-workers", str(loaders)], "python", cores=64)
    threads = {name: int(env["OMP_NUM_THREADS"]) for name, _, env, _ in layout}
    assert [threads[f"worker {i}"] for i in range(4)] == expected
    assert threads["scheduler"] == threads["server 0"] == threads["server 1"] == 1
    assert sum(threads.values()) + 4 * loaders == 64
    for name, _, env, _ in layout:
        if not name.startswith("worker"):
            assert env["MXNET_CPU_WORKER_NTHREADS"] == "1"


def test_launcher_keeps_the_users_thread_count_for_the_workers(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    layout = launch.plan(2, 1, None, "127.0.0.1", 9000, [], "python", cores=64)
    assert [env["OMP_NUM_THREADS"] for _, _, env, _ in layout] == ["1", "1", "3", "3"]


@pytest.mark.slow
def test_two_workers_learn_as_one_process_with_two_devices(tmp_path):
    """2 workers x batch 3 (dist_sync, a thread each) against one process with cpu:2 x batch 6: from the same
    initialisation and the same examples, 8 updates end with the same parameters and BatchNorm statistics."""
    reorg = reorg_cifar10_data(make_kaggle_dir(tmp_path / "kaggle", 8), 0.1, str(tmp_path / "reorg"))
    one = fit_plainly(reorg, "cpu:2", 6)
    one.save_parameters(str(tmp_path / "one.params"))

    worker = [sys.executable, os.path.join(os.path.dirname(__file__), "distfit.py"), reorg,
              str(tmp_path / "checkpoint"), "3"]
    layout = [(name, host, {**env, "OMP_NUM_THREADS": "1"}, worker if name.startswith("worker") else argv)
              for name, host, env, argv in launch.plan(2, 1, None, "127.0.0.1", free_port(), [],
                                                        sys.executable)]
    assert launch.run_job(layout, timeout=JOB_TIMEOUT) is None

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_finished_job_resumed_has_nothing_to_do(job_dir):
    """Before, rank 0 returned at once while rank 1 initialised the servers' keys it reads: SIGABRT."""
    root, _ = job_dir
    before = snapshot(root / "out")
    resumed = subprocess.run(launch_command("-s", 2, train_args=["--epochs", 2, "--output-dir", "out", "--resume"]),
                             cwd=root, capture_output=True, text=True, timeout=JOB_TIMEOUT + 60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "every output written): nothing to do" in resumed.stdout
    assert snapshot(root / "out") == before


def test_resuming_with_another_number_of_workers_is_refused_before_the_job_starts(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"job_workers": 2, "epochs": 2}))
    with pytest.raises(SystemExit) as stop:
        launch.main(["-n", "3", "--", "--data-dir", "kaggle", "--output-dir", str(out), "--resume"])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and "started" not in captured.out
    assert captured.err.splitlines() == [captured.err.strip()] and captured.err.startswith("error: ")
    assert "the worker count changed (was 2, now 3)" in captured.err and str(out) in captured.err


STAND_IN_SSH = """#!/bin/sh
# ssh for one machine: drop the options and the host name, run the remote command here
while [ "$1" = "-tt" ] || [ "$1" = "-o" ]; do
    if [ "$1" = "-o" ]; then shift; fi
    shift
done
shift
exec sh -c "$1"
"""


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_dist_kvstore_outside_a_launched_job_is_refused(kaggle_dir, tmp_path):
    result = run("train", "--data-dir", kaggle_dir, "--kvstore", "dist_sync", "--output-dir", tmp_path / "out")
    assert_one_error_line(result, "--kvstore dist_sync", "python -m gluon_cifar.launch")


AMP_PROBE = """
import gluon_cifar  # before MXNet: gluon_cifar.numpy_compat
import mxnet as mx
mx.npx.set_np()
from mxnet.contrib import amp
from gluon_cifar.model import get_net
amp.init(target_dtype="bfloat16")
net = get_net([mx.cpu()], 3)
net.hybridize()
out = net(mx.np.zeros((1, 3, 32, 32)))
casts = [n for n in net._cached_graph[1].get_internals().list_outputs() if "amp_cast" in n]
print(out.dtype, len(casts))
"""


def test_why_amp_is_refused_mxnet_amp_leaves_numpy_mode_gluon_in_float32():
    """If a future MXNet makes AMP cast NumPy-mode operators, this fails: then offer --amp."""
    result = subprocess.run([sys.executable, "-c", AMP_PROBE], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["float32", "0"]


@pytest.mark.parametrize("args, fragment", [
    (["-n", 2, "--", "--kvstore", "local"], "--kvstore local is for one process"),
    (["-n", 2, "--hostfile", "no-such-hosts", "--"], "no-such-hosts: cannot read host file"),
])
def test_launcher_refuses_bad_arguments_before_starting_anything(tmp_path, args, fragment):
    result = run("launch", *args, cwd=tmp_path)
    assert_one_error_line(result, fragment)
    assert "started" not in result.stdout
