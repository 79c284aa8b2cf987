"""User-facing errors: one line naming the culprit and the fix, never a deep traceback."""
import argparse
import functools
import multiprocessing
import os
import sys
import threading
from typing import Callable, List


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits with code 2."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class UserError(Exception):
    """A problem with the user's input (flags, files, data). Printed as one line, exit code 2."""


# A UserError raised while loading data in a DataLoader worker is re-raised by Paddle in the
# main process's reader thread, and the main thread then only sees a generic "blocking queue
# is killed" error. The hook keeps the thread's UserError so the wrapper can report it.
_thread_errors: List[UserError] = []
_default_thread_hook = threading.excepthook


def _keep_user_errors(hook_args) -> None:
    if isinstance(hook_args.exc_value, UserError):
        _thread_errors.append(hook_args.exc_value)
    else:
        _default_thread_hook(hook_args)


def exit_on_user_error(main: Callable) -> Callable:
    """Wrap an entry point so a `UserError` (also one raised in a data-loading thread) prints
    `error: <message>` on one line and exits with code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        threading.excepthook = _keep_user_errors
        try:
            return main(*args, **kwargs)
        except UserError as err:
            _exit(err)
        except Exception:
            if _thread_errors:
                # Skip interpreter teardown: Paddle's half-stopped loader iterator would print
                # a shutdown traceback under our one-line message.
                _exit(_thread_errors[0], hard=True)
            raise

    return wrapper


def _exit(err: UserError, hard: bool = False) -> None:
    # A worker's error arrives wrapped in Paddle's text with the worker traceback; its last
    # line is "utils.errors.UserError: <message>".
    message = str(err).strip().splitlines()[-1].split("UserError: ", 1)[-1]
    print(f"error: {message}", file=sys.stderr)
    if hard:
        for worker in multiprocessing.active_children():  # DataLoader workers would outlive us
            worker.terminate()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    sys.exit(2)
