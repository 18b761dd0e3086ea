"""`python -m gluon_cifar.train`: the chapter's story as one command.

data (reorganise, load) -> loaders -> net (get_net) -> fit -> outputs (export, submission.csv, metrics).
This module only parses the command line and wires the stages; the loop lives in `gluon_cifar.loop`.
"""
if __name__ == "__main__":  # before MXNet loads, which reads it: every core, unless the user chose
    from gluon_cifar.runtime import use_all_cores
    use_all_cores()

import dataclasses
import logging
import os
import sys

import matplotlib
from mxnet import npx

from .atomic import atomic_path, read_json, write_json
from .checkpoint import CHECKPOINT_DIRNAME, CONFIG_FILENAME, interrupted_message, prepare_output_dir, record_config
from .config import RunConfig
from .data import AUGMENTATIONS, download_demo, load_datasets, make_run_loaders, reorg_cifar10_data
from .distributed import KVSTORES, create_kvstore, default_kvstore, one_worker_at_a_time, rank_and_size
from .errors import ArgumentParser, InputError, report_input_errors
from .export import export_model
from .loop import fit, seed_everything
from .model import get_net
from .predict import predict_folder
from .recipes import RECIPES, SCHEDULES, TTA_MODES

log = logging.getLogger("gluon_cifar")
DEFAULTS = RunConfig()


def build_parser():
    parser = ArgumentParser(
        prog="python -m gluon_cifar.train",
        description="Train the chapter's ResNet-18 on a Kaggle-layout CIFAR-10 folder, export it and "
                    "write submission.csv. Defaults are the chapter's (d2l, MXNet tab).")
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", help="Kaggle-layout folder (train/, test/, trainLabels.csv, or the "
                                         ".7z archives); default: d2l's cifar10_tiny demo set")
    data.add_argument("--cache-dir", default=DEFAULTS.cache_dir, help="where the demo set is cached")
    data.add_argument("--reorg-dir", help="where train_valid_test/ goes (default: inside --data-dir)")
    data.add_argument("--valid-ratio", type=float, default=DEFAULTS.valid_ratio,
                      help="fraction of the rarest class held out per class for validation")
    data.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                      help="images per batch (default: the chapter's 4 on the demo set, 128 on full data)")
    data.add_argument("--num-workers", type=int, default=DEFAULTS.num_workers, help="DataLoader worker processes")
    data.add_argument("--fast-data", action="store_true",
                      help="decode every image once and augment whole batches (gluon_cifar.fastdata): the "
                           "chapter's augmentation, about 19x the chapter's input pipeline (make bench)")
    optim = parser.add_argument_group("optimisation (the chapter's numbers)")
    optim.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    optim.add_argument("--lr", type=float, default=DEFAULTS.lr, help="learning rate")
    optim.add_argument("--wd", type=float, default=DEFAULTS.wd, help="weight decay")
    optim.add_argument("--lr-period", type=int, default=DEFAULTS.lr_period,
                       help="epochs between learning-rate decays")
    optim.add_argument("--lr-decay", type=float, default=DEFAULTS.lr_decay,
                       help="factor the learning rate is multiplied by every --lr-period epochs")
    run = parser.add_argument_group("run")
    run.add_argument("--devices", help="cpu, cpu:N (N CPU contexts), gpu (all) or gpu:0,1 (default: all GPUs, "
                                       "else cpu)")
    run.add_argument("--seed", type=int, default=DEFAULTS.seed, help="makes CPU runs repeatable")
    run.add_argument("--kvstore", choices=KVSTORES,
                     help="gradient reduction: local (on the CPU; default unless several GPUs), device (on the "
                          "GPUs), dist_sync or dist_device_sync (many machines: start with gluon_cifar.launch, "
                          "--batch-size is per worker)")
    run.add_argument("--final", action="store_true",
                     help="the chapter's last step: train on train_valid (no validation) for the submission")
    run.add_argument("--output-dir", default=DEFAULTS.output_dir)
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --output-dir from its last checkpoint")
    again.add_argument("--overwrite", action="store_true",
                       help="start afresh in an --output-dir that holds a previous run, replacing it")
    recipe = parser.add_argument_group(
        "recipe", "beyond the chapter (README, Recipes); --recipe presets these, explicit flags override it")
    recipe.add_argument("--recipe", choices=RECIPES, default=DEFAULTS.recipe,
                        help="strong: --augment padcrop --lr-schedule onecycle --lr 0.2 --label-smoothing 0.1 "
                             "--epochs 30 --tta flip")
    recipe.add_argument("--augment", choices=AUGMENTATIONS, default=DEFAULTS.augment,
                        help="chapter: resize 40 + random crop + flip; padcrop: reflect-pad 4 + random crop + flip")
    recipe.add_argument("--cutout", type=int, default=DEFAULTS.cutout,
                        help="side in pixels of a random square set to the mean pixel (padcrop only; 0: off)")
    recipe.add_argument("--lr-schedule", choices=SCHEDULES, default=DEFAULTS.lr_schedule,
                        help="step: the chapter's (--lr-period, --lr-decay); cosine or onecycle: decay from "
                             "--lr to 0")
    recipe.add_argument("--warmup-frac", type=float,
                        help="fraction of all updates warming up linearly from 0 (default: 0.3 for onecycle, "
                             "else 0)")
    recipe.add_argument("--label-smoothing", type=float, default=DEFAULTS.label_smoothing)
    recipe.add_argument("--mixup-alpha", type=float, default=DEFAULTS.mixup_alpha,
                        help="Beta(alpha, alpha) mixup; 0: off")
    recipe.add_argument("--tta", choices=TTA_MODES, default=DEFAULTS.tta,
                        help="test-time augmentation for submission.csv (flip: mean logits of image and mirror)")
    return parser


def parse_config(argv):
    """The RunConfig of a command line; the --recipe's settings are defaults that explicit flags override."""
    parser = build_parser()
    parser.set_defaults(**RECIPES[parser.parse_args(argv).recipe])
    return RunConfig(**vars(parser.parse_args(argv)))


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


def check_same_job_size(out, config):
    """Refuse to resume a run with another number of workers: that changes the global batch, hence the run."""
    saved = read_json(os.path.join(out, CONFIG_FILENAME)) if config.resume else None
    if saved is not None and saved.get("job_workers", 1) != config.job_workers:
        raise InputError(f"--resume continues the run as it was started, on {saved.get('job_workers', 1)} worker(s); "
                         f"this job has {config.job_workers} (python -m gluon_cifar.launch -n)")


@report_input_errors
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config = parse_config(argv)
    npx.set_np()
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    devices = config.contexts()
    seed_everything(config.seed)  # the same on every worker: the same initial parameters
    config = dataclasses.replace(config, kvstore=config.kvstore or default_kvstore(devices))
    kvstore = create_kvstore(config.kvstore)
    rank, workers = rank_and_size(kvstore)
    config = dataclasses.replace(config, job_workers=workers)
    out = config.output_dir
    # rank 0 owns the output folder; on --resume every worker reads the checkpoint (a folder they all see)
    checkpoint_dir = (prepare_output_dir(out, config.resume, config.overwrite) if rank == 0
                      else os.path.join(out, CHECKPOINT_DIRNAME))

    # data -> loaders
    with one_worker_at_a_time(kvstore, os.path.expanduser(config.cache_dir)):
        data_dir = config.data_dir or download_demo(config.cache_dir)
        reorg_dir = reorg_cifar10_data(data_dir, config.valid_ratio, config.reorg_dir)
    datasets = load_datasets(reorg_dir)
    config, notice = config.for_data(len(datasets["train"]), len(datasets["valid"]), demo=not config.data_dir)
    if notice:
        log.info(notice)
    train_split = "train_valid" if config.final else "train"
    splits = (train_split,) if config.final else (train_split, "valid")
    loaders = make_run_loaders(reorg_dir, datasets, splits, config.batch_size, config.augment, config.cutout,
                               config.num_workers, config.fast_data, rank, workers)
    if rank == 0:
        check_same_job_size(out, config)
        record_config(out, config, config.resume)
    if rank == 0 and workers > 1:
        log.info("%s: %d workers x batch %d: learns as one process with --devices cpu:%d --batch-size %d "
                 "(the same rate, weight decay and schedule per update)", config.kvstore, workers,
                 config.batch_size, workers, workers * config.batch_size)

    # net -> fit
    classes = datasets[train_split].synsets
    net = get_net(devices, num_classes=len(classes))
    # Static memory and shapes: 1.37x the training throughput of a plain hybridize() on 2 cores (make bench).
    net.hybridize(static_alloc=True, static_shape=True)
    try:
        history = fit(net, loaders[train_split], loaders.get("valid"), config, len(classes), kvstore,
                      checkpoint_dir)
    except KeyboardInterrupt as stop:  # in a job, the launcher says how to resume it
        raise type(stop)(interrupted_message(checkpoint_dir, argv) if workers == 1 else "stopped with the job") from None
    if rank != 0:
        return  # rank 0 writes the job's outputs

    # outputs
    write_json(os.path.join(out, "metrics.json"), history)
    plot_curves(history, os.path.join(out, "curves.png"))
    export_model(net, os.path.join(out, "model"), classes)
    ids = predict_folder(net, os.path.join(reorg_dir, "test", "unknown"), classes,
                         os.path.join(out, "submission.csv"), config.batch_size, devices[0], config.num_workers,
                         config.tta)
    log.info("wrote %s: %d predictions; model exported as %s-symbol.json and %s-0000.params",
             os.path.join(out, "submission.csv"), len(ids), os.path.join(out, "model"), os.path.join(out, "model"))


if __name__ == "__main__":
    main()
