"""Write every output under a temporary name and rename it into place, so no reader sees half a file."""
import contextlib
import json
import os
import tempfile

from mxnet.base import MXNetError

from .errors import InputError


def write_error(path, err):
    """The InputError for a failed write of `path`; MXNet's own writers fail with an MXNetError."""
    if isinstance(err, MXNetError):
        reason = str(err).strip().splitlines()[-1].split(": ")[-1]  # e.g. 'FileStream.Write incomplete'
        return InputError(f"cannot write {path}: {reason} (disk full?)")
    return InputError(f"cannot write {path}: {err.strerror or err}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed.

    A failed write (no permission, disk full) leaves any previous `path` untouched and is
    reported as an InputError naming `path`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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
