"""The fused and INT8 inference graphs and `--fast-data` training, end to end on real images."""
import json
import os

import mxnet as mx
import numpy as onp

from gluon_cifar.data.loaders import ImageFilesDataset
from gluon_cifar.deploy import fastinfer
from gluon_cifar.deploy import predict as deploy_predict
from gluon_cifar.deploy.export import legacy_symbol, load_exported

from clitools import run


def test_fusable_graph_fuses_every_convolution_and_predicts_as_the_export(reference_prefix, tiny_folder):
    fused_ops = [node["op"] for node in json.loads(
        legacy_symbol(reference_prefix + "-symbol.json").get_backend_symbol("MKLDNN").tojson())["nodes"]]
    assert fused_ops.count("_sg_mkldnn_conv") == 20 and "Convolution" not in fused_ops
    net, classes = load_exported(reference_prefix, mx.cpu())
    held = ImageFilesDataset(str(tiny_folder / "held"))
    ids, chapter = deploy_predict.predict(net, held, deploy_predict.Inference(50, mx.cpu()))
    fused, fused_classes = fastinfer.load_fast(reference_prefix, 64)  # 200 = 3 full batches + a padded one
    fast_ids, ours = fastinfer.predict_fast(fused, str(tiny_folder / "held"), 64)
    assert fused_classes == classes and fast_ids == ids and ours == chapter


def test_int8_agrees_with_fp32_on_200_images_it_was_not_calibrated_on(reference_prefix, tiny_folder):
    calib = fastinfer.read_calibration_images(str(tiny_folder / "calib"), 256)
    fp32, _ = fastinfer.load_fast(reference_prefix, 100)
    int8, _ = fastinfer.load_fast(reference_prefix, 100, calib)
    _, p32 = fastinfer.predict_fast(fp32, str(tiny_folder / "held"), 100)
    _, p8 = fastinfer.predict_fast(int8, str(tiny_folder / "held"), 100)
    assert onp.mean(onp.array(p32) == onp.array(p8)) >= 0.99


def test_train_command_with_fast_data_trains_and_writes_its_outputs(kaggle_dir, tmp_path):
    out = tmp_path / "out"
    result = run("train", "--data-dir", kaggle_dir, "--epochs", 2, "--batch-size", 4, "--valid-ratio", 0.3,
                 "--fast-data", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["examples"] for m in metrics] == [24, 24]  # 30 images - 6 valid, whole batches of 4
    assert len((out / "submission.csv").read_text().splitlines()) == 1 + 7
    assert os.path.isfile(os.path.join(kaggle_dir, "train_valid_test", "train.uint8.npz"))
