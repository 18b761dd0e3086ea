"""Training recipes: learning-rate schedules, soft targets (label smoothing, mixup) and named presets.

The chapter's recipe is the default everywhere; `strong` is the opt-in preset (pad-4 random
crop, one-cycle to 0.2, label smoothing 0.1, 30 epochs, flip TTA). Schedules are MXNet `LRScheduler`
objects for `gluon.Trainer`, which calls them with its update count t = 1, 2, ... (one per batch).
"""
import mxnet as mx
import numpy as onp
from mxnet import np, npx

# Learning-rate schedules

def step_decay(lr, lr_period, lr_decay, batches_per_epoch, warmup_updates=0):
    """The chapter's schedule: lr times lr_decay at the start of every lr_period-th epoch."""
    return mx.lr_scheduler.FactorScheduler(step=lr_period * batches_per_epoch, factor=lr_decay,
                                           base_lr=lr, stop_factor_lr=0, warmup_steps=warmup_updates)


def cosine_decay(lr, total_updates, warmup_updates=0):
    """Linear warm-up from 0 over `warmup_updates`, then half a cosine from `lr` to 0 at `total_updates`."""
    return mx.lr_scheduler.CosineScheduler(total_updates, base_lr=lr, final_lr=0,
                                           warmup_steps=warmup_updates)


def one_cycle(lr, total_updates, warmup_updates):
    """Smith's one cycle: linear from 0 up to `lr` over `warmup_updates`, then linearly down to 0."""
    return mx.lr_scheduler.PolyScheduler(total_updates, base_lr=lr, pwr=1, final_lr=0,
                                         warmup_steps=warmup_updates)


def make_scheduler(config, batches_per_epoch):
    """The schedule a RunConfig names (`lr_schedule`, one of SCHEDULES, from `lr`) over its epochs of
    `batches_per_epoch` updates.

    `warmup_frac` of all updates (rounded, at most all but the last) warm up linearly from 0.
    """
    total, lr = config.epochs * batches_per_epoch, config.lr
    warmup = min(round(config.warmup_frac * total), total - 1)
    if config.lr_schedule == "step":
        return step_decay(lr, config.lr_period, config.lr_decay, batches_per_epoch, warmup)
    if config.lr_schedule == "cosine":
        return cosine_decay(lr, total, warmup)
    return one_cycle(lr, total, warmup)


# Soft targets

def make_soft_targets(num_classes, label_smoothing=0.0, mixup_alpha=0.0):
    """A SoftTargets, or None (the chapter's hard labels) when both label smoothing and mixup are off."""
    return SoftTargets(num_classes, label_smoothing, mixup_alpha) if label_smoothing or mixup_alpha else None


class SoftTargets:
    """Dense targets for `SoftmaxCrossEntropyLoss(sparse_label=False)`, as GluonCV's training scripts make them.

    Label smoothing: one-hot labels become 1 - eta + eta/K and eta/K. Mixup (`mixup_alpha` > 0): each
    batch is blended with itself reversed, images and targets alike, with weight lam ~ Beta(alpha, alpha).
    """

    def __init__(self, num_classes, label_smoothing=0.0, mixup_alpha=0.0):
        self.num_classes, self.eta, self.mixup_alpha = num_classes, label_smoothing, mixup_alpha

    def __call__(self, X, y):
        """Return the (possibly mixed) batch and its dense targets."""
        K, eta = self.num_classes, self.eta
        target = npx.one_hot(y, K, on_value=1 - eta + eta / K, off_value=eta / K)
        if self.mixup_alpha > 0:
            lam = float(onp.random.beta(self.mixup_alpha, self.mixup_alpha))
            X = lam * X + (1 - lam) * np.flip(X, axis=0)
            target = lam * target + (1 - lam) * np.flip(target, axis=0)
        return X, target
