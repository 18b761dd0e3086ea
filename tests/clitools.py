"""Run the package's commands as a user does (a subprocess) and check what the user sees and keeps."""
import hashlib
import os
import subprocess
import sys
import time


def command(module, *args):
    return [sys.executable, "-m", f"gluon_cifar.{module}", *map(str, args)]


def wait_for(path, proc, deadline=600):
    """Poll until `path` exists, failing if `proc` ends first or the deadline passes."""
    end = time.monotonic() + deadline
    while not os.path.exists(path):
        assert proc.poll() is None, f"ended before {path} appeared: {proc.communicate()}"
        assert time.monotonic() < end, f"{path} did not appear within {deadline}s"
        time.sleep(0.02)


def run(module, *args, **kwargs):
    """Run `python -m gluon_cifar.<module> args...` to completion; text output captured."""
    return subprocess.run(command(module, *args), capture_output=True, text=True, timeout=900, **kwargs)


def run_with_file_size_limit(limit, module, *args):
    """Run a command whose files may not grow past `limit` bytes: writes then fail with EFBIG, as on a full
    disk (RLIMIT_FSIZE; Python ignores the SIGXFSZ that would otherwise kill the process)."""
    script = ("import resource, runpy, sys; "
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
              f"sys.argv = {[module] + list(map(str, args))!r}; "
              f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)


def snapshot(root, skip=("train_valid_test",)):
    """{relative path: (sha1, mtime_ns)} of every file under `root`, except what is derived: the folders in
    `skip` and their hidden lock file and staging folders (`.train_valid_test.lock`, ...)."""
    files = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.lstrip(".").startswith(skip)]
        for name in [n for n in names if not n.lstrip(".").startswith(skip)]:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = (hashlib.sha1(f.read()).hexdigest(),
                                                      os.stat(path).st_mtime_ns)
    return files


def assert_one_error_line(result, *fragments, code=2, after_progress=False):
    """The run failed with `code` and no traceback; stderr is one `error:` line holding each fragment.

    With `after_progress`, the progress log of a run that had started training may precede that line.
    """
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert after_progress or len(lines) == 1, result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def truncate(path):
    """Cut the file at `path` to its first half, as an interrupted copy or download leaves it."""
    with open(path, "rb") as f:
        data = f.read()
    write_bytes(path, data[:len(data) // 2])
