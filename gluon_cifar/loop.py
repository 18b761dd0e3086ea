"""The training loop: the chapter's `train`, its steps (`train_one_epoch`, `evaluate_accuracy`), and `fit`,
which runs the same loop for a whole `RunConfig` (recipes, seeding, checkpoints, resume).

It knows nothing of the command line, prediction or export.
"""
import logging
import math
import random
import time

import mxnet as mx
import numpy as onp
from mxnet import autograd, gluon
from tqdm import tqdm

from .checkpoint import epoch_seed, load_checkpoint, save_checkpoint
from .distributed import (Trainer, check_replicas_agree, epoch_keys, gradient_scale, is_distributed, rank_and_size,
                          sum_across_workers, trainer_options)
from .errors import InputError
from .recipes import make_scheduler, make_soft_targets, step_decay

log = logging.getLogger("gluon_cifar")


def seed_everything(seed):
    """Seed MXNet's, NumPy's and Python's generators, which the loaders and transforms draw from."""
    mx.random.seed(seed)
    onp.random.seed(seed)
    random.seed(seed)


def split_batch(X, y, devices):
    """Split a batch and its labels across `devices` (d2l's `split_batch`)."""
    return (gluon.utils.split_and_load(X, devices, even_split=False),
            gluon.utils.split_and_load(y, devices, even_split=False))


def correct_count(y_hat, y):
    """Number of rows of `y_hat` whose argmax equals the label."""
    return float((y_hat.argmax(axis=1).astype(y.dtype) == y).sum())


def evaluate_accuracy(net, data_iter, devices):
    """Accuracy of `net` over `data_iter`, each batch split across `devices`."""
    correct, total = 0.0, 0
    for X, y in data_iter:
        X_shards, y_shards = split_batch(X, y, devices)
        correct += sum(correct_count(net(Xs), ys) for Xs, ys in zip(X_shards, y_shards))
        total += y.shape[0]
    return correct / max(total, 1)


def train_one_epoch(net, train_iter, loss, trainer, devices, desc="train", soft_targets=None):
    """One pass over `train_iter`; returns the mean loss, accuracy, example count and compute seconds.

    With `soft_targets` (a recipes.SoftTargets), the loss sees its mixed batch and dense targets;
    accuracy is still counted against the hard labels. A loss that is not finite stops the run here,
    before the diverged weights reach a checkpoint or an export.
    """
    loss_sum, correct, examples, seconds = 0.0, 0.0, 0, 0.0
    for batch, (X, y) in enumerate(tqdm(train_iter, desc=desc, leave=False, disable=None), start=1):
        start = time.perf_counter()
        X_shards, t_shards = split_batch(*(soft_targets(X, y) if soft_targets else (X, y)), devices)
        y_shards = gluon.utils.split_and_load(y, devices, even_split=False)
        with autograd.record():
            preds = [net(Xs) for Xs in X_shards]
            losses = [loss(p, ts) for p, ts in zip(preds, t_shards)]
        for l in losses:
            l.backward()
        batch_loss = sum(float(l.sum()) for l in losses)  # float() waits for the engine
        if not math.isfinite(batch_loss):
            raise InputError(f"{desc}, batch {batch}: the loss is {batch_loss}: training diverged; lower --lr "
                             f"(the rate was {trainer.learning_rate:g}); the last checkpoint and model are kept")
        trainer.step(X.shape[0])
        loss_sum += batch_loss
        correct += sum(correct_count(p, ys) for p, ys in zip(preds, y_shards))
        examples += X.shape[0]
        seconds += time.perf_counter() - start
    return {"train_loss": loss_sum / max(examples, 1), "train_acc": correct / max(examples, 1),
            "examples": examples, "seconds": seconds}


def make_trainer(net, lr_scheduler, wd, kvstore="local"):
    """The chapter's optimizer: SGD with momentum 0.9 and weight decay `wd`; the schedule alone sets the rate.

    In a dist job every worker runs it on the servers' sum of the workers' gradients, scaled to the mean
    over the job's global batch (gluon_cifar.distributed): the update of one process with a device per worker.
    """
    return Trainer(net.collect_params(), "sgd", {"momentum": 0.9, "wd": wd, "lr_scheduler": lr_scheduler,
                                                 "rescale_grad": gradient_scale(kvstore)},
                   **trainer_options(kvstore))


def run_epoch(net, train_iter, valid_iter, loss, trainer, devices, epoch, num_epochs, soft_targets=None,
              kvstore="local"):
    """Train one epoch, average the BatchNorm statistics, then measure validation accuracy (when there is a
    `valid_iter`); return its stats (in a dist job, the job's example count: the workers step in lockstep)."""
    stats = train_one_epoch(net, train_iter, loss, trainer, devices, f"epoch {epoch}/{num_epochs}", soft_targets)
    average_batchnorm_stats(net, kvstore, epoch)
    stats.update(epoch=epoch, lr=trainer.learning_rate, examples=stats["examples"] * rank_and_size(kvstore)[1])
    if valid_iter is not None:
        stats["valid_acc"] = evaluate_accuracy(net, valid_iter, devices)
    log.info("epoch %d: loss %.3f, train acc %.3f%s, %.1f examples/sec on %s", epoch,
             stats["train_loss"], stats["train_acc"],
             f", valid acc {stats['valid_acc']:.3f}" if "valid_acc" in stats else "",
             stats["examples"] / max(stats["seconds"], 1e-9), devices)
    return stats


def train(net, train_iter, valid_iter, num_epochs, lr, wd, devices, lr_period, lr_decay, on_epoch_end=None):
    """The chapter's training: SGD with momentum 0.9 and weight decay, the learning rate multiplied by
    `lr_decay` every `lr_period` epochs; each batch split across `devices`. `valid_iter` may be None (the
    final fit on train_valid). Returns the per-epoch history; `on_epoch_end(stats)` follows along (the
    notebook's plot)."""
    trainer = make_trainer(net, step_decay(lr, lr_period, lr_decay, len(train_iter)), wd)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    history = []
    for epoch in range(1, num_epochs + 1):
        history.append(run_epoch(net, train_iter, valid_iter, loss, trainer, devices, epoch, num_epochs))
        if on_epoch_end:
            on_epoch_end(history[-1])
    return history


def fit(net, train_iter, valid_iter, config, num_classes, kvstore="local", checkpoint_dir=None, on_epoch_end=None):
    """`train` for a whole RunConfig: its recipe's schedule and targets, and, with `checkpoint_dir`, a
    checkpoint after every epoch (`config.resume` continues from the last one).

    Every epoch reseeds the generators from `config.seed` and the epoch number (see gluon_cifar.checkpoint),
    so a resumed run draws what an uninterrupted one would. In a dist job `kvstore` is the job's KVStore:
    after every epoch the workers check that their replicas agree, rank 0 alone writes the checkpoint (the
    whole job's state: every worker holds the same parameters and optimizer state) and, on resume, every
    worker reads it.
    """
    devices = config.contexts()
    scheduler = make_scheduler(config.lr_schedule, config.lr, config.epochs, len(train_iter), config.lr_period,
                               config.lr_decay, config.warmup_frac)
    trainer = make_trainer(net, scheduler, config.wd, kvstore)
    soft_targets = make_soft_targets(num_classes, config.label_smoothing, config.mixup_alpha)
    loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=soft_targets is None)
    history = load_checkpoint(checkpoint_dir, net, trainer) if config.resume else []
    for epoch in range(len(history) + 1, config.epochs + 1):
        seed_everything(epoch_seed(config.seed, epoch))
        history.append(run_epoch(net, train_iter, valid_iter, loss, trainer, devices, epoch, config.epochs,
                                 soft_targets, kvstore))
        check_replicas_agree(kvstore, net, epoch)
        if checkpoint_dir and rank_and_size(kvstore)[0] == 0:
            save_checkpoint(checkpoint_dir, net, trainer, history)
            log.info("epoch %d: checkpoint saved in %s", epoch, checkpoint_dir)
        if on_epoch_end:
            on_epoch_end(history[-1])
    return history


def average_batchnorm_stats(net, kvstore=None, epoch=0):
    """Give every device (and, with a dist `kvstore`, every worker, after `epoch`) the mean of their BatchNorm
    running statistics.

    Each device updates its own running mean/variance from its own shards. These are moving averages,
    linear in the batch statistics, so averaging them after every epoch ends a run with what averaging
    once at its end would give; in between, validation, checkpoints and `export` see one set, the job's.
    """
    params = list(net.collect_params(".*running_(mean|var)").values())
    means = [sum(s.copyto(mx.cpu()) for s in p.list_data()) / len(p.list_data()) for p in params]
    if is_distributed(kvstore):
        means = [total / kvstore.num_workers for total in sum_across_workers(kvstore, means, epoch_keys(net, epoch))]
    for param, mean in zip(params, means):
        for data in param.list_data():  # in place: set_data would reset the Trainer's (dist) kvstore
            data[:] = mean.as_in_ctx(data.ctx)
