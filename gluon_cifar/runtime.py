"""Process-wide settings, made explicitly by the command-line entry points and the notebook, never at import."""
import logging
import os
import signal
import sys

from .errors import InputError, shorten

MAX_THREADS = 1024  # more threads than this only slow a run down; libgomp fails to start 10**8 of them
ENGINE_TYPES = ("NaiveEngine", "ThreadedEngine", "ThreadedEnginePerDevice")


def _thread_count(value):
    """Why `value` is not a thread count MXNet can start with, or None."""
    if not value.strip().isdigit() or not value.strip().isascii():
        return "must be a whole number of threads"
    if not 1 <= int(value) <= MAX_THREADS:
        return f"must be from 1 to {MAX_THREADS}"
    return None


# The variables MXNet reads as it loads and aborts on (a C++ `terminate`, no Python error) when they are bad.
MXNET_VARIABLES = {
    "OMP_NUM_THREADS": _thread_count,
    "MXNET_CPU_WORKER_NTHREADS": _thread_count,
    "MXNET_CPU_PRIORITY_NTHREADS": _thread_count,
    "MXNET_ENGINE_TYPE": lambda value: None if value in ENGINE_TYPES else f"must be one of {', '.join(ENGINE_TYPES)}",
}


def check_mxnet_environment(environ=os.environ):
    """Refuse, naming the variable, an environment MXNet would abort on when it loads or starts its engine."""
    for name, problem in MXNET_VARIABLES.items():
        value = environ.get(name)
        why = problem(value) if value is not None else None
        if why:
            raise InputError(f"{name} {why}, got {shorten(repr(value), 40)}: fix or unset it")


def _stop_while_loading(signum, frame):
    """Ctrl-C or SIGTERM before a command's `main` runs (MXNet loading): one line, the shell's status.
    `os._exit`: an exception raised inside an import may be caught there, and the interrupt lost."""
    print("interrupted" if signum == signal.SIGINT else "terminated", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def start_command():
    """The prologue of a command module run as a program, before its heavy imports (not on import):
    Ctrl-C or SIGTERM while MXNet loads ends in one line and 130 or 143 (the command's `main` then takes
    over the signals: errors.report_input_errors); an environment MXNet would abort on is refused (one
    line, exit 2); and MXNet gets every core unless the user chose."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # a background job's stays ignored
            signal.signal(signum, _stop_while_loading)
    try:
        check_mxnet_environment()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    use_all_cores()


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
