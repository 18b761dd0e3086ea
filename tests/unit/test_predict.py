"""gluon_cifar.deploy.predict: submission ids from file names, labels from synsets, flip TTA."""
import os

import mxnet as mx
import numpy as onp
import pandas as pd
import pytest
from mxnet import np

from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.deploy.predict import Inference, predict_folder, predict_logits
from gluon_cifar.images import read_image
from gluon_cifar.model import resnet18

from conftest import make_kaggle_dir


def test_submission_ids_come_from_file_names_and_labels_from_synsets(tmp_path):
    folder = tmp_path / "test"
    make_kaggle_dir(tmp_path / "k", 1, num_test=12)
    os.rename(tmp_path / "k" / "test", folder)
    for old, new in ((1, 30), (2, 200), (3, 9)):  # sparse ids, whose text order differs from numeric
        os.rename(folder / f"{old}.png", folder / f"{new}.png")
    net = resnet18(10)
    net.initialize(init=mx.init.Xavier())
    classes = [f"name{i}" for i in range(10)]
    output = tmp_path / "submission.csv"
    predict_folder(net, str(folder), classes, str(output), Inference(batch_size=5, ctx=mx.cpu()))
    submission = pd.read_csv(output)
    expected_ids = sorted(int(p.name[:-4]) for p in folder.iterdir())
    assert submission["id"].tolist() == expected_ids
    for image_id, label in zip(submission["id"], submission["label"]):
        X = data_transforms.test_transform()(read_image(str(folder / f"{image_id}.png")))[None]
        assert label == classes[int(net(X).argmax(axis=1)[0])]


def test_flip_tta_is_the_mean_of_the_image_and_mirror_logits(net):
    X = np.array(onp.random.default_rng(2).normal(size=(3, 3, 32, 32)).astype("float32"))
    by_hand = (net(X) + net(np.array(X.asnumpy()[:, :, :, ::-1].copy()))) / 2
    tta = predict_logits(net, X, "flip")
    assert tta.asnumpy() == pytest.approx(by_hand.asnumpy(), abs=1e-5)
    assert not onp.allclose(tta.asnumpy(), net(X).asnumpy(), atol=1e-5)


def test_flip_tta_on_a_mirror_symmetric_image_is_plain_prediction(net):
    half = onp.random.default_rng(3).normal(size=(2, 3, 32, 16)).astype("float32")
    X = np.array(onp.concatenate([half, half[:, :, :, ::-1]], axis=3))
    assert predict_logits(net, X, "flip").asnumpy() == pytest.approx(net(X).asnumpy(), abs=1e-5)
