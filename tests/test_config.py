"""The run configuration: the chapter's defaults, one typed object, and every bad argument refused before any
work, in one line, through the real command (`main([...])` in-process)."""
import json
import os

import pytest

from gluon_cifar import train
from gluon_cifar.settings import RunConfig, changed_settings
from gluon_cifar.errors import InputError


def test_defaults_are_the_chapters():
    """d2l, "Image Classification (CIFAR-10) on Kaggle", MXNet tab: a change here must be deliberate."""
    config = train.parse_config([])
    assert (config.lr, config.wd, config.lr_period, config.lr_decay, config.epochs, config.valid_ratio) == (
        0.1, 5e-4, 50, 0.1, 5, 0.1)
    assert config.batch_size is None  # the chapter's rule, decided by the data: 4 on the demo set, 128 on full data
    assert config.for_data(45000, 5000, demo=True)[0].batch_size == 4
    assert config.for_data(45000, 5000, demo=False) == (RunConfig(**{**config.to_dict(), "batch_size": 128}), None)


def test_a_folder_too_small_for_128_falls_back_to_the_demo_batch_with_a_notice():
    config, notice = train.parse_config(["--data-dir", "d"]).for_data(810, 90, demo=False)
    assert config.batch_size == 4 and "90 images" in notice and "--batch-size" in notice
    explicit, notice = train.parse_config(["--data-dir", "d", "--batch-size", "32"]).for_data(810, 90, demo=False)
    assert explicit.batch_size == 32 and notice is None


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    text = text[text.index("options:"):]  # past the usage line
    for option, default in (("--epochs", "5"), ("--lr", "0.1"), ("--wd", "0.0005"), ("--lr-period", "50"),
                            ("--lr-decay", "0.1"), ("--valid-ratio", "0.1"), ("--output-dir", "out"),
                            ("--label-smoothing", "0.0")):
        section = text[text.index(f"{option} {option[2:].upper().replace('-', '_')} "):]  # its own entry
        assert f"(default: {default})" in section[:400], option


def test_the_config_is_frozen_and_compared_field_by_field():
    config = train.parse_config(["--lr", "0.05"])
    with pytest.raises(AttributeError):
        config.lr = 1.0
    saved = json.loads(json.dumps(config.to_dict()))
    assert changed_settings(config, saved) == []
    assert changed_settings(train.parse_config(["--lr", "0.05", "--num-workers", "2", "--resume"]), saved) == []
    assert changed_settings(train.parse_config(["--lr", "0.06"]), saved) == ["lr"]


BAD_ARGUMENTS = {
    "seed below 0": (["--seed", "-1"], "--seed"),
    "seed over 32 bits": (["--seed", str(2 ** 40)], "--seed"),
    "lr nan": (["--lr", "nan"], "--lr"),
    "lr inf": (["--lr", "inf"], "--lr"),
    "lr zero": (["--lr", "0"], "--lr"),
    "wd nan": (["--wd", "nan"], "--wd"),
    "wd negative": (["--wd", "-1e-4"], "--wd"),
    "lr decay above 1": (["--lr-decay", "2"], "--lr-decay"),
    "lr decay negative": (["--lr-decay", "-0.5"], "--lr-decay"),
    "lr decay zero": (["--lr-decay", "0"], "--lr-decay"),
    "mixup nan": (["--mixup-alpha", "nan"], "--mixup-alpha"),
    "num workers negative": (["--num-workers", "-1"], "--num-workers"),
    "valid ratio 1": (["--valid-ratio", "1"], "--valid-ratio"),
    "valid ratio nan": (["--valid-ratio", "nan"], "--valid-ratio"),
    "epochs 0": (["--epochs", "0"], "--epochs"),
    "batch 0": (["--batch-size", "0"], "--batch-size"),
    "lr period 0": (["--lr-period", "0"], "--lr-period"),
    "gpu on a CPU-only MXNet": (["--devices", "gpu:0"], "GPU"),
    "devices garbage": (["--devices", "tpu"], "--devices"),
    "more devices than batch": (["--devices", "cpu:4", "--batch-size", "2"], "devices"),
    "not a number": (["--lr", "fast"], "--lr"),
    "unknown option": (["--learning-rate", "0.1"], "--learning-rate"),
    "bad choice": (["--augment", "autoaugment"], "--augment"),
    "resume and overwrite": (["--resume", "--overwrite"], "--overwrite"),
    "fast data with padcrop": (["--fast-data", "--augment", "padcrop"], "--fast-data"),
}


@pytest.mark.parametrize("flags,fragment", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS)
def test_bad_arguments_are_one_line_before_any_work(flags, fragment, tmp_path, capsys):
    data_dir = tmp_path / "data"  # never read: the refusal comes first
    with pytest.raises(SystemExit) as stop:
        train.main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out"), *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert "usage:" not in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out")


def test_an_error_line_is_cut_to_a_readable_length(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--data-dir", str(tmp_path), "--devices", "x" * 5_000_000])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 1000


def test_a_config_can_be_built_in_code_and_is_checked_there_too():
    assert RunConfig(lr=0.2, batch_size=8).batch_size == 8
    with pytest.raises(InputError, match="--lr"):
        RunConfig(lr=float("nan"))
