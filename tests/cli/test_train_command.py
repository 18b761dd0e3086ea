"""`python -m gluon_cifar.train` in-process: refusals before any work, what a run says, recipes, the best
epoch, resume rules."""
import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import types

import numpy as onp
import pandas as pd
import pytest
from mxnet import gluon

from gluon_cifar import train as train_command
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.loaders import ImageFilesDataset, load_datasets
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.deploy.export import export_model
from gluon_cifar.images import read_image
from gluon_cifar.launch import build_parser as launch_parser
from gluon_cifar.predict import build_parser as predict_parser
from gluon_cifar.train import main

from clitools import assert_one_error_line, command, run, snapshot, truncate, write_bytes
from conftest import (BIG_ID, checks_argv, make_kaggle_dir, one_error_line, previous_run, refusal_argv, train_main,
                      weights, write_png)


def edit_csv(root, change):
    path = os.path.join(root, "trainLabels.csv")
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(change(lines)) + "\n")


def empty_test_folder(root):
    for name in os.listdir(os.path.join(root, "test")):
        os.remove(os.path.join(root, "test", name))


# name: (how to spoil a fresh Kaggle-layout folder, extra arguments, fragments of the error line).
# The folder has classes of 10, 12 and 8 images and 7 test images; OUT is <folder>/out.
TRAIN_CASES = {
    "csv missing": (lambda r: os.remove(f"{r}/trainLabels.csv"), [], ["trainLabels.csv: file not found"]),
    "csv empty": (lambda r: write_bytes(f"{r}/trainLabels.csv", b""), [], ["trainLabels.csv: file is empty"]),
    "csv header only": (lambda r: write_bytes(f"{r}/trainLabels.csv", b"id,label\n"), [], ["no rows"]),
    "csv wrong header": (lambda r: edit_csv(r, lambda ls: ["image,class"] + ls[1:]), [],
                         ["header must be 'id,label'", "'image,class'"]),
    "csv extra column": (lambda r: edit_csv(r, lambda ls: ls[:2] + [ls[2] + ",x"] + ls[3:]), [],
                         ["trainLabels.csv", "line 3"]),
    "csv extra header column": (lambda r: edit_csv(r, lambda ls: ["id,label,note"] + [l + "," for l in ls[1:]]),
                                [], ["header must be 'id,label'"]),
    "csv duplicate id": (lambda r: edit_csv(r, lambda ls: ls + [ls[1]]), [],
                         ["line 32", "appears more than once"]),
    "csv id not an integer": (lambda r: edit_csv(r, lambda ls: ls[:4] + ["x7" + ls[4][1:]] + ls[5:]), [],
                              ["line 5", "'x7'", "not a whole number"]),
    "csv label with spaces": (lambda r: edit_csv(r, lambda ls: ls[:2] + [ls[2].replace(",", ", ")] + ls[3:]),
                              [], ["line 3", "surrounding spaces"]),
    "image with no row": (lambda r: edit_csv(r, lambda ls: ls[:-1]), [],
                          [os.path.join("train", "30.png"), "no row in trainLabels.csv"]),
    "row with no image": (lambda r: os.remove(f"{r}/train/5.png"), [], ["id 5 has no image 5.png"]),
    "truncated png in train": (lambda r: truncate(f"{r}/train/3.png"), [],
                               [os.path.join("train", "3.png"), "cannot decode image"]),
    "garbage png in test": (lambda r: write_bytes(f"{r}/test/2.png", b"not a png at all"), [],
                            [os.path.join("test", "2.png"), "cannot decode image"]),
    "empty png in train": (lambda r: write_bytes(f"{r}/train/4.png", b""), [],
                           [os.path.join("train", "4.png"), "cannot decode image"]),
    "non-image file in train": (lambda r: write_bytes(f"{r}/train/notes.txt", b"hi"), [],
                                ["notes.txt", "not an image named <id>.png"]),
    "non-image file in test": (lambda r: write_bytes(f"{r}/test/Thumbs.db", b"\0"), [],
                               ["Thumbs.db", "not an image named <id>.png"]),
    "empty test folder": (empty_test_folder, [], ["no test images"]),
    "no test folder": (lambda r: shutil.rmtree(f"{r}/test"), [], [os.path.join("k", "test"), "not found"]),
    "class too small for the split": (lambda r: edit_csv(r, lambda ls: ls[:1] + [f"{i},airplane" for i in range(1, 30)]
                                                         + ["30,bird"]), [], ["class 'bird' has only 1 image(s)"]),
    "valid ratio 0": (None, ["--valid-ratio", "0"], ["valid-ratio must be between 0 and 1"]),
    "valid ratio 1.5": (None, ["--valid-ratio", "1.5"], ["valid-ratio must be between 0 and 1"]),
    "batch larger than the training set": (None, ["--batch-size", "64"], ["larger than the", "images of the train split", "use --batch-size"]),
    "batch larger than the validation set": (None, ["--batch-size", "8"], ["larger than the 6 images of the valid split", "use --batch-size 6 or less"]),
    "batch size 0": (None, ["--batch-size", "0"], ["--batch-size must be at least 1"]),
    "more devices than examples per batch": (None, ["--devices", "cpu:4", "--batch-size", "2"],
                                             ["smaller than the 4 devices"]),
    "output folder holds a previous run": (lambda r: previous_run(f"{r}/out"), [],
                                           ["already holds a run", "--resume", "--overwrite"]),
    "output folder cannot be created": (None, ["--output-dir", "{root}/trainLabels.csv/out"],
                                        ["cannot write to", "Not a directory"]),
    "resume without a checkpoint": (None, ["--resume"], ["--resume", "holds no checkpoint"]),
}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return make_kaggle_dir(tmp_path_factory.mktemp("base") / "k",
                           {"airplane": 10, "automobile": 12, "bird": 8})


def train_in_process(argv, capfd):
    """Run the training command in this process, as `python -m gluon_cifar.train argv` would; return what
    the user sees (exit status and stderr, C libraries' writes included)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return types.SimpleNamespace(returncode=stop.value.code, stderr=capfd.readouterr().err)


@pytest.mark.parametrize("name", list(TRAIN_CASES))
def test_train_refuses_bad_input_with_one_line(base_dir, tmp_path, capfd, name):
    spoil, extra, fragments = TRAIN_CASES[name]
    root = str(tmp_path / "k")
    shutil.copytree(base_dir, root)
    if spoil:
        spoil(root)
    before = snapshot(root)
    assert_one_error_line(train_in_process(refusal_argv(root, extra), capfd), *fragments)
    after = snapshot(root)
    assert {path: after.get(path) for path in before} == before, "the user's files changed"


def test_crlf_line_ends_and_a_utf8_bom_are_accepted(kaggle_dir):
    path = os.path.join(kaggle_dir, "trainLabels.csv")
    plain = read_csv_labels(path)
    with open(path, "rb") as f:
        data = f.read()
    write_bytes(path, b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n"))
    assert read_csv_labels(path) == plain
    reorg = reorg_cifar10_data(kaggle_dir, 0.25)
    assert sorted(os.listdir(os.path.join(reorg, "train_valid"))) == ["airplane", "automobile", "bird"]


def test_grayscale_rgba_palette_and_other_sizes_become_32x32_rgb(kaggle_dir):
    """Converted, not refused; an image of another size is resized once, the way prediction resizes it."""
    rng = onp.random.default_rng(3)
    odd = {"train/1.png": (32, "L"), "train/2.png": (32, "RGBA"), "train/3.png": (32, "P"),
           "train/4.png": (64, "RGB"), "train/5.png": (24, "LA"), "test/1.png": (40, "P")}
    for name, (size, mode) in odd.items():
        write_png(os.path.join(kaggle_dir, name), rng, size, mode)
    sources = snapshot(kaggle_dir)
    reorg = reorg_cifar10_data(kaggle_dir, 0.25)
    assert snapshot(kaggle_dir) == sources
    for split, dataset in load_datasets(reorg).items():
        for i in range(len(dataset)):
            assert dataset[i][0].shape == (32, 32, 3), (split, dataset.items[i][0])
    placed = {os.path.join(split, name): os.path.join(folder, name)
              for split in ("train_valid", "test") for folder, _, names in os.walk(os.path.join(reorg, split))
              for name in names}
    for name, (size, _) in odd.items():
        split, file = name.split("/")
        reorganised = placed[os.path.join("train_valid" if split == "train" else "test", file)]
        source = os.path.join(kaggle_dir, name)
        assert os.path.samefile(reorganised, source) == (size == 32)
        onp.testing.assert_array_equal(read_image(reorganised).asnumpy(), read_image(source).asnumpy())


@pytest.fixture
def unwritable_folder(tmp_path):
    """An existing folder no write can go into: read-only permissions, or for root (whom permissions do
    not stop) a read-only tmpfs mounted there."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield str(folder)
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("running as root without the right to mount: cannot make a folder root may not write")
    try:
        yield str(folder)
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_train_refuses_an_output_folder_it_cannot_write_before_any_work(kaggle_dir, unwritable_folder, capfd):
    before = snapshot(kaggle_dir)
    result = train_in_process(refusal_argv(kaggle_dir, ["--output-dir", unwritable_folder]), capfd)
    assert_one_error_line(result, f"cannot write to {unwritable_folder}")
    assert snapshot(kaggle_dir) == before
    assert not os.path.exists(os.path.join(kaggle_dir, ".train_valid_test.partial"))  # refused before the reorg


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as stop:
        train_command.main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    text = text[text.index("options:"):]  # past the usage line
    for option, default in (("--epochs", "5"), ("--lr", "0.1"), ("--wd", "0.0005"), ("--lr-period", "50"),
                            ("--lr-decay", "0.1"), ("--valid-ratio", "0.1"), ("--output-dir", "out"),
                            ("--label-smoothing", "0.0")):
        section = text[text.index(f"{option} {option[2:].upper().replace('-', '_')} "):]  # its own entry
        assert f"(default: {default})" in section[:400], option


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
        train_command.main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out"), *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert "usage:" not in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out")


def test_dist_kvstore_outside_a_launched_job_is_refused(kaggle_dir, tmp_path):
    result = run("train", "--data-dir", kaggle_dir, "--kvstore", "dist_sync", "--output-dir", tmp_path / "out")
    assert_one_error_line(result, "--kvstore dist_sync", "python -m gluon_cifar.launch")


def test_recipe_presets_and_explicit_flags_override_them():
    strong = train_command.parse_config(["--recipe", "strong"])
    assert (strong.augment, strong.lr_schedule, strong.lr, strong.label_smoothing, strong.epochs, strong.tta,
            strong.warmup_frac) == ("padcrop", "onecycle", 0.2, 0.1, 30, "flip", 0.3)
    mine = train_command.parse_config(["--recipe", "strong", "--lr", "0.05", "--label-smoothing", "0", "--tta", "none"])
    assert (mine.lr, mine.label_smoothing, mine.tta, mine.augment) == (0.05, 0.0, "none", "padcrop")
    chapter = train_command.parse_config([])
    assert (chapter.augment, chapter.lr_schedule, chapter.lr, chapter.label_smoothing, chapter.mixup_alpha,
            chapter.tta, chapter.warmup_frac, chapter.epochs) == ("chapter", "step", 0.1, 0.0, 0.0, "none", 0.0, 5)


@pytest.mark.parametrize("flags,message", [(["--label-smoothing", "1"], "--label-smoothing"),
                                           (["--warmup-frac", "-0.1"], "--warmup-frac"),
                                           (["--mixup-alpha", "-1"], "--mixup-alpha"),
                                           (["--cutout", "8"], "padcrop"),
                                           (["--augment", "padcrop", "--cutout", "32"], "cutout")])
def test_bad_recipe_values_are_one_line_errors_before_any_work(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_command.main(["--data-dir", str(tmp_path), *flags, "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "out")


def test_fast_data_refuses_an_augmentation_it_does_not_have(kaggle_dir, tmp_path):
    result = run("train", "--data-dir", kaggle_dir, "--fast-data", "--augment", "padcrop",
                 "--output-dir", tmp_path / "out")
    assert_one_error_line(result, "--fast-data")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def flat_data_dir(tmp_path_factory):
    """Every image the same: the net predicts one class for all 6 validation images, so validation accuracy
    is 1/3 at every epoch, and the best epoch (the first of the highest) is epoch 1 whatever training does."""
    root = make_kaggle_dir(tmp_path_factory.mktemp("flat") / "kaggle", 4, num_test=3)
    png = open(os.path.join(root, "train", "1.png"), "rb").read()
    for folder in ("train", "test"):
        for name in os.listdir(os.path.join(root, folder)):
            with open(os.path.join(root, folder, name), "wb") as f:
                f.write(png)
    return root


def test_defaults_run_says_what_it_does_and_exports_the_best_epoch(ux_data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default --output-dir, out, is relative
    err = train_main(capsys, "--data-dir", ux_data_dir, "--epochs", 1)

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {k: config[k] for k in ("lr", "wd", "lr_period", "lr_decay", "batch_size", "export")} == {
        "lr": 0.1, "wd": 0.0005, "lr_period": 50, "lr_decay": 0.1, "batch_size": 4, "export": "best"}
    for line in ("data: 54 train, 6 valid images in 3 classes, 7 test images", "batches: 13 per epoch of 4 images",
                 "devices: cpu(0)", "recipe chapter: 1 epochs, lr 0.1 (x0.1 every 50 epochs), wd 0.0005",
                 "output: out", "reorganising 60 training and 7 test images"):
        assert line in err, line
    epoch_line = next(line for line in err.splitlines() if line.startswith("epoch 1/1 ("))
    for part in (" s): train loss ", "| valid loss ", "| lr 0.1 |", "img/s"):
        assert part in epoch_line, part
    assert "model of epoch 1 (best, valid acc" in err and "out/model-symbol.json" in err
    for name in ("model-symbol.json", "model-0000.params", "model-classes.json", "submission.csv",
                 "metrics.csv", "metrics.json", "curves.png", "checkpoint/best/net.params"):
        assert (tmp_path / "out" / name).is_file(), name


def test_patience_stops_early_and_the_best_epoch_is_exported(flat_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    err = train_main(capsys, "--data-dir", flat_data_dir, "--epochs", 4, "--patience", 1, "--batch-size", 3,
                     "--output-dir", out)
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2] and metrics["valid_acc"].tolist() == [1 / 3, 1 / 3]
    assert "early stop: no better validation accuracy in the 1 epochs since epoch 1" in err
    assert "model of epoch 1 (best" in err
    exported, best, last = (weights(source) for source in (
        out / "model", out / "checkpoint" / "best", out / "checkpoint" / "epoch-0002"))
    for got, expected in zip(exported, best):
        onp.testing.assert_array_equal(got, expected)
    assert any(not onp.array_equal(a, b) for a, b in zip(exported, last))


@pytest.mark.parametrize("parser", [train_command.build_parser, predict_parser, launch_parser],
                         ids=["train", "predict", "launch"])
def test_help_shows_a_default_for_every_option_that_has_one(parser):
    parser = parser()
    for action in parser._actions:
        if action.required or action.default is False or isinstance(action, argparse._HelpAction):
            continue  # nothing to show: required, an off switch, --help
        help_text = parser._get_formatter()._expand_help(action)
        assert "default" in help_text, action.option_strings


def test_tensorboard_without_tensorboardx_is_one_line(ux_data_dir, tmp_path):
    script = ("import sys; sys.modules['tensorboardX'] = None; from gluon_cifar.train import main; "
              f"main(['--data-dir', {ux_data_dir!r}, '--output-dir', {str(tmp_path / 'out')!r}, '--tensorboard'])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.startswith("error: --tensorboard needs the tensorboardX")
    assert result.stderr.count("\n") == 1 and not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("module", ["train", "predict", "export"])
def test_a_command_refuses_a_bad_omp_num_threads_before_mxnet_loads(module):
    """MXNet itself aborts (C++ terminate, status -6) on OMP_NUM_THREADS=abc: the command stops first."""
    result = subprocess.run(command(module), capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "abc"})
    assert_one_error_line(result, "OMP_NUM_THREADS must be a whole number of threads, got 'abc'")


def stopped_while_loading(signum):
    """Start the training command and send it `signum` once it is loading MXNet (libmxnet.so mapped, before
    `main` runs: it would otherwise refuse --data-dir with exit 2)."""
    proc = subprocess.Popen(command("train", "--data-dir", "/does/not/exist"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    maps = f"/proc/{proc.pid}/maps"
    while proc.poll() is None:
        with open(maps) as f:
            if "libmxnet" in f.read():
                break
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to see when MXNet loads")
@pytest.mark.parametrize("signum, code, line", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_a_stop_while_mxnet_loads_is_one_line(signum, code, line):
    returncode, out, err = stopped_while_loading(signum)
    assert (returncode, err, out) == (code, line + "\n", "")


@pytest.mark.parametrize("url", ["/tmp/kaggle_cifar10_tiny.zip", "garbage", "ftp://mirror/kaggle_cifar10_tiny.zip",
                                 "https://mirror/", "http://mirror:port/x.zip", "http://mirror/a b.zip"])
def test_a_bad_demo_url_is_refused_when_the_command_starts(tmp_path, monkeypatch, capsys, url):
    monkeypatch.setenv("GLUON_CIFAR_DEMO_URL", url)
    before = sorted(os.listdir(tmp_path))
    one_error_line(capsys, lambda: train_command.main(checks_argv(tmp_path)), "GLUON_CIFAR_DEMO_URL must be the http(s) URL",
                   repr(url))
    assert sorted(os.listdir(tmp_path)) == before  # no reorganisation, no output folder


@pytest.mark.parametrize("option", ["--data-dir", "--reorg-dir", "--init-from", "--devices", "--output-dir",
                                    "--cache-dir"])
def test_an_empty_path_or_device_is_refused(tmp_path, capsys, option):
    """--data-dir '' trained on the demo set, --devices '' on the default devices: an empty value is a mistake."""
    argv = checks_argv(tmp_path) + [option, ""]
    before = sorted(os.listdir(tmp_path))
    one_error_line(capsys, lambda: train_command.main(argv), f"{option} must not be empty")
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("error", ["ImportError('No module named tensorboardX')",
                                   "TypeError('Descriptors cannot be created directly')"])  # a protobuf too new
def test_tensorboard_without_an_importable_tensorboardx_is_one_line(tmp_path, monkeypatch, capsys, error):
    """A stand-in tensorboardX first on sys.path that fails to import, as a missing or broken one does."""
    (tmp_path / "tensorboardX.py").write_text(f"raise {error}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorboardX", raising=False)
    one_error_line(capsys, lambda: train_command.main(checks_argv(tmp_path, "--tensorboard")),
                   "--tensorboard needs the tensorboardX package", error.split("(")[0])
    assert not (tmp_path / "out").exists()


def interrupt_on_entering(code):
    """A profile hook that sends this process a real SIGINT as `code` starts running (the signal's
    KeyboardInterrupt then comes at its first line, as a Ctrl-C at that moment does)."""
    def hook(frame, event, arg):
        if event == "call" and frame.f_code is code:
            sys.setprofile(None)
            os.kill(os.getpid(), signal.SIGINT)
    return hook


@pytest.fixture(scope="module")
def stopped_in_export(tmp_path_factory):
    """A 1-epoch run interrupted by Ctrl-C as it exports its model: (data folder, argv, exit status, stderr)."""
    root = make_kaggle_dir(tmp_path_factory.mktemp("stop") / "kaggle", 6)
    argv = ["--data-dir", root, "--epochs", "1", "--batch-size", "2", "--valid-ratio", "0.25", "--devices", "cpu",
            "--output-dir", os.path.join(root, "out")]
    err = io.StringIO()
    sys.setprofile(interrupt_on_entering(export_model.__code__))
    try:
        with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(err):
            train_command.main(argv)
    finally:
        sys.setprofile(None)
    return root, argv, stop.value.code, err.getvalue()


def test_a_stop_during_the_export_says_how_to_resume(stopped_in_export, capsys):
    root, argv, code, err = stopped_in_export
    lines = err.splitlines()
    assert code == 130 and len(lines) == 1, err
    assert lines[0].startswith("interrupted: stopped; the last complete checkpoint is kept"), err
    assert lines[0].endswith(" --resume") and "Resume with:" in lines[0], err
    assert not os.path.exists(os.path.join(root, "out", "submission.csv"))


@pytest.mark.parametrize("content, fragment", [
    ("[]", "holds an array, not the run's settings"), ('"settings"', "holds a string"), ("7", "holds a number"),
    ("null", "holds null"), ("{", "not valid JSON"), ('{"epochs": "1"}', "field 'epochs' is '1', not of type int"),
    ('{"lr": null}', "field 'lr' is None, not of type float"),
    ('{"devices": 0}', "field 'devices' is 0, not of type str or null"),
    ('{"job_workers": [2]}', "field 'job_workers' is [2], not of type int")])
def test_resume_refuses_a_config_json_that_is_not_settings(stopped_in_export, tmp_path, capsys, content, fragment):
    root, argv, _, _ = stopped_in_export
    out = tmp_path / "out"
    shutil.copytree(os.path.join(root, "out"), out)
    (out / "config.json").write_text(content)
    argv = [str(out) if a == os.path.join(root, "out") else a for a in argv]
    one_error_line(capsys, lambda: train_command.main(argv + ["--resume"]), f"{out / 'config.json'}: {fragment}",
                   "--overwrite starts the run afresh")
    one_error_line(capsys, lambda: train_command.main(argv), f"{out} already holds a run")  # without --resume
    assert (out / "config.json").read_text() == content


def test_the_resume_command_printed_finishes_the_run(stopped_in_export, tmp_path, capsys):
    root, argv, _, err = stopped_in_export
    out = tmp_path / "out"
    shutil.copytree(os.path.join(root, "out"), out)
    resume = shlex.split(err.split("Resume with: ")[1])
    assert resume[:3] == [sys.executable, "-m", "gluon_cifar.train"]
    train_command.main([str(out) if a == os.path.join(root, "out") else a for a in resume[3:]])
    assert (out / "submission.csv").read_text().count("\n") == 1 + 7  # header and the 7 test images


def test_a_test_image_id_beyond_int64_is_refused_before_training(kaggle_dir, capsys):
    shutil.copy(os.path.join(kaggle_dir, "test", "1.png"), os.path.join(kaggle_dir, "test", f"{BIG_ID}.png"))
    one_error_line(capsys, lambda: train_command.main(checks_argv(kaggle_dir)),
                   os.path.join(kaggle_dir, "test", f"{BIG_ID}.png"), f"is larger than {2 ** 63 - 1}")
    assert not os.path.exists(os.path.join(kaggle_dir, "out", "checkpoint"))


def test_the_largest_id_reaches_the_predictions_unchanged(kaggle_dir):
    """2**63 - 1 itself is an id: the test loader's batches (predict's path) keep it exact (no float on the way)."""
    os.rename(os.path.join(kaggle_dir, "test", "7.png"), os.path.join(kaggle_dir, "test", f"{2 ** 63 - 1}.png"))
    ids = [int(i) for _, batch in gluon.data.DataLoader(ImageFilesDataset(os.path.join(kaggle_dir, "test")), 4)
           for i in batch.asnumpy()]
    assert ids == [1, 2, 3, 4, 5, 6, 2 ** 63 - 1]


def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder\n")
    one_error_line(capsys, lambda: train_command.main(checks_argv(tmp_path / "data")), f"{tmp_path / 'data'}: not a folder")


def test_too_many_loader_workers_are_refused_before_any_process_starts(tmp_path, capsys):
    """--num-workers 100000 forked DataLoader workers until the machine had no processes left."""
    one_error_line(capsys, lambda: train_command.main(checks_argv(tmp_path, "--num-workers", "100000")),
                   "--num-workers must be from 0 to", "got 100000")


def test_init_from_a_file_that_is_not_weights_is_one_plain_line(kaggle_dir, tmp_path, capsys):
    (tmp_path / "weights.params").write_text("not weights\n")
    argv = checks_argv(kaggle_dir, "--init-from", str(tmp_path / "weights.params"))
    line = one_error_line(capsys, lambda: train_command.main(argv),
                          "--init-from", "not weights of this model")
    assert "Traceback" not in line
