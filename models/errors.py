"""The one error type the entry points turn into a one-line message and exit status 2."""

import sys


class UserError(Exception):
    """Bad input or a missing prerequisite: the message says what was wrong and what to do."""


def run_cli(main, argv=None):
    """Run ``main(argv)`` as a command: UserError -> one line on stderr and exit 2, Ctrl-C -> exit 130."""
    try:
        status = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to continue", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
