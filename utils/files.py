"""Output files written whole or not at all: checked before any work, written through a temp file."""
import os
import tempfile

from utils.errors import UserError


def check_output_file(path: str, flag: str = "--out") -> None:
    """Fail before any work when a file cannot be written at `path` (`-` is stdout)."""
    if path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {path}: folder {folder} does not exist; create it or choose another path")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder; give a file name")


def write_atomically(path: str, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, then rename it into place: a crash or an error
    never leaves a partial file under `path`."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp_",
                               suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private; an output file is an ordinary one
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
