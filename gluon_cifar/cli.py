"""Process-wide settings, made explicitly by the command-line entry points and the notebook, never at import."""
import argparse
import functools
import logging
import os
import signal
import sys
import threading

from gluon_cifar.errors import InputError, Terminated, shorten

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


class _DefaultsInHelp(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it or there is none to say."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.default is False:
            return text
        return f"{text} (default: %(default)s)".strip()


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one `error:` line (exit 2) instead of the usage block, and whose
    help shows every option's default."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=_DefaultsInHelp, **kwargs)

    def error(self, message):
        raise InputError(f"{message} (see {self.prog} --help)")


def _raise_terminated(signum, frame):
    """SIGTERM in a command's process: stop cleanly, like Ctrl-C."""
    raise Terminated()


def _hold_sigterm():
    """Before a command forks: SIGTERM waits, so a child cannot lose one that comes while it starts."""
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _release_sigterm():
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _detach_forked_child():
    """In a process forked from a command (a DataLoader worker): SIGTERM kills it, and signals sent to the
    command's process group do not reach it.

    - A Python handler inherited from the command would run only when the worker's main thread next runs
      bytecode: a SIGTERM taken by one of MXNet's engine threads, or one that came while the child started,
      was never acted on, and the parent's `Pool.terminate()` then waited for that worker forever.
    - An idle worker holds its pool's queue lock. Killed by a signal to the whole group (`timeout`, `kill
      -TERM -PGID`, Ctrl-C), it would leave the parent's `Pool.terminate()` waiting for that lock: only the
      parent signals its workers, and it does so as it stops.
    """
    if signal.getsignal(signal.SIGTERM) is not _raise_terminated:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setpgid(0, 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


@functools.lru_cache(maxsize=None)
def _detach_forked_children():
    os.register_at_fork(before=_hold_sigterm, after_in_parent=_release_sigterm,
                        after_in_child=_detach_forked_child)


def report_input_errors(main):
    """Run a CLI `main`, turning an InputError into one stderr line and exit status 2.

    Ctrl-C (KeyboardInterrupt) and SIGTERM likewise end in one line, their message if any, and the
    shell's status (130, 143). While `main` runs, Ctrl-C is a KeyboardInterrupt (unless ignored, as in a
    background job), whatever handler `runtime.start_command` set for the imports.
    """
    @functools.wraps(main)
    def wrapper(argv=None):
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = previous_int = None
        if in_main_thread:
            _detach_forked_children()
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
            previous_int = signal.getsignal(signal.SIGINT)  # runtime.start_command's, or Python's own
            if previous_int is not signal.SIG_IGN:  # (ignored in a background job: stays so)
                signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return main(argv)
        except InputError as err:
            print(f"error: {shorten(err)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as err:
            what = "terminated" if isinstance(err, Terminated) else "interrupted"
            print(f"{what}: {err}" if str(err) else what, file=sys.stderr)
            sys.exit(143 if isinstance(err, Terminated) else 130)
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)
                signal.signal(signal.SIGINT, previous_int)
    return wrapper
