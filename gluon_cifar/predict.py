"""`python -m gluon_cifar.predict --model OUT/model --images DIR/test --output submission.csv`.

Classifies a folder of `<id>.png` images with an export alone (no model class): the deployment path
wherever MXNet runs. This module only parses the command line and calls `gluon_cifar.deploy.predict`.
"""
if __name__ == "__main__":  # before MXNet loads: signals, the environment it reads, every core
    from gluon_cifar.cli import start_command
    start_command()

import os

import mxnet as mx
from mxnet import npx

from gluon_cifar.cli import ArgumentParser, check_mxnet_environment, report_input_errors
from gluon_cifar.deploy.export import exported_files, load_exported
from gluon_cifar.deploy.predict import Inference, check_output_file, predict_folder, predict_folder_fast
from gluon_cifar.errors import InputError
from gluon_cifar.fs import check_not_an_input
from gluon_cifar.settings import TTA_MODES, check_num_workers


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
        ids = predict_folder(net, args.images, classes, args.output,
                             Inference(args.batch_size, mx.cpu(), args.num_workers, args.tta), args.probabilities,
                             args.topk)
    print(f"wrote {args.output}: {len(ids)} predictions" + (f"; class probabilities in {args.probabilities}"
                                                             if args.probabilities else ""))


if __name__ == "__main__":
    main()
