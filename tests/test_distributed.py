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

from clitools import assert_one_error_line, command, run
from conftest import make_kaggle_dir
from gluon_cifar.data import load_datasets, reorg_cifar10_data
from gluon_cifar.distributed import ShardSampler, trainer_options, worker_shards
from gluon_cifar.train import train_one_epoch

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


def test_each_worker_gets_its_own_equal_shard_with_every_class(kaggle_dir):
    datasets = load_datasets(reorg_cifar10_data(kaggle_dir, 0.1))
    train = datasets["train"]
    shards = [worker_shards(datasets, rank, 3) for rank in range(3)]
    indices = [set(ShardSampler(len(train), 3, rank)) for rank in range(3)]
    assert [len(s["train"]) for s in shards] == [len(train) // 3] * 3
    assert not indices[0] & indices[1] and not indices[1] & indices[2] and not indices[0] & indices[2]
    for shard in shards:
        assert {label for _, label in shard["train"]} == set(range(len(train.synsets)))
        assert len(shard["valid"]) == len(datasets["valid"]) and len(shard["test"]) == len(datasets["test"])
    assert worker_shards(datasets, 0, 1) == datasets


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    """12 training images (3 classes) and 7 test images: with --final, 6 per worker, one batch each."""
    root = tmp_path_factory.mktemp("dist")
    make_kaggle_dir(root / "kaggle", 4)
    return root


def launch(*args, train_args):
    return command("launch", "-n", 2, *args, "--timeout", JOB_TIMEOUT, "--grace", 10, "--",
                   "--data-dir", "kaggle", "--cache-dir", "cache", "--final", "--batch-size", 6, "--lr", 0.01,
                   "--devices", "cpu", *train_args)


def pids(output):
    return {name: int(pid) for name, pid in re.findall(r"started (\w+ ?\d*) \(pid (\d+)\)", output)}


def assert_ended(pids):
    for name, pid in pids.items():
        assert not os.path.exists(f"/proc/{pid}"), f"{name} (pid {pid}) still exists"


def test_dist_sync_job_two_workers_agree_and_rank0_writes_once(job_dir):
    result = subprocess.run(launch("-s", 2, train_args=["--epochs", 2, "--output-dir", "out",
                                                        "--save-worker-params", "replicas"]),
                            cwd=job_dir, capture_output=True, text=True, timeout=JOB_TIMEOUT + 60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 2 worker(s) finished" in result.stdout
    started = pids(result.stdout)
    assert sorted(started) == ["scheduler", "server 0", "server 1", "worker 0", "worker 1"]
    assert_ended(started)

    mx.npx.set_np()
    replicas = [mx.npx.load(str(job_dir / "replicas" / f"worker-{rank}.params")) for rank in (0, 1)]
    assert replicas[0].keys() == replicas[1].keys()
    for name in replicas[0]:  # trainable weights and, averaged at the end, BatchNorm statistics
        onp.testing.assert_array_equal(replicas[0][name].asnumpy(), replicas[1][name].asnumpy(), err_msg=name)
    exported = mx.npx.load(str(job_dir / "out" / "model-0000.params"))
    running = [v for k, v in replicas[0].items() if "running" in k]
    aux = [v for k, v in exported.items() if k.startswith("aux:")]
    assert len(running) == len(aux) > 0
    assert all(float(abs(v).sum()) > 0 for k, v in replicas[0].items() if "running_mean" in k)  # trained, not zeros
    for ours, theirs in zip(running, aux):
        onp.testing.assert_array_equal(ours.asnumpy(), theirs.asnumpy())

    with open(job_dir / "out" / "metrics.json") as f:
        history = json.load(f)
    assert [h["examples"] for h in history] == [12, 12]  # the job's, not one worker's
    assert history[1]["train_loss"] < history[0]["train_loss"]
    written = [os.path.relpath(os.path.join(folder, name), job_dir)
               for folder, _, names in os.walk(job_dir) for name in names]
    assert sum(name.endswith("submission.csv") for name in written) == 1
    assert sum(name.endswith("metrics.json") for name in written) == 1
    assert sorted(os.listdir(job_dir)) == ["cache", "kaggle", "out", "replicas"]  # no rank 1 outputs


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
    ssh = tmp_path / "ssh"
    ssh.write_text(STAND_IN_SSH)
    ssh.chmod(0o755)
    (tmp_path / "hosts").write_text("# two names for this machine\nlocalhost\n127.0.0.1\n")
    result = subprocess.run(
        launch("-s", 1, "--hostfile", tmp_path / "hosts", "--ssh", ssh, "--scheduler-host", "127.0.0.1",
               train_args=["--epochs", 1, "--output-dir", "out-hosts", "--kvstore", "dist_device_sync",
                           "--devices", "cpu:2", "--save-worker-params", "replicas-hosts"]),
        cwd=job_dir, capture_output=True, text=True, timeout=JOB_TIMEOUT + 60,
        env={**os.environ, "DMLC_INTERFACE": "lo"})
    assert result.returncode == 0, result.stdout + result.stderr
    started = pids(result.stdout)
    for name, host in (("server 0", "localhost"), ("worker 0", "localhost"), ("worker 1", "127.0.0.1")):
        assert f"started {name} (pid {started[name]}) on {host}" in result.stdout  # round-robin
    assert_ended(started)
    mx.npx.set_np()
    replicas = [mx.npx.load(str(job_dir / "replicas-hosts" / f"worker-{rank}.params")) for rank in (0, 1)]
    for name in replicas[0]:
        onp.testing.assert_array_equal(replicas[0][name].asnumpy(), replicas[1][name].asnumpy(), err_msg=name)
    assert os.path.isfile(job_dir / "out-hosts" / "submission.csv")


def test_a_dead_worker_stops_the_job_with_a_clear_message(job_dir):
    proc = subprocess.Popen(launch("-s", 1, train_args=["--epochs", 1000, "--output-dir", "out-killed"]),
                            cwd=job_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        output = ""
        for line in proc.stdout:  # ends at the latest when the launcher's --timeout stops the job
            output += line
            if line.startswith("[worker 0] epoch 1:"):
                break
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


def test_amp_is_refused_with_the_reason(kaggle_dir, tmp_path):
    result = run("train", "--data-dir", kaggle_dir, "--amp", "--output-dir", tmp_path / "out")
    assert_one_error_line(result, "--amp", "NumPy mode", "float32")


AMP_PROBE = """
import gluon_cifar  # before MXNet: gluon_cifar.numpy_compat
import mxnet as mx
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
