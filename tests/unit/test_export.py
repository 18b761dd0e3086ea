"""gluon_cifar.deploy.export: export then reload without the model class gives the same logits; a full disk
keeps the previous model."""
import os

import mxnet as mx
import numpy as onp
from mxnet import np

from gluon_cifar import fs
from gluon_cifar.deploy.export import export_model, load_exported
from gluon_cifar.model import resnet18

from conftest import REFERENCE_PARAMS


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
