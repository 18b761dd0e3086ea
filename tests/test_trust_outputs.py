"""Trust with outputs, model files and resume (issue 11): the output folder is the package's (marker, lock),
`--overwrite` removes only what a run wrote, outputs never replace inputs, every stop is resumable, damaged
or mismatched model and checkpoint files give one line, and a diverged run exports nothing.

Refusals run in-process (`main([...])`); only the kill-and-resume and race tests start processes.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as onp
import pandas as pd
import pytest

from clitools import assert_one_error_line, command, run, snapshot, truncate, write_bytes
from conftest import make_kaggle_dir
from gluon_cifar import export, fs, predict, train
from gluon_cifar.fs import RUN_MARKER
from gluon_cifar.training.outputs import OUTPUT_FILES, use_output_dir
from gluon_cifar.errors import InputError
from gluon_cifar.model import get_net
from gluon_cifar.deploy.export import export_model, exported_files

TIMINGS = ("seconds", "wall_seconds", "examples")  # history keys that differ between two runs of one computation
METRICS = ("metrics.json", "metrics.csv")  # the same but for TIMINGS


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


def train_argv(data_dir, out, *extra):
    # 9 training images in 3 batches of 3, 3 validation images, 3 test images; one epoch on one CPU.
    return ["--data-dir", data_dir, "--epochs", "1", "--batch-size", "3", "--valid-ratio", "0.25",
            "--seed", "3", "--devices", "cpu", "--output-dir", str(out), *extra]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_kaggle_dir(tmp_path_factory.mktemp("trust") / "k", 4, num_test=3)


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """The folder of a finished run (in-process), into an empty folder that existed before."""
    out = tmp_path_factory.mktemp("finished") / "out"
    out.mkdir()
    train.main(train_argv(data_dir, out))
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    """A copy of the finished run's folder, to spoil."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def exported_copy(finished, tmp_path, name="model"):
    """The finished run's three exported files copied under `tmp_path/<name>`; returns the prefix."""
    prefix = str(tmp_path / name)
    for role, path in exported_files(str(finished / "model")).items():
        shutil.copyfile(path, exported_files(prefix)[role])
    return prefix


# The output folder: marker, refusal of folders the package did not make, --overwrite, the lock

def test_a_finished_run_marks_its_folder_and_lists_its_outputs(finished):
    marker = json.loads((finished / RUN_MARKER).read_text())
    assert marker == {"package": "gluon_cifar", "written": list(OUTPUT_FILES)}
    for name in OUTPUT_FILES:
        assert (finished / name).is_file(), name


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]])
def test_a_folder_the_package_did_not_make_is_refused_unless_empty(data_dir, tmp_path, capsys, flag):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.txt").write_text("three years of work")
    (out / "submission.csv").write_text("id,label\n1,mine\n")  # an output's name does not make it ours
    before = snapshot(out)
    refused(train.main, train_argv(data_dir, out, *flag), capsys, str(out), "not a gluon_cifar run",
            "thesis.txt", "empty or new --output-dir")
    assert snapshot(out) == before  # not even a lock file left in it


def test_a_previous_run_is_refused_without_resume_or_overwrite(run_copy, data_dir, capsys):
    before = snapshot(run_copy)
    refused(train.main, train_argv(data_dir, run_copy), capsys, "already holds a run", "--resume", "--overwrite")
    assert snapshot(run_copy) == before


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


def test_overwrite_removes_only_what_a_run_wrote(run_copy, data_dir):
    mine = user_files(run_copy)
    before = snapshot(run_copy)
    train.main(train_argv(data_dir, run_copy, "--overwrite", "--seed", "4"))
    after = snapshot(run_copy)
    for name in mine:
        assert after[name] == before[name], name
    assert sorted(os.listdir(run_copy / "checkpoint" / "epoch-0001")) == sorted(
        ["net.params", "optimizer.params", "optimizer.json", "history.json", fs.MANIFEST])
    for name in OUTPUT_FILES:  # every output replaced by the new run's
        assert after[name] != before[name], name
    assert json.loads((run_copy / "config.json").read_text())["seed"] == 4


def test_overwrite_refuses_a_checkpoint_holding_a_file_of_the_users(run_copy, data_dir, capsys):
    """Refused before anything is removed: the checkpoint could not be replaced without losing the file."""
    (run_copy / "checkpoint" / "epoch-0001" / "mine.txt").write_text("mine")
    before = snapshot(run_copy)
    refused(train.main, train_argv(data_dir, run_copy, "--overwrite"), capsys, "epoch-0001", "mine.txt",
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
def test_overwrite_never_follows_a_link_out_of_the_run_folder(run_copy, data_dir, tmp_path, capsys, what):
    elsewhere = tmp_path / "elsewhere"
    os.makedirs(elsewhere)
    for name in ("net.params", "optimizer.params", "optimizer.json", "history.json", "epoch-0001"):
        (elsewhere / name).write_text("mine")
    shutil.rmtree(run_copy / what)
    os.symlink(elsewhere, run_copy / what)
    before = snapshot(elsewhere)
    refused(train.main, train_argv(data_dir, run_copy, "--overwrite"), capsys, str(run_copy / what))
    assert snapshot(elsewhere) == before


def test_predict_never_writes_over_a_hard_link_to_its_model(finished, data_dir, tmp_path, capsys):
    prefix = exported_copy(finished, tmp_path)
    os.link(exported_files(prefix)["params"], tmp_path / "sub.csv")
    before = snapshot(tmp_path)
    refused(predict.main, ["--model", prefix, "--images", os.path.join(data_dir, "test"), "--output",
                           tmp_path / "sub.csv"], capsys, "is an input of this command")
    assert snapshot(tmp_path) == before


def test_a_folder_in_use_by_another_run_is_refused(run_copy, data_dir, capsys):
    with use_output_dir(str(run_copy), resume=True):
        before = snapshot(run_copy)
        refused(train.main, train_argv(data_dir, run_copy, "--resume"), capsys, "in use by another run")
        assert snapshot(run_copy) == before
    train.main(train_argv(data_dir, run_copy, "--resume"))  # released: nothing to do, exit 0
    assert "nothing to do" in capsys.readouterr().out


# Outputs never replace inputs

@pytest.mark.parametrize("target", ["images/1.png", "images/new.csv", "images", "model-0000.params",
                                    "model-symbol.json", "model-classes.json"])
def test_predict_never_writes_over_or_into_its_inputs(finished, data_dir, tmp_path, capsys, target):
    prefix = exported_copy(finished, tmp_path)
    images = tmp_path / "images"
    shutil.copytree(os.path.join(data_dir, "test"), images)
    before = snapshot(tmp_path)
    refused(predict.main, ["--model", prefix, "--images", images, "--output", tmp_path / target], capsys,
            str(tmp_path / target))
    assert snapshot(tmp_path) == before


def test_predict_never_writes_into_its_calibration_folder(finished, data_dir, tmp_path, capsys):
    prefix = exported_copy(finished, tmp_path)
    calib = tmp_path / "calib"
    shutil.copytree(os.path.join(data_dir, "train"), calib)
    before = snapshot(tmp_path)
    refused(predict.main, ["--model", prefix, "--images", os.path.join(data_dir, "test"), "--int8", calib,
                           "--output", calib / "submission.csv"], capsys, "inside the input folder")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("role", ["params", "symbol", "classes"])
def test_onnx_export_never_replaces_the_model_it_converts(finished, tmp_path, capsys, role):
    prefix = exported_copy(finished, tmp_path)
    before = snapshot(tmp_path)
    target = exported_files(prefix)[role]
    refused(export.main, ["--model", prefix, "--onnx", target], capsys, target, "is an input of this command")
    assert snapshot(tmp_path) == before


def test_onnx_export_command_by_default_keeps_the_models_class_file(finished, tmp_path):
    """The default FILE, PREFIX.onnx, has PREFIX-classes.json beside it: the model's own, left as it is.
    (Through the command: it must set MXNet's NumPy mode itself to read the parameters.)"""
    prefix = exported_copy(finished, tmp_path)
    before = snapshot(tmp_path)
    result = run("export", "--model", prefix, "--onnx")
    assert result.returncode == 0, result.stderr
    after = snapshot(tmp_path)
    assert (tmp_path / "model.onnx").is_file()
    assert {name: after[name] for name in before} == before


# Every stop is resumable: what a stop after the last checkpoint leaves, completed by --resume

def test_resume_of_a_finished_run_redoes_nothing(run_copy, data_dir, capsys):
    before = snapshot(run_copy)
    train.main(train_argv(data_dir, run_copy, "--resume"))
    err = capsys.readouterr().out
    assert [line for line in err.splitlines() if line.strip()] == [
        f"{run_copy}: this run is finished (1 epoch(s), every output written): nothing to do"]
    assert snapshot(run_copy) == before


def param_values(prefix):
    """The exported parameters in the net's order (their names' numbers differ between models built in one
    process)."""
    return [value.asnumpy() for value in mx.nd.load(exported_files(prefix)["params"]).values()]


@pytest.mark.parametrize("lost", [["submission.csv"], ["model-0000.params", "submission.csv"], list(OUTPUT_FILES)])
def test_resume_after_the_last_checkpoint_completes_the_outputs(run_copy, finished, data_dir, lost):
    marker = json.loads((run_copy / RUN_MARKER).read_text())
    marker["written"] = [name for name in marker["written"] if name not in lost]
    fs.write_json(str(run_copy / RUN_MARKER), marker)  # as a stop before these were written leaves it
    for name in lost:
        os.remove(run_copy / name)
    train.main(train_argv(data_dir, run_copy, "--resume"))
    for name in ("submission.csv", "metrics.json", "model-classes.json", "curves.png"):
        assert (run_copy / name).read_bytes() == (finished / name).read_bytes(), name
    for got, expected in zip(param_values(str(run_copy / "model")), param_values(str(finished / "model"))):
        onp.testing.assert_array_equal(got, expected)
    assert json.loads((run_copy / RUN_MARKER).read_text())["written"] == list(OUTPUT_FILES)


KILLED_WRITE = """
import os, signal, sys
from gluon_cifar.fs import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "w") as f:
        f.write("id,label\\n1,half")
    os.kill(os.getpid(), signal.SIGKILL)
"""
# A real export, SIGKILLed the moment MXNet has written the staged files, before they are renamed.
KILLED_EXPORT = """
import os, signal, sys
import gluon_cifar  # before MXNet: its NumPy 2 compatibility
import mxnet as mx
from mxnet import npx
npx.set_np()
from gluon_cifar.deploy.export import export_model
from gluon_cifar.model import get_net
net = get_net([mx.cpu()], num_classes=3)
net.hybridize()
write = net.export
def export_and_die(path, *args, **kwargs):
    write(path, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
net.export = export_and_die
export_model(net, sys.argv[1], ["airplane", "automobile", "bird"])
"""


def killed(script, *args):
    """Run `script`, which SIGKILLs itself part way through a write; return the staging names it left."""
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr
    folder = os.path.dirname(str(args[0]))
    return sorted(name for name in os.listdir(folder) if name.startswith((".model.", ".submission.csv.",
                                                                           ".sub.csv.")))


@pytest.mark.slow
def test_the_next_run_removes_what_killed_writes_left_and_nothing_else(run_copy, data_dir):
    marker = json.loads((run_copy / RUN_MARKER).read_text())
    fs.write_json(str(run_copy / RUN_MARKER), {**marker, "written": []})  # stopped in its outputs stage
    killed(KILLED_EXPORT, run_copy / "model")
    left = killed(KILLED_WRITE, run_copy / "submission.csv")
    assert [name.split(".")[1] for name in left] == ["model", "submission"]
    live = f".submission.csv.{os.getpid()}.abcdefgh.tmp"  # a writer that still runs: this process
    (run_copy / live).write_text("being written")
    mine = user_files(run_copy)
    busy = f".model.{os.getpid()}.abcdefgh.tmp"  # staging folder of a running export
    os.makedirs(run_copy / busy)
    train.main(train_argv(data_dir, run_copy, "--resume"))
    remaining = set(os.listdir(run_copy))
    assert not remaining & set(left)
    assert {live, busy} <= remaining
    for name in mine:
        assert (run_copy / name).read_text() == "mine", name


def test_predict_removes_what_a_killed_predict_left_and_nothing_else(finished, data_dir, tmp_path):
    prefix = exported_copy(finished, tmp_path)
    output = tmp_path / "sub.csv"
    left = killed(KILLED_WRITE, output)
    assert len(left) == 1 and left[0].startswith(".sub.csv.") and left[0].endswith(".tmp")
    lookalikes = [".sub.csv.123.tmp", ".sub.csv.notes.tmp", ".other.csv.99999999.abcdefgh.tmp", "sub.csv.1.abcdefgh.tmp"]
    for name in lookalikes:
        (tmp_path / name).write_text("mine")
    predict.main(["--model", prefix, "--images", os.path.join(data_dir, "test"), "--output", str(output)])
    assert sorted(name for name in os.listdir(tmp_path) if name.endswith(".tmp")) == sorted(lookalikes)
    assert output.read_text().startswith("id,label\n")


# Damaged, truncated or mismatched model files: one line naming the file

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


@pytest.mark.parametrize("mode", [[], ["--fast"]])
@pytest.mark.parametrize("name", list(MODEL_DAMAGE))
def test_predict_names_a_damaged_model_file(finished, data_dir, tmp_path, capsys, name, mode):
    prefix, path = spoil_model(finished, tmp_path, name)
    output = tmp_path / "sub.csv"
    refused(predict.main, ["--model", prefix, "--images", os.path.join(data_dir, "test"), "--output", output,
                           *mode], capsys, path, MODEL_DAMAGE[name][2])
    assert not output.exists()


def test_predict_int8_names_a_damaged_model_file(finished, data_dir, tmp_path, capsys):
    prefix, path = spoil_model(finished, tmp_path, "another model's symbol")
    refused(predict.main, ["--model", prefix, "--images", os.path.join(data_dir, "test"), "--int8",
                           os.path.join(data_dir, "train"), "--output", tmp_path / "sub.csv"], capsys, path,
            "does not fit")


@pytest.mark.parametrize("name", ["another model's symbol", "truncated params", "classes: wrong count"])
def test_onnx_export_names_a_damaged_model_file_not_a_full_disk(finished, tmp_path, capsys, name):
    prefix, path = spoil_model(finished, tmp_path, name)
    line = refused(export.main, ["--model", prefix, "--onnx", tmp_path / "m.onnx"], capsys, path,
                   MODEL_DAMAGE[name][2])
    assert "disk full" not in line
    assert not (tmp_path / "m.onnx").exists()


def other_checkpoint_file(tmp_path, name):
    """`name` (net.params, optimizer.params or optimizer.json) as a 5-class model's checkpoint holds it."""
    from gluon_cifar.training.checkpoint import save_checkpoint
    from gluon_cifar.training.loop import make_trainer
    from mxnet import autograd
    net = get_net([mx.cpu()], num_classes=5)
    trainer = make_trainer(net, None, 0.0)
    with autograd.record():
        loss = net(mx.np.zeros((2, 3, 32, 32))).sum()
    loss.backward()
    trainer.step(2)
    save_checkpoint(str(tmp_path / "other"), net, trainer, [{"epoch": 1}])
    return tmp_path / "other" / "epoch-0001" / name


CHECKPOINT_DAMAGE = {
    "truncated net.params": ("net.params", truncate, "not an MXNet parameter file"),
    "truncated optimizer.params": ("optimizer.params", truncate, "not the optimizer state of this model"),
    "garbage optimizer.json": ("optimizer.json", lambda p: write_bytes(p, b"\x00garbage"),
                               "not the optimizer state of this model"),
    "optimizer.json a list": ("optimizer.json", lambda p: write_bytes(p, b"[1]"),
                              "not the optimizer state of this model"),
    "garbage history.json": ("history.json", lambda p: write_bytes(p, b"\x00garbage"), "not valid JSON"),
    "history.json of another length": ("history.json", lambda p: write_bytes(p, b'[{"epoch": 1}, {"epoch": 2}]'),
                                       "not the history of 1 epoch(s)"),
    "history.json a dict": ("history.json", lambda p: write_bytes(p, b'{"epoch": 1}'), "not the history"),
    "missing net.params": ("net.params", os.remove, "missing from the checkpoint"),
    "missing optimizer.params": ("optimizer.params", os.remove, "missing from the checkpoint"),
    "missing optimizer.json": ("optimizer.json", os.remove, "missing from the checkpoint"),
    "missing history.json": ("history.json", os.remove, "missing from the checkpoint"),
    "another model's net.params": ("net.params", "other", "does not fit this model"),
    "another model's optimizer.params": ("optimizer.params", "other", "another model's checkpoint"),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_DAMAGE))
def test_resume_names_a_damaged_checkpoint_file(run_copy, data_dir, tmp_path, capsys, name):
    (run_copy / "submission.csv").unlink()  # so that the run is not finished
    file, damage, fragment = CHECKPOINT_DAMAGE[name]
    path = run_copy / "checkpoint" / "epoch-0001" / file
    if damage == "other":
        shutil.copyfile(other_checkpoint_file(tmp_path, file), path)
    else:
        damage(path)
    before = snapshot(run_copy)
    refused(train.main, train_argv(data_dir, run_copy, "--resume"), capsys, str(path), fragment)
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("content", [None, b"{not json"])
def test_resume_refuses_a_missing_or_damaged_config(run_copy, data_dir, capsys, content):
    path = run_copy / "config.json"
    path.unlink() if content is None else write_bytes(path, content)
    refused(train.main, train_argv(data_dir, run_copy, "--resume"), capsys, str(path), "--resume cannot check")


# Divergence: one line, no export over the last good model, no NaN in metrics.json

def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_good_model(run_copy, data_dir, capsys):
    before = snapshot(run_copy)
    line = refused(train.main, train_argv(data_dir, run_copy, "--overwrite", "--lr", "1e6"), capsys,
                   "epoch 1", "diverged", "lower --lr")
    assert "batch" in line
    after = snapshot(run_copy)
    for name in OUTPUT_FILES:  # the previous run's model, submission and metrics, untouched
        assert after[name] == before[name], name
    assert not os.path.exists(run_copy / "checkpoint" / "epoch-0001")
    history = json.loads((run_copy / "metrics.json").read_text())
    assert all(onp.isfinite(value) for h in history for value in h.values() if isinstance(value, float))


def test_a_diverging_fresh_run_writes_no_outputs(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    refused(train.main, train_argv(data_dir, out, "--lr", "1e6"), capsys, "diverged", "lower --lr")
    assert not [name for name in OUTPUT_FILES if (out / name).exists()]


# Real stops, through the real command (subprocesses)

def wait_then_kill(proc, first, then):
    """Wait (polling) for `first()`, then SIGKILL `proc` the moment `then()` holds (a tight loop: the stage
    it catches lasts milliseconds). Both waits are bounded."""
    for condition, pause in ((first, 0.02), (then, 0)):
        end = time.monotonic() + 600
        while not condition():
            assert proc.poll() is None, "the run ended before the stage was reached"
            assert time.monotonic() < end, "the stage was not reached within 600 s"
            time.sleep(pause)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """An uninterrupted run through the command."""
    out = tmp_path_factory.mktemp("straight") / "out"
    result = run("train", *train_argv(data_dir, out))
    assert result.returncode == 0, result.stderr
    return out


STAGES = {
    "export": lambda out: any(name.startswith(".model.") for name in os.listdir(out)),
    "submission": lambda out: os.path.exists(out / "model-classes.json"),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_in_the_outputs_stage_then_resume_gives_the_uninterrupted_outputs(straight, data_dir, tmp_path,
                                                                                stage):
    out = tmp_path / "out"
    proc = subprocess.Popen(command("train", *train_argv(data_dir, out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_then_kill(proc, lambda: os.path.exists(out / "checkpoint" / "epoch-0001"), lambda: STAGES[stage](out))
    assert not (out / "submission.csv").exists()

    resumed = run("train", *train_argv(data_dir, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert_same_outputs(out, straight)
    assert not [name for name in os.listdir(out) if name.startswith((".export.", ".submission.csv."))]

    again = run("train", *train_argv(data_dir, out, "--resume"))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr


def assert_same_outputs(out, straight):
    """`out` holds the outputs of the run in `straight`, byte for byte but for the timings in the metrics."""
    for name in OUTPUT_FILES:
        if name not in METRICS:
            assert (out / name).read_bytes() == (straight / name).read_bytes(), name
    for history, expected in ((json.loads((out / "metrics.json").read_text()),
                               json.loads((straight / "metrics.json").read_text())),
                              (pd.read_csv(out / "metrics.csv").to_dict("records"),
                               pd.read_csv(straight / "metrics.csv").to_dict("records"))):
        assert [{k: v for k, v in h.items() if k not in TIMINGS} for h in history] == \
            [{k: v for k, v in h.items() if k not in TIMINGS} for h in expected]


@pytest.mark.slow
def test_two_runs_on_one_output_folder_never_both_succeed(straight, data_dir, tmp_path):
    out = tmp_path / "out"
    procs = [subprocess.Popen(command("train", *train_argv(data_dir, out)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [subprocess.CompletedProcess(p.args, p.wait(timeout=900), *p.communicate()) for p in procs]
    assert sorted(r.returncode for r in results) == [0, 2], [r.stderr for r in results]
    loser = next(r for r in results if r.returncode == 2)
    line = assert_one_error_line(loser, str(out), after_progress=True)
    assert "in use by another run" in line or "already holds a run" in line, line
    assert_same_outputs(out, straight)
