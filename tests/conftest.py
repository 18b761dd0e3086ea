"""Shared fixtures: small Kaggle-layout datasets written as real PNG files in a temporary folder."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # MXNet 1.9.1 imports distutils' LooseVersion
    import gluon_cifar  # noqa: F401
    import mxnet as mx
    from mxnet import npx

from gluon_cifar import export, fs
from gluon_cifar import train as train_command
from gluon_cifar.data.labels import read_csv_labels
from gluon_cifar.data.sources import DEMO_URL_VARIABLE
from gluon_cifar.deploy.export import export_model, exported_files, load_weights
from gluon_cifar.fs import RUN_MARKER
from gluon_cifar.model import get_net, resnet18
from gluon_cifar.train import main

from clitools import assert_one_error_line, truncate, write_bytes

npx.set_np()  # as the chapter, the commands and the notebook do

SIZES = {"airplane": 10, "automobile": 12, "bird": 8}  # the classes of `kaggle_dir`
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository's root
SHARED = os.path.join(REPO, "..", "shared")
TINY = os.path.join(SHARED, "data", "cifar10_tiny")
REFERENCE_PARAMS = os.path.join(SHARED, "models", "resnet18_reference.params")


def write_png(path, rng, size=32, mode="RGB"):
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def make_kaggle_dir(root, per_class, num_test=7, classes=CLASSES[:3], seed=0):
    """A Kaggle-layout folder: train/<id>.png with trainLabels.csv, test/<id>.png, ids shuffled."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "train"))
    os.makedirs(os.path.join(root, "test"))
    labels = [c for c in classes for _ in range(per_class[c] if isinstance(per_class, dict) else per_class)]
    order = rng.permutation(len(labels))
    rows = ["id,label"]
    for image_id, index in enumerate(order, start=1):
        write_png(os.path.join(root, "train", f"{image_id}.png"), rng)
        rows.append(f"{image_id},{labels[index]}")
    with open(os.path.join(root, "trainLabels.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    for image_id in range(1, num_test + 1):
        write_png(os.path.join(root, "test", f"{image_id}.png"), rng)
    return str(root)


@pytest.fixture
def kaggle_dir(tmp_path):
    """Three classes of 10, 12 and 8 images, and 7 test images."""
    return make_kaggle_dir(tmp_path / "kaggle", SIZES)


@pytest.fixture
def tiny_copy(tmp_path):
    """A writable copy of ../shared/data/cifar10_tiny (skips where shared/ is absent; CI has it)."""
    if not os.path.isdir(TINY):
        pytest.skip("../shared/data/cifar10_tiny is not present")
    dst = tmp_path / "cifar10_tiny"
    shutil.copytree(TINY, dst)
    for folder, _, files in os.walk(dst):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return str(dst)


def pytest_configure(config):
    # MXNet 1.9.1's own split_and_load and version checks use deprecated calls; not ours.
    config.addinivalue_line("filterwarnings", "ignore:ndarray.as_in_context has been renamed:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:distutils Version classes are deprecated:DeprecationWarning")


PREVIOUS_RUN = ("submission.csv", "model-symbol.json", "model-0000.params", "model-classes.json",
                "metrics.json", "config.json")


def refusal_argv(root, extra):
    argv = ["--data-dir", root, "--epochs", "1", "--batch-size", "2", "--valid-ratio", "0.25",
            "--devices", "cpu", "--output-dir", os.path.join(root, "out")]
    return argv + [a.format(root=root) for a in extra]


def previous_run(folder):
    """A folder holding the outputs of an earlier run (their content does not matter here), written as the
    package writes them: with the marker by which it knows the folder as its own, each file in its manifest."""
    os.makedirs(folder, exist_ok=True)
    for name in PREVIOUS_RUN:
        with fs.atomic_path(os.path.join(folder, name)) as tmp:
            write_bytes(tmp, f"earlier run: {name}\n".encode())
    fs.write_json(os.path.join(folder, RUN_MARKER), {"package": "gluon_cifar", "written": []})


@pytest.fixture(scope="module")
def untrained_export(tmp_path_factory):
    """An exported (untrained) three-class model, as `train` leaves it."""
    prefix = str(tmp_path_factory.mktemp("model") / "model")
    net = get_net([mx.cpu()], num_classes=3)
    net.hybridize()
    net(mx.np.zeros((1, 3, 32, 32)))
    export_model(net, prefix, ["airplane", "automobile", "bird"])
    return prefix


def class_files(reorg_dir, split):
    split_dir = os.path.join(reorg_dir, split)
    return {c: sorted(os.listdir(os.path.join(split_dir, c))) for c in sorted(os.listdir(split_dir))}


def tree_snapshot(root):
    """{relative path: sha1} of every file under root, to prove sources stay untouched."""
    snap = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                snap[os.path.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return snap


def sample_ids(folder):
    return sorted(int(name[:-4]) for name in os.listdir(folder))


UNREACHABLE = "http://127.0.0.1:9/kaggle_cifar10_tiny.zip"  # port 9 (discard): refused at once, no network


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv(DEMO_URL_VARIABLE, UNREACHABLE)
    monkeypatch.delenv("GLUON_CIFAR_VIA_MAKE", raising=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The reference model (a freshly initialised one where it is absent) exported, then converted by the CLI."""
    if os.path.isfile(REFERENCE_PARAMS):
        net = resnet18(len(CLASSES))
        net.load_parameters(REFERENCE_PARAMS, ctx=mx.cpu())
    else:
        net = get_net([mx.cpu()], len(CLASSES))
    net.hybridize()
    net(mx.np.zeros((1, 3, 32, 32)))
    prefix = str(tmp_path_factory.mktemp("model") / "model")
    export_model(net, prefix, CLASSES)
    export.main(["--model", prefix, "--onnx"])
    return prefix




@pytest.fixture(scope="module")
def net():
    mx.random.seed(0)
    net = get_net([mx.cpu()], num_classes=3)
    net.hybridize()
    return net


def tiny_images(first, count):
    """Paths of training images first..first+count-1 of cifar10_tiny (skips where shared/ is absent)."""
    if not os.path.isdir(TINY):
        pytest.skip("../shared/data/cifar10_tiny is not present")
    return [os.path.join(TINY, "train", f"{i}.png") for i in range(first, first + count)]


@pytest.fixture(scope="module")
def reference_prefix(tmp_path_factory):
    if not os.path.isfile(REFERENCE_PARAMS):
        pytest.skip("../shared/models/resnet18_reference.params is not present")
    net = resnet18(len(CLASSES))
    net.load_parameters(REFERENCE_PARAMS)
    net.hybridize()
    net(mx.np.zeros((1, 3, 32, 32)))
    prefix = str(tmp_path_factory.mktemp("reference") / "model")
    export_model(net, prefix, CLASSES)
    return prefix


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """Flat folders of tiny's training images: `calib` (ids 1-256) and `held` (ids 801-1000)."""
    if not os.path.isdir(TINY):
        pytest.skip("../shared/data/cifar10_tiny is not present")
    root = tmp_path_factory.mktemp("flat")
    for name, first, count in (("calib", 1, 256), ("held", 801, 200)):
        os.makedirs(root / name)
        for path in tiny_images(first, count):
            os.symlink(path, root / name / os.path.basename(path))
    return root


def train_main(capsys, *args):
    train_command.main([str(a) for a in args])
    return capsys.readouterr().out  # the run's log: stderr is for errors


@pytest.fixture(scope="module")
def ux_data_dir(tmp_path_factory):
    """3 classes of 20 images: 54 training and 6 validation images, 13 batches of the chapter's demo size 4."""
    return make_kaggle_dir(tmp_path_factory.mktemp("ux") / "kaggle", 20)


def weights(source):
    """The parameters of `source` (an export prefix or a checkpoint) as NumPy arrays, in the model's order."""
    net = get_net([mx.cpu()], num_classes=3)
    load_weights(net, str(source), list(CLASSES[:3]))
    return [p.data().asnumpy() for p in net.collect_params().values()]


def refuse(capfd, root, *extra, output=None):
    """Run the training command in-process on `root`; assert it refuses with one line (even at the file
    descriptor level, where C libraries write) and changes no file; return that line."""
    output = output or os.path.join(os.path.dirname(root), "out")
    argv = ["--data-dir", root, "--epochs", "1", "--batch-size", "2", "--valid-ratio", "0.25",
            "--devices", "cpu", "--output-dir", str(output), *map(str, extra)]
    parent = os.path.dirname(root)
    before = everything(parent)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    result = types.SimpleNamespace(returncode=stop.value.code, stderr=capfd.readouterr().err)
    line = assert_one_error_line(result)
    after = everything(parent)
    assert {path: after.get(path) for path in before} == before, "a file of the user's changed"
    return line


def everything(folder):
    """{relative path: (sha1, mtime_ns), or the target of a link} of every file under `folder`, derived ones
    included: what a refusal must leave exactly as it was."""
    files = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(root, name)
            if os.path.islink(path):
                files[os.path.relpath(path, folder)] = os.readlink(path)
            elif name in names:
                with open(path, "rb") as f:
                    files[os.path.relpath(path, folder)] = (hashlib.sha1(f.read()).hexdigest(),
                                                            os.stat(path).st_mtime_ns)
    return files


@pytest.fixture
def root(tmp_path):
    """A Kaggle-layout folder with classes of 10, 12 and 8 images and 7 test images, alone in tmp_path/k."""
    return make_kaggle_dir(tmp_path / "k", SIZES)


def placed(reorg, split="train_valid"):
    """{image file name: class folder} of a reorganised split."""
    return {name: label for label in os.listdir(os.path.join(reorg, split))
            for name in os.listdir(os.path.join(reorg, split, label))}


def relabel(root, ids, label):
    """Give the images `ids` the (raw CSV text) `label`."""
    write_labels(root, [(i, label if int(i) in ids else old) for i, old in label_rows(root)])


def label_rows(root):
    return list(read_csv_labels(os.path.join(root, "trainLabels.csv")).items())


def write_labels(root, rows):
    with open(os.path.join(root, "trainLabels.csv"), "w", encoding="utf-8", newline="") as f:
        f.write("id,label\n" + "".join(f"{image_id},{label}\n" for image_id, label in rows))


def save_as(path, fmt, pixels):
    Image.fromarray(pixels).save(path, format=fmt)


@pytest.fixture(scope="module")
def run_data_dir(tmp_path_factory):
    return make_kaggle_dir(tmp_path_factory.mktemp("trust") / "k", 4, num_test=3)


@pytest.fixture(scope="module")
def finished(run_data_dir, tmp_path_factory):
    """The folder of a finished run (in-process), into an empty folder that existed before."""
    out = tmp_path_factory.mktemp("finished") / "out"
    out.mkdir()
    train_command.main(train_argv(run_data_dir, out))
    return out


def train_argv(run_data_dir, out, *extra):
    # 9 training images in 3 batches of 3, 3 validation images, 3 test images; one epoch on one CPU.
    return ["--data-dir", run_data_dir, "--epochs", "1", "--batch-size", "3", "--valid-ratio", "0.25",
            "--seed", "3", "--devices", "cpu", "--output-dir", str(out), *extra]


def refused(main, argv, capsys, *fragments):
    """`main(argv)` exits 2 with one `error:` line (after any progress log) holding every fragment."""
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2, err
    assert "Traceback" not in err and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


@pytest.fixture
def run_copy(finished, tmp_path):
    """A copy of the finished run's folder, to spoil."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def user_files(out):
    """Files and folders of the user's inside a run's folder, some with names close to the package's."""
    mine = {"notes.txt": "mine", "checkpoint/my_notes.txt": "mine",
            "checkpoint/epoch-12a/net.params": "mine", "checkpoint/.epoch-0009.partial/mine.txt": "mine",
            ".export.mine/model-0000.params": "mine", ".submission.csv.mine.tmp": "mine",
            "model-0000.params.bak": "mine", "checkpoint.txt": "mine"}
    for name, text in mine.items():
        os.makedirs(os.path.dirname(out / name), exist_ok=True)
        (out / name).write_text(text)
    return sorted(mine)


def exported_copy(finished, tmp_path, name="model"):
    """The finished run's three exported files copied under `tmp_path/<name>`; returns the prefix."""
    prefix = str(tmp_path / name)
    for role, path in exported_files(str(finished / "model")).items():
        shutil.copyfile(path, exported_files(prefix)[role])
    return prefix


def killed(script, *args):
    """Run `script`, which SIGKILLs itself part way through a write; return the staging names it left."""
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr
    folder = os.path.dirname(str(args[0]))
    return sorted(name for name in os.listdir(folder) if name.startswith((".model.", ".submission.csv.",
                                                                           ".sub.csv.")))


KILLED_WRITE = """
import os, signal, sys
from gluon_cifar.fs import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "w") as f:
        f.write("id,label\\n1,half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def other_model(tmp_path, num_classes):
    """An export of another (untrained) model, with `num_classes` outputs."""
    net = get_net([mx.cpu()], num_classes=num_classes)
    net.hybridize()
    prefix = str(tmp_path / "other")
    export_model(net, prefix, [f"c{i}" for i in range(num_classes)])
    return exported_files(prefix)


MODEL_DAMAGE = {
    "truncated params": ("params", truncate, "not an MXNet parameter file"),
    "empty params": ("params", lambda p: write_bytes(p, b""), "not an MXNet parameter file"),
    "truncated symbol": ("symbol", truncate, "not an MXNet symbol file"),
    "symbol not json": ("symbol", lambda p: write_bytes(p, b"\x89PNG garbage"), "not an MXNet symbol file"),
    "another model's symbol": ("symbol", "other 5", "does not fit"),
    "another model's params": ("params", "other 5", "does not fit"),
    "classes: wrong count": ("classes", lambda p: write_bytes(p, b'["a", "b"]'), "2 class names, but the model has 3"),
    "classes: invalid JSON": ("classes", lambda p: write_bytes(p, b'["a", "b"'), "not valid JSON"),
    "classes: a dict": ("classes", lambda p: write_bytes(p, b'{"0": "a"}'), "must be a JSON list"),
    "classes: numbers": ("classes", lambda p: write_bytes(p, b'[1, 2, 3]'), "must be a JSON list"),
    "classes: duplicates": ("classes", lambda p: write_bytes(p, b'["a", "a", "b"]'), "distinct"),
}


def spoil_model(finished, tmp_path, name):
    prefix = exported_copy(finished, tmp_path)
    role, damage, _ = MODEL_DAMAGE[name]
    path = exported_files(prefix)[role]
    if isinstance(damage, str):
        shutil.copyfile(other_model(tmp_path, int(damage.split()[1]))[role], path)
    else:
        damage(path)
    return prefix, path


def checks_argv(data_dir, *extra):
    return ["--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "2", "--output-dir",
            os.path.join(str(data_dir), "out"), *extra]


def one_error_line(capsys, call, *fragments):
    """`call()` exits with status 2 and one `error:` line on stderr holding each fragment."""
    with pytest.raises(SystemExit) as stop:
        call()
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


BIG_ID = "1" * 30  # trained, then a KeyError and no submission
