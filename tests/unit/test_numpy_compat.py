"""gluon_cifar.numpy_compat: MXNet's NumPy names present, nothing NumPy has replaced, NumPy ints printed as
ints."""
import json
import re
import subprocess
import sys
import threading

import mxnet as mx
import numpy as onp
import onnx
import pytest

from gluon_cifar import numpy_compat

# In a fresh interpreter: NumPy's names before the shim, then those it replaced and those it added
# (leaving out NumPy's own submodules, which NumPy 2 loads when MXNet first touches them).
IMPORT_CHECK = """
import json, types, warnings
import numpy
warnings.simplefilter("ignore")
before = {name: getattr(numpy, name) for name in dir(numpy)}
import gluon_cifar.numpy_compat
print(json.dumps({"replaced": [name for name in before if getattr(numpy, name) is not before[name]],
                  "added": [name for name in set(dir(numpy)) - set(before) if name == "compat"
                            or not isinstance(getattr(numpy, name), types.ModuleType)]}))
"""


def test_shim_adds_only_missing_names_its_docstring_lists_and_replaces_none():
    result = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    names = json.loads(result.stdout)
    assert names["replaced"] == []
    documented = set(re.findall(r"`(\w+)", numpy_compat.__doc__))
    assert set(names["added"]) <= documented
    if onp.__version__ == "1.23.5":
        assert names["added"] == []  # NumPy 1.23.5 has them all
    else:
        assert {"PZERO", "alltrue", "in1d", "npv", "compat"} <= set(names["added"])


def test_the_names_mxnet_reads_behave_as_numpy_1_had_them():
    a = onp.array([[3, 1], [1, 2]])
    assert onp.alltrue(a > 0) and onp.sometrue(a == 3) and onp.product(a) == 6
    assert onp.in1d(a, [2, 3]).tolist() == [True, False, False, True]
    assert onp.msort(a).tolist() == [[1, 1], [3, 2]]
    assert onp.row_stack([a, a]).shape == (4, 2) and onp.trapz([1, 1]) == 1
    assert onp.NINF == -onp.inf and onp.compat.basestring is str
    assert mx.np.pad(mx.np.ones((2, 2)), ((1, 1), (1, 1)), mode="reflect").shape == (4, 4)  # reads compat.basestring


def test_numpy_ints_print_as_ints_in_every_thread_so_mxnet_can_parse_them():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(str([onp.int64(4), onp.float64(0.5)])))
    thread.start()
    thread.join()
    assert seen == [str([onp.int64(4), onp.float64(0.5)])] == ["[4, 0.5]"]
    x = mx.np.arange(10)
    assert x[onp.int64(2):onp.int64(5)].tolist() == [2, 3, 4]  # a slice operator with NumPy ints
    parts = mx.gluon.utils.split_and_load(x, [mx.cpu(0), mx.cpu(1)])  # splits at NumPy ints
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.filterwarnings("ignore:`mapping.:DeprecationWarning")  # onnx < 1.16 has it, deprecated
def test_onnx_mapping_maps_the_types_mxnets_exporter_asks_for():
    numpy_compat.restore_onnx_mapping()
    from onnx import mapping
    for dtype, tensor_type in [("float32", onnx.TensorProto.FLOAT), ("float16", onnx.TensorProto.FLOAT16),
                               ("int64", onnx.TensorProto.INT64), ("int32", onnx.TensorProto.INT32),
                               ("uint8", onnx.TensorProto.UINT8), ("bool", onnx.TensorProto.BOOL)]:
        assert mapping.NP_TYPE_TO_TENSOR_TYPE[onp.dtype(dtype)] == tensor_type
        assert mapping.TENSOR_TYPE_TO_NP_TYPE[tensor_type] == onp.dtype(dtype)
