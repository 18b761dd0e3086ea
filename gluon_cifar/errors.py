"""One exception for problems in what the user gave us, and the CLI wrapper that reports it."""
import functools
import sys


class InputError(Exception):
    """Bad data, arguments or output location: reported as one line, never a traceback."""


def report_input_errors(main):
    """Run a CLI `main`, turning an InputError into one stderr line and exit status 2.

    Ctrl-C (KeyboardInterrupt) likewise ends in one line, its message if any, and the shell's status 130.
    """
    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as err:
            print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
