"""One exception for problems in what the user gave us, and the command-line plumbing that reports it."""
import argparse
import functools
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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`(default: ...)` after each option's help, unless the help says its default itself (an unset
    option whose default depends on the run) or it is an off-by-default switch."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one `error:` line (exit 2) instead of the usage block, and whose
    help shows every option's default."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpFormatter, **kwargs)

    def error(self, message):
        raise InputError(f"{message} (see {self.prog} --help)")


def _raise_terminated(signum, frame):
    raise Terminated()


def report_input_errors(main):
    """Run a CLI `main`, turning an InputError into one stderr line and exit status 2.

    Ctrl-C (KeyboardInterrupt) and SIGTERM likewise end in one line, their message if any, and the
    shell's status (130, 143).
    """
    @functools.wraps(main)
    def wrapper(argv=None):
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
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
    return wrapper
