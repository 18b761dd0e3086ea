"""`python -m gluon_cifar.export`: the ONNX conversion's refusals and what it may write, in-process."""
import os
import shutil
import subprocess
import sys

import pytest

from gluon_cifar import export
from gluon_cifar.deploy.export import exported_files

from clitools import run, snapshot
from conftest import MODEL_DAMAGE, REPO, exported_copy, one_error_line, refused, spoil_model


def test_export_on_a_full_disk_keeps_the_previous_model(untrained_export, tmp_path):
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


def run_export_cli(*args):
    return subprocess.run([sys.executable, "-m", "gluon_cifar.export", *args],
                          capture_output=True, text=True, cwd=REPO)


def test_export_cli_reports_a_missing_model_in_one_line(tmp_path):
    result = run_export_cli("--model", str(tmp_path / "model"), "--onnx")
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'model'}-symbol.json: exported model file not found\n"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("edit, message", [
    (lambda symbol: '{"nodes": [', "not an MXNet symbol file (truncated or damaged?)"),
    (lambda symbol: symbol.replace('"_npx_relu"', '"_npi_sin"'), "no ONNX conversion for operator(s) _npi_sin"),
])
def test_export_cli_reports_a_bad_symbol_and_writes_nothing(exported, tmp_path, edit, message):
    prefix = str(tmp_path / "model")
    for role, path in exported_files(exported).items():
        shutil.copyfile(path, exported_files(prefix)[role])
    with open(prefix + "-symbol.json") as f:
        symbol = f.read()
    with open(prefix + "-symbol.json", "w") as f:
        f.write(edit(symbol))
    result = run_export_cli("--model", prefix, "--onnx")
    assert result.returncode == 2
    assert result.stderr == f"error: {prefix}-symbol.json: {message}\n"
    assert sorted(os.listdir(tmp_path)) == ["model-0000.params", "model-classes.json", "model-symbol.json"]


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


@pytest.mark.parametrize("name", ["another model's symbol", "truncated params", "classes: wrong count"])
def test_onnx_export_names_a_damaged_model_file_not_a_full_disk(finished, tmp_path, capsys, name):
    prefix, path = spoil_model(finished, tmp_path, name)
    line = refused(export.main, ["--model", prefix, "--onnx", tmp_path / "m.onnx"], capsys, path,
                   MODEL_DAMAGE[name][2])
    assert "disk full" not in line
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("argv, fragment", [(["--model", "", "--onnx"], "--model must not be empty"),
                                            (["--model", "m", "--onnx", ""], "--onnx must not be empty")])
def test_export_refuses_empty_paths(capsys, argv, fragment):
    """`--onnx ''` used to mean `--onnx` alone (beside the model): now an empty name is a mistake."""
    one_error_line(capsys, lambda: export.main(argv), fragment)
