"""gluon_cifar.settings: the chapter's defaults, one frozen typed object, device specs, checks in code as on
the command line."""
import json

import mxnet as mx
import pytest

from gluon_cifar import train as train_command
from gluon_cifar.errors import InputError
from gluon_cifar.settings import RunConfig, changed_settings, parse_devices


def test_defaults_are_the_chapters():
    """d2l, "Image Classification (CIFAR-10) on Kaggle", MXNet tab: a change here must be deliberate."""
    config = train_command.parse_config([])
    assert (config.lr, config.wd, config.lr_period, config.lr_decay, config.epochs, config.valid_ratio) == (
        0.1, 5e-4, 50, 0.1, 5, 0.1)
    assert config.batch_size is None  # the chapter's rule, decided by the data: 4 on the demo set, 128 on full data
    assert config.batch_size_for(45000, 5000, demo=True) == (4, None)
    assert config.batch_size_for(45000, 5000, demo=False) == (128, None)


def test_a_folder_too_small_for_128_falls_back_to_the_demo_batch_with_a_notice():
    batch_size, notice = train_command.parse_config(["--data-dir", "d"]).batch_size_for(810, 90, demo=False)
    assert batch_size == 4 and "90 images" in notice and "--batch-size" in notice
    explicit = train_command.parse_config(["--data-dir", "d", "--batch-size", "32"]).batch_size_for(810, 90, demo=False)
    assert explicit == (32, None)


def test_the_config_is_frozen_and_compared_field_by_field():
    config = train_command.parse_config(["--lr", "0.05"])
    with pytest.raises(AttributeError):
        config.lr = 1.0
    saved = json.loads(json.dumps(config.to_dict()))
    assert changed_settings(config, saved) == []
    assert changed_settings(train_command.parse_config(["--lr", "0.05", "--num-workers", "2", "--resume"]), saved) == []
    assert changed_settings(train_command.parse_config(["--lr", "0.06"]), saved) == ["lr"]


def test_an_error_line_is_cut_to_a_readable_length(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_command.main(["--data-dir", str(tmp_path), "--devices", "x" * 5_000_000])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 1000


def test_a_config_can_be_built_in_code_and_is_checked_there_too():
    assert RunConfig(lr=0.2, batch_size=8).batch_size == 8
    with pytest.raises(InputError, match="--lr"):
        RunConfig(lr=float("nan"))


def test_device_specs():
    assert parse_devices("cpu") == [mx.cpu(0)]
    assert parse_devices("cpu:3") == [mx.cpu(0), mx.cpu(1), mx.cpu(2)]
    with pytest.raises(InputError, match="GPU"):  # a CPU-only MXNet: refused before any work
        parse_devices("gpu:0,2")
