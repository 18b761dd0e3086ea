"""One layer owns the file system (issue 20): only gluon_cifar/fs renames, replaces, removes or locks, and it"""
import ast
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

from gluon_cifar import export, fs, predict
from gluon_cifar import train as train_command
from gluon_cifar.data.fastdata import fast_loader
from gluon_cifar.data.fingerprint import COMPLETE_MARKER
from gluon_cifar.data.reorg import reorg_cifar10_data
from gluon_cifar.errors import InputError

from clitools import snapshot
from conftest import REPO, make_kaggle_dir

PACKAGE = pathlib.Path(REPO) / "gluon_cifar"


FORBIDDEN = {("shutil", "rmtree"), ("shutil", "move"), ("os", "remove"), ("os", "unlink"), ("os", "rename"),
             ("os", "replace"), ("os", "rmdir"), ("os", "removedirs"), ("os", "renames"), ("fcntl", "flock")}


def file_system_calls(source):
    """(line, what) of each call in `source` that renames, replaces, removes or locks: os/shutil/fcntl's
    functions (however imported) and pathlib's `unlink`, `rename`, `rmdir` and one-argument `replace`."""
    found, imported = [], {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "shutil", "fcntl"):
            for alias in node.names:
                if (node.module, alias.name) in FORBIDDEN:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in imported:
            found.append((node.lineno, imported[func.id]))
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if (owner, func.attr) in FORBIDDEN:
                found.append((node.lineno, f"{owner}.{func.attr}"))
            elif func.attr in ("unlink", "rename", "rmdir") and owner not in ("os", "shutil"):
                found.append((node.lineno, f".{func.attr}()"))
            elif func.attr == "replace" and len(node.args) == 1 and not node.keywords and owner != "dataclasses":
                found.append((node.lineno, ".replace()"))  # Path.replace(target); str.replace takes two
    return found


def test_only_gluon_cifar_fs_renames_replaces_removes_or_locks():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
                 for path in sorted(PACKAGE.rglob("*.py")) if "fs" not in path.relative_to(PACKAGE).parts[:1]
                 for line, what in file_system_calls(path.read_text())]
    assert not offenders, "only gluon_cifar/fs may do this; call it instead:\n" + "\n".join(offenders)


def test_the_check_sees_every_spelling():
    source = """
import os, shutil, fcntl, pathlib, dataclasses
from os import remove as rm
from shutil import rmtree
os.remove(a); os.unlink(a); os.rename(a, b); os.replace(a, b); os.rmdir(a); shutil.rmtree(a); shutil.move(a, b)
fcntl.flock(fd, 1); rm(a); rmtree(a); pathlib.Path(a).unlink(); p.rename(b); p.replace(b); p.rmdir()
"x".replace("a", "b"); dataclasses.replace(config, seed=1)
"""
    assert len(file_system_calls(source)) == 14


@pytest.fixture
def root(tmp_path):
    """A Kaggle-layout folder with classes of 10, 12 and 8 images and 7 test images, alone in tmp_path/k."""
    return make_kaggle_dir(tmp_path / "k", {"airplane": 10, "automobile": 12, "bird": 8})


def relabel_one(root):
    """Change one label: the reorganisation is stale and must be rebuilt."""
    path = os.path.join(root, "trainLabels.csv")
    rows = open(path).read().splitlines()
    first_id, label = rows[1].split(",")
    rows[1] = f"{first_id},{'bird' if label != 'bird' else 'airplane'}"
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")


def refused(main, argv, capsys, *fragments):
    """`main(argv)` exits 2 with one `error:` line on stderr holding every fragment; return the line."""
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def train_argv(root, out, *extra):
    return [str(a) for a in ["--data-dir", root, "--epochs", "1", "--batch-size", "2", "--valid-ratio", "0.25",
                             "--devices", "cpu", "--output-dir", out, *extra]]


def everything(folder):
    """snapshot() of every file under `folder`, the reorganisation and its siblings included."""
    return snapshot(folder, skip=())


def assert_kept(before, folder):
    """Every file of `before` (an `everything`) is still in `folder`, unchanged (the run may add its own)."""
    after = everything(folder)
    assert {path: after.get(path) for path in before} == before


@pytest.mark.parametrize("mine", ["2023.png", "my_photos/1.jpg", "backup.uint8.npz", ".draft.tmp",
                                  "train/bird/.gluon_cifar-manifest", ".resized/test/9.png",
                                  "valid/airplane/notes.txt", "empty_folder/"])
def test_a_rebuild_stops_at_a_file_of_the_users_whatever_its_name(root, tmp_path, capsys, mine):
    reorg = reorg_cifar10_data(root, 0.25)
    path = os.path.normpath(os.path.join(reorg, mine))
    stranger = path  # the shallowest new file or folder: what the line names
    while not os.path.exists(os.path.dirname(stranger)):
        stranger = os.path.dirname(stranger)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if mine.endswith("/"):
        os.makedirs(path)
    else:
        with open(path, "w") as f:
            f.write("mine")
    relabel_one(root)
    before = everything(tmp_path)
    refused(train_command.main, train_argv(root, tmp_path / "out"), capsys, f"{stranger}: gluon_cifar did not write this",
            "rebuilt")
    assert_kept(before, tmp_path)
    assert os.path.exists(path)


def replace_with_mine(path):
    """The user's file put in place of one of ours: same name, other content."""
    os.remove(path)
    with open(path, "wb") as f:
        f.write(b"mine")


@pytest.mark.parametrize("ours", [".complete.json", "train_valid/bird/{bird}", "test/unknown/{test}",
                                  "train.uint8.npz"])
def test_a_rebuild_stops_at_a_file_of_the_users_that_replaced_one_of_ours(root, tmp_path, capsys, ours):
    reorg = reorg_cifar10_data(root, 0.25)
    fast_loader(reorg, "train", 2)  # writes train.uint8.npz, recorded in the manifest
    path = os.path.join(reorg, ours.format(bird=os.listdir(os.path.join(reorg, "train_valid", "bird"))[0],
                                           test=os.listdir(os.path.join(reorg, "test", "unknown"))[0]))
    replace_with_mine(path)
    relabel_one(root)
    before = everything(tmp_path)
    refused(train_command.main, train_argv(root, tmp_path / "out"), capsys, path, "did not write this file")
    assert_kept(before, tmp_path)
    assert open(path, "rb").read() == b"mine"


def test_a_rebuild_removes_every_file_the_manifest_lists(root):
    """Links, resized images, fastdata caches, markers: all listed, all removed; the new split is in place."""
    reorg = reorg_cifar10_data(root, 0.25)
    fast_loader(reorg, "train", 2)
    listed = fs.Manifest(reorg).entries()
    assert "train.uint8.npz" in listed and COMPLETE_MARKER in listed and "train_valid/bird" in listed
    assert {entry["kind"] for entry in listed.values()} >= {"link", "file", "dir"}
    relabel_one(root)
    assert reorg_cifar10_data(root, 0.25) == reorg
    assert not os.path.exists(os.path.join(reorg, "train.uint8.npz"))
    assert sorted(name for name in os.listdir(root) if "train_valid_test" in name) == [
        ".train_valid_test.in-use", ".train_valid_test.lock", "train_valid_test"]


def test_an_in_place_edit_of_a_source_image_still_lets_the_rebuild_remove_its_link(root):
    """The link shares the source's inode: removing one name of a file with another loses nothing."""
    reorg = reorg_cifar10_data(root, 0.25)
    source = os.path.join(root, "train", "1.png")
    with open(source, "ab") as f:
        f.write(b"\0")  # grows the file in place: the link's size and mtime change with it
    relabel_one(root)
    assert reorg_cifar10_data(root, 0.25) == reorg


def test_a_resized_image_the_user_edited_stops_the_rebuild(tmp_path, capsys):
    from PIL import Image
    root = make_kaggle_dir(tmp_path / "k", 4)
    Image.new("RGB", (40, 40)).save(os.path.join(root, "test", "1.png"))  # placed as a 32x32 copy in .resized/
    reorg = reorg_cifar10_data(root, 0.25)
    resized = os.path.join(reorg, ".resized", "test", "1.png")
    with open(resized, "ab") as f:
        f.write(b"edited")
    relabel_one(root)
    refused(train_command.main, train_argv(root, tmp_path / "out", "--batch-size", "1"), capsys, resized)
    assert open(resized, "rb").read().endswith(b"edited")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 1-epoch run, in-process, and its data."""
    root = make_kaggle_dir(tmp_path_factory.mktemp("fs") / "k", 4, num_test=3)
    out = tmp_path_factory.mktemp("finished") / "out"
    train_command.main(train_argv(root, out, "--batch-size", "3"))
    return root, out


@pytest.fixture
def run_copy(finished, tmp_path):
    """A copy of the finished run (shutil.copytree keeps sizes, contents and mtimes: still the run's)."""
    root, out = finished
    shutil.copytree(out, tmp_path / "out")
    return root, tmp_path / "out"


@pytest.mark.parametrize("name", ["submission.csv", "metrics.csv", "config.json", "model-classes.json",
                                  "checkpoint/best/net.params"])
def test_overwrite_stops_at_an_output_the_user_replaced(run_copy, capsys, name):
    root, out = run_copy
    replace_with_mine(out / name)
    before = everything(out)
    refused(train_command.main, train_argv(root, out, "--batch-size", "3", "--overwrite"), capsys, str(out / name),
            "did not write this file", "--overwrite")
    assert everything(out) == before


def test_overwrite_stops_at_a_checkpoint_folder_no_run_wrote(run_copy, capsys):
    """epoch-0009 would be resumed from next: in the way, although no file of it has a run's name."""
    root, out = run_copy
    (out / "checkpoint" / "epoch-0009").mkdir()
    (out / "checkpoint" / "epoch-0009" / "notes.txt").write_text("mine")
    before = everything(out)
    refused(train_command.main, train_argv(root, out, "--batch-size", "3", "--overwrite"), capsys,
            "epoch-0009/notes.txt", "did not write this file")
    assert everything(out) == before


def test_overwrite_stops_at_a_checkpoint_holding_a_stranger(run_copy, capsys):
    root, out = run_copy
    (out / "checkpoint" / "epoch-0001" / "later").mkdir()
    (out / "checkpoint" / "epoch-0001" / "later" / "notes.txt").write_text("mine")
    before = everything(out)
    refused(train_command.main, train_argv(root, out, "--batch-size", "3", "--overwrite"), capsys, "epoch-0001/later")
    assert everything(out) == before


def test_overwrite_replaces_the_copy_of_a_run_and_keeps_the_users_files_beside_it(run_copy):
    root, out = run_copy
    (out / "submission-mine.csv").write_text("id,label\n1,mine\n")
    (out / "checkpoint" / "old-epochs").mkdir()  # not a name a run removes: kept
    (out / "checkpoint" / "old-epochs" / "notes.txt").write_text("mine")
    train_command.main(train_argv(root, out, "--batch-size", "3", "--overwrite", "--seed", "5"))
    assert (out / "submission-mine.csv").read_text() == "id,label\n1,mine\n"
    assert (out / "checkpoint" / "old-epochs" / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["seed"] == 5


def test_resume_stops_at_an_output_the_user_replaced_before_training(run_copy, capsys):
    root, out = run_copy
    replace_with_mine(out / "metrics.json")
    before = everything(out)
    refused(train_command.main, train_argv(root, out, "--batch-size", "3", "--resume", "--epochs", "2"), capsys,
            str(out / "metrics.json"), "--resume")
    assert everything(out) == before


KILLED_WRITE = """
import os, signal, sys
from gluon_cifar.fs import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "w") as f:
        f.write("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_staging_file_is_removed_and_a_look_alike_is_not(tmp_path):
    target = tmp_path / "notes.json"
    result = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)])
    assert result.returncode == -signal.SIGKILL
    (left,) = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    lookalike = tmp_path / ".notes.json.99999999.abcdefgh.tmp"  # the convention's name, dead pid, in no manifest
    lookalike.write_text("mine")
    fs.write_json(str(target), {"a": 1})
    assert not (tmp_path / left).exists() and lookalike.read_text() == "mine"
    assert json.loads(target.read_text()) == {"a": 1}


KILLED_AT_RENAME = """
import os, signal, sys
from gluon_cifar import fs
fs.write_json(sys.argv[1], {"run": 1})
rename = os.replace
def killed_at_rename(src, dst):
    if sys.argv[2] == "after":
        rename(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = killed_at_rename
fs.write_json(sys.argv[1], {"run": 2})
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_output_killed_at_its_rename_is_still_the_packages(tmp_path, when):
    """Killed just before or just after renaming a finished output into place (the old file, or the new one,
    is there): the next write replaces it, as a resumed run replaces its outputs."""
    target = tmp_path / "metrics.json"
    assert subprocess.run([sys.executable, "-c", KILLED_AT_RENAME, str(target), when]).returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"run": 2 if when == "after" else 1}
    assert fs.Manifest(str(tmp_path)).owns(str(target))
    fs.write_json(str(target), {"run": 3})
    assert json.loads(target.read_text()) == {"run": 3}


def test_a_write_never_replaces_a_file_the_package_did_not_write(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("mine")
    with pytest.raises(InputError, match="metrics.json: gluon_cifar did not write this file"):
        fs.write_json(str(target), [])
    assert target.read_text() == "mine"
    assert [name for name in os.listdir(tmp_path) if name != fs.MANIFEST] == ["metrics.json"]


def test_a_link_never_claims_a_file_already_at_its_name(tmp_path):
    """link_files records a name before it links it; a name already taken (a copy of the source the user
    made, with the source's size and time) is forgotten again, so no later removal can take it."""
    source, folder = tmp_path / "1.png", tmp_path / "reorg"
    source.write_bytes(b"an image")
    folder.mkdir()
    shutil.copy2(source, folder / "1.png")
    manifest = fs.Manifest(str(folder))
    with pytest.raises(FileExistsError):
        fs.link_files([(str(source), str(folder / "1.png"))], manifest)
    assert not manifest.owns(str(folder / "1.png"))
    with pytest.raises(InputError, match="1.png: gluon_cifar did not write this file"):
        fs.remove_owned([str(folder)], manifest, "a test")
    assert (folder / "1.png").read_bytes() == b"an image"


def test_a_lock_that_is_busy_refuses_or_waits_as_asked(tmp_path):
    path = str(tmp_path / "x.lock")
    with fs.locked(path):
        with pytest.raises(InputError, match="busy now"):
            with fs.locked(path, busy="busy now"):
                pass
    with fs.locked(path, shared=True), fs.locked(path, shared=True):
        pass  # shared locks share


@pytest.fixture
def model_b(finished, tmp_path):
    """Model B's folder: an export whose own class list (written by training) differs from model A's."""
    _, out = finished
    b = tmp_path / "B"
    shutil.copytree(out, b)
    fs.write_json(str(b / "model-classes.json"), ["cat", "dog", "frog"])  # B was trained on other classes
    return b


def test_onnx_export_refuses_to_replace_another_models_class_list(finished, model_b, capsys):
    _, a = finished
    before = everything(model_b)
    refused(export.main, ["--model", a / "model", "--onnx", model_b / "model.onnx"], capsys,
            str(model_b / "model-classes.json"), "choose another --onnx name")
    assert everything(model_b) == before and not (model_b / "model.onnx").exists()


def test_onnx_export_writes_only_its_two_files_and_replaces_its_own_class_list(finished, tmp_path):
    _, a = finished
    b = tmp_path / "B"
    b.mkdir()
    (b / "notes.txt").write_text("mine")
    export.main(["--model", str(a / "model"), "--onnx", str(b / "model.onnx")])
    assert sorted(os.listdir(b)) == sorted([fs.MANIFEST, "model-classes.json", "model.onnx", "notes.txt"])
    assert json.loads((b / "model-classes.json").read_text()) == json.loads((a / "model-classes.json").read_text())
    fs.write_json(str(b / "model-classes.json"), ["x"], note="classes of model.onnx")  # an earlier conversion's
    export.main(["--model", str(a / "model"), "--onnx", str(b / "model.onnx")])
    assert json.loads((b / "model-classes.json").read_text()) == json.loads((a / "model-classes.json").read_text())
    (b / "model-classes.json").write_text('["mine"]')  # the user's since
    with pytest.raises(SystemExit):
        export.main(["--model", str(a / "model"), "--onnx", str(b / "model.onnx")])
    assert (b / "model-classes.json").read_text() == '["mine"]'


@pytest.mark.parametrize("where", ["{root}/train/sub.csv", "{root}/test/sub.csv", "{root}/test/deeper/sub.csv",
                                   "{root}/train_valid_test/sub.csv", "{root}/train_valid_test/test/unknown/s.csv",
                                   "{out}/checkpoint/sub.csv", "{images}/sub.csv"])
@pytest.mark.parametrize("flag", ["--output", "--probabilities"])
def test_predict_refuses_to_write_into_data_reorganisation_or_checkpoint_folders(finished, tmp_path, capsys,
                                                                                  where, flag):
    """A data folder's train/ or test/ (beside trainLabels.csv), a folder of <id>.png images, a folder the
    package builds, a run's checkpoint/: each would hold a file that stops every later run on it."""
    root, out = finished
    shutil.copytree(root, tmp_path / "data", symlinks=True)  # the reorganisation included
    os.makedirs(tmp_path / "data" / "test" / "deeper")
    shutil.copytree(os.path.join(root, "test"), tmp_path / "images")
    target = where.format(root=tmp_path / "data", out=out, images=tmp_path / "images")
    argv = ["--model", out / "model", "--images", os.path.join(root, "test"), "--output"]
    argv += [target] if flag == "--output" else [tmp_path / "ok.csv", "--probabilities", target]
    before = everything(tmp_path), everything(out)
    refused(predict.main, argv, capsys, flag, target)
    assert (everything(tmp_path), everything(out)) == before and not os.path.exists(target)


def test_predict_writes_into_an_output_folder(finished, tmp_path):
    root, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    predict.main(["--model", str(copy / "model"), "--images", os.path.join(root, "test"), "--output",
                  str(copy / "submission-again.csv")])
    assert (copy / "submission-again.csv").read_text() == (copy / "submission.csv").read_text()
