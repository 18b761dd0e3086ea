"""gluon_cifar.deploy.onnx: a valid model of the documented opset that ONNX Runtime runs as MXNet does."""
import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as onp
import onnx
import pytest

from gluon_cifar import predict
from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.data.loaders import ImageFilesDataset
from gluon_cifar.deploy.export import exported_files, load_exported, load_params

from conftest import CLASSES, REPO, TINY

NUM_IMAGES = 64


# Runs in the ONNX Runtime environment: logits for the whole batch and for its first 5 images alone.
ORT_LOGITS = """
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
X, name = np.load(sys.argv[2]), session.get_inputs()[0].name
np.savez(sys.argv[3], full=session.run(None, {name: X})[0], head=session.run(None, {name: X[:5]})[0])
"""


# Runs in the ONNX Runtime environment: the example script's preprocessing of every image of a folder.
EXAMPLE_INPUTS = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from onnx_predict import list_images, preprocess
np.save(sys.argv[3], np.stack([preprocess(path) for _, path in list_images(sys.argv[2])]))
"""


@pytest.fixture(scope="module")
def onnx_python():
    """A Python with ONNX Runtime: this one on 3.12+, else .venv-onnx's (made once by `make onnx-env`)."""
    if sys.version_info >= (3, 12):
        return sys.executable
    subprocess.run(["make", "-s", "onnx-env", f"PYTHON={sys.executable}"], cwd=REPO, check=True)
    return os.path.join(REPO, ".venv-onnx", "bin", "python")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """64 real CIFAR-10 images as <id>.png: the tiny set's 5 test images, then train images renumbered."""
    if not os.path.isdir(TINY):
        pytest.skip("../shared/data/cifar10_tiny is not present")
    folder = tmp_path_factory.mktemp("images")
    sources = [os.path.join(TINY, "test", f"{i}.png") for i in range(1, 6)]
    sources += [os.path.join(TINY, "train", f"{i}.png") for i in range(1, NUM_IMAGES - 4)]
    for image_id, src in enumerate(sources, start=1):
        shutil.copyfile(src, folder / f"{image_id}.png")
    return str(folder)


def test_onnx_model_is_valid_with_dynamic_batch_and_weights_as_initializers(exported):
    onnx.checker.check_model(exported + ".onnx")
    graph = onnx.load(exported + ".onnx").graph
    assert [value.name for value in graph.input] == ["data"]
    params = load_params(exported_files(exported)["params"])
    assert {init.name for init in graph.initializer} == set(params)  # BatchNorm statistics included
    dims = [[d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in (graph.input[0], graph.output[0])]
    assert dims == [["batch", 3, 32, 32], ["batch", len(CLASSES)]]
    with open(exported + "-classes.json") as f:
        assert json.load(f) == list(CLASSES)


@pytest.fixture(scope="module")
def inputs(images):
    """The images as the chapter's test transform gives them to the net: (N, 3, 32, 32) float32."""
    dataset = ImageFilesDataset(images).transform_first(data_transforms.test_transform())
    return onp.stack([dataset[i][0].asnumpy() for i in range(len(dataset))])


def test_onnx_model_has_the_documented_opset_and_the_lowest_ir_version_it_needs(exported):
    """Opset 13 and IR version 7 (ONNX Runtime >= 1.6), whatever the exporting onnx's newest are."""
    model = onnx.load(exported + ".onnx")
    assert [(opset.domain, opset.version) for opset in model.opset_import] == [("", 13)]
    assert model.ir_version == 7


def test_onnx_runtime_logits_match_mxnet_at_two_batch_sizes(exported, inputs, onnx_python, tmp_path):
    net, _ = load_exported(exported, mx.cpu())
    expected = net(mx.np.array(inputs)).asnumpy()
    onp.save(tmp_path / "X.npy", inputs)
    subprocess.run([onnx_python, "-c", ORT_LOGITS, exported + ".onnx", str(tmp_path / "X.npy"),
                    str(tmp_path / "logits.npz")], check=True)
    got = onp.load(tmp_path / "logits.npz")
    assert got["full"].shape == (NUM_IMAGES, len(CLASSES)) and got["head"].shape == (5, len(CLASSES))
    for logits, want in ((got["full"], expected), (got["head"], expected[:5])):
        assert onp.abs(logits - want).max() < 1e-4
        assert (logits.argmax(axis=1) == want.argmax(axis=1)).all()


def test_example_script_preprocesses_as_the_chapter_test_transform(images, inputs, onnx_python, tmp_path):
    subprocess.run([onnx_python, "-c", EXAMPLE_INPUTS, os.path.join(REPO, "examples"), images,
                    str(tmp_path / "X.npy")], check=True)
    onp.testing.assert_allclose(onp.load(tmp_path / "X.npy"), inputs, rtol=0, atol=1e-6)


def test_example_script_writes_the_same_submission_as_predict(exported, images, onnx_python, tmp_path):
    predict.main(["--model", exported, "--images", images, "--output", str(tmp_path / "mxnet.csv")])
    subprocess.run([onnx_python, os.path.join(REPO, "examples", "onnx_predict.py"),
                    "--model", exported + ".onnx", "--images", images, "--batch-size", "20",
                    "--output", str(tmp_path / "onnx.csv")], check=True)
    mxnet_csv, onnx_csv = (tmp_path / "mxnet.csv").read_text(), (tmp_path / "onnx.csv").read_text()
    assert len(onnx_csv.splitlines()) == NUM_IMAGES + 1
    assert onnx_csv == mxnet_csv
