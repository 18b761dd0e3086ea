"""Arguments, environment variables and stops checked before any work: one line on stderr, exit 2 (130 and
143 for Ctrl-C and SIGTERM), no traceback, nothing written. In-process (`main(argv)`) wherever the case
allows; a subprocess where it needs a process of its own (a signal while MXNet loads)."""
import contextlib
import io
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from clitools import assert_one_error_line, command
from gluon_cifar.errors import InputError
from gluon_cifar.cli import check_mxnet_environment


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


# The environment MXNet reads as it loads

@pytest.mark.parametrize("name, value, fragment", [
    ("OMP_NUM_THREADS", "abc", "whole number"), ("OMP_NUM_THREADS", "1.5", "whole number"),
    ("OMP_NUM_THREADS", "", "whole number"), ("OMP_NUM_THREADS", "0", "from 1 to"),
    ("OMP_NUM_THREADS", "-2", "whole number"), ("OMP_NUM_THREADS", "99999999", "from 1 to"),
    ("OMP_NUM_THREADS", "\u0663", "whole number"),  # an Arabic-Indic 3: int() takes it, MXNet does not
    ("MXNET_CPU_WORKER_NTHREADS", "0", "from 1 to"), ("MXNET_ENGINE_TYPE", "Fast", "one of NaiveEngine")])
def test_a_bad_mxnet_variable_is_refused(name, value, fragment):
    with pytest.raises(InputError, match=fragment) as err:
        check_mxnet_environment({name: value})
    assert name in str(err.value)


def test_good_mxnet_variables_pass():
    check_mxnet_environment({"OMP_NUM_THREADS": "4", "MXNET_CPU_WORKER_NTHREADS": " 2",
                             "MXNET_ENGINE_TYPE": "NaiveEngine"})


@pytest.mark.parametrize("module", ["train", "predict", "export"])
def test_a_command_refuses_a_bad_omp_num_threads_before_mxnet_loads(module):
    """MXNet itself aborts (C++ terminate, status -6) on OMP_NUM_THREADS=abc: the command stops first."""
    result = subprocess.run(command(module), capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "abc"})
    assert_one_error_line(result, "OMP_NUM_THREADS must be a whole number of threads, got 'abc'")


# Stops while MXNet loads

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


# The training command's arguments and environment

from gluon_cifar import train# noqa: E402


def train_argv(data_dir, *extra):
    return ["--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "2", "--output-dir",
            os.path.join(str(data_dir), "out"), *extra]


@pytest.mark.parametrize("url", ["/tmp/kaggle_cifar10_tiny.zip", "garbage", "ftp://mirror/kaggle_cifar10_tiny.zip",
                                 "https://mirror/", "http://mirror:port/x.zip", "http://mirror/a b.zip"])
def test_a_bad_demo_url_is_refused_when_the_command_starts(tmp_path, monkeypatch, capsys, url):
    monkeypatch.setenv("GLUON_CIFAR_DEMO_URL", url)
    before = sorted(os.listdir(tmp_path))
    one_error_line(capsys, lambda: train.main(train_argv(tmp_path)), "GLUON_CIFAR_DEMO_URL must be the http(s) URL",
                   repr(url))
    assert sorted(os.listdir(tmp_path)) == before  # no reorganisation, no output folder


@pytest.mark.parametrize("option", ["--data-dir", "--reorg-dir", "--init-from", "--devices", "--output-dir",
                                    "--cache-dir"])
def test_an_empty_path_or_device_is_refused(tmp_path, capsys, option):
    """--data-dir '' trained on the demo set, --devices '' on the default devices: an empty value is a mistake."""
    argv = train_argv(tmp_path) + [option, ""]
    before = sorted(os.listdir(tmp_path))
    one_error_line(capsys, lambda: train.main(argv), f"{option} must not be empty")
    assert sorted(os.listdir(tmp_path)) == before


# The launcher: its own options and the workers' training arguments, before any process starts

from gluon_cifar import launch# noqa: E402


@pytest.mark.parametrize("argv, fragment", [
    (["--port", "70000"], "--port must be a TCP port, 1 to 65535, got 70000"),
    (["--port", "0"], "--port must be a TCP port"), (["--port", "-1"], "--port must be a TCP port"),
    (["--port", "http"], "argument --port: invalid int value"),
    (["-s", "0"], "-s/--num-servers must be from 1"), (["-n", "100000"], "-n/--workers must be from 1 to 1024"),
    (["--timeout", "nan"], "--timeout must be a finite number"), (["--timeout", "0"], "above 0"),
    (["--grace", "-1"], "--grace must be a finite number of seconds, at least 0"), (["--grace", "inf"], "--grace"),
    (["--python", "/does/not/exist"], "--python /does/not/exist does not exist"),
    (["--python", "/bin/true"], "is not a Python that imports gluon_cifar"),
    (["--hostfile", ""], "--hostfile must not be empty"), (["--scheduler-host", ""], "must not be empty"),
    (["--scheduler-host", "198.51.100.77"], "give --scheduler-host an address of this machine"),
    (["--", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--", "--lr", "nan"], "--lr must be a finite number above 0"),
    (["--", "--learning-rate", "0.1"], "unrecognized arguments: --learning-rate"),
    (["--", "--data-dir", ""], "--data-dir must not be empty"),
    (["--", "--fast-data"], "--fast-data has only the chapter's augmentation and no sharding")])
def test_the_launcher_refuses_a_bad_option_before_starting_anything(capsys, argv, fragment):
    one_error_line(capsys, lambda: launch.main(["-n", "2"] + argv), fragment)
    assert "started" not in capsys.readouterr().out


def test_the_launcher_refuses_a_port_in_use(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_error_line(capsys, lambda: launch.main(["-n", "1", "--port", str(port)]), f"port {port}",
                       "choose another --port")


@pytest.mark.parametrize("mode, fragment", [(0o644, "is not an executable file"), (0o755, "cannot be run")])
def test_the_launcher_refuses_a_python_that_is_not_one(tmp_path, capsys, mode, fragment):
    script = tmp_path / "python"
    script.write_text("not a program\n")
    script.chmod(mode)
    one_error_line(capsys, lambda: launch.main(["-n", "1", "--python", str(script)]), f"--python {script} {fragment}")


@pytest.mark.parametrize("name, value, fragment", [("DMLC_INTERFACE", "eth 0", "DMLC_INTERFACE must name a network"),
                                                   ("DMLC_INTERFACE", "", "DMLC_INTERFACE"),
                                                   ("OMP_NUM_THREADS", "four", "OMP_NUM_THREADS must be a whole")])
def test_the_launcher_checks_the_environment_it_passes_on(monkeypatch, capsys, name, value, fragment):
    monkeypatch.setenv(name, value)
    one_error_line(capsys, lambda: launch.main(["-n", "1"]), fragment)


@pytest.mark.parametrize("error", ["ImportError('No module named tensorboardX')",
                                   "TypeError('Descriptors cannot be created directly')"])  # a protobuf too new
def test_tensorboard_without_an_importable_tensorboardx_is_one_line(tmp_path, monkeypatch, capsys, error):
    """A stand-in tensorboardX first on sys.path that fails to import, as a missing or broken one does."""
    (tmp_path / "tensorboardX.py").write_text(f"raise {error}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorboardX", raising=False)
    one_error_line(capsys, lambda: train.main(train_argv(tmp_path, "--tensorboard")),
                   "--tensorboard needs the tensorboardX package", error.split("(")[0])
    assert not (tmp_path / "out").exists()


# Stops in the outputs stage, and the settings a resumed run reads

from conftest import make_kaggle_dir  # noqa: E402
from gluon_cifar.deploy.export import export_model


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
            train.main(argv)
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
    one_error_line(capsys, lambda: train.main(argv + ["--resume"]), f"{out / 'config.json'}: {fragment}",
                   "--overwrite starts the run afresh")
    one_error_line(capsys, lambda: train.main(argv), f"{out} already holds a run")  # without --resume
    assert (out / "config.json").read_text() == content


def test_the_resume_command_printed_finishes_the_run(stopped_in_export, tmp_path, capsys):
    root, argv, _, err = stopped_in_export
    out = tmp_path / "out"
    shutil.copytree(os.path.join(root, "out"), out)
    resume = shlex.split(err.split("Resume with: ")[1])
    assert resume[:3] == [sys.executable, "-m", "gluon_cifar.train"]
    train.main([str(out) if a == os.path.join(root, "out") else a for a in resume[3:]])
    assert (out / "submission.csv").read_text().count("\n") == 1 + 7  # header and the 7 test images


# Image ids: the test images' ids go through MXNet's int64 batches into submission.csv

from mxnet import gluon  # noqa: E402

from gluon_cifar.data.loaders import ImageFilesDataset

BIG_ID = "1" * 30  # trained, then a KeyError and no submission


def test_a_test_image_id_beyond_int64_is_refused_before_training(kaggle_dir, capsys):
    shutil.copy(os.path.join(kaggle_dir, "test", "1.png"), os.path.join(kaggle_dir, "test", f"{BIG_ID}.png"))
    one_error_line(capsys, lambda: train.main(train_argv(kaggle_dir)),
                   os.path.join(kaggle_dir, "test", f"{BIG_ID}.png"), f"is larger than {2 ** 63 - 1}")
    assert not os.path.exists(os.path.join(kaggle_dir, "out", "checkpoint"))


def test_a_label_id_beyond_int64_is_refused(kaggle_dir, capsys):
    with open(os.path.join(kaggle_dir, "trainLabels.csv"), "a") as f:
        f.write(f"{BIG_ID},bird\n")
    one_error_line(capsys, lambda: train.main(train_argv(kaggle_dir)), "trainLabels.csv, line 32: id", BIG_ID,
                   "is larger than")


def test_the_largest_id_reaches_the_predictions_unchanged(kaggle_dir):
    """2**63 - 1 itself is an id: the test loader's batches (predict's path) keep it exact (no float on the way)."""
    os.rename(os.path.join(kaggle_dir, "test", "7.png"), os.path.join(kaggle_dir, "test", f"{2 ** 63 - 1}.png"))
    ids = [int(i) for _, batch in gluon.data.DataLoader(ImageFilesDataset(os.path.join(kaggle_dir, "test")), 4)
           for i in batch.asnumpy()]
    assert ids == [1, 2, 3, 4, 5, 6, 2 ** 63 - 1]


# A reorganisation where links are impossible and the copies do not fit

from clitools import run_with_file_size_limit, snapshot  # noqa: E402


@pytest.fixture
def other_file_system(tmp_path):
    """A new folder on a file system other than tmp_path's (/dev/shm, a tmpfs), where a hard link to a file
    in tmp_path fails for real (EXDEV); removed afterwards."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    import tempfile
    folder = tempfile.mkdtemp(dir="/dev/shm", prefix="gluon_cifar-test.")
    yield folder
    shutil.rmtree(folder)


def test_a_reorganisation_that_cannot_link_or_copy_is_one_line(kaggle_dir, other_file_system):
    """Links across file systems fail, so the images are copied; a copy that cannot grow past 1000 bytes (a
    PNG is about 3 kB) fails as on a full disk: one line, and no half reorganisation left."""
    reorg = os.path.join(other_file_system, "reorg")
    before = snapshot(kaggle_dir, skip=("train_valid_test", "out"))
    result = run_with_file_size_limit(1000, "gluon_cifar.train", *train_argv(kaggle_dir, "--reorg-dir", reorg))
    assert_one_error_line(result, f"cannot write {other_file_system}", "File too large", "disk full?",
                          "the images are copied")
    assert [name for name in os.listdir(other_file_system) if not name.endswith((".lock", ".in-use"))] == []
    assert snapshot(kaggle_dir, skip=("train_valid_test", "out")) == before  # the data (out: the run's own)


# More of each family: paths of the wrong kind, empty paths of the other commands, bounds

from gluon_cifar import export, predict# noqa: E402


def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder\n")
    one_error_line(capsys, lambda: train.main(train_argv(tmp_path / "data")), f"{tmp_path / 'data'}: not a folder")


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "", "--images", "test"], "--model must not be empty"),
    (["--model", "m", "--images", ""], "--images must not be empty"),
    (["--model", "m", "--images", "test", "--output", ""], "--output must not be empty"),
    (["--model", "m", "--images", "test", "--probabilities", ""], "--probabilities must not be empty"),
    (["--model", "m", "--images", "test", "--int8", ""], "--int8 must not be empty"),
    (["--model", "m", "--images", "test", "--num-workers", "100000"], "--num-workers must be from 0 to")])
def test_predict_refuses_empty_paths_and_bounds(capsys, argv, fragment):
    one_error_line(capsys, lambda: predict.main(argv), fragment)


@pytest.mark.parametrize("argv, fragment", [(["--model", "", "--onnx"], "--model must not be empty"),
                                            (["--model", "m", "--onnx", ""], "--onnx must not be empty")])
def test_export_refuses_empty_paths(capsys, argv, fragment):
    """`--onnx ''` used to mean `--onnx` alone (beside the model): now an empty name is a mistake."""
    one_error_line(capsys, lambda: export.main(argv), fragment)


def test_too_many_loader_workers_are_refused_before_any_process_starts(tmp_path, capsys):
    """--num-workers 100000 forked DataLoader workers until the machine had no processes left."""
    one_error_line(capsys, lambda: train.main(train_argv(tmp_path, "--num-workers", "100000")),
                   "--num-workers must be from 0 to", "got 100000")


def test_init_from_a_file_that_is_not_weights_is_one_plain_line(kaggle_dir, tmp_path, capsys):
    (tmp_path / "weights.params").write_text("not weights\n")
    argv = train_argv(kaggle_dir, "--init-from", str(tmp_path / "weights.params"))
    line = one_error_line(capsys, lambda: train.main(argv),
                          "--init-from", "not weights of this model")
    assert "Traceback" not in line
