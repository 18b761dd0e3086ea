"""What a training run writes for people while it runs, rewritten after every epoch so that a stopped run
keeps it: `metrics.csv` and `metrics.json` (one row per epoch), `curves.png`, and TensorBoard events."""
import os

import matplotlib
import pandas as pd

from .atomic import atomic_path, write_json

COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "examples", "seconds",
           "wall_seconds")


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
    fig.tight_layout()
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
