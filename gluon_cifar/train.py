"""Training stage: the chapter's `train` loop, and `python -m gluon_cifar.train`, which composes the stages.

data (reorg, loaders) -> model (get_net) -> train -> export + predict (submission.csv).
"""
import argparse
import logging
import os
import random
import sys
import time

import matplotlib
import mxnet as mx
import numpy as onp
from mxnet import autograd, gluon
from tqdm import tqdm

from .atomic import atomic_path, write_json
from .checkpoint import (epoch_seed, interrupted_message, load_checkpoint, prepare_output_dir, record_config,
                         save_checkpoint)
from .data import (AUGMENTATIONS, DEFAULT_CACHE_DIR, DEMO_SOURCES, demo_data_dir, load_datasets, make_loaders,
                   make_train_transform, reorg_cifar10_data)
from .distributed import (KVSTORES, average_across_workers, create_kvstore, default_kvstore, is_distributed,
                          job_epoch_stats, one_worker_at_a_time, rank_and_size, trainer_options, worker_shards)
from .errors import InputError, report_input_errors
from .export import export_model
from .fastdata import fast_loader
from .model import get_net
from .predict import TTA_MODES, predict_folder
from .recipes import DEFAULT_WARMUP, RECIPES, SCHEDULES, make_scheduler, make_soft_targets

log = logging.getLogger("gluon_cifar")


def parse_devices(spec):
    """'cpu' -> [cpu(0)]; 'cpu:N' -> N CPU contexts; 'gpu' -> every GPU; 'gpu:0,1' -> those GPUs."""
    kind, _, rest = spec.partition(":")
    if kind == "cpu":
        count = int(rest) if rest else 1
        if count < 1:
            raise argparse.ArgumentTypeError(f"need at least one CPU context, got {spec!r}")
        return [mx.cpu(i) for i in range(count)]
    if kind == "gpu":
        ids = [int(i) for i in rest.split(",")] if rest else list(range(mx.context.num_gpus()))
        if not ids:
            raise argparse.ArgumentTypeError("no GPU found; use --devices cpu")
        return [mx.gpu(i) for i in ids]
    raise argparse.ArgumentTypeError(f"devices must look like cpu, cpu:2, gpu or gpu:0,1; got {spec!r}")


def default_devices():
    """Every GPU if there is one, else one CPU context (d2l's `try_all_gpus`)."""
    return parse_devices("gpu") if mx.context.num_gpus() else [mx.cpu()]


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
    accuracy is still counted against the hard labels.
    """
    loss_sum, correct, examples, seconds = 0.0, 0.0, 0, 0.0
    for X, y in tqdm(train_iter, desc=desc, leave=False, disable=None):
        start = time.perf_counter()
        X_shards, t_shards = split_batch(*(soft_targets(X, y) if soft_targets else (X, y)), devices)
        y_shards = gluon.utils.split_and_load(y, devices, even_split=False)
        with autograd.record():
            preds = [net(Xs) for Xs in X_shards]
            losses = [loss(p, ts) for p, ts in zip(preds, t_shards)]
        for l in losses:
            l.backward()
        trainer.step(X.shape[0])
        loss_sum += sum(float(l.sum()) for l in losses)  # float() waits for the engine
        correct += sum(correct_count(p, ys) for p, ys in zip(preds, y_shards))
        examples += X.shape[0]
        seconds += time.perf_counter() - start
    return {"train_loss": loss_sum / examples, "train_acc": correct / examples,
            "examples": examples, "seconds": seconds}


def train(net, train_iter, valid_iter, num_epochs, lr, wd, devices, lr_period, lr_decay,
          checkpoint_dir=None, on_epoch_end=None, resume=False, seed=None, lr_schedule="step",
          warmup_frac=0.0, soft_targets=None, kvstore="device"):
    """The chapter's training: SGD with momentum 0.9 and weight decay, step-decayed learning rate.

    Recipes beyond the chapter's (gluon_cifar.recipes): `lr_schedule` names the LRScheduler ('step' is
    the chapter's; 'cosine' and 'onecycle' decay from lr to 0) with `warmup_frac` of the updates
    warming up; `soft_targets` (a SoftTargets) trains on label-smoothed or mixed-up targets.

    Each batch is split across `devices`, whose gradients `kvstore` reduces (gluon_cifar.distributed: a
    name, or a dist KVStore whose servers add up the workers' gradients and update the weights).
    `valid_iter` may be None (the final fit on train_valid).
    Returns the per-epoch history; with `checkpoint_dir`, the training state is checkpointed there
    after every epoch and `resume` continues from the last checkpoint; with `seed`, each epoch reseeds
    the generators (see gluon_cifar.checkpoint), so a resumed run draws what an uninterrupted one
    would. `on_epoch_end(stats)` lets a caller (the notebook's plot) follow along.
    """
    for split, data_iter in (("training", train_iter), ("validation", valid_iter)):
        if data_iter is not None and len(data_iter) == 0:
            raise InputError(f"the batch size is larger than the {split} set: no full batch of it")
    scheduler = make_scheduler(lr_schedule, lr, num_epochs, len(train_iter), lr_period, lr_decay, warmup_frac)
    trainer = gluon.Trainer(net.collect_params(), "sgd",  # the schedule alone sets the learning rate
                            {"momentum": 0.9, "wd": wd, "lr_scheduler": scheduler}, **trainer_options(kvstore))
    loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=soft_targets is None)
    history = load_checkpoint(checkpoint_dir, net, trainer) if resume else []
    for epoch in range(len(history) + 1, num_epochs + 1):
        if seed is not None:
            seed_everything(epoch_seed(seed, epoch))
        stats = train_one_epoch(net, train_iter, loss, trainer, devices, f"epoch {epoch}/{num_epochs}",
                                soft_targets)
        stats = job_epoch_stats(kvstore, trainer, stats, epoch * len(train_iter))
        stats.update(epoch=epoch, lr=trainer.learning_rate)
        if valid_iter is not None:
            stats["valid_acc"] = evaluate_accuracy(net, valid_iter, devices)
        history.append(stats)
        log.info("epoch %d: loss %.3f, train acc %.3f%s, %.1f examples/sec on %s", epoch,
                 stats["train_loss"], stats["train_acc"],
                 f", valid acc {stats['valid_acc']:.3f}" if "valid_acc" in stats else "",
                 stats["examples"] / stats["seconds"], devices)
        if checkpoint_dir:
            save_checkpoint(checkpoint_dir, net, trainer, history)
        if on_epoch_end:
            on_epoch_end(stats)
    average_batchnorm_stats(net, kvstore)
    return history


def average_batchnorm_stats(net, kvstore=None):
    """Give every device (and, with a dist `kvstore`, every worker) the mean of their BatchNorm running statistics.

    Each device updates its own running mean/variance from its own shards; `export` writes their
    average, so the in-memory net gets the same average and both predict alike. In a dist job the devices'
    means are averaged over the workers by the servers (after the last update), so rank 0 exports the job's.
    """
    params = list(net.collect_params(".*running_(mean|var)").values())
    means = [sum(s.copyto(mx.cpu()) for s in p.list_data()) / len(p.list_data()) for p in params]
    if is_distributed(kvstore):
        means = average_across_workers(kvstore, means, first_key=len(net.collect_params().keys()))
    for param, mean in zip(params, means):
        for data in param.list_data():  # in place: set_data would reset the Trainer's (dist) kvstore
            data[:] = mean.as_in_ctx(data.ctx)


def plot_curves(history, path):
    """Draw the per-epoch losses and accuracies into a PNG a person can look at."""
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("train_loss", "train_acc", "valid_acc"):
        if key in history[0]:
            ax.plot(epochs, [h[key] for h in history], marker="o", label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.grid(True)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m gluon_cifar.train",
        description="Train the chapter's ResNet-18 on a Kaggle-layout CIFAR-10 folder, export it and "
                    "write submission.csv. Defaults are the chapter's.")
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", help="Kaggle-layout folder (train/, test/, trainLabels.csv, or the "
                                         ".7z archives); default: the demo set, see --demo-source")
    data.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR,
                      help="where the demo set is cached and the bundled sample unpacked")
    data.add_argument("--demo-source", choices=DEMO_SOURCES, default="auto",
                      help="without --data-dir: auto is d2l's demo set (cached, else downloaded), else the small "
                           "sample bundled with the package; download, only the demo set; bundled, only the "
                           "sample (default: %(default)s)")
    data.add_argument("--reorg-dir", help="where train_valid_test/ goes (default: inside --data-dir)")
    data.add_argument("--valid-ratio", type=float, default=0.1)
    data.add_argument("--batch-size", type=int, default=128)
    data.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    data.add_argument("--fast-data", action="store_true",
                      help="decode every image once and augment whole batches (gluon_cifar.fastdata): the "
                           "chapter's augmentation, about 19x the chapter's input pipeline (make bench)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=20)
    optim.add_argument("--lr", type=float, default=0.02)
    optim.add_argument("--wd", type=float, default=5e-4)
    optim.add_argument("--lr-period", type=int, default=4, help="epochs between learning-rate decays")
    optim.add_argument("--lr-decay", type=float, default=0.9)
    run = parser.add_argument_group("run")
    run.add_argument("--devices", type=parse_devices, default=None,
                     help="cpu, cpu:N (N CPU contexts), gpu (all) or gpu:0,1; default: all GPUs, else cpu")
    run.add_argument("--seed", type=int, default=0, help="makes CPU runs repeatable")
    run.add_argument("--kvstore", choices=KVSTORES, default=None,
                     help="gradient reduction: local (on the CPU; default unless several GPUs), device (on the "
                          "GPUs), dist_sync or dist_device_sync (many machines: start with gluon_cifar.launch, "
                          "--batch-size is per worker)")
    run.add_argument("--save-worker-params", metavar="DIR",
                     help="every worker also saves its final parameters as DIR/worker-<rank>.params, "
                          "to check that the replicas agree")
    run.add_argument("--amp", action="store_true",
                     help="mixed precision: refused with the reason (MXNet 1.9.1's AMP leaves NumPy-mode "
                          "Gluon in float32)")
    run.add_argument("--final", action="store_true",
                     help="the chapter's last step: train on train_valid (no validation) for the submission")
    run.add_argument("--output-dir", default="out")
    recipe = parser.add_argument_group(
        "recipe", "beyond the chapter (README, Recipes); --recipe presets these, explicit flags override it")
    recipe.add_argument("--recipe", choices=RECIPES, default="chapter",
                        help="strong: --augment padcrop --lr-schedule onecycle --lr 0.2 --label-smoothing 0.1 "
                             "--epochs 30 --tta flip")
    recipe.add_argument("--augment", choices=AUGMENTATIONS, default="chapter",
                        help="chapter: resize 40 + random crop + flip; padcrop: reflect-pad 4 + random crop + flip")
    recipe.add_argument("--cutout", type=int, default=0,
                        help="side in pixels of a random square set to the mean pixel (padcrop only; 0: off)")
    recipe.add_argument("--lr-schedule", choices=SCHEDULES, default="step",
                        help="step: the chapter's (--lr-period, --lr-decay); cosine or onecycle: decay from "
                             "--lr to 0")
    recipe.add_argument("--warmup-frac", type=float, default=None,
                        help="fraction of all updates warming up linearly from 0 (default: 0.3 for onecycle, "
                             "else 0)")
    recipe.add_argument("--label-smoothing", type=float, default=0.0)
    recipe.add_argument("--mixup-alpha", type=float, default=0.0, help="Beta(alpha, alpha) mixup; 0: off")
    recipe.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation for submission.csv (flip: mean logits of image and mirror)")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --output-dir from its last checkpoint")
    again.add_argument("--overwrite", action="store_true",
                       help="start afresh in an --output-dir that holds a previous run, replacing it")
    return parser


def parse_args(argv):
    """Parse the command line; the --recipe's settings are defaults that explicit flags override."""
    parser = build_parser()
    parser.set_defaults(**RECIPES[parser.parse_args(argv).recipe])
    args = parser.parse_args(argv)
    if args.warmup_frac is None:
        args.warmup_frac = DEFAULT_WARMUP[args.lr_schedule]
    return args


def check_arguments(args):
    for name in ("epochs", "batch_size", "lr_period"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_size < len(args.devices):
        raise InputError(f"--batch-size {args.batch_size} is smaller than the {len(args.devices)} devices: "
                         "every device needs at least one example per batch")
    for name in ("warmup_frac", "label_smoothing"):
        if not 0 <= getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 0 and below 1")
    if args.mixup_alpha < 0:
        raise InputError("--mixup-alpha must be at least 0")
    make_train_transform(args.augment, args.cutout)  # refuses a bad --cutout before any work
    if args.amp:
        raise InputError("--amp: MXNet 1.9.1's AMP casts only legacy mx.nd/mx.sym operators; this package runs "
                         "Gluon in NumPy mode (as the chapter does), which AMP leaves in float32 on GPU (float16) "
                         "and CPU (bfloat16) alike, so it refuses rather than silently train in float32")
    if args.fast_data and (args.augment != "chapter" or (args.kvstore or "").startswith("dist")):
        raise InputError("--fast-data has only the chapter's augmentation and no dist sharding yet: "
                         "drop --fast-data, or use --augment chapter without a dist kvstore")
    if args.resume and args.kvstore and args.kvstore.startswith("dist"):
        raise InputError("--resume is not supported with a dist kvstore yet: start the job afresh")


@report_input_errors
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.devices = args.devices or default_devices()
    check_arguments(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)  # an import configured it
    seed_everything(args.seed)  # the same on every worker: the same initial parameters
    args.kvstore = args.kvstore or default_kvstore(args.devices)
    kvstore = create_kvstore(args.kvstore)
    rank, workers = rank_and_size(kvstore)
    checkpoint_dir = prepare_output_dir(args.output_dir, args.resume, args.overwrite) if rank == 0 else None

    with one_worker_at_a_time(kvstore, os.path.expanduser(args.cache_dir)):
        data_dir = args.data_dir or demo_data_dir(args.cache_dir, args.demo_source)
        reorg_dir = reorg_cifar10_data(data_dir, args.valid_ratio, args.reorg_dir)
    datasets = load_datasets(reorg_dir)
    train_split = "train_valid" if args.final else "train"
    if args.fast_data:
        loaders = {split: fast_loader(reorg_dir, split, args.batch_size) for split in (train_split, "valid")}
    else:
        loaders = make_loaders(worker_shards(datasets, rank, workers), args.batch_size,
                               make_train_transform(args.augment, args.cutout), args.num_workers)

    net = get_net(args.devices, num_classes=len(datasets["train"].synsets))
    # Static memory and shapes: 1.37x the training throughput of a plain hybridize() on 2 cores (make bench).
    net.hybridize(static_alloc=True, static_shape=True)
    valid_iter = None if args.final else loaders["valid"]
    soft_targets = make_soft_targets(len(datasets["train"].synsets), args.label_smoothing, args.mixup_alpha)
    config = {k: v for k, v in vars(args).items() if k != "devices"}
    config["devices"] = [str(d) for d in args.devices]
    if rank == 0:
        record_config(checkpoint_dir, config, args.resume)
    if rank == 0 and workers > 1:
        log.info("%s: %d workers x batch %d = global batch %d; the servers add the workers' gradients, so the "
                 "learning rate is scaled linearly with the workers: effective %g", args.kvstore, workers,
                 args.batch_size, workers * args.batch_size, workers * args.lr)
    try:
        history = train(net, loaders[train_split], valid_iter, args.epochs, args.lr, args.wd, args.devices,
                        args.lr_period, args.lr_decay, resume=args.resume,
                        # in a dist job the optimizer state lives on the servers: no checkpoints
                        checkpoint_dir=None if is_distributed(kvstore) else checkpoint_dir,
                        seed=args.seed, lr_schedule=args.lr_schedule, warmup_frac=args.warmup_frac,
                        soft_targets=soft_targets, kvstore=kvstore)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(interrupted_message(checkpoint_dir, argv)) from None
    if args.save_worker_params:
        os.makedirs(args.save_worker_params, exist_ok=True)
        with atomic_path(os.path.join(args.save_worker_params, f"worker-{rank}.params")) as tmp:
            net.save_parameters(tmp)
    if rank != 0:
        return  # rank 0 writes the job's outputs

    out = args.output_dir
    write_json(os.path.join(out, "config.json"), config)
    write_json(os.path.join(out, "metrics.json"), history)
    plot_curves(history, os.path.join(out, "curves.png"))
    classes = datasets[train_split].synsets
    export_model(net, os.path.join(out, "model"), classes)
    ids = predict_folder(net, os.path.join(data_dir, "test"), classes, os.path.join(out, "submission.csv"),
                         args.batch_size, args.devices[0], args.num_workers, args.tta)
    log.info("wrote %s: %d predictions; model exported as %s-symbol.json/-0000.params",
             os.path.join(out, "submission.csv"), len(ids), os.path.join(out, "model"))


if __name__ == "__main__":
    main()
