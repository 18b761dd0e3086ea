"""`python -m gluon_cifar.interpret --model OUT/model --data-dir DIR/train_valid_test/valid`.

What an exported model gets wrong on a folder of class folders (`<class>/<image>.png`): writes
`confusion.png`, `per_class.csv` and `top_losses.png` (gluon_cifar.deploy.interpret), as a training run
does for its validation split. This module only parses the command line and calls the deploy stage.
"""
if __name__ == "__main__":  # before MXNet loads: signals, the environment it reads, every core
    from gluon_cifar.cli import start_command
    start_command()

import os

import mxnet as mx
from mxnet import npx

from gluon_cifar.cli import ArgumentParser, check_mxnet_environment, report_input_errors
from gluon_cifar.deploy.export import exported_files, load_exported
from gluon_cifar.deploy.interpret import check_replaceable, interpret, write_interpretation
from gluon_cifar.deploy.predict import Inference, check_output_file
from gluon_cifar.errors import InputError
from gluon_cifar.fs import check_not_an_input
from gluon_cifar.settings import TTA_MODES


def build_parser():
    parser = ArgumentParser(prog="python -m gluon_cifar.interpret",
                            description="Confusion matrix, per-class figures and the highest-loss images of an "
                                        "exported model on a folder of class folders.")
    parser.add_argument("--model", required=True,
                        help="export prefix: PREFIX-symbol.json, PREFIX-0000.params, PREFIX-classes.json")
    parser.add_argument("--data-dir", required=True,
                        help="folder of class folders, <class>/<image>.png (e.g. a reorganisation's valid/)")
    parser.add_argument("--output-dir", help="where to write the three files (default: the model's folder)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation: 'flip' averages the logits of each image and its mirror")
    return parser


@report_input_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_mxnet_environment()
    npx.set_np()
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    out = args.output_dir or os.path.dirname(os.path.abspath(args.model))
    if os.path.lexists(out) and not os.path.isdir(out):
        raise InputError(f"--output-dir {out}: not a folder")
    check_not_an_input(out, exported_files(args.model).values(), [args.data_dir])
    check_output_file(os.path.join(out, "per_class.csv"), "--output-dir")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create --output-dir {out}: {err.strerror or err}") from None
    check_replaceable(out)
    net, classes = load_exported(args.model, mx.cpu())
    result = interpret(net, args.data_dir, classes, Inference(args.batch_size, mx.cpu(), tta=args.tta))
    names = write_interpretation(result, out)
    print(f"{len(result.labels)} images, accuracy {float((result.preds == result.labels).mean()):.4f}; wrote "
          + ", ".join(os.path.join(out, name) for name in names))


if __name__ == "__main__":
    main()
