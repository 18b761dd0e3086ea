"""`python -m gluon_cifar.predict`: refusals of bad input, damaged model files, where outputs may go, killed
writes, fast/INT8 paths."""
import os
import shutil

import mxnet as mx
import pandas as pd
import pytest
from mxnet import np
from mxnet.gluon import nn

from gluon_cifar import predict
from gluon_cifar.data import transforms as data_transforms
from gluon_cifar.deploy.export import export_model, exported_files, load_exported
from gluon_cifar.images import list_images, read_image

from clitools import assert_one_error_line, run, run_with_file_size_limit, snapshot, truncate, write_bytes
from conftest import (CLASSES, KILLED_WRITE, MODEL_DAMAGE, TINY, exported_copy, killed, one_error_line, refused,
                      spoil_model)


def test_predict_refuses_a_corrupt_image_and_keeps_the_previous_submission(untrained_export, kaggle_dir):
    truncate(os.path.join(kaggle_dir, "test", "6.png"))
    output = os.path.join(kaggle_dir, "submission.csv")
    write_bytes(output, b"id,label\n1,cat\n")
    before = snapshot(kaggle_dir)
    result = run("predict", "--model", untrained_export, "--images", os.path.join(kaggle_dir, "test"),
                 "--output", output)
    assert_one_error_line(result, os.path.join("test", "6.png"), "cannot decode image")
    assert snapshot(kaggle_dir) == before


@pytest.mark.parametrize("what", ["missing model", "empty folder"])
def test_predict_refuses_missing_inputs(untrained_export, tmp_path, what):
    images = tmp_path / "images"
    images.mkdir()
    model = str(tmp_path / "nothing") if what == "missing model" else untrained_export
    result = run("predict", "--model", model, "--images", str(images), "--output", str(tmp_path / "s.csv"))
    assert_one_error_line(result, "exported model file not found" if what == "missing model" else "no images")
    assert not (tmp_path / "s.csv").exists()


def test_predict_on_a_full_disk_keeps_the_previous_submission(untrained_export, kaggle_dir):
    output = os.path.join(kaggle_dir, "submission.csv")
    write_bytes(output, b"id,label\n1,cat\n")
    before = snapshot(kaggle_dir)
    result = run_with_file_size_limit(20, "gluon_cifar.predict", "--model", untrained_export,
                                      "--images", os.path.join(kaggle_dir, "test"), "--output", output)
    assert_one_error_line(result, f"cannot write {output}", "File too large")
    assert snapshot(kaggle_dir) == before
    assert not [n for n in os.listdir(kaggle_dir) if n.endswith(".tmp")]


def test_predict_refuses_a_batch_size_below_one(tmp_path):
    result = run("predict", "--model", tmp_path / "model", "--images", tmp_path, "--batch-size", 0,
                 "--output", tmp_path / "s.csv")
    assert_one_error_line(result, "--batch-size")
    assert not (tmp_path / "s.csv").exists()


def test_predict_cli_flip_tta_on_the_exported_model(kaggle_dir, tmp_path):
    """A linear model on raw pixels is far from mirror-invariant, so flip TTA changes some predictions."""
    images = os.path.join(kaggle_dir, "test")
    mx.random.seed(1)
    net = nn.HybridSequential()
    net.add(nn.Dense(3))
    net.initialize()
    net.hybridize()
    net(np.zeros((1, 3, 32, 32)))
    export_model(net, str(tmp_path / "model"), ["airplane", "automobile", "bird"])
    out = tmp_path / "tta.csv"
    predict.main(["--model", str(tmp_path / "model"), "--images", images, "--output", str(out), "--tta", "flip"])
    exported, classes = load_exported(str(tmp_path / "model"), mx.cpu())
    X = np.stack([data_transforms.test_transform()(read_image(path)) for _, path in list_images(images)])
    mirror = np.array(X.asnumpy()[:, :, :, ::-1].copy())
    expected = ((exported(X) + exported(mirror)) / 2).argmax(axis=1).asnumpy().astype(int)
    assert pd.read_csv(out)["label"].tolist() == [classes[i] for i in expected]
    assert (exported(X).argmax(axis=1).asnumpy().astype(int) != expected).any()


def test_predict_int8_command_writes_the_submission(reference_prefix, tiny_folder, tmp_path):
    out = tmp_path / "submission.csv"
    result = run("predict", "--model", reference_prefix, "--images", TINY + "/test", "--output", out,
                 "--int8", tiny_folder / "calib", "--calib-size", 64, "--batch-size", 4, "--tta", "flip")
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    assert rows[0] == "id,label" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert all(r.split(",")[1] in CLASSES for r in rows[1:])


def test_predict_int8_without_calibration_images_is_one_error_line(reference_prefix, tmp_path):
    result = run("predict", "--model", reference_prefix, "--images", TINY + "/test", "--output",
                 tmp_path / "s.csv", "--int8", tmp_path / "missing")
    assert_one_error_line(result, "missing")
    assert not (tmp_path / "s.csv").exists()


def test_predict_never_writes_over_a_hard_link_to_its_model(finished, run_data_dir, tmp_path, capsys):
    prefix = exported_copy(finished, tmp_path)
    os.link(exported_files(prefix)["params"], tmp_path / "sub.csv")
    before = snapshot(tmp_path)
    refused(predict.main, ["--model", prefix, "--images", os.path.join(run_data_dir, "test"), "--output",
                           tmp_path / "sub.csv"], capsys, "is an input of this command")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target", ["images/1.png", "images/new.csv", "images", "model-0000.params",
                                    "model-symbol.json", "model-classes.json"])
def test_predict_never_writes_over_or_into_its_inputs(finished, run_data_dir, tmp_path, capsys, target):
    prefix = exported_copy(finished, tmp_path)
    images = tmp_path / "images"
    shutil.copytree(os.path.join(run_data_dir, "test"), images)
    before = snapshot(tmp_path)
    refused(predict.main, ["--model", prefix, "--images", images, "--output", tmp_path / target], capsys,
            str(tmp_path / target))
    assert snapshot(tmp_path) == before


def test_predict_never_writes_into_its_calibration_folder(finished, run_data_dir, tmp_path, capsys):
    prefix = exported_copy(finished, tmp_path)
    calib = tmp_path / "calib"
    shutil.copytree(os.path.join(run_data_dir, "train"), calib)
    before = snapshot(tmp_path)
    refused(predict.main, ["--model", prefix, "--images", os.path.join(run_data_dir, "test"), "--int8", calib,
                           "--output", calib / "submission.csv"], capsys, "inside the input folder")
    assert snapshot(tmp_path) == before


def test_predict_removes_what_a_killed_predict_left_and_nothing_else(finished, run_data_dir, tmp_path):
    prefix = exported_copy(finished, tmp_path)
    output = tmp_path / "sub.csv"
    left = killed(KILLED_WRITE, output)
    assert len(left) == 1 and left[0].startswith(".sub.csv.") and left[0].endswith(".tmp")
    lookalikes = [".sub.csv.123.tmp", ".sub.csv.notes.tmp", ".other.csv.99999999.abcdefgh.tmp", "sub.csv.1.abcdefgh.tmp"]
    for name in lookalikes:
        (tmp_path / name).write_text("mine")
    predict.main(["--model", prefix, "--images", os.path.join(run_data_dir, "test"), "--output", str(output)])
    assert sorted(name for name in os.listdir(tmp_path) if name.endswith(".tmp")) == sorted(lookalikes)
    assert output.read_text().startswith("id,label\n")


@pytest.mark.parametrize("mode", [[], ["--fast"]])
@pytest.mark.parametrize("name", list(MODEL_DAMAGE))
def test_predict_names_a_damaged_model_file(finished, run_data_dir, tmp_path, capsys, name, mode):
    prefix, path = spoil_model(finished, tmp_path, name)
    output = tmp_path / "sub.csv"
    refused(predict.main, ["--model", prefix, "--images", os.path.join(run_data_dir, "test"), "--output", output,
                           *mode], capsys, path, MODEL_DAMAGE[name][2])
    assert not output.exists()


def test_predict_int8_names_a_damaged_model_file(finished, run_data_dir, tmp_path, capsys):
    prefix, path = spoil_model(finished, tmp_path, "another model's symbol")
    refused(predict.main, ["--model", prefix, "--images", os.path.join(run_data_dir, "test"), "--int8",
                           os.path.join(run_data_dir, "train"), "--output", tmp_path / "sub.csv"], capsys, path,
            "does not fit")


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "", "--images", "test"], "--model must not be empty"),
    (["--model", "m", "--images", ""], "--images must not be empty"),
    (["--model", "m", "--images", "test", "--output", ""], "--output must not be empty"),
    (["--model", "m", "--images", "test", "--probabilities", ""], "--probabilities must not be empty"),
    (["--model", "m", "--images", "test", "--int8", ""], "--int8 must not be empty"),
    (["--model", "m", "--images", "test", "--num-workers", "100000"], "--num-workers must be from 0 to")])
def test_predict_refuses_empty_paths_and_bounds(capsys, argv, fragment):
    one_error_line(capsys, lambda: predict.main(argv), fragment)
