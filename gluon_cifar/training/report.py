"""What a training run tells people: the lines it starts with, and what it writes while it runs, rewritten
after every epoch so that a stopped run keeps it: `metrics.csv` and `metrics.json` (one row per epoch),
`curves.png`, and TensorBoard events."""
import os

import matplotlib
import pandas as pd

from gluon_cifar.fs import atomic_path, write_json

COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "examples", "seconds",
           "wall_seconds")


SHORT_SCHEDULE_UPDATES = 500  # a 1-epoch strong run on 5,000 images has 35; 3 epochs on all 50,000 have 1,170


def short_schedule_note(config, updates):
    """One warning line when a schedule that anneals to 0 (cosine, one-cycle) is laid over so few updates
    that validation tells little, else None: in a 1-epoch strong run on 5,000 images (35 updates) the net is
    near chance and BatchNorm's running statistics trail weights that moved fast (valid loss 6.4 with them,
    2.3 with each batch's own statistics: benchmarks/short_run_bn.py)."""
    if config.lr_schedule == "step" or updates >= SHORT_SCHEDULE_UPDATES:
        return None
    return (f"warning: the {config.lr_schedule} schedule spans only {updates} updates ({config.epochs} epochs): "
            "expect validation near chance, and a validation loss that can be far above the training loss "
            "(BatchNorm's running statistics trail the weights); the strong recipe is meant for 30 epochs")


def describe_run(run, datasets, loaders):
    """The lines a Run starts with: what it reads, how it batches, where it computes, how it learns, what it writes."""
    config, train_split, reorg_dir, devices, workers = run.config, run.train_split, run.reorg_dir, run.devices, run.workers
    num_test = len(os.listdir(os.path.join(reorg_dir, "test", "unknown")))
    sizes = ", ".join(f"{len(datasets[split])} {split}" for split in loaders)
    per_worker = f" per worker ({workers} workers)" if workers > 1 else ""
    schedule = {"step": f"x{config.lr_decay:g} every {config.lr_period} epochs",
                "cosine": "cosine to 0", "onecycle": "one-cycle to 0"}[config.lr_schedule]
    if config.warmup_frac:
        schedule += f" after a {config.warmup_frac:g} warm-up"
    extras = "".join(f", {name} {value:g}" for name, value in (("cutout", config.cutout), ("label smoothing",
                     config.label_smoothing), ("mixup alpha", config.mixup_alpha)) if value)
    threads = os.environ.get("OMP_NUM_THREADS")
    return [
        f"data: {sizes} images in {len(datasets[train_split].synsets)} classes, {num_test} test images ({reorg_dir})",
        f"batches: {len(loaders[train_split])} per epoch of {config.batch_size} images{per_worker}",
        f"devices: {', '.join(map(str, devices))}; "
        f"threads: {threads + ' (OMP_NUM_THREADS)' if threads else 'MXNet default'}; kvstore {config.kvstore}",
        f"recipe {config.recipe}: {config.epochs} epochs, lr {config.lr:g} ({schedule}), wd {config.wd:g}, "
        f"augment {config.augment}{extras}" + (f", starting from {config.init_from}" if config.init_from else ""),
        f"output: {config.output_dir} (metrics.csv, curves.png each epoch; checkpoint/; at the end the {config.export} "
        "epoch's model and submission.csv)",
    ] + [note for note in [short_schedule_note(config, config.epochs * len(loaders[train_split]))] if note]


def write_metrics(history, folder):
    """`metrics.csv` (the columns of COLUMNS a run has, one row per epoch) and `metrics.json` (the same)."""
    table = pd.DataFrame(history)
    with atomic_path(os.path.join(folder, "metrics.csv")) as tmp:
        table[[c for c in COLUMNS if c in table]].to_csv(tmp, index=False)
    write_json(os.path.join(folder, "metrics.json"), history)


def plot_curves(history, path):
    """Loss (left) and accuracy (right) per epoch, training and validation, as a PNG a person can read."""
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, what in zip(axes, ("loss", "acc")):
        for split, style in (("train", "o-"), ("valid", "s--")):
            key = f"{split}_{what}"
            if key in history[0]:
                ax.plot(epochs, [h[key] for h in history], style, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy loss (log scale)" if what == "loss" else "accuracy")
        ax.set_title("loss" if what == "loss" else "accuracy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.4)
        ax.legend()
    axes[0].set_yscale("log")  # an early validation loss can be 1000x the training loss
    axes[1].set_ylim(0, 1)
    # Fixed margins that fit the labels: tight_layout measures every text, a quarter of a second each epoch.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.22)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


class EpochReport:
    """The per-epoch outputs of a run in `folder` (rank 0's): call it with the history after every epoch."""

    def __init__(self, folder, tensorboard=False):
        self.folder = folder
        self.writer = None
        if tensorboard:  # an optional extra: RunConfig refuses --tensorboard without it
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(os.path.join(folder, "tensorboard"))

    def __call__(self, history):
        write_metrics(history, self.folder)
        plot_curves(history, os.path.join(self.folder, "curves.png"))
        if self.writer:
            last = history[-1]
            for key in ("train_loss", "train_acc", "valid_loss", "valid_acc", "lr"):
                if key in last:
                    self.writer.add_scalar(key.replace("_", "/"), last[key], last["epoch"])
            self.writer.flush()

    def close(self):
        if self.writer:
            self.writer.close()
