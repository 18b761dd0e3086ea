"""`python -m gluon_cifar.launch`: every option and the workers' training arguments checked before any process
starts."""
import socket

import pytest

from gluon_cifar import launch

from clitools import assert_one_error_line, run
from conftest import one_error_line


@pytest.mark.parametrize("args, fragment", [
    (["-n", 2, "--", "--kvstore", "local"], "--kvstore local is for one process"),
    (["-n", 2, "--hostfile", "no-such-hosts", "--"], "no-such-hosts: cannot read host file"),
])
def test_launcher_refuses_bad_arguments_before_starting_anything(tmp_path, args, fragment):
    result = run("launch", *args, cwd=tmp_path)
    assert_one_error_line(result, fragment)
    assert "started" not in result.stdout


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
