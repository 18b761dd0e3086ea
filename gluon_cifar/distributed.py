"""Many devices and many machines: the kvstore, this worker's place in the job and its shard of the data.

`local`/`device` reduce gradients across one machine's devices; `dist_sync`/`dist_device_sync` join a
job of scheduler, parameter servers and workers started by `python -m gluon_cifar.launch` (MXNet reads
the DMLC_* environment variables when the KVStore is created). The servers add up the workers'
gradients and update the weights; after the last update they also average the workers' BatchNorm
running statistics.
"""
import contextlib
import fcntl
import os

import mxnet as mx


from .errors import InputError

KVSTORES = ("local", "device", "dist_sync", "dist_device_sync")


def default_kvstore(devices):
    """`device` (reduce on the GPUs) for several GPUs, else `local` (reduce on the CPU)."""
    return "device" if sum(d.device_type == "gpu" for d in devices) > 1 else "local"


def create_kvstore(kind):
    """A dist_* kind as the job's KVStore (blocks until every node has joined); other kinds stay names."""
    if not kind.startswith("dist"):
        return kind
    if os.environ.get("DMLC_ROLE") != "worker":
        raise InputError(f"--kvstore {kind} runs inside a distributed job: start it with "
                         "python -m gluon_cifar.launch -n WORKERS -s SERVERS -- <training arguments>")
    return mx.kv.create(kind)


def is_distributed(kvstore):
    return isinstance(kvstore, mx.kv.KVStore) and "dist" in kvstore.type


def rank_and_size(kvstore):
    """(this worker's rank, number of workers); (0, 1) outside a distributed job."""
    return (kvstore.rank, kvstore.num_workers) if is_distributed(kvstore) else (0, 1)


def trainer_options(kvstore):
    """Trainer arguments: with a dist kvstore the servers run the optimizer and workers pull the weights.

    That is MXNet's default for dist kvstores, and the one that keeps the replicas identical here:
    with update_on_kvstore=False (servers only add gradients, workers update) two workers on
    127.0.0.1 ended some runs with different weights in MXNet 1.9.1.
    """
    return {"kvstore": kvstore, "update_on_kvstore": True if is_distributed(kvstore) else None}


def job_epoch_stats(kvstore, trainer, stats, updates):
    """One worker's `train_one_epoch` stats as the job's, in a dist job; else `stats` unchanged.

    The workers step in lockstep on shards of one size, so the job's examples (hence examples/seconds,
    the throughput) are this worker's times the worker count; loss and accuracy stay this worker's.
    The servers apply the learning-rate schedule, so the local optimizer's update count is set to the
    `updates` done, for `trainer.learning_rate` to read the rate the servers use.
    """
    if not is_distributed(kvstore):
        return stats
    trainer.optimizer.num_update = updates
    return {**stats, "examples": stats["examples"] * kvstore.num_workers}


def average_across_workers(kvstore, arrays, first_key):
    """The element-wise means of `arrays` over the workers of a dist job, made by its servers.

    Only after the last update: the servers' optimizer becomes MXNet's `Test`, which adds what is
    pushed to what is stored, so each array, under a fresh key from `first_key` on (after the
    Trainer's: it numbers the parameters 0, 1, ...) initialised to zero, comes back as the sum.
    """
    mx.npx.waitall()  # this worker's last update is done, hence (in sync mode) every worker's
    kvstore.set_optimizer(mx.optimizer.Test(rescale_grad=1.0))
    means = []
    for key, array in enumerate(arrays, start=first_key):
        array = array.as_in_ctx(mx.cpu())
        kvstore.init(key, mx.np.zeros_like(array))
        total = mx.np.zeros_like(array)
        kvstore.pushpull(key, array.copy(), out=total)
        means.append(total / kvstore.num_workers)
    return means


@contextlib.contextmanager
def one_worker_at_a_time(kvstore, folder):
    """In a distributed job, hold an exclusive lock on `folder`/prepare.lock, so workers sharing a disk
    download and reorganise the data one after another (the later ones find it done); else do nothing."""
    if not is_distributed(kvstore):
        yield
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "prepare.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
