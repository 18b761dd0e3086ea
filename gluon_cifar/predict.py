"""Prediction stage: class indices -> label names -> Kaggle `submission.csv`.

`python -m gluon_cifar.predict --model OUT/model --images DIR/test --output submission.csv` uses only the
exported files (no model class), so it is also the deployment path on any machine with MXNet.
"""
if __name__ == "__main__":  # before MXNet loads: signals, the environment it reads, every core
    from gluon_cifar.runtime import start_command
    start_command()

import os

import mxnet as mx
import numpy as onp
import pandas as pd
from mxnet import gluon, np, npx

from .fs import atomic_path, check_not_an_input
from .data import ImageFilesDataset, check_num_workers, check_output_file, test_transform
from .errors import ArgumentParser, InputError, report_input_errors
from .export import exported_files, load_exported
from .recipes import TTA_MODES
from .runtime import check_mxnet_environment


def predict_logits(net, X, tta="none"):
    """`net`'s logits for batch `X`; with tta 'flip', the mean of each image's and its mirror's logits."""
    y_hat = net(X)
    if tta == "flip":
        y_hat = (y_hat + net(np.flip(X, axis=3))) / 2
    return y_hat


def predict(net, dataset, batch_size, ctx, num_workers=0, tta="none", probabilities=False):
    """Run `net` over an (image, id) dataset; return (ids, predicted class indices), in dataset order,
    and with `probabilities` a third item: the softmax of each image's logits, one row per image."""
    loader = gluon.data.DataLoader(dataset.transform_first(test_transform()), batch_size,
                                   shuffle=False, last_batch="keep", num_workers=num_workers)
    ids, preds, probs = [], [], []
    for X, batch_ids in loader:
        y_hat = predict_logits(net, X.as_in_ctx(ctx), tta)
        preds.extend(y_hat.argmax(axis=1).astype("int32").asnumpy().tolist())
        ids.extend(batch_ids.asnumpy().astype(int).tolist())
        if probabilities:
            probs.extend(npx.softmax(y_hat).asnumpy())
    return (ids, preds, probs) if probabilities else (ids, preds)


def write_submission(path, ids, preds, classes):
    """Write Kaggle's `id,label` CSV, mapping each class index to its name through `classes` (synsets)."""
    table = pd.DataFrame({"id": ids, "label": [classes[p] for p in preds]})
    with atomic_path(path, replace_any=True) as tmp:  # a file the user named
        table.to_csv(tmp, index=False)


def write_probabilities(path, ids, probs, classes, topk=None):
    """Write `id,label,<class>...` with each class's probability; with `topk`, `id,label,top1,p1,...`
    (the K likeliest classes and their probabilities) instead."""
    probs = onp.asarray(probs)
    order = onp.argsort(-probs, axis=1, kind="stable")
    table = pd.DataFrame({"id": ids, "label": [classes[i] for i in order[:, 0]]})
    if topk:
        for k in range(min(topk, len(classes))):
            table[f"top{k + 1}"] = [classes[i] for i in order[:, k]]
            table[f"p{k + 1}"] = probs[onp.arange(len(ids)), order[:, k]]
    else:
        for i, name in enumerate(classes):
            table[name] = probs[:, i]
    with atomic_path(path, replace_any=True) as tmp:  # a file the user named
        table.to_csv(tmp, index=False, float_format="%.6g")


def predict_folder(net, image_dir, classes, output, batch_size, ctx, num_workers=0, tta="none",
                   probabilities=None, topk=None):
    """Classify every `<id>.png` of `image_dir` and write the submission to `output` (and, with
    `probabilities`, the class probabilities to that CSV); return the ids."""
    ids, preds, *probs = predict(net, ImageFilesDataset(image_dir), batch_size, ctx, num_workers, tta,
                                 probabilities=bool(probabilities))
    write_submission(output, ids, preds, classes)
    if probabilities:
        write_probabilities(probabilities, ids, probs[0], classes, topk)
    return ids


def build_parser():
    parser = ArgumentParser(prog="python -m gluon_cifar.predict",
                                     description="Classify a folder of <id>.png images with an exported model.")
    parser.add_argument("--model", required=True,
                        help="export prefix: PREFIX-symbol.json, PREFIX-0000.params, PREFIX-classes.json")
    parser.add_argument("--images", required=True, help="folder of <id>.png test images")
    parser.add_argument("--output", default="submission.csv", help="CSV to write (id,label)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation: 'flip' averages the logits of each image and its mirror")
    parser.add_argument("--probabilities", metavar="FILE",
                        help="also write each image's class probabilities (softmax) to this CSV: id, label, one "
                             "column per class, for ensembles and error analysis (default: none)")
    parser.add_argument("--topk", type=int, metavar="K",
                        help="with --probabilities: only the K likeliest classes, as columns top1, p1, ... topK, "
                             "pK (default: every class)")
    fast = parser.add_argument_group("fast CPU inference (gluon_cifar.fastinfer)")
    fast.add_argument("--fast", action="store_true",
                      help="fused MKLDNN graph, next batch decoded while this one computes; same predictions")
    fast.add_argument("--int8", metavar="TRAIN_IMAGES",
                      help="quantize to INT8 (implies --fast), calibrated on the first --calib-size images "
                           "of this folder of training <id>.png files (default: FP32)")
    fast.add_argument("--calib-size", type=int, default=512, help="images to calibrate INT8 with")
    return parser


def predict_folder_fast(prefix, image_dir, output, batch_size, calib_dir=None, calib_size=512, tta="none"):
    """`predict_folder` for an export through `gluon_cifar.fastinfer`: fused FP32, or INT8 calibrated on
    the first `calib_size` training images of `calib_dir`; with tta 'flip', each image and its mirror in
    the same pass. Returns the ids."""
    from . import fastinfer
    calib = fastinfer.read_calibration_images(calib_dir, calib_size) if calib_dir else None
    net, classes = fastinfer.load_fast(prefix, batch_size, calib, tta=tta)
    ids, preds = fastinfer.predict_fast(net, image_dir, batch_size, tta=tta)
    write_submission(output, ids, preds, classes)
    return ids


def fused_applies(ctx):
    """Whether `predict_folder_fast`'s fused FP32 graph runs on `ctx`: a CPU context, an MXNet with MKLDNN."""
    return ctx.device_type == "cpu" and mx.runtime.Features().is_enabled("MKLDNN")


@report_input_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_mxnet_environment()
    for option in ("model", "images", "output", "probabilities", "int8"):
        if getattr(args, option) == "":
            raise InputError(f"--{option.replace('_', '-')} must not be empty")
    npx.set_np()
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    check_num_workers(args.num_workers)
    for flag, output in (("--output", args.output), ("--probabilities", args.probabilities)):
        if output:
            check_not_an_input(output, exported_files(args.model).values(),
                               [folder for folder in (args.images, args.int8) if folder])
            check_output_file(output, flag)
    if args.topk is not None and (args.topk < 1 or not args.probabilities):
        raise InputError("--topk needs --probabilities FILE and must be at least 1")
    if args.probabilities and os.path.abspath(args.probabilities) == os.path.abspath(args.output):
        raise InputError(f"--probabilities {args.probabilities} is also --output: give them different files")
    if args.fast or args.int8:
        if args.probabilities:
            raise InputError("--probabilities is not available with --fast/--int8")
        if args.calib_size < 1:
            raise InputError("--calib-size must be at least 1")
        ids = predict_folder_fast(args.model, args.images, args.output, args.batch_size, args.int8,
                                  args.calib_size, args.tta)
    else:
        net, classes = load_exported(args.model, mx.cpu())
        ids = predict_folder(net, args.images, classes, args.output, args.batch_size, mx.cpu(),
                             args.num_workers, args.tta, args.probabilities, args.topk)
    print(f"wrote {args.output}: {len(ids)} predictions" + (f"; class probabilities in {args.probabilities}"
                                                             if args.probabilities else ""))


if __name__ == "__main__":
    main()
