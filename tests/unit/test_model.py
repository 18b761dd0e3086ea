"""gluon_cifar.model: the chapter's ResNet-18, its shapes and hybridization, and the reference weights."""
import os

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.images import read_image
from gluon_cifar.model import Residual, get_net, resnet18

from conftest import CLASSES, REFERENCE_PARAMS, TINY


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
