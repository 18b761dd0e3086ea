"""Conversion of an export to ONNX (`python -m gluon_cifar.export --onnx`), for targets without MXNet.

The model is stamped with a fixed opset (ONNX_OPSET) and the lowest IR version it needs, whatever onnx
converts it, so older ONNX Runtime releases load it; the class names go beside it as NAME-classes.json.
"""
import json
import os
import sys
import warnings

import mxnet as mx
import numpy as onp

from gluon_cifar import fs, numpy_compat
from gluon_cifar.deploy.export import check_exported, legacy_symbol, load_params, read_classes
from gluon_cifar.deploy.predict import check_output_file
from gluon_cifar.errors import InputError, shorten
from gluon_cifar.fs import atomic_path, check_not_an_input, write_json
from gluon_cifar.images import INPUT_SHAPE

# The ONNX opset every export is stamped with: MXNet 1.9.1's newest converters are opset 13's, and it picks
# them for any newer opset the installed onnx offers. Opset 13 needs IR version 7: ONNX Runtime >= 1.6 loads it.
ONNX_OPSET = 13


def onnx_symbol(symbol_file):
    """`legacy_symbol(symbol_file)`, after checking that MXNet's ONNX exporter converts every operator."""
    sym = legacy_symbol(symbol_file)
    ops = {node["op"] for node in json.loads(sym.tojson())["nodes"]} - {"null"}
    unsupported = ops - set(mx.onnx.get_operator_support())
    if unsupported:
        raise InputError(f"{symbol_file}: no ONNX conversion for operator(s) {', '.join(sorted(unsupported))}")
    return sym


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


def pin_onnx_versions(model):
    """Stamp `model` with ONNX_OPSET and the lowest IR version that opset needs, in place of the newest
    ones of the onnx that exported it, which older ONNX Runtimes refuse to load."""
    from onnx import helper
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", ONNX_OPSET))
    model.ir_version = helper.find_min_ir_version_for(model.opset_import)


def export_onnx(prefix, output):
    """Convert the export under `prefix` to an ONNX model at `output`, atomically; return its classes path.

    The batch axis is dynamic (named `batch`); the input is `data`, float32 NCHW normalised as by the
    chapter's test transform, the output the logits. Opset ONNX_OPSET (13), IR version 7, whatever onnx exports.
    """
    try:
        import onnx
        new_enough = onnx.defs.onnx_opset_version() >= ONNX_OPSET  # onnx >= 1.8
    except ImportError:
        new_enough = False
    if not new_enough:
        raise InputError("ONNX export needs the onnx package, 1.8 or newer (the package's [onnx] extra): pip install "
                         + ("'onnx>=1.8,<1.16'" if sys.version_info < (3, 12) else "'onnx>=1.17'"))
    numpy_compat.restore_onnx_mapping()  # onnx >= 1.16 (the only onnx for Python 3.13) has none
    files, classes = check_exported(prefix)
    classes_file = os.path.splitext(output)[0] + "-classes.json"
    check_not_an_input(output, files.values())
    check_not_an_input(classes_file, (files["symbol"], files["params"]))
    check_output_file(output, "--onnx")
    # The class names beside NAME.onnx: the same list already there is kept (the model's own file, by default);
    # another is replaced only where an earlier conversion to this NAME.onnx wrote it.
    note = f"classes of {os.path.basename(output)}"
    keep = os.path.isfile(classes_file) and _classes_in(classes_file) == classes
    if not keep:
        fs.check_owned([classes_file], fs.Manifest(os.path.dirname(os.path.abspath(classes_file))),
                       f"it is not the class list of an earlier conversion to {output}, maybe another model's; "
                       "choose another --onnx name", note)
    sym, params = onnx_symbol(files["symbol"]), load_params(files["params"])
    with atomic_path(output, replace_any=True) as tmp:  # the file the user named
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's use of onnx.mapping
                mx.onnx.export_model(sym, params, in_shapes=[(1,) + INPUT_SHAPE], in_types=[onp.float32],
                                     onnx_file_path=tmp, dynamic=True,
                                     dynamic_input_shapes=[(None,) + INPUT_SHAPE])
        except (mx.base.MXNetError, KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise InputError(f"cannot convert {files['symbol']} to ONNX: {shorten(str(err).strip(), 200)}") from None
        model = onnx.load(tmp)
        pin_onnx_versions(model)
        finish_onnx_graph(model.graph, len(classes))
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
    if not keep:
        write_json(classes_file, classes, note=note)
    return classes_file


def _classes_in(path):
    """The class names in `path`, or None where it holds no class list."""
    try:
        return read_classes(path)
    except (InputError, OSError):
        return None
