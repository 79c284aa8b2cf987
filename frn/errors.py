"""User-facing errors: one line naming the culprit and the fix, never a deep traceback."""
import functools
import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input (flags, files, data). Printed as one line, exit code 2."""


def exit_on_user_error(main: Callable) -> Callable:
    """Wrap an entry point so a `UserError` prints `error: <message>` and exits with code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
