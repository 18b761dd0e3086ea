"""Export stage: the trained hybridized net as `<prefix>-symbol.json` + `<prefix>-0000.params`.

The class names travel beside it as `<prefix>-classes.json`, so a deployment maps indices to labels
without this package; `load_exported` reopens all three without the Python model class.

`python -m gluon_cifar.export --model OUT/model --onnx` converts such an export to `OUT/model.onnx`
for targets without MXNet (ONNX Runtime and others); the class names go beside it as
`OUT/model-classes.json`, the same `<name>-classes.json` convention.
"""
import argparse
import json
import os
import sys
import tempfile
import warnings

import mxnet as mx
import numpy as onp
from mxnet import gluon

from . import numpy_compat
from .atomic import atomic_path, write_error, write_json
from .errors import InputError, report_input_errors

# NumPy-mode operator -> (legacy operator, its attributes). MXNet 1.9.1's ONNX exporter (and its MKLDNN
# fusion) know only the legacy ones. The residual adds have operands of equal shapes.
LEGACY_OPS = {"_npx_relu": ("Activation", {"act_type": "relu"}), "_npi_add": ("elemwise_add", {})}
INPUT_SHAPE = (3, 32, 32)  # one CIFAR-10 image, NCHW without the batch axis


def exported_files(prefix):
    """The three files an export writes, keyed by role."""
    return {"symbol": f"{prefix}-symbol.json", "params": f"{prefix}-0000.params",
            "classes": f"{prefix}-classes.json"}


def export_model(net, prefix, classes):
    """Export `net` (hybridized, run at least once) and its class names under `prefix`, atomically."""
    folder = os.path.dirname(os.path.abspath(prefix))
    staging = tempfile.mkdtemp(dir=folder, prefix=".export.")
    try:
        try:
            net.export(os.path.join(staging, "model"))
        except mx.base.MXNetError as err:  # how MXNet reports a full disk
            raise write_error(exported_files(prefix)["params"], err) from None
        staged = exported_files(os.path.join(staging, "model"))
        for role, path in exported_files(prefix).items():
            if role == "classes":
                write_json(path, list(classes))
            else:
                os.replace(staged[role], path)
    finally:
        for name in os.listdir(staging):
            os.remove(os.path.join(staging, name))
        os.rmdir(staging)


def existing_exported_files(prefix):
    """`exported_files(prefix)`, after checking that all three exist."""
    files = exported_files(prefix)
    for path in files.values():
        if not os.path.isfile(path):
            raise InputError(f"{path}: exported model file not found")
    return files


def load_exported(prefix, ctx):
    """Reopen an export as a `SymbolBlock` on `ctx`; return (net, class names)."""
    files = existing_exported_files(prefix)
    with open(files["classes"]) as f:
        classes = json.load(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # imports() warns that the input name 'data' is not a parameter
        net = gluon.SymbolBlock.imports(files["symbol"], ["data"], files["params"], ctx=ctx)
    return net, classes


# ONNX

def legacy_symbol(symbol_file):
    """The exported graph with its NumPy-mode ReLUs and adds renamed to the legacy operators (a legacy Symbol)."""
    try:
        with open(symbol_file) as f:
            graph = json.load(f)
        for node in graph["nodes"]:
            if node["op"] in LEGACY_OPS:
                node["op"], node["attrs"] = LEGACY_OPS[node["op"]]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{symbol_file}: not an MXNet symbol file") from None
    return mx.sym.load_json(json.dumps(graph))


def onnx_symbol(symbol_file):
    """`legacy_symbol(symbol_file)`, after checking that MXNet's ONNX exporter converts every operator."""
    sym = legacy_symbol(symbol_file)
    ops = {node["op"] for node in json.loads(sym.tojson())["nodes"]} - {"null"}
    unsupported = ops - set(mx.onnx.get_operator_support())
    if unsupported:
        raise InputError(f"{symbol_file}: no ONNX conversion for operator(s) {', '.join(sorted(unsupported))}")
    return sym


def load_params(params_file):
    """Read exported parameters into {name: NDArray}, without the `arg:`/`aux:` prefixes."""
    try:
        params = mx.nd.load(params_file)
    except mx.base.MXNetError:
        raise InputError(f"{params_file}: not an MXNet parameter file") from None
    return {key.split(":", 1)[-1]: value for key, value in params.items()}


def finish_onnx_graph(graph, num_classes):
    """Keep the weights as initializers only (the exporter also lists them as graph inputs, which
    stops ONNX Runtime from optimising), and name the batch axis of input and output `batch`."""
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = num_classes


def export_onnx(prefix, output):
    """Convert the export under `prefix` to an ONNX model at `output`, atomically; return its classes path.

    The batch axis is dynamic (named `batch`); the input is `data`, float32 NCHW normalised as by the
    chapter's test transform, the output the logits.
    """
    try:
        import onnx
    except ImportError:
        raise InputError("ONNX export needs the onnx package (the package's [onnx] extra): pip install "
                         + ("'onnx<1.16'" if sys.version_info < (3, 12) else "'onnx>=1.17'")) from None
    numpy_compat.restore_onnx_mapping()  # onnx >= 1.16 (the only onnx for Python 3.13) has none
    files = existing_exported_files(prefix)
    sym, params = onnx_symbol(files["symbol"]), load_params(files["params"])
    with open(files["classes"]) as f:
        classes = json.load(f)
    with atomic_path(output) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's use of onnx.mapping
            mx.onnx.export_model(sym, params, in_shapes=[(1,) + INPUT_SHAPE], in_types=[onp.float32],
                                 onnx_file_path=tmp, dynamic=True,
                                 dynamic_input_shapes=[(None,) + INPUT_SHAPE])
        model = onnx.load(tmp)
        finish_onnx_graph(model.graph, len(classes))
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
    classes_file = os.path.splitext(output)[0] + "-classes.json"
    write_json(classes_file, classes)
    return classes_file


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gluon_cifar.export",
                                     description="Convert an exported model (PREFIX-symbol.json, "
                                                 "PREFIX-0000.params, PREFIX-classes.json) to ONNX.")
    parser.add_argument("--model", required=True, help="export prefix, as written by training (OUT/model)")
    parser.add_argument("--onnx", action="store_true", required=True,
                        help="write an ONNX model (the only conversion so far)")
    parser.add_argument("--output", help="ONNX file to write (default: PREFIX.onnx); the class names "
                                         "go beside it as NAME-classes.json")
    return parser


@report_input_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    output = args.output or f"{args.model}.onnx"
    classes_file = export_onnx(args.model, output)
    print(f"wrote {output} and {classes_file}")


if __name__ == "__main__":
    main()
