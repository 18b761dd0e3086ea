"""Many devices and many machines: the kvstore, this worker's place in the job and its part of each batch.

`local`/`device` reduce gradients across one machine's devices; `dist_sync`/`dist_device_sync` join a
job of scheduler, parameter servers and workers started by `python -m gluon_cifar.launch` (MXNet reads
the DMLC_* environment variables when the KVStore is created).

One learning rule: a job of W workers x batch B learns as one process with W devices x batch B (that is,
`--devices cpu:W --batch-size W*B`). Each global batch of W*B images is drawn from one shuffle that every
worker makes alike (`data.ShardSampler`), and worker r trains on the r-th B of it, as device r would; the
servers only add the workers' gradients (they run no optimizer); every worker divides the sum by W*B and
applies the same SGD step to its own replica, as one process applies it once. So the rate, weight decay
and schedule per update are one process's, and each worker holds the whole optimizer state, which rank 0
checkpoints like one process does.
"""
import contextlib
import hashlib
import os

import mxnet as mx
from mxnet import gluon

from gluon_cifar.errors import InputError
from gluon_cifar.fs import locked


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
    """Trainer arguments for `kvstore`: the kvstore reduces the gradients, the Trainer's updaters update.

    update_on_kvstore=False everywhere (MXNet's default puts the optimizer into the kvstore with several
    devices, and onto the servers in a dist job) keeps the optimizer's state (momentum, update counts) in
    the Trainer, where it is checkpointed as plain arrays (gluon_cifar.checkpoint), on every worker.
    """
    return {"kvstore": kvstore, "update_on_kvstore": False}


class Trainer(gluon.Trainer):
    """gluon.Trainer that lets its broadcast of the initial parameters finish before it pushes a gradient.

    MXNet 1.9.1's dist kvstore does not order a worker's pull of a key before that worker's later push
    to the key when they touch different arrays. The Trainer's first step pulls the initial weights,
    then pushes the gradients at once: a slower worker's pull could be answered after the first round
    of gradients was summed, and its replica started from that sum (or, for an array split across
    servers, partly). update_on_kvstore=True hid it by pulling the weights again every step; this is
    the divergence once seen with workers that update. Reproduced with bare init/pull/pushpull.
    """

    def _init_params(self):
        super()._init_params()
        mx.npx.waitall()


def gradient_scale(kvstore):
    """The optimizer's `rescale_grad` factor: 1/W in a job of W workers, so that `trainer.step(B)` divides
    the servers' sum of W batches' gradients by W*B, as one process divides its W devices' sum."""
    return 1.0 / rank_and_size(kvstore)[1]


def epoch_keys(net, epoch):
    """KVStore keys of `epoch`'s own for the workers' exchanges after it (BatchNorm means, then the replica
    check, last): a key takes one size for the whole job. The Trainer holds keys 0 .. P-1 (P parameters)."""
    size = len(net.collect_params().keys()) + 1
    return range(size * epoch, size * (epoch + 1))


def sum_across_workers(kvstore, arrays, keys):
    """The element-wise sums of `arrays` over the workers of a dist job, made by its servers under `keys`
    (fresh ones): without an optimizer, the servers return the sum of what the workers push."""
    mx.npx.waitall()  # the last update on this worker is done, hence (sync mode) on every worker
    keys = list(keys)[:len(arrays)]
    kvstore.init(keys, [mx.np.zeros_like(a) for a in arrays])
    totals = [mx.np.zeros_like(a) for a in arrays]
    kvstore.pushpull(keys, [a.copy() for a in arrays], out=totals)
    return totals


def check_replicas_agree(kvstore, net, epoch):
    """In a dist job, stop with an error if the workers' parameters differ after `epoch` (they must stay
    equal bit for bit: each applies the same update to the same sum). Each worker puts a fingerprint of its
    parameters into its own slot of a vector of zeros; the servers' sum holds every worker's, exactly."""
    if not is_distributed(kvstore):
        return
    digest = hashlib.sha1()
    for param in net.collect_params().values():
        digest.update(param.data().asnumpy().tobytes())
    mine = mx.np.zeros(kvstore.num_workers)
    mine[kvstore.rank] = int.from_bytes(digest.digest()[:3], "big")  # 24 bits: exact in float32
    fingerprints = [int(v) for v in sum_across_workers(kvstore, [mine], epoch_keys(net, epoch)[-1:])[0]]
    if len(set(fingerprints)) != 1:
        raise RuntimeError(f"the workers' parameters differ after epoch {epoch} (fingerprints by rank: "
                           f"{fingerprints}): resume the job from its last checkpoint")


@contextlib.contextmanager
def one_worker_at_a_time(kvstore, folder):
    """In a distributed job, hold an exclusive lock on `folder`/prepare.lock, so workers sharing a disk
    download and reorganise the data one after another (the later ones find it done); else do nothing."""
    if not is_distributed(kvstore):
        yield
        return
    with locked(os.path.join(folder, "prepare.lock")):
        yield
