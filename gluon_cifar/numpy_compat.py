"""NumPy 2 compatibility for MXNet 1.9.1: puts back the NumPy names MXNet reads, before it is imported.

MXNet 1.9.1 was archived before NumPy 1.24, and its Python code reads NumPy names that later releases
removed: some when `mxnet` is imported (its NumPy-fallback and dispatch tables), some when an operator
runs. On Python 3.12 and 3.13 (NumPy 2: NumPy 1.23.5 has no wheels there) importing this module first
makes MXNet work unchanged. It only adds names that are missing, never replaces one, so on NumPy 1.23.5
(Python <= 3.11) it adds nothing. The names, with what they were in NumPy 1.23:

- `bool`, `int`, `float`, `object`, `str`: the builtins (removed in 1.24; NumPy 2 has `bool` again, as
  `bool_`, and keeps it). `mxnet.numpy` re-exports them.
- `PZERO`, `NZERO`, `PINF`, `NINF`, `NAN`, `NaN`, `Inf`: the constants (removed in 2.0). `mxnet.numpy`
  re-exports the first six; the Gluon estimator's early stopping reads `Inf`.
- `alltrue`, `sometrue`, `round_`, `product`, `cumproduct`, `row_stack`, `trapz`, `msort`, `in1d`: the
  aliases and functions of `all`, `any`, `round`, `prod`, `cumprod`, `vstack`, `trapezoid`, `sort`
  along axis 0 and `isin` of the flattened array (removed in 2.0-2.4). MXNet's NumPy-fallback and
  array-function dispatch tables list them.
- `fv`, `ipmt`, `irr`, `mirr`, `nper`, `npv`, `pmt`, `ppmt`, `pv`, `rate`: the financial functions, as
  stubs that raise, which is what NumPy 1.20-1.26 had (they moved to numpy_financial). The fallback
  table lists them.
- `compat.basestring`: `str` (`numpy.compat` was removed in 2.0); MXNet's `np.pad` checks `mode` with it.

One setting too, not a name: on NumPy 2, NumPy's own legacy printing mode '1.25' (in every thread), so
that scalars print as `4` again, not `np.int64(4)`. MXNet hands operator arguments to its C++ side as
`str()` of Python values, and NumPy ints reach them (MXNet's `split_and_load` splits at NumPy ints,
slicing with NumPy ints gives a slice operator): `[0, np.int64(4)]` is refused as a shape. Only how
NumPy prints changes (as NumPy 1.25 printed); a legacy mode the user has set is kept.

`restore_onnx_mapping()` does the same for ONNX: MXNet's ONNX exporter reads `onnx.mapping`, removed in
onnx 1.16, and Python 3.13 has no older onnx.
"""
import sys
import types
import warnings

import numpy

_FINANCIAL = ("fv", "ipmt", "irr", "mirr", "nper", "npv", "pmt", "ppmt", "pv", "rate")


def _financial_stub(name):
    def removed(*args, **kwargs):
        raise RuntimeError(f"numpy.{name} was removed from NumPy in 1.20; use numpy_financial.{name}")
    removed.__name__ = name
    return removed


def _missing(module, name):
    with warnings.catch_warnings():  # NumPy 1.x answers its deprecated aliases with a warning
        warnings.simplefilter("ignore")
        return not hasattr(module, name)


def _add(module, names):
    for name, value in names.items():
        if _missing(module, name):
            setattr(module, name, value)


_add(numpy, {
    "bool": bool, "int": int, "float": float, "object": object, "str": str,
    "PZERO": 0.0, "NZERO": -0.0, "PINF": float("inf"), "NINF": float("-inf"),
    "NAN": float("nan"), "NaN": float("nan"), "Inf": float("inf"),
    "alltrue": numpy.all, "sometrue": numpy.any, "round_": numpy.round, "product": numpy.prod,
    "cumproduct": numpy.cumprod, "row_stack": numpy.vstack,
    "trapz": getattr(numpy, "trapezoid", None) or getattr(numpy, "trapz"),
    "msort": lambda a: numpy.sort(a, axis=0),
    "in1d": lambda ar1, ar2, assume_unique=False, invert=False: numpy.isin(
        numpy.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert),
    **{name: _financial_stub(name) for name in _FINANCIAL},
})
if _missing(numpy, "compat"):
    numpy.compat = types.ModuleType("numpy.compat", "What MXNet 1.9.1 reads of NumPy 1.x's numpy.compat.")
_add(numpy.compat, {"basestring": str})


def _print_scalars_as_numpy_1():
    if int(numpy.__version__.split(".")[0]) < 2 or numpy.get_printoptions()["legacy"] is not False:
        return
    numpy.set_printoptions(legacy="1.25")  # this thread's options
    try:  # new threads start from NumPy's defaults, not from this thread's options
        from numpy._core.printoptions import default_format_options_dict
    except ImportError:
        return
    default_format_options_dict["legacy"] = 125  # what set_printoptions(legacy="1.25") stores


_print_scalars_as_numpy_1()


def restore_onnx_mapping():
    """Give `onnx` its `mapping` module back (removed in 1.16) if it lacks one: MXNet's exporter reads
    `NP_TYPE_TO_TENSOR_TYPE` and `TENSOR_TYPE_TO_NP_TYPE` from it."""
    import onnx
    from onnx import helper

    if not _missing(onnx, "mapping"):
        return
    to_numpy = {}
    for tensor_type in sorted(onnx.TensorProto.DataType.values()):
        try:
            to_numpy[tensor_type] = helper.tensor_dtype_to_np_dtype(tensor_type)
        except (KeyError, ValueError, TypeError):  # UNDEFINED and types without a NumPy dtype
            pass
    from_numpy = {}
    for tensor_type, dtype in to_numpy.items():  # the classic types come first and win
        from_numpy.setdefault(dtype, tensor_type)
    mapping = types.ModuleType("onnx.mapping", "onnx.mapping as onnx < 1.16 had it, for MXNet's exporter.")
    mapping.TENSOR_TYPE_TO_NP_TYPE, mapping.NP_TYPE_TO_TENSOR_TYPE = to_numpy, from_numpy
    onnx.mapping = mapping
    sys.modules["onnx.mapping"] = mapping
