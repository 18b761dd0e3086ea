"""`python -m gluon_cifar.export --model OUT/model --onnx [FILE]`: convert a training export to ONNX.

This module only parses the command line and calls `gluon_cifar.deploy.onnx.export_onnx`.
"""
if __name__ == "__main__":  # before MXNet loads: signals, the environment it reads, every core
    from gluon_cifar.cli import start_command
    start_command()

from mxnet import npx

from gluon_cifar.cli import ArgumentParser, check_mxnet_environment, report_input_errors
from gluon_cifar.deploy.onnx import export_onnx
from gluon_cifar.errors import InputError


def build_parser():
    parser = ArgumentParser(prog="python -m gluon_cifar.export",
                            description="Convert an exported model (PREFIX-symbol.json, PREFIX-0000.params, "
                                        "PREFIX-classes.json) to ONNX.")
    parser.add_argument("--model", required=True, help="export prefix, as written by training (OUT/model)")
    parser.add_argument("--onnx", metavar="FILE", nargs="?", const=True, required=True,
                        help="write an ONNX model to FILE (default: PREFIX.onnx); the class names go beside it "
                             "as NAME-classes.json")
    return parser


@report_input_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_mxnet_environment()
    for option, value in (("--model", args.model), ("--onnx", args.onnx)):
        if value == "":
            raise InputError(f"{option} must not be empty")
    npx.set_np()  # the parameters were saved in NumPy shape semantics, and load only in them
    output = f"{args.model}.onnx" if args.onnx is True else args.onnx  # --onnx alone: beside the model
    classes_file = export_onnx(args.model, output)
    print(f"wrote {output} and {classes_file}")


if __name__ == "__main__":
    main()
