"""Prediction stage: class indices -> label names -> Kaggle `submission.csv`, from an export alone (no model
class), on the chapter's path or the fused graph of gluon_cifar.deploy.fastinfer; where such an output may go.
"""

import contextlib
import csv
import os
from typing import NamedTuple

import mxnet as mx
import numpy as onp
from mxnet import gluon, np, npx

from gluon_cifar import fs
from gluon_cifar.data.loaders import ImageFilesDataset
from gluon_cifar.data.transforms import test_transform
from gluon_cifar.errors import InputError
from gluon_cifar.fs import RUN_MARKER, atomic_path
from gluon_cifar.images import IMAGE_EXTENSIONS, IMAGE_ID


def predict_logits(net, X, tta="none"):
    """`net`'s logits for batch `X`; with tta 'flip', the mean of each image's and its mirror's logits."""
    y_hat = net(X)
    if tta == "flip":
        y_hat = (y_hat + net(np.flip(X, axis=3))) / 2
    return y_hat


class Inference(NamedTuple):
    """How the chapter's path runs a net over images: `batch_size` images at a time on `ctx`, decoded by
    `num_workers` DataLoader processes, with test-time augmentation `tta` ('none' or 'flip')."""
    batch_size: int
    ctx: object
    num_workers: int = 0
    tta: str = "none"


def predict(net, dataset, how, probabilities=False):
    """Run `net` over an (image, id) dataset as `how` (an Inference) says; return (ids, predicted class
    indices), in dataset order, and with `probabilities` a third item: the softmax of each image's logits,
    one row per image."""
    loader = gluon.data.DataLoader(dataset.transform_first(test_transform()), how.batch_size,
                                   shuffle=False, last_batch="keep", num_workers=how.num_workers)
    ids, preds, probs = [], [], []
    for X, batch_ids in loader:
        y_hat = predict_logits(net, X.as_in_ctx(how.ctx), how.tta)
        preds.extend(y_hat.argmax(axis=1).astype("int32").asnumpy().tolist())
        ids.extend(batch_ids.asnumpy().astype(int).tolist())
        if probabilities:
            probs.extend(npx.softmax(y_hat).asnumpy())
    return (ids, preds, probs) if probabilities else (ids, preds)


def write_csv(path, header, rows, replace_any=True):
    """Write a CSV as pandas' `to_csv(index=False)` does, without pandas (the deployment path stays light);
    `replace_any` for a file the user named, else it replaces only one the package wrote (fs.atomic_path)."""
    with atomic_path(path, replace_any=replace_any) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_submission(path, ids, preds, classes):
    """Write Kaggle's `id,label` CSV, mapping each class index to its name through `classes` (synsets)."""
    write_csv(path, ["id", "label"], ([image_id, classes[p]] for image_id, p in zip(ids, preds)))


def write_probabilities(path, ids, probs, classes, topk=None):
    """Write `id,label,<class>...` with each class's probability; with `topk`, `id,label,top1,p1,...`
    (the K likeliest classes and their probabilities) instead."""
    probs = onp.asarray(probs)
    order = onp.argsort(-probs, axis=1, kind="stable")
    if topk:
        ranks = range(min(topk, len(classes)))
        header = ["id", "label"] + [f"{name}{k + 1}" for k in ranks for name in ("top", "p")]
        rows = ([image_id, classes[o[0]]] + [v for k in ranks for v in (classes[o[k]], f"{p[o[k]]:.6g}")]
                for image_id, o, p in zip(ids, order, probs))
    else:
        header = ["id", "label", *classes]
        rows = ([image_id, classes[o[0]], *(f"{v:.6g}" for v in p)] for image_id, o, p in zip(ids, order, probs))
    write_csv(path, header, rows)


def predict_folder(net, image_dir, classes, output, how, probabilities=None, topk=None):
    """Classify every `<id>.png` of `image_dir` as `how` (an Inference) says and write the submission to
    `output` (and, with `probabilities`, the class probabilities to that CSV, `topk` of them); return the ids."""
    ids, preds, *probs = predict(net, ImageFilesDataset(image_dir), how, probabilities=bool(probabilities))
    write_submission(output, ids, preds, classes)
    if probabilities:
        write_probabilities(probabilities, ids, probs[0], classes, topk)
    return ids


def predict_folder_fast(prefix, image_dir, output, batch_size, calib_dir=None, calib_size=512, tta="none"):
    """`predict_folder` for an export through `gluon_cifar.fastinfer`: fused FP32, or INT8 calibrated on
    the first `calib_size` training images of `calib_dir`; with tta 'flip', each image and its mirror in
    the same pass. Returns the ids."""
    from gluon_cifar.deploy import fastinfer
    calib = fastinfer.read_calibration_images(calib_dir, calib_size) if calib_dir else None
    net, classes = fastinfer.load_fast(prefix, batch_size, calib, tta=tta)
    ids, preds = fastinfer.predict_fast(net, image_dir, batch_size, tta=tta)
    write_submission(output, ids, preds, classes)
    return ids


def fused_applies(ctx):
    """Whether `predict_folder_fast`'s fused FP32 graph runs on `ctx`: a CPU context, an MXNet with MKLDNN."""
    return ctx.device_type == "cpu" and mx.runtime.Features().is_enabled("MKLDNN")


def check_output_file(path, what):
    """Refuse `path` as a file to write (`what` names it, e.g. '--output') inside a data folder's `train/` or
    `test/` (beside a trainLabels.csv), a folder of `<id>.png` images, a folder the package built (a
    reorganisation, an unpacked sample) or a subfolder of a run's output folder: each would then hold a
    file that is not its own, which stops every later run on it."""
    folder = os.path.dirname(os.path.realpath(path))
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        image = next((e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                      and IMAGE_ID.fullmatch(os.path.splitext(e.name)[0])), None)
        if image:
            raise InputError(f"{what} {path}: {folder} is a folder of images (such as {image}), where another file "
                             "stops every run that reads it: write it elsewhere")
    inside = folder
    while True:
        parent = os.path.dirname(inside)
        if os.path.basename(inside) in ("train", "test") and os.path.isfile(os.path.join(parent, "trainLabels.csv")):
            raise InputError(f"{what} {path} is inside the data folder's {inside}, where another file stops every "
                             "run on that data: write it elsewhere")
        if fs.is_marked(inside) or (inside != folder and os.path.isfile(os.path.join(inside, RUN_MARKER))):
            raise InputError(f"{what} {path} is inside {inside}, a folder gluon_cifar builds and may rebuild: "
                             "write it elsewhere")
        if parent == inside:
            return
        inside = parent
