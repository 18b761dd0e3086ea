"""The training loop: the chapter's `train`, its steps (`train_one_epoch`, `evaluate`), and `fit`, which runs
the same loop for a whole `RunConfig` (recipes, seeding, checkpoints, the best epoch, resume, early stopping).

It knows nothing of the command line, prediction or export.
"""
import logging
import math
import random
import time
from typing import NamedTuple

import mxnet as mx
import numpy as onp
from mxnet import autograd, gluon
from tqdm import tqdm

from gluon_cifar.errors import InputError
from gluon_cifar.training.checkpoint import check_resumable, epoch_seed, load_checkpoint, save_best, save_checkpoint
from gluon_cifar.training.distributed import (Trainer, check_replicas_agree, epoch_keys, gradient_scale, is_distributed,
                                              rank_and_size, sum_across_workers, trainer_options)
from gluon_cifar.training.recipes import make_scheduler, make_soft_targets, step_decay

log = logging.getLogger("gluon_cifar")
PROGRESS_SECONDS = 60  # the longest silence within an epoch when stderr is not a terminal


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


def evaluate(net, data_iter, devices, loss):
    """Mean `loss` and accuracy of `net` over `data_iter`, each batch split across `devices`."""
    loss_sum, correct, total = 0.0, 0.0, 0
    for X, y in data_iter:
        X_shards, y_shards = split_batch(X, y, devices)
        preds = [net(Xs) for Xs in X_shards]
        loss_sum += sum(float(loss(p, ys).sum()) for p, ys in zip(preds, y_shards))
        correct += sum(correct_count(p, ys) for p, ys in zip(preds, y_shards))
        total += y.shape[0]
    return loss_sum / max(total, 1), correct / max(total, 1)


class Progress:
    """An epoch's running loss and accuracy, shown while it runs: a tqdm bar on a terminal; elsewhere (a log
    file, nohup, CI) a line every `log_every` batches or PROGRESS_SECONDS seconds, whichever comes first."""

    def __init__(self, num_batches, desc, log_every=50):
        self.num_batches, self.desc, self.log_every = num_batches, desc, log_every
        self.loss_sum, self.correct, self.examples, self.seconds, self.batch = 0.0, 0.0, 0, 0.0, 0
        self.bar = tqdm(total=num_batches, desc=desc, leave=False, disable=None)  # None: off unless a terminal
        self.logged_at = time.monotonic()

    def add(self, loss_sum, correct, examples, seconds):
        """Count one batch: its summed loss, correct predictions, examples and compute seconds."""
        self.loss_sum += loss_sum
        self.correct += correct
        self.examples += examples
        self.seconds += seconds
        self.batch += 1
        loss, acc = self.loss_sum / self.examples, self.correct / self.examples
        if not self.bar.disable:
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", refresh=False)
            self.bar.update()
        elif self.batch % self.log_every == 0 or time.monotonic() - self.logged_at >= PROGRESS_SECONDS:
            log.info("%s, batch %d/%d: loss %.3f, acc %.3f, %.1f img/s", self.desc, self.batch, self.num_batches,
                     loss, acc, self.examples / max(self.seconds, 1e-9))
            self.logged_at = time.monotonic()

    def stats(self):
        self.bar.close()
        return {"train_loss": self.loss_sum / max(self.examples, 1), "train_acc": self.correct / max(self.examples, 1),
                "examples": self.examples, "seconds": self.seconds}


class Steps(NamedTuple):
    """How an epoch's training steps run: the `trainer` and `loss`, the `devices` each batch is split across,
    the recipe's `soft_targets` (a recipes.SoftTargets; None: the hard labels), the job's `kvstore` and
    the batches between progress lines when stderr is not a terminal (`log_every`)."""
    trainer: object
    loss: object
    devices: list
    soft_targets: object = None
    kvstore: object = "local"
    log_every: int = 50


def train_one_epoch(net, train_iter, steps, desc="train"):
    """One pass over `train_iter`, stepping as `steps` (a Steps) says; returns the mean loss, accuracy,
    example count and compute seconds.

    With soft targets, the loss sees their mixed batch and dense targets; accuracy is still counted
    against the hard labels. A loss that is not finite stops the run here, before the diverged weights
    reach a checkpoint or an export.
    """
    trainer, loss, devices, soft_targets = steps.trainer, steps.loss, steps.devices, steps.soft_targets
    progress = Progress(len(train_iter), desc, steps.log_every)
    for batch, (X, y) in enumerate(train_iter, start=1):
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
                             f"(the rate was {trainer.learning_rate:g}), raise --batch-size or try another --seed (small "
                             f"batches at lr 0.1 diverge on some seeds, the chapter's code too); the last checkpoint "
                             f"and model are kept")
        trainer.step(X.shape[0])
        progress.add(batch_loss, sum(correct_count(p, ys) for p, ys in zip(preds, y_shards)), X.shape[0],
                     time.perf_counter() - start)
    return progress.stats()


def make_trainer(net, lr_scheduler, wd, kvstore="local"):
    """The chapter's optimizer: SGD with momentum 0.9 and weight decay `wd`; the schedule alone sets the rate.

    Its parameters are in the net's order, not sorted by their generated names, so a checkpoint's optimizer
    state fits every instance of the model (the names' numbers grow with each model built in a process).
    Only those that learn: BatchNorm's running statistics are `average_batchnorm_stats`'s. (With them, the
    Trainer's first kvstore exchange gave every device and worker the first one's, after the first batch of
    a fresh run but before it on resume: a resumed job differed from the uninterrupted one.)
    In a dist job every worker runs it on the servers' sum of the workers' gradients, scaled to the mean
    over the job's global batch (gluon_cifar.distributed): the update of one process with a device per worker.
    """
    return Trainer([p for p in net.collect_params().values() if p.grad_req != "null"], "sgd",
                   {"momentum": 0.9, "wd": wd, "lr_scheduler": lr_scheduler, "rescale_grad": gradient_scale(kvstore)},
                   **trainer_options(kvstore))


def run_epoch(net, train_iter, valid_iter, steps, epoch, num_epochs):
    """Train epoch `epoch` as `steps` (a Steps) says, average the BatchNorm statistics, then measure
    validation loss and accuracy (when there is a `valid_iter`); log and return its stats (in a dist job,
    the job's example count: the workers step in lockstep)."""
    started, devices = time.perf_counter(), steps.devices
    stats = train_one_epoch(net, train_iter, steps, f"epoch {epoch}/{num_epochs}")
    average_batchnorm_stats(net, steps.kvstore, epoch)
    stats.update(epoch=epoch, lr=steps.trainer.learning_rate,
                 examples=stats["examples"] * rank_and_size(steps.kvstore)[1])
    if valid_iter is not None:
        stats["valid_loss"], stats["valid_acc"] = evaluate(net, valid_iter, devices, gluon.loss.SoftmaxCrossEntropyLoss())
    stats["wall_seconds"] = time.perf_counter() - started
    log.info("epoch %d/%d (%.1f s): train loss %.3f, acc %.3f%s | lr %g | %.1f img/s on %s", epoch, num_epochs,
             stats["wall_seconds"], stats["train_loss"], stats["train_acc"],
             f" | valid loss {stats['valid_loss']:.3f}, acc {stats['valid_acc']:.3f}" if valid_iter is not None else "",
             stats["lr"], stats["examples"] / max(stats["seconds"], 1e-9), ", ".join(map(str, devices)))
    return stats


def train(net, train_iter, valid_iter, num_epochs, lr, wd, devices, lr_period, lr_decay, on_epoch_end=None):
    """The chapter's training: SGD with momentum 0.9 and weight decay, the learning rate multiplied by
    `lr_decay` every `lr_period` epochs; each batch split across `devices`. `valid_iter` may be None (the
    final fit on train_valid). Returns the per-epoch history; `on_epoch_end(stats)` follows along (the
    notebook's plot)."""
    trainer = make_trainer(net, step_decay(lr, lr_period, lr_decay, len(train_iter)), wd)
    steps = Steps(trainer, gluon.loss.SoftmaxCrossEntropyLoss(), devices)
    history = []
    for epoch in range(1, num_epochs + 1):
        history.append(run_epoch(net, train_iter, valid_iter, steps, epoch, num_epochs))
        if on_epoch_end:
            on_epoch_end(history[-1])
    return history


def best_epoch(history):
    """The first epoch of `history` with the highest validation accuracy (None without validation)."""
    scored = [h for h in history if "valid_acc" in h]
    return max(scored, key=lambda h: h["valid_acc"])["epoch"] if scored else None


def fit(net, train_iter, valid_iter, run, num_classes, on_epoch_end=None):
    """`train` for a whole Run (gluon_cifar.settings): its recipe's schedule and targets, and, with a
    `run.checkpoint_dir`, a checkpoint after every epoch and the best epoch's weights (by validation
    accuracy) beside it.
    `config.resume` continues from the last checkpoint, to `config.epochs`; `config.patience` stops once
    that many epochs passed without a better validation accuracy. `on_epoch_end(history)` follows along.

    Every epoch reseeds the generators from `config.seed` and the epoch number (see gluon_cifar.checkpoint),
    so a resumed run draws what an uninterrupted one would. In a dist job `run.kvstore` is the job's KVStore:
    after every epoch the workers check that their replicas agree, rank 0 alone writes the checkpoint (the
    whole job's state: every worker holds the same parameters and optimizer state) and, on resume, every
    worker reads it.
    """
    config, checkpoint_dir = run.config, run.checkpoint_dir
    trainer = make_trainer(net, make_scheduler(config, len(train_iter)), config.wd, run.kvstore)
    soft_targets = make_soft_targets(num_classes, config.label_smoothing, config.mixup_alpha)
    steps = Steps(trainer, gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=soft_targets is None), run.devices,
                  soft_targets, run.kvstore, config.log_every)
    if config.resume:
        check_resumable(checkpoint_dir, config.epochs)
    history = load_checkpoint(checkpoint_dir, net, trainer) if config.resume else []
    for epoch in range(len(history) + 1, config.epochs + 1):
        best = best_epoch(history)
        if config.patience and best is not None and len(history) - best >= config.patience:
            log.info("early stop: no better validation accuracy in the %d epochs since epoch %d (%.3f)",
                     config.patience, best, history[best - 1]["valid_acc"])
            break
        seed_everything(epoch_seed(config.seed, epoch))
        history.append(run_epoch(net, train_iter, valid_iter, steps, epoch, config.epochs))
        check_replicas_agree(run.kvstore, net, epoch)
        if checkpoint_dir and run.rank == 0:
            if best_epoch(history) == epoch:  # before the checkpoint: a kill in between retrains this epoch
                save_best(checkpoint_dir, net)
            save_checkpoint(checkpoint_dir, net, trainer, history)
            log.info("epoch %d: checkpoint saved in %s", epoch, checkpoint_dir)
        if on_epoch_end:
            on_epoch_end(history)
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
