"""The evaluation feature cache's storage: features on the host, in RAM or in a temporary file.

A 10,000-episode test on tiered-ImageNet's test split touches ~206,000 images; ResNet-12's dense
640x5x5 map is 64 KB per image in float32, 13 GB in all: more than a 16 GB GPU holds beside the
model, more than half of many machines' RAM. The cache therefore keeps the features here, on the
host, and hands the device one group of episodes at a time (frn/engine.py `FeatureCache`).
"""
import os
import shutil
import tempfile
from typing import Optional, Tuple

import numpy as np

from utils.errors import UserError

#: the default of --feature_cache_gb: caches up to this size stay in RAM, larger ones go to a file
DEFAULT_RAM_GB = 2.0


def gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 2 ** 30:.1f} GB"


class HostFeatures:
    """`n_rows` rows of one shape and dtype, appended once in order, then gathered by row number.

    The rows are held in a NumPy array when they fit in `ram_bytes`; otherwise they are written
    to an unlinked temporary file in `folder` (default: the system's temporary folder, $TMPDIR)
    and read back with positioned reads into a buffer holding just the rows asked for. The
    file's pages live in the kernel's page cache, which the kernel reclaims under memory
    pressure, not in this process: the process's memory does not grow with `n_rows`. Either way
    the rows come back bit for bit as appended (no conversion, the dtype they were given in).
    """

    def __init__(self, n_rows: int, ram_bytes: int, folder: Optional[str] = None):
        self.n_rows, self.ram_bytes, self.folder = n_rows, ram_bytes, folder
        self.row_shape: Tuple[int, ...] = ()
        self.dtype = np.dtype("float32")
        self.written = 0
        self.array: Optional[np.ndarray] = None
        self.file = None

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.n_rows * self.row_bytes

    @property
    def in_ram(self) -> bool:
        return self.array is not None

    def _open(self, first: np.ndarray) -> None:
        """Fix the row shape and dtype from the first chunk and choose RAM or file."""
        self.row_shape, self.dtype = tuple(first.shape[1:]), first.dtype
        if self.nbytes <= self.ram_bytes:
            self.array = np.empty((self.n_rows, *self.row_shape), self.dtype)
            return
        folder = self.folder or tempfile.gettempdir()
        free = shutil.disk_usage(folder).free
        if free < self.nbytes:
            raise UserError(f"the evaluation feature cache of {self.n_rows} images needs {gigabytes(self.nbytes)} "
                            f"on disk but {folder} has {gigabytes(free)} free; set TMPDIR to a larger disk, or raise "
                            f"--feature_cache_gb to keep it in RAM")
        self.file = tempfile.TemporaryFile(dir=folder)  # unlinked: gone with the process, even a killed one

    def append(self, chunk: np.ndarray) -> None:
        """The next rows, in order."""
        if self.written == 0:
            self._open(chunk)
        if chunk.shape[1:] != self.row_shape or chunk.dtype != self.dtype:
            raise ValueError(f"rows of {chunk.shape[1:]} {chunk.dtype} after rows of {self.row_shape} {self.dtype}")
        if self.written + len(chunk) > self.n_rows:
            raise ValueError(f"more than the {self.n_rows} rows announced")
        if self.in_ram:
            self.array[self.written:self.written + len(chunk)] = chunk
        else:
            self.file.write(np.ascontiguousarray(chunk).data)
        self.written += len(chunk)

    def finish(self) -> None:
        """Check that every announced row arrived; make the file readable."""
        if self.written != self.n_rows:
            raise ValueError(f"{self.written} rows written, {self.n_rows} announced")
        if self.file is not None:
            self.file.flush()

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The rows `rows` (1-D row numbers, repeats allowed), stacked in that order."""
        if self.in_ram:
            return self.array[rows]
        out = np.empty((len(rows), *self.row_shape), self.dtype)
        size = self.row_bytes
        for k, row in enumerate(rows.tolist()):
            self._read(out[k], row * size, size)
        return out

    def _read(self, into: np.ndarray, offset: int, size: int) -> None:
        if hasattr(os, "preadv"):  # one system call, no shared file position
            got = os.preadv(self.file.fileno(), [into], offset)
        else:
            self.file.seek(offset)
            got = self.file.readinto(memoryview(into).cast("B"))
        if got != size:
            raise OSError(f"the feature cache file returned {got} of {size} bytes at offset {offset}")

    def close(self) -> None:
        """Free the rows (the file is removed as it closes)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        self.array = None
