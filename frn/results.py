"""test.py's result file: one JSON record per tested task, appended to a list next to the
checkpoint (`<model folder>/results.json`, or `--result_file F`), so that result tables are built
from files rather than from copied terminal output.

A record says what was measured (accuracy and its 95% interval, episodes, way/shot/query,
split, seed), on what (method and its options, dataset, data folder, checkpoint path and
sha256) and how (Paddle version, CPU threads, wall time, date). Appending reads the list, adds the record and
writes a temporary file that replaces the old one in one rename, so an interrupted write never
leaves half a file; a file that is not such a list is refused in one line, never overwritten.
"""
import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
from typing import Any, Dict, Iterator, List, Optional

from utils.errors import UserError

#: --result_file value that writes no file
NO_FILE = "none"


def result_path(args: argparse.Namespace) -> Optional[str]:
    """The result file of a test run: --result_file, else results.json beside --model_path
    (None with --result_file none)."""
    chosen = getattr(args, "result_file", "")
    if chosen == NO_FILE:
        return None
    return chosen or os.path.join(os.path.dirname(os.path.abspath(args.model_path)), "results.json")


def read_results(path: str) -> List[Dict[str, Any]]:
    """The records of a result file ([] when there is none); a one-line error when the file is
    not a JSON list (corrupt, or another file), which is then left as it is."""
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            records = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f"result file {path} is not readable JSON ({str(err).splitlines()[0]}); move it away or "
                        f"pass another --result_file (it is left untouched)") from None
    if not isinstance(records, list):
        raise UserError(f"result file {path} holds no list of results; move it away or pass another --result_file "
                        f"(it is left untouched)")
    return records


def check_result_file(path: Optional[str]) -> None:
    """Before a test runs: the result file is readable (or absent) and its folder writable."""
    if path is None:
        return
    read_results(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"--result_file {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write the result file {path} (folder not writable); pass --result_file F, "
                        f"or --result_file {NO_FILE}")


@contextlib.contextmanager
def locked(folder: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (POSIX; elsewhere no lock), so that two test runs
    appending to one file at the same moment both keep their record."""
    try:
        import fcntl
        handle = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):  # Windows: no flock on folders
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def append_result(path: str, record: Dict[str, Any]) -> None:
    """Add `record` to the list in `path`: read, append, write a temporary file in the same
    folder and rename it over the old file (atomic: readers see the old or the new list)."""
    folder = os.path.dirname(os.path.abspath(path))
    with locked(folder):
        records = read_results(path) + [record]
        handle, temporary = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "w") as f:
                json.dump(records, f, indent=1, default=str)
                f.write("\n")
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise


def sha256(path: str) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_description(args: argparse.Namespace, checkpoint_sha256: str) -> Dict[str, Any]:
    """What every record of a test run shares: method, options, data, checkpoint, Paddle and
    its CPU threads (which the wall time depends on)."""
    import paddle
    from utils.device import cpu_threads
    options = args.options
    return {"method": args.method,
            "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else vars(options),
            "dataset": args.dataset, "data_path": os.path.abspath(args.data_path),
            "checkpoint": os.path.abspath(args.model_path), "checkpoint_sha256": checkpoint_sha256,
            "paddle": paddle.__version__, "cpu_threads": (cpu_threads() or (None,))[0]}


def task_record(shared: Dict[str, Any], **measured: Any) -> Dict[str, Any]:
    """One task's record: what was measured first, then the run's description and the date."""
    date = datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")
    return {**measured, **shared, "date": date}
