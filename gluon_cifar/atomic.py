"""Write every output under a temporary name and rename it into place, so no reader sees half a file.

A staging name holds its writer's process id (`.submission.csv.<pid>.<random>.tmp`), so the next write
of the same output can remove what a killed write left, and nothing else: only names this module makes,
only in the folder it writes, only of writers that no longer run.
"""
import contextlib
import json
import os
import re
import tempfile

from mxnet.base import MXNetError

from .errors import InputError


def write_error(path, err):
    """The InputError for a failed write of `path`; MXNet's own writers fail with an MXNetError."""
    if isinstance(err, MXNetError):
        reason = str(err).strip().splitlines()[-1].split(": ")[-1]  # e.g. 'FileStream.Write incomplete'
        return InputError(f"cannot write {path}: {reason} (disk full?)")
    return InputError(f"cannot write {path}: {err.strerror or err}")


def check_not_an_input(output, files=(), folders=()):
    """Refuse an `output` path that is one of a command's input `files` or lies inside an input folder."""
    target = os.path.realpath(output)
    for path in files:
        if target == os.path.realpath(path) or (os.path.exists(output) and os.path.exists(path)
                                                and os.path.samefile(output, path)):
            raise InputError(f"{output} is an input of this command ({path}): choose another output file")
    for folder in folders:
        inside = os.path.realpath(folder)
        if os.path.commonpath([target, inside]) == inside:
            raise InputError(f"{output} is inside the input folder {folder}: write it elsewhere")


def process_running(pid):
    """Whether process `pid` exists (a zombie counts: its parent has not collected it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def stale_staging(folder, stem, suffix=""):
    """Entries of `folder` named `<stem><pid>.<8 random characters><suffix>` (tempfile's names with the
    writer's process id) whose writer no longer runs: what killed writes left."""
    pattern = re.compile(re.escape(stem) + r"([1-9]\d*)\.[a-z0-9_]{8}" + re.escape(suffix))
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return [entry for entry in entries if (match := pattern.fullmatch(entry.name))
            and int(match.group(1)) != os.getpid() and not process_running(int(match.group(1)))]


def remove_stale_staging(path):
    """Remove the staging files of earlier, killed writes of `path`."""
    for entry in stale_staging(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.", ".tmp"):
        if entry.is_file(follow_symlinks=False):
            os.remove(entry.path)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed.

    A failed write (no permission, disk full) leaves any previous `path` untouched and is
    reported as an InputError naming `path`.
    """
    folder, name = os.path.split(os.path.abspath(path))
    try:
        remove_stale_staging(path)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp's 0600 would hide outputs from other users
    except OSError as err:
        raise write_error(path, err) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, MXNetError) as err:
        raise write_error(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path, obj):
    """Write `obj` as JSON to `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1)


def read_json(path):
    """The JSON object in `path`, or None where it is missing or unreadable (as after an interrupted write)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
