"""Write every output under a temporary name and rename it into place, so no reader sees half a file."""
import contextlib
import os
import tempfile

from .errors import InputError


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
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
