"""Locks: `flock` on a lock file, held while a block runs; the lock file stays (it has no content)."""
import contextlib
import fcntl
import logging
import os

from gluon_cifar.errors import InputError

log = logging.getLogger("gluon_cifar")


class FileLock:
    """An open lock file; `cannot` is the InputError message when it cannot be created (it gets the reason)."""

    def __init__(self, path, cannot=None):
        self.path = path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise InputError(f"{cannot or f'cannot create the lock file {path}'} ({err.strerror or err})") from None

    def take(self, shared=False, waiting=None, busy=None):
        """Lock (shared or exclusive; a held lock is converted). When another process holds it: log `waiting`
        and wait, or raise InputError(`busy`), or (neither given) wait silently."""
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if busy:
                raise InputError(busy) from None
            if waiting:
                log.info(waiting)
            fcntl.flock(self.fd, mode)
        except OSError as err:
            raise InputError(f"cannot lock {self.path}: {err.strerror or err}") from None

    def close(self):
        """Release the lock."""
        os.close(self.fd)


@contextlib.contextmanager
def locked(path, shared=False, waiting=None, busy=None, cannot=None):
    """Hold the lock `path` (see FileLock.take) while the block runs."""
    lock = FileLock(path, cannot)
    try:
        lock.take(shared, waiting, busy)
        yield lock
    finally:
        lock.close()
