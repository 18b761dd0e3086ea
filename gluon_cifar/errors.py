"""One exception for problems in what the user gave us, and the command-line plumbing that reports it."""
import argparse
import functools
import os
import signal
import sys
import threading

MAX_MESSAGE = 400  # characters of an error line: a 5 MB label must not make a 5 MB line


class InputError(Exception):
    """Bad data, arguments or output location: reported as one line, never a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run stops cleanly and says what it kept."""


def shorten(text, limit=MAX_MESSAGE):
    """`text` cut to `limit` characters, saying how much was left out."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def reason(err):
    """The last line of an MXNet or Python error, without MXNet's traceback and prefixes."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
    return lines[-1].split("MXNetError: ")[-1]


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
