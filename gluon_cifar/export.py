"""Export stage: the trained hybridized net as `<prefix>-symbol.json` + `<prefix>-0000.params`.

The class names travel beside it as `<prefix>-classes.json`, so a deployment maps indices to labels
without this package; `load_exported` reopens all three without the Python model class.
"""
import json
import os
import tempfile
import warnings

from mxnet import gluon

from .atomic import atomic_path
from .errors import InputError


def exported_files(prefix):
    """The three files an export writes, keyed by role."""
    return {"symbol": f"{prefix}-symbol.json", "params": f"{prefix}-0000.params",
            "classes": f"{prefix}-classes.json"}


def export_model(net, prefix, classes):
    """Export `net` (hybridized, run at least once) and its class names under `prefix`, atomically."""
    folder = os.path.dirname(os.path.abspath(prefix))
    staging = tempfile.mkdtemp(dir=folder, prefix=".export.")
    try:
        net.export(os.path.join(staging, "model"))
        staged = exported_files(os.path.join(staging, "model"))
        for role, path in exported_files(prefix).items():
            if role == "classes":
                with atomic_path(path) as tmp, open(tmp, "w") as f:
                    json.dump(list(classes), f)
            else:
                os.replace(staged[role], path)
    finally:
        for name in os.listdir(staging):
            os.remove(os.path.join(staging, name))
        os.rmdir(staging)


def load_exported(prefix, ctx):
    """Reopen an export as a `SymbolBlock` on `ctx`; return (net, class names)."""
    files = exported_files(prefix)
    for path in files.values():
        if not os.path.isfile(path):
            raise InputError(f"{path}: exported model file not found")
    with open(files["classes"]) as f:
        classes = json.load(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # imports() warns that the input name 'data' is not a parameter
        net = gluon.SymbolBlock.imports(files["symbol"], ["data"], files["params"], ctx=ctx)
    return net, classes
