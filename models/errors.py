"""The one error type the entry points turn into a one-line message and exit status 2."""

import sys


class UserError(Exception):
    """Bad input or a missing prerequisite: the message says what was wrong and what to do."""


def mxnet_reason(err):
    """The informative line of an MXNetError, whose text starts with a C++ "Traceback" and source locations."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Traceback", "File ", "[bt]", "Stack trace"))]
    reason = useful[-1] if useful else (lines[-1] if lines else type(err).__name__)
    return reason.removeprefix("MXNetError: ")


def named(names, limit=10):
    """Up to ``limit`` file names, quoted, then how many more: the way an error message lists offending files."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


def counted(n, noun, nouns=None):
    """'1 image', '2 images': ``n`` and ``noun``, plural where ``n`` is not 1 (``nouns``: an irregular plural)."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def one_line(text):
    """``text`` with line breaks written as \\n, so a file name holding one cannot split a one-line message."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


def run_cli(main, argv=None):
    """Run ``main(argv)`` as a command: UserError -> one line on stderr and exit 2, Ctrl-C -> exit 130.

    An OSError that no step turned into a UserError (a folder that cannot be made because a file is in the way, a full
    disk, a permission) is a problem of the machine, not a bug: it gets the same one line, naming the path.
    """
    try:
        status = main(argv)
    except UserError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        where = f": {err.filename!r}" if err.filename else ""
        print(f"error: {one_line(err.strerror or err)}{one_line(where)}; check the paths given and that the disk "
              f"has room", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to continue", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
