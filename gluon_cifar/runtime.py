"""Process-wide settings, made explicitly by the command-line entry points and the notebook, never at import."""
import logging
import os
import sys


def use_all_cores():
    """Let MXNet use every core unless the user set OMP_NUM_THREADS (MXNet's own default is half of them,
    assuming hyper-threading). Call before `import mxnet`: its OpenMP runtime reads the variable when it loads."""
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


class _StdoutHandler(logging.StreamHandler):
    """A logging handler that writes to `sys.stdout` as it is when a message comes (a notebook or a test may
    have replaced it since the handler was made)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def log_to_stdout(prefix=""):
    """Send the package's log (the story of a run) to stdout, each line after `prefix`; stderr is for errors."""
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
