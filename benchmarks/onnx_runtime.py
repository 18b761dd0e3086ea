"""ONNX Runtime vs MXNet inference throughput on the reference model, side by side in one run.

    .venv/bin/python benchmarks/onnx_runtime.py [--batch-size 128] [--repeats 10]

All rows classify the same batch of real CIFAR-10 images, preprocessed once by the chapter's test
transform, with the same trained weights:
- MXNet: the exported model reopened by `load_exported` (the `predict` path);
- ONNX Runtime: `model.onnx` from `python -m gluon_cifar.export --onnx` (weights as initializers);
- ONNX Runtime, raw export: the same model with every weight also a graph input, as MXNet's exporter
  writes it, to show what `export_onnx` gains by keeping them initializers only.
ONNX Runtime runs in a subprocess started after MXNet's timing, so the rows never share the cores: with
this Python on 3.12+, in its own environment on <= 3.11 (`make onnx-env`: its wheels need numpy >= 1.24,
which MXNet 1.9.1 imports only on 3.12+, through gluon_cifar.numpy_compat).
The rows take turns for `--rounds` rounds (so a change in the machine's load hits all of them), each
turn `--warmup` untimed then `--repeats` timed batches; prints median and range in images/s.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from gluon_cifar.cli import use_all_cores

use_all_cores()  # before MXNet loads

import mxnet as mx  # noqa: E402
import numpy as onp  # noqa: E402
from mxnet import npx  # noqa: E402

import gluon_cifar  # noqa: E402

from gluon_cifar.model import resnet18  # noqa: E402
from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.data.loaders import ImageFilesDataset
from gluon_cifar.deploy.export import export_model, load_exported
from gluon_cifar.images import INPUT_SHAPE
from gluon_cifar.deploy.onnx import export_onnx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared")
# Python 3.12+ has ONNX Runtime beside MXNet (NumPy 2); on <= 3.11 it lives in .venv-onnx.
ONNX_PYTHON = (sys.executable if sys.version_info >= (3, 12)
               else os.path.join(REPO, ".venv-onnx", "bin", "python"))
# Runs in the ONNX Runtime environment; prints {"version", "threads", "seconds": [per timed batch]}.
ORT_TIMER = """
import json, sys, time, numpy as np, onnxruntime as ort
model, inputs, warmup, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
X, name = np.load(inputs), session.get_inputs()[0].name
for _ in range(warmup):
    session.run(None, {name: X})
seconds = []
for _ in range(repeats):
    start = time.perf_counter()
    session.run(None, {name: X})
    seconds.append(time.perf_counter() - start)
print(json.dumps({"version": ort.__version__, "threads": session.get_session_options().intra_op_num_threads,
                  "seconds": seconds}))
"""


def mxnet_seconds(net, X, warmup, repeats):
    """Seconds per batch of `net(X)` over `repeats` timed runs, after `warmup` untimed ones."""
    for _ in range(warmup):
        net(X).wait_to_read()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        net(X).wait_to_read()
        seconds.append(time.perf_counter() - start)
    return seconds


def onnx_runtime_seconds(onnx_file, inputs_file, warmup, repeats, python=ONNX_PYTHON):
    """Time ONNX Runtime on the batch saved in `inputs_file` (.npy) in its own environment; return ORT_TIMER's dict."""
    out = subprocess.run([python, "-c", ORT_TIMER, onnx_file, inputs_file, str(warmup), str(repeats)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def with_weights_as_inputs(onnx_file, output):
    """Write `onnx_file` with its initializers listed as graph inputs too (MXNet's exporter's raw form)."""
    import onnx
    model = onnx.load(onnx_file)
    model.graph.input.extend(onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims)
                             for init in model.graph.initializer)
    onnx.save(model, output)


def export_reference(params_file, folder):
    """Export the reference model to `folder/model` (MXNet) and `folder/model.onnx`; return the prefix."""
    net = resnet18(10)
    net.load_parameters(params_file, ctx=mx.cpu())
    net.hybridize()
    net(mx.np.zeros((1,) + INPUT_SHAPE))
    prefix = os.path.join(folder, "model")
    export_model(net, prefix, [str(k) for k in range(10)])
    export_onnx(prefix, prefix + ".onnx")
    return prefix


def cpu_name():
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                    platform.processor())


def main():
    npx.set_np()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=os.path.join(SHARED, "models", "resnet18_reference.params"))
    parser.add_argument("--images", default=os.path.join(SHARED, "data", "cifar10_tiny", "train"),
                        help="folder of <id>.png images; the first --batch-size are used")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--onnx-python", default=ONNX_PYTHON, help="Python of the ONNX Runtime environment")
    args = parser.parse_args()
    for path in (args.params, args.onnx_python):
        if not os.path.exists(path):
            sys.exit(f"error: {path} not found (the ONNX Runtime environment: make onnx-env)")

    dataset = ImageFilesDataset(args.images).transform_first(data_transforms.test_transform())
    if len(dataset) < args.batch_size:
        sys.exit(f"error: {args.images}: {len(dataset)} images, fewer than --batch-size {args.batch_size}")
    X = mx.np.stack([dataset[i][0] for i in range(args.batch_size)])
    with tempfile.TemporaryDirectory() as folder:
        prefix = export_reference(args.params, folder)
        with_weights_as_inputs(prefix + ".onnx", os.path.join(folder, "raw.onnx"))
        inputs_file = os.path.join(folder, "X.npy")
        onp.save(inputs_file, X.asnumpy())
        net, _ = load_exported(prefix, mx.cpu())
        rows = {"MXNet (load_exported)": [], "ONNX Runtime (model.onnx)": [], "ONNX Runtime, raw export": []}
        for _ in range(args.rounds):
            rows["MXNet (load_exported)"] += mxnet_seconds(net, X, args.warmup, args.repeats)
            for name, onnx_file in (("ONNX Runtime (model.onnx)", prefix + ".onnx"),
                                    ("ONNX Runtime, raw export", os.path.join(folder, "raw.onnx"))):
                ort = onnx_runtime_seconds(onnx_file, inputs_file, args.warmup, args.repeats, args.onnx_python)
                rows[name] += ort["seconds"]

    print(f"{cpu_name()}, {os.cpu_count()} cores; mxnet {mx.__version__} (OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}), onnxruntime {ort['version']} (intra-op threads "
          f"{ort['threads'] or 'default'}); gluon_cifar {gluon_cifar.__version__}")
    print(f"batch {args.batch_size} of real images; {args.rounds} rounds of {args.warmup} warm-up + "
          f"{args.repeats} timed batches per row")
    rates = {}
    for name, seconds in rows.items():
        rates[name] = args.batch_size / statistics.median(seconds)
        print(f"{name:28s} {rates[name]:7.1f} img/s (median; range "
              f"{args.batch_size / max(seconds):.1f}-{args.batch_size / min(seconds):.1f})")
    baseline = rates["MXNet (load_exported)"]
    for name in list(rates)[1:]:
        print(f"{name} / MXNet: {rates[name] / baseline:.2f}x")


if __name__ == "__main__":
    main()
