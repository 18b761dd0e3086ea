"""Bad input through the real commands: one `error:` line naming the file or row, a non-zero exit, no
traceback, and every file of the user's (data, previous outputs) unchanged, down to its mtime.

The training refusals run the command in-process (`main(argv)`); a few cases that need a process of
their own (a file size limit) run it as a subprocess.
"""
import os
import shutil
import subprocess
import sys
import types

import mxnet as mx
import numpy as onp
import pytest

from clitools import assert_one_error_line, run, run_with_file_size_limit, snapshot, truncate, write_bytes
from conftest import make_kaggle_dir, write_png
from gluon_cifar.fs import RUN_MARKER
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.loaders import load_datasets
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.images import read_image
from gluon_cifar.deploy.export import export_model
from gluon_cifar.model import get_net
from gluon_cifar.train import main

PREVIOUS_RUN = ("submission.csv", "model-symbol.json", "model-0000.params", "model-classes.json",
                "metrics.json", "config.json")


def edit_csv(root, change):
    path = os.path.join(root, "trainLabels.csv")
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(change(lines)) + "\n")


def previous_run(folder):
    """A folder holding the outputs of an earlier run (their content does not matter here), with the marker
    by which the package knows the folder as its own."""
    os.makedirs(folder, exist_ok=True)
    for name in PREVIOUS_RUN:
        write_bytes(os.path.join(folder, name), f"earlier run: {name}\n".encode())
    write_bytes(os.path.join(folder, RUN_MARKER), b'{"package": "gluon_cifar", "written": []}')


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


def train_argv(root, extra):
    argv = ["--data-dir", root, "--epochs", "1", "--batch-size", "2", "--valid-ratio", "0.25",
            "--devices", "cpu", "--output-dir", os.path.join(root, "out")]
    return argv + [a.format(root=root) for a in extra]


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
    assert_one_error_line(train_in_process(train_argv(root, extra), capfd), *fragments)
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


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An exported (untrained) three-class model, as `train` leaves it."""
    prefix = str(tmp_path_factory.mktemp("model") / "model")
    net = get_net([mx.cpu()], num_classes=3)
    net.hybridize()
    net(mx.np.zeros((1, 3, 32, 32)))
    export_model(net, prefix, ["airplane", "automobile", "bird"])
    return prefix


def test_predict_refuses_a_corrupt_image_and_keeps_the_previous_submission(exported, kaggle_dir):
    truncate(os.path.join(kaggle_dir, "test", "6.png"))
    output = os.path.join(kaggle_dir, "submission.csv")
    write_bytes(output, b"id,label\n1,cat\n")
    before = snapshot(kaggle_dir)
    result = run("predict", "--model", exported, "--images", os.path.join(kaggle_dir, "test"),
                 "--output", output)
    assert_one_error_line(result, os.path.join("test", "6.png"), "cannot decode image")
    assert snapshot(kaggle_dir) == before


@pytest.mark.parametrize("what", ["missing model", "empty folder"])
def test_predict_refuses_missing_inputs(exported, tmp_path, what):
    images = tmp_path / "images"
    images.mkdir()
    model = str(tmp_path / "nothing") if what == "missing model" else exported
    result = run("predict", "--model", model, "--images", str(images), "--output", str(tmp_path / "s.csv"))
    assert_one_error_line(result, "exported model file not found" if what == "missing model" else "no images")
    assert not (tmp_path / "s.csv").exists()


def test_predict_on_a_full_disk_keeps_the_previous_submission(exported, kaggle_dir):
    output = os.path.join(kaggle_dir, "submission.csv")
    write_bytes(output, b"id,label\n1,cat\n")
    before = snapshot(kaggle_dir)
    result = run_with_file_size_limit(20, "gluon_cifar.predict", "--model", exported,
                                      "--images", os.path.join(kaggle_dir, "test"), "--output", output)
    assert_one_error_line(result, f"cannot write {output}", "File too large")
    assert snapshot(kaggle_dir) == before
    assert not [n for n in os.listdir(kaggle_dir) if n.endswith(".tmp")]


@pytest.mark.slow
def test_train_on_a_full_disk_keeps_the_previous_run(kaggle_dir):
    """--overwrite of a finished run whose first checkpoint cannot be written: the old outputs stay."""
    out = os.path.join(kaggle_dir, "out")
    previous_run(out)
    before = snapshot(out)
    result = run_with_file_size_limit(1 << 20, "gluon_cifar.train", *train_argv(kaggle_dir, ["--overwrite"]))
    assert_one_error_line(result, "cannot write", os.path.join("out", "checkpoint"))  # the best epoch's, or the epoch's
    after = snapshot(out)
    outputs = [name for name in PREVIOUS_RUN if name != "config.json"]  # the new run's settings replace it
    assert {name: after[name] for name in outputs} == {name: before[name] for name in outputs}
    assert [n for n in os.listdir(os.path.join(out, "checkpoint")) if "epoch" in n] == []  # no half checkpoint


def test_export_on_a_full_disk_keeps_the_previous_model(exported, tmp_path):
    prefix = str(tmp_path / "model")
    script = f"""
import resource, sys
import gluon_cifar  # before MXNet: gluon_cifar.numpy_compat
import mxnet as mx
from mxnet import npx
from gluon_cifar.errors import InputError
from gluon_cifar.deploy.export import export_model
from gluon_cifar.model import get_net
npx.set_np()
net = get_net([mx.cpu()], num_classes=3)
net.hybridize()
net(mx.np.zeros((1, 3, 32, 32)))
if sys.argv[1:]:
    resource.setrlimit(resource.RLIMIT_FSIZE, ({1 << 20}, {1 << 20}))
try:
    export_model(net, {prefix!r}, ["airplane", "automobile", "bird"])
except InputError as err:
    print(err)
"""
    # the previous model: an export by the package (it replaces only its own files, as the manifest lists them)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=900)
    before = snapshot(tmp_path)
    result = subprocess.run([sys.executable, "-c", script, "limit"], capture_output=True, text=True, timeout=900)
    assert result.stdout.startswith(f"cannot write {prefix}-0000.params"), result.stdout + result.stderr
    assert snapshot(tmp_path) == before  # the previous export, and no staging folder left


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
    result = train_in_process(train_argv(kaggle_dir, ["--output-dir", unwritable_folder]), capfd)
    assert_one_error_line(result, f"cannot write to {unwritable_folder}")
    assert snapshot(kaggle_dir) == before
    assert not os.path.exists(os.path.join(kaggle_dir, ".train_valid_test.partial"))  # refused before the reorg


def test_predict_refuses_a_batch_size_below_one(tmp_path):
    result = run("predict", "--model", tmp_path / "model", "--images", tmp_path, "--batch-size", 0,
                 "--output", tmp_path / "s.csv")
    assert_one_error_line(result, "--batch-size")
    assert not (tmp_path / "s.csv").exists()
