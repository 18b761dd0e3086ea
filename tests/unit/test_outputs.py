"""gluon_cifar.training.outputs: the output folder is the package's (marker, lock, --overwrite, --resume), and
runs know their data."""
import json
import os
import pickle
import shutil

import mxnet as mx
import numpy as onp
import pandas as pd
import pytest

from gluon_cifar import fs
from gluon_cifar import train as train_command
from gluon_cifar.errors import InputError
from gluon_cifar.fs import RUN_MARKER
from gluon_cifar.training.checkpoint import PICKLED_STATES
from gluon_cifar.training.outputs import OUTPUT_FILES, VALIDATION_OUTPUTS, use_output_dir

from clitools import snapshot
from conftest import make_kaggle_dir, refused, train_argv, train_main, user_files, write_png


def test_a_finished_run_marks_its_folder_and_lists_its_outputs(finished):
    marker = json.loads((finished / RUN_MARKER).read_text())
    assert marker == {"package": "gluon_cifar", "written": list(OUTPUT_FILES + VALIDATION_OUTPUTS)}
    for name in OUTPUT_FILES + VALIDATION_OUTPUTS:
        assert (finished / name).is_file(), name


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]])
def test_a_folder_the_package_did_not_make_is_refused_unless_empty(run_data_dir, tmp_path, capsys, flag):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.txt").write_text("three years of work")
    (out / "submission.csv").write_text("id,label\n1,mine\n")  # an output's name does not make it ours
    before = snapshot(out)
    refused(train_command.main, train_argv(run_data_dir, out, *flag), capsys, str(out), "not a gluon_cifar run",
            "thesis.txt", "empty or new --output-dir")
    assert snapshot(out) == before  # not even a lock file left in it


def test_a_previous_run_is_refused_without_resume_or_overwrite(run_copy, run_data_dir, capsys):
    before = snapshot(run_copy)
    refused(train_command.main, train_argv(run_data_dir, run_copy), capsys, "already holds a run", "--resume", "--overwrite")
    assert snapshot(run_copy) == before


def test_overwrite_removes_only_what_a_run_wrote(run_copy, run_data_dir):
    mine = user_files(run_copy)
    before = snapshot(run_copy)
    train_command.main(train_argv(run_data_dir, run_copy, "--overwrite", "--seed", "4"))
    after = snapshot(run_copy)
    for name in mine:
        assert after[name] == before[name], name
    assert sorted(os.listdir(run_copy / "checkpoint" / "epoch-0001")) == sorted(
        ["net.params", "optimizer.params", "optimizer.json", "history.json", fs.MANIFEST])
    for name in OUTPUT_FILES:  # every output replaced by the new run's
        assert after[name] != before[name], name
    assert json.loads((run_copy / "config.json").read_text())["seed"] == 4


def test_a_final_run_writes_no_validation_figures_and_removes_those_an_earlier_run_wrote(run_copy, run_data_dir,
                                                                                         capsys):
    mine = user_files(run_copy)
    before = snapshot(run_copy)
    log = train_main(capsys, *train_argv(run_data_dir, run_copy, "--overwrite", "--final"))
    assert "--final: no validation split, so no confusion.png, per_class.csv, top_losses.png" in log
    assert [name for name in VALIDATION_OUTPUTS if name in before] == list(VALIDATION_OUTPUTS)
    assert not [name for name in VALIDATION_OUTPUTS if (run_copy / name).exists()]
    after = snapshot(run_copy)
    assert all(after[name] == before[name] for name in mine)


def test_a_users_file_named_like_a_validation_figure_stops_the_run_before_any_work(run_copy, run_data_dir, capsys):
    (run_copy / "confusion.png").write_text("my slide")
    before = snapshot(run_copy)
    refused(train_command.main, train_argv(run_data_dir, run_copy, "--overwrite"), capsys, "confusion.png",
            "did not write this file")
    assert snapshot(run_copy) == before


def test_overwrite_refuses_a_checkpoint_holding_a_file_of_the_users(run_copy, run_data_dir, capsys):
    """Refused before anything is removed: the checkpoint could not be replaced without losing the file."""
    (run_copy / "checkpoint" / "epoch-0001" / "mine.txt").write_text("mine")
    before = snapshot(run_copy)
    refused(train_command.main, train_argv(run_data_dir, run_copy, "--overwrite"), capsys, "epoch-0001", "mine.txt",
            "gluon_cifar did not write this file", "move it away")
    assert snapshot(run_copy) == before


def test_overwrite_removes_checkpoints_by_their_manifests(run_copy):
    """The policy alone, on real files: every checkpoint goes, file by file as its manifest lists them; a
    folder named like a checkpoint that no manifest lists stops it before anything is removed."""
    os.makedirs(run_copy / "checkpoint" / "epoch-0002")
    (run_copy / "checkpoint" / "epoch-0002" / "net.params").write_text("looks like a run's")
    os.makedirs(run_copy / "checkpoint" / ".epoch-0003.partial")  # an older package's staging name: not ours now
    (run_copy / "checkpoint" / ".epoch-0003.partial" / "optimizer.params").write_text("a run's")
    before = snapshot(run_copy)
    with pytest.raises(InputError, match="epoch-0002/net.params: gluon_cifar did not write this file"):
        with use_output_dir(str(run_copy), overwrite=True):
            pass
    assert snapshot(run_copy) == before
    os.remove(run_copy / "checkpoint" / "epoch-0002" / "net.params")
    with use_output_dir(str(run_copy), overwrite=True):
        pass
    assert sorted(os.listdir(run_copy / "checkpoint")) == [".epoch-0003.partial", fs.MANIFEST]
    assert os.listdir(run_copy / "checkpoint" / ".epoch-0003.partial") == ["optimizer.params"]


@pytest.mark.parametrize("what", ["checkpoint", "checkpoint/epoch-0001"])
def test_overwrite_never_follows_a_link_out_of_the_run_folder(run_copy, run_data_dir, tmp_path, capsys, what):
    elsewhere = tmp_path / "elsewhere"
    os.makedirs(elsewhere)
    for name in ("net.params", "optimizer.params", "optimizer.json", "history.json", "epoch-0001"):
        (elsewhere / name).write_text("mine")
    shutil.rmtree(run_copy / what)
    os.symlink(elsewhere, run_copy / what)
    before = snapshot(elsewhere)
    refused(train_command.main, train_argv(run_data_dir, run_copy, "--overwrite"), capsys, str(run_copy / what))
    assert snapshot(elsewhere) == before


def test_a_folder_another_run_is_claiming_now_is_in_use_not_foreign(tmp_path):
    """The claiming run holds the lock and has written its manifest and its marker's staging file, not yet
    the marker: a second run is told the folder is in use (the race of two runs started together)."""
    out = tmp_path / "out"
    out.mkdir()
    with fs.locked(str(out / (RUN_MARKER + ".lock"))):
        manifest = fs.Manifest(str(out))
        staging = out / f".{RUN_MARKER}.{os.getpid()}.abcdefgh.tmp"
        staging.write_text("{}")
        manifest.record(str(staging), "staging")
        with pytest.raises(InputError, match="is in use by another run"):
            with use_output_dir(str(out)):
                pass
    (out / "notes.txt").write_text("mine")  # anything else still makes the folder foreign, before the lock
    with fs.locked(str(out / (RUN_MARKER + ".lock"))):
        with pytest.raises(InputError, match="holds files that are not a gluon_cifar run"):
            with use_output_dir(str(out)):
                pass


def test_a_folder_in_use_by_another_run_is_refused(run_copy, run_data_dir, capsys):
    with use_output_dir(str(run_copy), resume=True):
        before = snapshot(run_copy)
        refused(train_command.main, train_argv(run_data_dir, run_copy, "--resume"), capsys, "in use by another run")
        assert snapshot(run_copy) == before
    train_command.main(train_argv(run_data_dir, run_copy, "--resume"))  # released: nothing to do, exit 0
    assert "nothing to do" in capsys.readouterr().out


ARGV = ["--data-dir", "k", "--epochs", "2", "--batch-size", "3", "--valid-ratio", "0.25", "--seed", "3",
        "--devices", "cpu", "--output-dir", "out"]


def refused_run(argv, capsys, *fragments):
    """`train_command.main(argv)` exits 2 with one `error:` line holding every fragment; returns that line."""
    with pytest.raises(SystemExit) as stop:
        train_command.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def finished_root(tmp_path_factory):
    """`k/` (9 training images of 3 classes, 3 test images) and `out/`, a finished 2-epoch run on it."""
    root = tmp_path_factory.mktemp("resume_data")
    make_kaggle_dir(root / "k", 4, num_test=3)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train_command.main(ARGV)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def root(finished_root, tmp_path, monkeypatch):
    """A copy of the finished run and its data, as the working folder."""
    copy = tmp_path / "root"
    shutil.copytree(finished_root, copy)
    monkeypatch.chdir(copy)
    return copy


def labels(root):
    return pd.read_csv(root / "k" / "trainLabels.csv", dtype=str)


def param_values(path):
    """A parameter file's arrays in order (their names' numbers grow with each model built in a process)."""
    return [value.asnumpy() for value in mx.nd.load(str(path)).values()]


def rewrite_keeping_size_and_mtime(path, data):
    """Replace `path`'s content in place with `data` (as long as it was), then give it back its mtime."""
    info = os.stat(path)
    assert len(data) == info.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_the_config_records_the_data_fingerprint(root):
    data = json.loads((root / "out" / "config.json").read_text())["data"]
    assert data["valid_ratio"] == 0.25 and data["train"]["images"] == 12 and data["test"]["images"] == 3
    assert sorted(os.listdir(root / "out" / "checkpoint" / "epoch-0002")) == sorted([
        "history.json", "net.params", "optimizer.json", "optimizer.params", fs.MANIFEST])


class CreatesAFile:
    """Unpickling this creates the file `path`: what a crafted checkpoint could do, and worse."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_pickled_checkpoint_is_refused_unread(root, tmp_path, capsys):
    probe, planted = tmp_path / "probe", tmp_path / "planted"
    pickle.loads(pickle.dumps(CreatesAFile(str(probe))))
    assert probe.exists()  # the payload works: unpickling runs it
    checkpoint = root / "out" / "checkpoint" / "epoch-0002"
    for name in ("optimizer.params", "optimizer.json"):  # an older release's checkpoint
        os.remove(checkpoint / name)
    (checkpoint / PICKLED_STATES).write_bytes(pickle.dumps(CreatesAFile(str(planted))))
    os.remove(root / "out" / "submission.csv")  # unfinished: resuming would load the checkpoint
    before = snapshot(root)
    refused_run(ARGV + ["--resume"], capsys, "out/checkpoint/epoch-0002/trainer.states", "pickle", "could run code", "--overwrite",
            "--init-from out/model")
    assert not planted.exists()
    assert snapshot(root) == before


def swap_two_labels(root):
    table = labels(root)
    first, other = 0, int((table["label"] != table["label"][0]).to_numpy().argmax())
    table.loc[[first, other], "label"] = table.loc[[other, first], "label"].to_numpy()
    table.to_csv(root / "k" / "trainLabels.csv", index=False)
    return table["id"][first], table["label"][first], table["label"][other]  # id, its label now, its label then


def edit_an_image(root):
    path = root / "k" / "train" / "5.png"
    data = bytearray(path.read_bytes())
    data[-20:-12] = b"\x00" * 8  # in the IEND chunk's neighbourhood: size and mtime kept
    rewrite_keeping_size_and_mtime(path, bytes(data))
    return "training image 5 was edited"


def add_an_image(root):
    write_png(root / "k" / "train" / "13.png", onp.random.default_rng(5))
    with open(root / "k" / "trainLabels.csv", "a") as f:
        f.write("13,bird\n")
    return "training image 13 was added"


def remove_an_image(root):
    os.remove(root / "k" / "train" / "2.png")
    table = labels(root)
    table[table["id"] != "2"].to_csv(root / "k" / "trainLabels.csv", index=False)
    return "training image 2 was removed"


@pytest.mark.parametrize("change", [edit_an_image, add_an_image, remove_an_image])
@pytest.mark.parametrize("finished", [True, False])
def test_resume_on_other_training_images_is_refused_naming_the_image(root, capsys, change, finished):
    if not finished:
        os.remove(root / "out" / "submission.csv")
    fragment = change(root)
    before = snapshot(root, skip=())  # the reorganisation too: not rebuilt
    refused_run(ARGV + ["--resume"], capsys, "--resume continues the run on the data it started on", fragment,
            "--overwrite")
    assert snapshot(root, skip=()) == before


def test_resume_on_swapped_labels_is_refused_naming_one(root, capsys):
    image_id, now, was = swap_two_labels(root)
    before = snapshot(root, skip=())
    refused_run(ARGV + ["--resume"], capsys, f"the label of image {image_id} was {was!r} and is now {now!r}")
    assert snapshot(root, skip=()) == before


def test_resume_with_fewer_epochs_than_done_is_refused_before_the_config_changes(root, capsys):
    before = snapshot(root)
    refused_run([*ARGV, "--resume", "--epochs", "1"], capsys, "--epochs 1", "has done 2 epochs already")
    assert snapshot(root) == before
    assert json.loads((root / "out" / "config.json").read_text())["epochs"] == 2


def test_a_finished_run_predicts_changed_test_images_again(root, capsys):
    write_png(root / "k" / "test" / "4.png", onp.random.default_rng(9))
    os.remove(root / "k" / "test" / "1.png")
    params = param_values(root / "out" / "model-0000.params")
    train_command.main(ARGV + ["--resume"])
    assert "the test images are not those of out/submission.csv: predicting them again" in capsys.readouterr().out
    assert list(pd.read_csv(root / "out" / "submission.csv")["id"]) == [2, 3, 4]
    for got, expected in zip(param_values(root / "out" / "model-0000.params"), params):  # no training
        onp.testing.assert_array_equal(got, expected)
    assert json.loads((root / "out" / "config.json").read_text())["data"]["test"]["images"] == 3
    train_command.main(ARGV + ["--resume"])  # now the run is finished on these test images
    assert "nothing to do" in capsys.readouterr().out


def test_an_image_damaged_keeping_size_and_mtime_is_named_by_the_reorganisation(root, capsys):
    path = root / "k" / "train" / "7.png"
    data = path.read_bytes()
    rewrite_keeping_size_and_mtime(path, data[:40] + b"\xff" * (len(data) - 40))
    before = snapshot(root / "k")
    refused_run([*ARGV, "--output-dir", "new"], capsys, "k/train/7.png")
    assert snapshot(root / "k") == before
