"""One exception for problems in what the user gave us, and the command-line plumbing that reports it."""

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


