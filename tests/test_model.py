"""The chapter's ResNet-18: shapes, hybridization, and export then reload without the model class."""
import os

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from conftest import CLASSES, REFERENCE_PARAMS, TINY
from gluon_cifar import fs
from gluon_cifar.deploy.export import export_model, load_exported
from gluon_cifar.images import read_image
from gluon_cifar.model import Residual, get_net, resnet18
from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.data.labels import read_csv_labels


def test_residual_shapes():
    blk = Residual(6, use_1x1conv=True, strides=2)
    blk.initialize()
    assert blk(np.ones((2, 3, 32, 32))).shape == (2, 6, 16, 16)
    blk = Residual(3)
    blk.initialize()
    assert blk(np.ones((2, 3, 32, 32))).shape == (2, 3, 32, 32)


def test_resnet18_hybridized_matches_imperative():
    net = get_net([mx.cpu()])
    X = np.random.uniform(size=(4, 3, 32, 32))
    imperative = net(X).asnumpy()
    net.hybridize()
    assert net(X).shape == (4, 10)
    onp.testing.assert_allclose(net(X).asnumpy(), imperative, rtol=1e-4, atol=1e-5)


def test_export_reload_gives_the_same_logits(tmp_path):
    net = resnet18(10)
    if os.path.isfile(REFERENCE_PARAMS):
        net.load_parameters(REFERENCE_PARAMS)
    else:
        net.initialize(init=mx.init.Xavier())
    net.hybridize()
    X = np.random.uniform(size=(8, 3, 32, 32))
    expected = net(X).asnumpy()
    classes = [f"class{i}" for i in range(10)]
    export_model(net, str(tmp_path / "model"), classes)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([  # and the folder's record of what it wrote
        "model-0000.params", "model-classes.json", "model-symbol.json", fs.MANIFEST])
    reloaded, reloaded_classes = load_exported(str(tmp_path / "model"), mx.cpu())
    assert reloaded_classes == classes
    onp.testing.assert_allclose(reloaded(X).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_reference_parameters_load_into_the_chapter_model_and_classify_real_images():
    if not (os.path.isfile(REFERENCE_PARAMS) and os.path.isdir(TINY)):
        pytest.skip("../shared is not present")
    net = resnet18(10)
    net.load_parameters(REFERENCE_PARAMS)  # raises if a name or shape differs from the chapter's
    labels = read_csv_labels(os.path.join(TINY, "trainLabels.csv"))
    ids = [str(i) for i in range(1, 65)]
    X = np.stack([data_transforms.test_transform()(read_image(os.path.join(TINY, "train", f"{i}.png"))) for i in ids])
    predicted = [CLASSES[k] for k in net(X).argmax(axis=1).asnumpy().astype(int)]
    assert sum(p == labels[i] for p, i in zip(predicted, ids)) >= 0.9 * len(ids)
