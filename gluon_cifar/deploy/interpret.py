"""What a model gets wrong on labelled images, as fastai's `ClassificationInterpretation` shows it: the
confusion matrix (`confusion.png`), each class's precision, recall and accuracy (`per_class.csv`) and the
images with the highest loss (`top_losses.png`). Written by training runs for their validation split and
by `python -m gluon_cifar.interpret` for an export on any folder of class folders.
"""
import os
from typing import NamedTuple

import numpy as onp
from mxnet import gluon

from gluon_cifar.deploy.predict import predict, write_csv
from gluon_cifar import fs
from gluon_cifar.errors import InputError
from gluon_cifar.fs import atomic_path
from gluon_cifar.images import IMAGE_SHAPE, read_image

CONFUSION, PER_CLASS, TOP_LOSSES = FILES = ("confusion.png", "per_class.csv", "top_losses.png")
TOP_LOSS_COUNT, COLUMNS, TITLE_ROWS = 16, 4, 8  # a 4 x 4 grid, each image under 8 rows of white for its title


class Interpretation(NamedTuple):
    """A model's predictions on labelled images: `classes` (the model's names), each image's `label` (an index
    into `classes`), its softmax `probs` (one row per image) and `paths`."""
    classes: list
    labels: onp.ndarray
    probs: onp.ndarray
    paths: list

    @property
    def preds(self):
        return self.probs.argmax(axis=1)

    @property
    def losses(self):
        """Each image's cross-entropy: -log of the probability given to its true class."""
        true = self.probs[onp.arange(len(self.labels)), self.labels]
        return -onp.log(onp.maximum(true, onp.finfo(onp.float32).tiny))


def interpret(net, folder, classes, how):
    """Run `net` (of class names `classes`) over the class folders of `folder` (`<class>/<image>`, as the
    reorganisation's `valid/`) as `how` (a predict.Inference) says; return an Interpretation."""
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: not a folder")
    dataset = gluon.data.vision.ImageFolderDataset(folder)
    unknown = [name for name in dataset.synsets if name not in classes]
    if unknown:
        raise InputError(f"{os.path.join(folder, unknown[0])}: {unknown[0]!r} is not a class of the model "
                         f"({', '.join(classes)})")
    if not dataset.items:
        raise InputError(f"{folder}: no images in class folders (<class>/<image>.png)")
    folder_labels, _, probs = predict(net, dataset, how, probabilities=True)  # (an ImageFolderDataset's second
    to_model = [classes.index(name) for name in dataset.synsets]           # item is the folder's label)
    return Interpretation(list(classes), onp.array([to_model[label] for label in folder_labels]),
                          onp.asarray(probs), [path for path, _ in dataset.items])


def confusion_matrix(labels, preds, num_classes):
    """counts[i, j]: the images of true class i predicted as class j."""
    counts = onp.zeros((num_classes, num_classes), dtype=int)
    onp.add.at(counts, (labels, preds), 1)
    return counts


def per_class(counts):
    """One dict per class of `counts` (a confusion matrix): its images, the images predicted as it, the
    correct ones, precision (correct / predicted), recall (correct / images, the class's own accuracy)
    and accuracy as a yes/no question (images rightly said to be or not to be of it / all images).
    Precision of a class never predicted is None (0/0)."""
    total, rows = counts.sum(), []
    for k in range(len(counts)):
        correct, images, predicted = counts[k, k], counts[k].sum(), counts[:, k].sum()
        rows.append({"images": int(images), "predicted": int(predicted), "correct": int(correct),
                     "precision": correct / predicted if predicted else None,
                     "recall": correct / images if images else None,
                     "accuracy": (total - images - predicted + 2 * correct) / total})
    return rows


def check_replaceable(folder):
    """Refuse, before any work, a `folder` where one of the three files is there and not the package's."""
    fs.check_owned([os.path.join(folder, name) for name in FILES], fs.Manifest(folder), "it would be replaced")


def write_interpretation(result, folder):
    """Write `confusion.png`, `per_class.csv` and `top_losses.png` of `result` (an Interpretation) into
    `folder`, each replacing only a file the package wrote there (all checked first); return their names."""
    check_replaceable(folder)
    counts = confusion_matrix(result.labels, result.preds, len(result.classes))
    header = ["class", "images", "predicted", "correct", "precision", "recall", "accuracy"]
    write_csv(os.path.join(folder, PER_CLASS), header,
              ([name] + [_cell(row[key]) for key in header[1:]] for name, row in zip(result.classes, per_class(counts))),
              replace_any=False)
    plot_confusion(counts, result.classes, os.path.join(folder, CONFUSION))
    plot_top_losses(result, os.path.join(folder, TOP_LOSSES))
    return list(FILES)


def _cell(value):
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else value


def _save(fig, path):
    from matplotlib import pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_confusion(counts, classes, path):
    """The confusion matrix twice: counts (left) and each true class's row as fractions (right)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    rows = counts / onp.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    for ax, values, title, fmt in ((axes[0], counts, "images", "d"), (axes[1], rows, "fraction of the true class", ".2f")):
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)  # colour by the fraction in both: a big class does not wash out
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if rows[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"confusion matrix: {title} ({counts.sum()} images, accuracy {onp.trace(counts) / counts.sum():.3f})")
    # Fixed margins that fit the labels: tight_layout measures every text, a quarter of a second a figure.
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.17, top=0.93, wspace=0.2)
    _save(fig, path)


def plot_top_losses(result, path):
    """The TOP_LOSS_COUNT images with the highest loss, each titled true / predicted (probability) and loss,
    drawn as one mosaic image: a third of the time of one axes per image."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    losses = result.losses
    worst = onp.argsort(-losses, kind="stable")[:TOP_LOSS_COUNT]
    height, width, _ = IMAGE_SHAPE
    cell_h, cell_w = height + TITLE_ROWS, width + 4  # each image with a white band above it and 2 pixels aside
    mosaic = onp.full((-(-TOP_LOSS_COUNT // COLUMNS) * cell_h, COLUMNS * cell_w, 3), 255, dtype=onp.uint8)
    fig, ax = plt.subplots(figsize=(10, 11.8))
    for k, i in enumerate(worst):
        top, left = (k // COLUMNS) * cell_h + TITLE_ROWS, (k % COLUMNS) * cell_w + 2
        mosaic[top:top + height, left:left + width] = read_image(result.paths[i]).asnumpy()
        pred = result.preds[i]
        ax.text(left + width / 2, top - 0.5, f"{result.classes[result.labels[i]]} / {result.classes[pred]} "
                f"({result.probs[i, pred]:.2f})\nloss {losses[i]:.2f}, {os.path.basename(result.paths[i])}",
                ha="center", va="bottom", fontsize=8)
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    fig.suptitle("highest losses: true / predicted (probability)")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.95)
    _save(fig, path)
