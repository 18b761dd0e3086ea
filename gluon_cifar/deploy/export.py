"""Export stage: the trained hybridized net as `<prefix>-symbol.json` + `<prefix>-0000.params`.

The class names travel beside it as `<prefix>-classes.json`, so a deployment maps indices to labels
without this package; `load_exported` reopens all three without the Python model class, and
`load_weights` starts a training run from them (`--init-from`). ONNX: gluon_cifar.deploy.onnx.
"""

import json
import os
import warnings

import mxnet as mx
from mxnet import gluon

from gluon_cifar import fs
from gluon_cifar.errors import InputError, reason, shorten
from gluon_cifar.fs import write_error, write_json
from gluon_cifar.images import INPUT_SHAPE
from gluon_cifar.model import initialize_shapes

# NumPy-mode operator -> (legacy operator, its attributes). MXNet 1.9.1's ONNX exporter (and its MKLDNN
# fusion) know only the legacy ones. The residual adds have operands of equal shapes.
LEGACY_OPS = {"_npx_relu": ("Activation", {"act_type": "relu"}), "_npi_add": ("elemwise_add", {})}


def exported_files(prefix):
    """The three files an export writes, keyed by role."""
    return {"symbol": f"{prefix}-symbol.json", "params": f"{prefix}-0000.params",
            "classes": f"{prefix}-classes.json"}


def export_model(net, prefix, classes):
    """Export `net` (hybridized) and its class names under `prefix`, atomically.

    The net is run once on one blank image first: MXNet exports the graph of the last forward pass, and a
    resumed run with no epoch left has made none (inference mode: no statistic changes).
    """
    initialize_shapes(net)
    folder = os.path.dirname(os.path.abspath(prefix))
    manifest = fs.Manifest(folder)
    fs.check_owned(exported_files(prefix).values(), manifest, "the export replaces it")
    try:
        staging = fs.staging_dir(prefix, marker=False)
    except OSError as err:
        raise write_error(exported_files(prefix)["params"], err) from None
    staged = exported_files(os.path.join(staging, "model"))
    try:
        fs.Manifest(staging).expect(staged["symbol"], staged["params"])
        try:
            net.export(os.path.join(staging, "model"))
        except mx.base.MXNetError as err:  # how MXNet reports a full disk
            raise write_error(exported_files(prefix)["params"], err) from None
        for role, path in exported_files(prefix).items():
            if role == "classes":
                write_json(path, list(classes), manifest)
            else:
                fs.publish(staged[role], path, manifest)
    finally:
        fs.record_tree(staging, fs.Manifest(staging))  # what this export wrote into its new folder
        fs.remove_owned([staging], fs.Manifest(staging), "the staging folder of an export")


def existing_exported_files(prefix):
    """`exported_files(prefix)`, after checking that all three exist."""
    files = exported_files(prefix)
    for path in files.values():
        if not os.path.isfile(path):
            raise InputError(f"{path}: exported model file not found")
    return files


def read_classes(path):
    """The class names in `path`: a JSON list of distinct, non-empty strings."""
    try:
        with open(path, encoding="utf-8") as f:
            classes = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if (not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)):
        raise InputError(f"{path}: must be a JSON list of distinct class names, got {json.dumps(classes)[:80]}")
    return classes


def read_symbol(path):
    """The graph in an MXNet symbol file (a legacy Symbol)."""
    try:
        return mx.sym.load(path)
    except (mx.base.MXNetError, UnicodeDecodeError):  # (MXNet cannot decode its message about binary garbage)
        raise InputError(f"{path}: not an MXNet symbol file (truncated or damaged?)") from None


def check_exported(prefix):
    """Read and cross-check an export's three files: the parameters fit the graph, the graph classifies
    3x32x32 images, and the class names are as many as its outputs. Returns (files, classes)."""
    files = existing_exported_files(prefix)
    classes = read_classes(files["classes"])
    sym, params = read_symbol(files["symbol"]), load_params(files["params"])
    try:
        arg_shapes, out_shapes, aux_shapes = sym.infer_shape(data=(1,) + INPUT_SHAPE)
    except (mx.base.MXNetError, ValueError, TypeError):
        arg_shapes = None
    if arg_shapes is None or len(out_shapes) != 1 or len(out_shapes[0]) != 2:
        raise InputError(f"{files['symbol']}: not a classifier of {'x'.join(map(str, INPUT_SHAPE))} images "
                         f"with input 'data'")
    expected = dict(zip(sym.list_arguments() + sym.list_auxiliary_states(), arg_shapes + aux_shapes))
    expected.pop("data")
    for name, shape in expected.items():
        if name not in params:
            raise InputError(f"{files['params']} does not fit {files['symbol']}: it lacks parameter {name!r} "
                             "(files of two different models?)")
        if params[name].shape != tuple(shape):
            raise InputError(f"{files['params']} does not fit {files['symbol']}: parameter {name!r} is "
                             f"{params[name].shape}, the graph needs {tuple(shape)} (files of two different models?)")
    outputs = out_shapes[0][1]
    if outputs != len(classes):
        raise InputError(f"{files['classes']}: {len(classes)} class names, but the model has {outputs} outputs")
    return files, classes


def load_exported(prefix, ctx):
    """Reopen an export as a `SymbolBlock` on `ctx`, after `check_exported`; return (net, class names)."""
    files, classes = check_exported(prefix)
    return import_block(files["symbol"], files["params"], ctx), classes


def import_block(symbol_file, params_file, ctx):
    """The graph of `symbol_file` with the parameters of `params_file` as a SymbolBlock on `ctx` (input 'data')."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # imports() warns that the input name 'data' is not a parameter
        return gluon.SymbolBlock.imports(symbol_file, ["data"], params_file, ctx=ctx)


def load_weights(net, source, classes):
    """Copy trained weights into the initialised `net`, to start a run from them (fine-tuning, the final
    train_valid run): from an export prefix (its classes must be `classes`), a checkpoint folder (its
    `net.params`) or a parameter file written by `save_parameters`."""
    devices = next(iter(net.collect_params().values())).list_ctx()
    initialize_shapes(net)
    if not os.path.isfile(exported_files(source)["symbol"]):
        path = os.path.join(source, "net.params") if os.path.isdir(source) else source
        if not os.path.isfile(path):
            raise InputError(f"--init-from {source}: neither an export prefix (PREFIX-symbol.json) nor a "
                             "checkpoint (a folder with net.params, or a .params file)")
        try:
            net.load_parameters(path, ctx=devices)
        except (mx.base.MXNetError, AssertionError, ValueError) as err:
            raise InputError(f"--init-from {path}: not weights of this model ({shorten(reason(err), 200)})") from None
        return
    files = existing_exported_files(source)
    with open(files["classes"]) as f:
        trained_on = json.load(f)
    if trained_on != list(classes):
        raise InputError(f"--init-from {source}: trained on the classes {', '.join(trained_on)}; this data has "
                         f"{', '.join(classes)}")
    # The export names parameters by creation count (conv0_weight...), this net differently: both graphs
    # list their arguments in the same order, so a position in one is the same parameter in the other.
    saved, params = load_params(files["params"]), net.collect_params()
    exported, ours = mx.sym.load(files["symbol"]), net(mx.sym.var("data").as_np_ndarray())
    old_names = exported.list_arguments() + exported.list_auxiliary_states()
    new_names = ours.list_arguments() + ours.list_auxiliary_states()
    if len(old_names) != len(new_names):
        raise InputError(f"--init-from {source}: its layers differ from this model's")
    for old, new in zip(old_names, new_names):
        if new == "data":
            continue
        if old not in saved or saved[old].shape != params[new].shape:
            raise InputError(f"--init-from {source}: its layers differ from this model's ({old})")
        params[new].set_data(saved[old].as_np_ndarray())


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


def load_params(params_file):
    """Read exported parameters into {name: NDArray}, without the `arg:`/`aux:` prefixes."""
    try:
        params = mx.nd.load(params_file)
    except (mx.base.MXNetError, UnicodeDecodeError):
        params = None
    if not isinstance(params, dict):
        raise InputError(f"{params_file}: not an MXNet parameter file (truncated or damaged?)")
    return without_prefixes(params)


def without_prefixes(params):
    """{name: array} of MXNet's saved {'arg:name'/'aux:name': array}."""
    return {key.split(":", 1)[-1]: value for key, value in params.items()}


